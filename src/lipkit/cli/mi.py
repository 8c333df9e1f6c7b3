"""``lipkit mi``: mutual-information estimators against the truth (Poole et al.)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import app
from lipkit.cli.console import Progress, fail, nothing, valid
from lipkit.errors import LipkitError
from lipkit.io import claim_output_folder

MI_OUTPUTS = ["metrics.json", "mi.png"]


@app.command()
def mi(
    estimator: Annotated[str, typer.Option(help="dv, mine, nwj, infonce, wpc, wdm or d-lambda.")
                         ] = "infonce",
    lipschitz: Annotated[str, typer.Option(help="Lipschitz method of the critic (none, clip, "
                                                "spectral, orthogonal, gp, gp-one-sided, lp, "
                                                "alp, unconstrained-alpha).")] = "none",
    constant: Annotated[float, typer.Option(help="The critic's Lipschitz constant lambda.")
                        ] = 1.0,
    weight: Annotated[float | None, typer.Option(help="Penalty weight (default: the paper's).")
                      ] = None,
    critic: Annotated[str, typer.Option(help="joint or separable.")] = "separable",
    levels: Annotated[str, typer.Option(help="True MI staircase in nats, comma-separated.")
                      ] = "2,4,6,8,10",
    steps: Annotated[int, typer.Option(help="Steps per MI level (Poole et al.: 4000).")] = 1000,
    dim: Annotated[int, typer.Option(help="Dimension of x and of y.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Pairs per batch.")] = 64,
    hidden: Annotated[int, typer.Option(help="Hidden width of the critic.")] = 256,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 5e-4,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder (metrics.json, mi.png).")
                   ] = Path("lipkit-mi"),
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Estimate mutual information of correlated Gaussians against the truth (Poole et al.)."""
    from lipkit.divergence import MiConfig, train_mutual_information
    from lipkit.errors import check_seed

    valid(check_seed, "--seed", seed)

    try:
        mi_levels = tuple(float(part) for part in levels.split(","))
    except ValueError:
        fail(f"--levels must be numbers separated by commas, got {levels!r}")
    config = MiConfig(estimator=estimator, lipschitz=lipschitz, lipschitz_constant=constant,
                      weight=weight, critic=critic, dim=dim, mi=mi_levels, steps=steps,
                      batch_size=batch_size, hidden=hidden, lr=lr, seed=seed)
    finish = nothing
    try:
        config.check()
        finish = claim_output_folder(out, "mi", MI_OUTPUTS)
        result = _with_mi_steps(lambda progress: train_mutual_information(config, out,
                                                                       progress=progress),
                             f"{estimator} ({lipschitz}, {critic})", enabled=not as_json)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    metrics = result.metrics
    if as_json:
        typer.echo(json.dumps({k: v for k, v in metrics.items()
                               if k not in ("estimates", "true_mi")}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{metrics['estimator']}, {lipschitz} critic ({critic}); "
                        f"log(batch) = {metrics['log_batch']:.3f}")
    for column in ("true MI", "mean estimate", "bias", "variance"):
        table.add_column(column, justify="right")
    for row in metrics["levels"]:
        table.add_row(f"{row['true_mi']:g}", f"{row['mean']:.3f}", f"{row['bias']:+.3f}",
                      f"{row['variance']:.4f}")
    console = Console()
    console.print(table)
    console.print(f"{out / 'metrics.json'}, {out / 'mi.png'} ({metrics['seconds']:.1f} s)")


def _with_mi_steps(run, description: str, enabled: bool):
    with Progress(enabled, transient=True) as display:
        update = display.bar(description)

        def progress(event) -> None:
            step, total, info = event.step, event.total, event.figures
            if step % 10 == 0 or step == total:
                update(step, total=total, status=f"MI {info['mi']:g}: {info['estimate']:.3f}")

        return run(progress if display.enabled else None)
