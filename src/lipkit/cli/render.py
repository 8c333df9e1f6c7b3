"""The one rendering of an estimation :class:`~lipkit.estimate.Report`: a rich table for the
terminal, markdown for reports, a JSON-ready dict for scripts. The CLI and the demo use it."""

from __future__ import annotations

import math

COLUMNS = ("method", "kind", "value", "seconds", "status")


def rows(report, digits: int = 6) -> list[tuple[str, str, str, str, str]]:
    """One row of text per bound, in :data:`COLUMNS` order."""
    return [(bound.method, bound.kind,
             f"{bound.value:.{digits}g}" if math.isfinite(bound.value) else "-",
             f"{bound.seconds:.2f}", bound.status) for bound in report.bounds]


def interval_line(report, digits: int = 6) -> str:
    """``||f||_L in [low, high]`` with the method behind each end, the gap, the domain."""
    low, high = report.interval
    lower = report.lower.method if report.lower else "none"
    upper = report.upper.method if report.upper else "none"
    domain = "" if report.domain is None or report.domain.is_global else (
        f" over the {report.domain.description}")
    gap = f"{report.gap:.3g}x" if math.isfinite(report.gap) else "inf"
    line = (f"||f||_L in [{low:.{digits}g}, {high:.{digits}g}]{domain}  (lower: {lower}, "
            f"upper: {upper}, gap {gap})")
    if report.interrupted:
        line += "; interrupted: the best interval found until then"
    return line


def table(report, title: str | None = None):
    """A rich Table of every bound."""
    from rich.table import Table

    result = Table(title=title or f"l{report.norm} Lipschitz bounds: {report.network.summary()}")
    for column in COLUMNS:
        result.add_column(column, justify="right" if column in ("value", "seconds") else "left")
    for row in rows(report):
        result.add_row(*row)
    return result


def markdown(report, digits: int = 4) -> list[str]:
    """The bounds as markdown lines: the interval, then a table."""
    return [f"{interval_line(report, digits)}", "", "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
            *("| " + " | ".join(row) + " |" for row in rows(report, digits)), ""]


def print_report(report, console=None) -> None:
    """The table and the interval on the terminal (and a warning if they disagree)."""
    from rich.console import Console

    console = console or Console()
    console.print(table(report))
    console.print(interval_line(report))
    if not report.consistent:
        console.print("[bold red]inconsistent: a lower bound exceeds an upper bound; "
                      "please report this network[/]")
