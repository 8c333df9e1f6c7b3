"""lipkit's ``compositional`` l2 bound next to eclipse-nn's ECLipsE-Fast, side by side.

The networks are those of ``bench_estimate.py``: random 784-...-10 ReLU MLPs with LeCun-normal
weights (784-100x4-10 and 784-256x5-10, then widths 64, 256, 1024 x depths 2, 5, 10). For
each: the naive product (lipkit ``naive``), ECLipsE-Fast (eclipse-nn, on the same float64
weight matrices), lipkit ``compositional`` with its default stopping rule (time-budgeted:
the tuning may take as long as its own ECLipsE-Fast pass), and ``compositional`` with
a fixed 100 tuning steps (what more time buys; up to ``--long-width``, default 256). Same
process, same threads (``torch.set_num_threads`` and ``threadpoolctl``); a method under a
second is timed as the median of three runs after a warm-up. Ratios: value / ECLipsE-Fast's
value and seconds / ECLipsE-Fast's seconds.

Usage:
    python benchmarks/bench_compositional.py [--quick] [--threads 2] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from bench_estimate import _limit_threads, eclipse_fast, probe, random_cases, timed
from lipkit.estimate import estimate


def lipkit_value(case, method: str, **extra) -> tuple[float, float, dict]:
    def call():
        return estimate(case.network, methods=[method], **extra).bounds[0]

    bound, seconds, _ = timed(call)
    if bound.status != "ok":
        return math.nan, seconds, {"status": bound.status}
    return bound.value, seconds, bound.details


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="784-100x4-10 only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--long-width", type=int, default=256,
                        help="run the 100-step column up to this width (minutes at 1024)")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 160))
    rows = []
    with _limit_threads(args.threads):
        cases = random_cases(args.quick, seed=0)
        warm = cases[0]
        lipkit_value(warm, "compositional")
        eclipse_fast([torch.from_numpy(w) for w in warm.weights])
        for _ in range(3):
            probe()
        for case in cases:
            load, before = os.getloadavg()[0], probe()
            naive, naive_s, _ = lipkit_value(case, "naive")
            weights = [torch.from_numpy(w) for w in case.weights]
            fast, fast_s, _ = timed(lambda weights=weights: eclipse_fast(weights))
            ours, ours_s, details = lipkit_value(case, "compositional")
            long, long_s = math.nan, math.nan
            if case.width <= args.long_width:
                long, long_s, _ = lipkit_value(case, "compositional", steps=100,
                                               tuning_time_ratio=math.inf)
            busy = max(before, probe()) / probe.best
            rows.append({"network": case.name, "naive": naive, "naive_s": naive_s,
                         "eclipse_fast": fast, "eclipse_fast_s": fast_s,
                         "compositional": ours, "compositional_s": ours_s,
                         "steps": details.get("steps"), "compositional_100": long,
                         "compositional_100_s": long_s, "load": load, "probe": busy})
            console.print(f"{case.name}: naive {naive:.4g} ({naive_s:.3f} s), ECLipsE-Fast "
                          f"{fast:.4g} ({fast_s:.3f} s), compositional {ours:.4g} "
                          f"({ours_s:.3f} s, {details.get('steps')} steps), 100 steps "
                          f"{long:.4g} ({long_s:.3f} s); probe {busy:.1f}x")
    table = Table(title=f"compositional vs ECLipsE-Fast ({args.threads} threads)")
    for column in ("network", "naive", "ECLipsE-Fast", "compositional", "value ratio",
                   "time ratio", "compositional, 100 steps", "value ratio", "time ratio"):
        table.add_column(column, justify="left" if column == "network" else "right")
    for row in rows:
        table.add_row(
            row["network"], f"{row['naive']:.4g}",
            f"{row['eclipse_fast']:.4g} ({row['eclipse_fast_s']:.3g} s)",
            f"{row['compositional']:.4g} ({row['compositional_s']:.3g} s)",
            f"{row['compositional'] / row['eclipse_fast']:.3f}",
            f"{row['compositional_s'] / row['eclipse_fast_s']:.2f}",
            f"{row['compositional_100']:.4g} ({row['compositional_100_s']:.3g} s)",
            f"{row['compositional_100'] / row['eclipse_fast']:.3f}",
            f"{row['compositional_100_s'] / row['eclipse_fast_s']:.2f}")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"threads": args.threads, "rows": rows,
                                               "time": time.time()}, indent=2))


if __name__ == "__main__":
    main()
