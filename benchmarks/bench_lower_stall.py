"""lower-gradient with and without its stall rule, side by side on the same networks.

The rule (``GradientAscentOptions.stall``, default 1e-4) ends the search when the second
half of its refining rounds raised the best Jacobian norm by less than 1e-4, relative;
``stall=None`` spends the whole time limit. Each network runs both, alternately, with the
same seed and time limit, in this process (same load):

    python benchmarks/bench_lower_stall.py --time-limit 20  # appends to results/lower_stall.jsonl
    python benchmarks/bench_lower_stall.py --table
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from torch import nn

from _results import append_row, read_rows
from bench_default_estimate import mlp, trained_digits_mlp
from revision import lipkit_revision

RESULTS = Path(__file__).resolve().parent / "results" / "lower_stall.jsonl"


def networks():
    return {
        "mnist-784-256x2-10": lambda: trained_digits_mlp(2),
        "mnist-784-256x4-10": lambda: trained_digits_mlp(4),
        "acas-5-50x6-5": lambda: mlp([5] + [50] * 6 + [5]),
        "sigmoid-784-200x6-10": lambda: mlp([784] + [200] * 6 + [10], nn.Sigmoid),
        "tanh-64-20-3": lambda: mlp([64, 20, 3], nn.Tanh, seed=1),
        "relu-64-20-3": lambda: mlp([64, 20, 3], seed=1),
    }


def run(time_limit: float, norms: list[str]) -> None:
    from lipkit.estimate import METHODS, load_network, options_for

    revision = lipkit_revision()
    done = {(r["network"], r["norm"], r["stall"], r["revision"], r["time_limit"])
            for r in read_rows(RESULTS)}
    for name, build in networks().items():
        network = load_network(build().double().eval())
        for norm in norms:
            for stall in (None, 1e-4):
                if (name, norm, stall, revision, time_limit) in done:
                    continue
                options = options_for("lower-gradient", network, norm=norm,
                                      time_limit=time_limit, stall=stall)
                started = time.perf_counter()
                bound = METHODS["lower-gradient"].function(network, options)
                row = {"network": name, "norm": norm, "stall": stall, "value": bound.value,
                       "rounds": bound.details["rounds"], "stalled": bound.details["stalled"],
                       "seconds": time.perf_counter() - started, "time_limit": time_limit,
                       "revision": revision, "load": os.getloadavg()[0]}
                append_row(RESULTS, row)
                print(row, flush=True)


def table() -> None:
    rows = read_rows(RESULTS)
    print("| network | norm | time limit s | whole limit: value (s) | stall 1e-4: value (s, "
          "rounds) | value ratio | time ratio | load |")
    print("|---|---|---|---|---|---|---|---|")
    keyed = {(r["network"], r["norm"], r["revision"], r["time_limit"], r["stall"]): r
             for r in rows}
    for (name, norm, revision, limit, stall), full in keyed.items():
        if stall is not None or (name, norm, revision, limit, 1e-4) not in keyed:
            continue
        fast = keyed[(name, norm, revision, limit, 1e-4)]
        print(f"| {name} | {norm} | {limit:g} | {full['value']:.6g} ({full['seconds']:.1f}) | "
              f"{fast['value']:.6g} ({fast['seconds']:.1f}, {fast['rounds']}) | "
              f"{fast['value'] / full['value']:.5f} | {fast['seconds'] / full['seconds']:.2f} | "
              f"{full['load']:.1f}-{fast['load']:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--norms", default="2,inf")
    parser.add_argument("--table", action="store_true")
    arguments = parser.parse_args()
    if arguments.table:
        table()
    else:
        run(arguments.time_limit, arguments.norms.split(","))
