"""lipkit's local ``lp-jacobian`` bound next to ``exact-mip``'s exact local constant.

A random 10-50-50-1 ReLU MLP (PyTorch's default initialization, seed 0) around a random
point (standard normal, seed 0), l-infinity balls of several radii: the local LP bound and its
time, the exact local constant by ``exact-mip`` (same ``center`` / ``radius`` options) and its
time, the share of stable neurons, the global ``lp-jacobian`` bound, and the ratios. Both
norms (l-infinity: the gradient's l1 norm; l1: its largest entry).

Usage:
    python benchmarks/bench_lp_jacobian_local.py [--radii 0.05,0.1,0.5,2] [--time-limit 60]
"""

from __future__ import annotations

import argparse
import itertools

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from lipkit.estimate import METHODS, Options, load_network
from revision import lipkit_revision


def default_mlp(widths, seed):
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def run(name, network, norm, time_limit=120.0, **extra):
    result = METHODS[name].function(network, Options(norm=norm, time_limit=time_limit,
                                                     extra=extra))
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
                   "lp / exact", "time exact / lp", "global lp", "global / local"):
        table.add_column(column, justify="right")
    for norm in ("inf", "1"):
        (global_bound,) = run("lp-jacobian", network, norm)
        for radius in (float(r) for r in args.radii.split(",")):
            (local,) = run("lp-jacobian", network, norm, center=center, radius=radius)
            exact = run("exact-mip", network, norm, args.time_limit, center=center,
                        radius=radius)
            kinds = {b.kind: b for b in exact}
            mip = kinds.get("exact") or kinds["upper"]
            label = "" if "exact" in kinds else " (upper, time limit)"
            table.add_row(norm, f"{radius:g}", local.details["stable_neurons"],
                          f"{local.value:.4g} ({local.seconds:.2f})",
                          f"{mip.value:.4g}{label} ({mip.seconds:.2f})",
                          f"{local.value / mip.value:.3f}",
                          f"{mip.seconds / local.seconds:.1f}",
                          f"{global_bound.value:.4g}",
                          f"{global_bound.value / local.value:.2f}")
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
