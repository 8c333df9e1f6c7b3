"""The ``lipkit`` command line: thin commands over the public API.

Errors that lipkit raises on purpose print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from lipkit import __version__
from lipkit.errors import LipkitError

app = typer.Typer(
    name="lipkit",
    help="Lipschitz continuity of neural networks: measure it, enforce it, use it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lipkit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Lipschitz continuity of neural networks: measure it, enforce it, use it."""


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the report.")] = Path("lipkit-demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[bool, typer.Option(help="A few epochs only (a smoke run).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Run every lipkit capability on built-in data and write a report folder."""
    from lipkit.demo import run_demo

    try:
        metrics = run_demo(out, seed=seed, quick=quick, progress=not as_json)
    except (LipkitError, FloatingPointError, OSError) as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    _summarize(metrics, out)


@app.command()
def estimate(
    path: Annotated[Path, typer.Argument(help="An ONNX file (.onnx) or LipSDP weights (.mat).")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Method id, repeatable (default: all that fit)."),
    ] = None,
    norm: Annotated[str, typer.Option(help="Norm on inputs and outputs: 2, 1 or inf.")] = "2",
    input_shape: Annotated[
        str | None, typer.Option(help="Input shape without batch, e.g. 3,32,32.")
    ] = None,
    time_limit: Annotated[
        float | None, typer.Option(help="Seconds per method (methods that can stop early).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the lower-bound searches.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Bound the Lipschitz constant of a network: every method's bound and the interval."""
    from lipkit.estimate import estimate as run_estimate

    shape = None
    if input_shape:
        try:
            shape = tuple(int(part) for part in input_shape.replace("x", ",").split(","))
        except ValueError:
            fail(f"--input-shape must be integers separated by commas, got {input_shape!r}")
    try:
        report = _with_progress(
            lambda progress: run_estimate(path, methods=method or None, norm=norm,
                                          input_shape=shape, time_limit=time_limit, seed=seed,
                                          progress=progress),
            enabled=not as_json,
        )
    except LipkitError as error:
        fail(str(error))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print_report(report)


def _with_progress(run, enabled: bool):
    if not enabled:
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("estimating", total=None)

        def progress(name: str, index: int, count: int) -> None:
            bar.update(task, description=f"running {name}", completed=index, total=count)

        return run(progress)


def _print_report(report) -> None:
    import math

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"l{report.norm} Lipschitz bounds: {report.network.summary()}")
    for column in ("method", "kind", "value", "seconds", "status"):
        table.add_column(column, justify="right" if column in ("value", "seconds") else "left")
    for bound in report.bounds:
        value = f"{bound.value:.6g}" if math.isfinite(bound.value) else "-"
        table.add_row(bound.method, bound.kind, value, f"{bound.seconds:.2f}", bound.status)
    console.print(table)
    low, high = report.interval
    lower = report.lower.method if report.lower else "none"
    upper = report.upper.method if report.upper else "none"
    console.print(f"||f||_L in [{low:.6g}, {high:.6g}]  (lower: {lower}, upper: {upper}, "
                  f"gap {report.gap:.3g}x)")
    if not report.consistent:
        console.print("[bold red]inconsistent: a lower bound exceeds an upper bound; "
                      "please report this network[/]")


def _summarize(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, section in metrics["sections"].items():
        if not any(isinstance(v, dict) and "variant" in v for v in section.values()):
            continue
        table = Table(title=title)
        for column in ("variant", "test accuracy", "guaranteed bound", "largest observed"):
            table.add_column(column)
        for value in section.values():
            if isinstance(value, dict) and "variant" in value:
                table.add_row(
                    value["variant"], f"{value['test_accuracy']:.3f}",
                    f"{value['lipschitz_bound']:.4f}",
                    f"{max(value['largest_observed_ratio'], value['largest_jacobian_norm']):.4f}",
                )
        console.print(table)
    for title, section in metrics["sections"].items():
        for name, value in section.items():
            if isinstance(value, dict) and "interval" in value:
                interval = value["interval"]
                upper = interval["upper"]
                upper = f"{upper:.4f}" if isinstance(upper, float) else upper
                console.print(f"{title} — {name}: ||f||_L in [{interval['lower']:.4f}, "
                              f"{upper}] ({interval['lower_method']} / "
                              f"{interval['upper_method']})")
    console.print(f"report: {out / 'report.md'}  ({metrics['seconds']:.1f} s)")


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

    try:
        mi_levels = tuple(float(part) for part in levels.split(","))
    except ValueError:
        fail(f"--levels must be numbers separated by commas, got {levels!r}")
    config = MiConfig(estimator=estimator, lipschitz=lipschitz, lipschitz_constant=constant,
                      weight=weight, critic=critic, dim=dim, mi=mi_levels, steps=steps,
                      batch_size=batch_size, hidden=hidden, lr=lr, seed=seed)
    try:
        config.check()
        result = _with_steps(lambda progress: train_mutual_information(config, out,
                                                                       progress=progress),
                             f"{estimator} ({lipschitz}, {critic})", enabled=not as_json)
    except (LipkitError, OSError) as error:
        fail(str(error))
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


def _with_steps(run, description: str, enabled: bool):
    if not enabled:
        return run(None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=None, status="")

        def progress(step: int, total: int, info: dict) -> None:
            if step % 10 == 0 or step == total:
                bar.update(task, completed=step, total=total,
                           status=f"MI {info['mi']:g}: {info['estimate']:.3f}")

        return run(progress)


def run() -> None:  # pragma: no cover - the console script entry point
    try:
        app()
    except LipkitError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
