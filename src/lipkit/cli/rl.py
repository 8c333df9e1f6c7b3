"""``lipkit rl``: Lipschitz transition models in model-based RL (Asadi et al. 2018)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import app
from lipkit.cli.console import Progress, fail, nothing, stderr_is_terminal
from lipkit.errors import LipkitError
from lipkit.io import claim_output_folder

RL_OUTPUTS = ["metrics.json", "report.md", "compounding_error.png", "returns.png"]


@app.command()
def rl(
    env: Annotated[str, typer.Option("--env", help="Pendulum-v1 or CartPole-v1.")] = "Pendulum-v1",
    lipschitz: Annotated[
        str, typer.Option(help="Constants K of the model, comma separated.")
    ] = "0.25,0.5,1,2,4",
    method: Annotated[
        str, typer.Option(help="Constraint: clip (clip value set from K), clip-value (the "
                               "paper's sweep: --lipschitz lists clip values c), spectral, "
                               "orthogonal, aol, bjorck, or none (unconstrained).")
    ] = "spectral",
    seeds: Annotated[int, typer.Option(help="Number of seeds (0, 1, ...).")] = 1,
    planner: Annotated[str, typer.Option(help="MPC planner: cem or random-shooting.")] = "cem",
    episodes: Annotated[int | None, typer.Option(help="Planning episodes per model.")] = None,
    unconstrained: Annotated[
        bool, typer.Option(help="Also train an unconstrained model (K from lipkit.estimate).")
    ] = True,
    out: Annotated[Path, typer.Option(help="Output folder for the report.")] = Path("lipkit-rl"),
    quick: Annotated[bool, typer.Option(help="Small sizes (a smoke run of seconds).")] = False,
    threads: Annotated[
        int, typer.Option(help="torch threads (small models run fastest on one).")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Lipschitz transition models: compounding error vs the theorem, value error, planning."""
    from lipkit.errors import check_positive
    from lipkit.rl import Settings, parse_constants, run_sweep
    from lipkit.rl.experiment import check_sweep

    finish = nothing
    try:
        constants = parse_constants(lipschitz)
        settings = Settings.quick() if quick else Settings()
        settings.planner = planner
        if episodes is not None:
            settings.episodes = int(check_positive("--episodes", episodes))
        if seeds < 1:
            fail(f"--seeds must be at least 1, got {seeds}")
        check_sweep(env, method, planner)
        import torch

        torch.set_num_threads(int(check_positive("--threads", threads)))
        finish = claim_output_folder(out, "rl", RL_OUTPUTS)
        with Progress(not as_json and stderr_is_terminal()) as display:
            metrics = run_sweep(env, constants, method, tuple(range(seeds)), settings, out,
                                display.events(f"rl {env}") if display.enabled else None,
                                unconstrained=unconstrained)
    except (LipkitError, OSError) as error:
        fail(str(error))
    finally:
        finish()
    if as_json:
        from lipkit.io import json_safe

        typer.echo(json.dumps(json_safe(metrics), indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"lipkit rl: {metrics['environment']} ({metrics['method']})")
    for column in ("model", "K_hat", "Delta", "W1 n=1", "W1 n=H", "bound n=H", "return",
                   "bound held"):
        table.add_column(column)
    for row in metrics["summary"]:
        if "delta" not in row:
            table.add_row(row["model"], "", "", "", "", "", f"{row['return_mean']:.1f}", "")
            continue
        last = max(row["wasserstein"])
        table.add_row(row["model"], f"{row['state_lipschitz']:.4g}", f"{row['delta']:.4g}",
                      f"{row['wasserstein'][1]:.4g}", f"{row['wasserstein'][last]:.4g}",
                      f"{row['bound'][last]:.4g}", f"{row['return_mean']:.1f}",
                      "yes" if row["bound_held"] else "NO")
    console = Console()
    console.print(table)
    console.print(f"report: {out / 'report.md'}  ({metrics['seconds']:.1f} s)")
