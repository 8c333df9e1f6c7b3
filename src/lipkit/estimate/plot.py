"""A PNG of a :class:`~lipkit.estimate.report.Report`: every method's value and time.

Left: each method's value on a log axis, coloured by kind (lower bounds from witnesses,
proven upper bounds, exact values, unproven estimates), over the shaded interval
``[best lower, best upper]``; a method that did not apply or failed is listed with its
reason cut short instead of a bar. Right: the seconds each method took (log axis).
"""

from __future__ import annotations

import math
from pathlib import Path

from lipkit.estimate.report import Report
from lipkit.io import save_figure

COLORS = {"lower": "tab:blue", "upper": "tab:orange", "exact": "tab:green",
          "estimate": "tab:gray"}


def plot_report(report: Report, path: str | Path, title: str | None = None) -> Path:
    """Write the figure of the module docstring to ``path`` (PNG, atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    bounds = report.bounds
    names = [b.method for b in bounds]
    positions = list(range(len(bounds)))[::-1]  # the first method on top
    height = max(2.5, 0.42 * len(bounds) + 1.4)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True,
                                         gridspec_kw={"width_ratios": [3, 2]})
    shown = [b.value for b in bounds if math.isfinite(b.value) and b.value > 0]
    low, high = report.interval
    if report.lower is not None and report.upper is not None and math.isfinite(high):
        left.axvspan(low, high, color="tab:green", alpha=0.12, zorder=0)
    floor = min(shown) / 2 if shown else 1e-3
    for y, bound in zip(positions, bounds, strict=True):
        usable = bound.status == "ok" and math.isfinite(bound.value) and bound.value > 0
        if usable:
            left.barh(y, bound.value - floor, left=floor, color=COLORS[bound.kind],
                      alpha=1.0 if bound.usable else 0.5)
            marker = ""
            if report.lower is bound:
                marker = "  <- best lower"
            if report.upper is bound:
                marker = "  <- best upper"
            left.text(bound.value, y, f" {bound.value:.4g}{marker}", va="center", fontsize=8)
        else:
            reason = bound.status if len(bound.status) <= 60 else bound.status[:57] + "..."
            left.text(floor, y, f" {reason}", va="center", fontsize=7, color="dimgray")
        if bound.seconds > 0:
            right.barh(y, bound.seconds, color=COLORS[bound.kind],
                       alpha=1.0 if usable else 0.3)
            right.text(bound.seconds, y, f" {bound.seconds:.2g} s", va="center", fontsize=8)
    left.set_xscale("log")
    # ticks at 1, 2, 5 per decade, labelled plainly: intervals often span less than a decade
    left.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    left.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    left.xaxis.set_minor_formatter(NullFormatter())
    if shown:
        left.set_xlim(floor, max(shown) * 4)
    left.set_yticks(positions, names)
    left.set_xlabel(f"l{report.norm} Lipschitz bound (log)")
    interval = f"[{low:.4g}, {high:.4g}]" if math.isfinite(high) else f"[{low:.4g}, inf)"
    left.set_title(f"||f||_L in {interval}", fontsize=10)
    right.set_xscale("log")
    right.xaxis.set_minor_formatter(NullFormatter())
    right.set_xlabel("seconds (log)")
    right.set_title("time", fontsize=10)
    if any(b.seconds > 0 for b in bounds):
        right.set_xlim(min(b.seconds for b in bounds if b.seconds > 0) / 2,
                       max(b.seconds for b in bounds) * 8)
    kinds = sorted({b.kind for b in bounds}, key=list(COLORS).index)
    left.legend(handles=[Patch(color=COLORS[k], label=k) for k in kinds] +
                [Patch(color="tab:green", alpha=0.12, label="interval")],
                loc="lower right", fontsize=8)
    figure.suptitle(title or report.network.summary()[:110], fontsize=9)
    figure.tight_layout()
    written = save_figure(figure, path)
    plt.close(figure)
    return written
