"""``lipkit demo``: every capability on built-in data (the report: :mod:`lipkit.cli.demo`)."""

import json
from pathlib import Path
from typing import Annotated

import typer

from lipkit.cli.app import app
from lipkit.cli.console import fail, stderr_is_terminal, valid
from lipkit.errors import LipkitError


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Output folder for the report.")] = Path("lipkit-demo"),
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    quick: Annotated[bool, typer.Option(help="A few epochs only (a smoke run).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Run every lipkit capability on built-in data and write a report folder."""
    from lipkit.cli.demo import run_demo
    from lipkit.errors import check_seed

    valid(check_seed, "--seed", seed)
    try:
        metrics = run_demo(out, seed=seed, quick=quick,
                           progress=not as_json and stderr_is_terminal())
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


