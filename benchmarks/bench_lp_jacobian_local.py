"""lipkit's local ``lp-jacobian`` bound next to ``exact-mip``'s exact local constant.

A random 10-50-50-1 ReLU MLP (PyTorch's default initialization, seed 0) around a random
point (standard normal, seed 0), l-infinity balls of several radii: the local LP bound and its
time, the exact local constant by ``exact-mip`` (same ``center`` / ``radius`` options) and its
time (its bracket ``[witness, MIP bound]`` when stopped by the time limit), the share of
stable neurons, the global ``lp-jacobian`` bound, and the ratios. Both
norms (l-infinity: the gradient's l1 norm; l1: its largest entry).

Second table: the rows' LPs solved in decreasing order of their interval bounds, stopped once
no other row can raise the maximum, against solving one LP per row (the value must agree),
on global bounds of a few networks.

Usage:
    python benchmarks/bench_lp_jacobian_local.py [--radii 0.05,0.1,0.5,2] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lipkit.estimate import METHODS, load_network, options_for
from lipkit.estimate import lp_jacobian as lp
from revision import lipkit_revision


def default_mlp(widths, seed):
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def run(name, network, norm, time_limit=120.0, **keywords):
    result = METHODS[name].function(network, options_for(name, network, norm=norm,
                                                         time_limit=time_limit, **keywords))
    return result if isinstance(result, list) else [result]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--radii", default="0.05,0.1,0.5,2")
    parser.add_argument("--time-limit", type=float, default=60.0, help="exact-mip's, seconds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    network = load_network(default_mlp([10, 50, 50, 1], 0))
    center = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    table = Table(title=f"local lp-jacobian vs exact-mip, 10-50-50-1 ReLU "
                        f"(lipkit {lipkit_revision()})")
    for column in ("norm", "radius", "stable", "lp-jacobian (s)", "exact-mip (s)",
                   "lp / exact (or MIP upper)", "time exact / lp", "global lp", "global / local"):
        table.add_column(column, justify="right")
    for norm in ("inf", "1"):
        (global_bound,) = run("lp-jacobian", network, norm)
        for radius in (float(r) for r in args.radii.split(",")):
            (local,) = run("lp-jacobian", network, norm, center=center, radius=radius)
            exact = run("exact-mip", network, norm, args.time_limit, center=center,
                        radius=radius)
            kinds = {b.kind: b for b in exact}
            if "exact" in kinds:
                mip, text = kinds["exact"], f"{kinds['exact'].value:.4g}"
            else:  # stopped by the time limit: the bracket [witness, MIP bound]
                mip = kinds["upper"]
                low = kinds["lower"].value if "lower" in kinds else 0.0
                text = f"[{low:.4g}, {mip.value:.4g}]"
            table.add_row(norm, f"{radius:g}", local.details["stable_neurons"],
                          f"{local.value:.4g} ({local.seconds:.2f})",
                          f"{text} ({mip.seconds:.2f})",
                          f"{local.value / mip.value:.3f}",
                          f"{mip.seconds / local.seconds:.1f}",
                          f"{global_bound.value:.4g}",
                          f"{global_bound.value / local.value:.2f}")
    console = Console(width=160)
    console.print(table)
    console.print(pruning_table())


def pruning_table() -> Table:
    table = Table(title="rows by interval bound vs every row's LP (global bounds)")
    for column in ("network", "norm", "rows", "LPs solved", "value", "every row: value",
                   "time (s)", "every row (s)", "speed-up"):
        table.add_column(column, justify="right")
    networks = {"10-50-50-1": [10, 50, 50, 1], "64-64x2-10": [64, 64, 64, 10],
                "20-40x3-40": [20, 40, 40, 40, 40], "784-50-10": [784, 50, 10]}
    for name, widths in networks.items():
        network = load_network(default_mlp(widths, 0))
        for norm in ("inf", "1"):
            (bound,) = run("lp-jacobian", network, norm)
            started = time.perf_counter()
            weights, slopes = lp._chain(network, norm)
            every = max(lp.row_bound(weights, slopes, row)[0]
                        for row in range(weights[-1].shape[0]))
            seconds = time.perf_counter() - started
            table.add_row(name, norm, str(weights[-1].shape[0]), str(bound.details["programs"]),
                          f"{bound.value:.6g}", f"{every:.6g}", f"{bound.seconds:.3f}",
                          f"{seconds:.3f}", f"{seconds / bound.seconds:.1f}")
    return table


if __name__ == "__main__":
    main()
