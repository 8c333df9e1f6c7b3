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


def _summarize(metrics: dict, out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, section in metrics["sections"].items():
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
    console.print(f"report: {out / 'report.md'}  ({metrics['seconds']:.1f} s)")


def run() -> None:  # pragma: no cover - the console script entry point
    try:
        app()
    except LipkitError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    run()
