"""Exact l-infinity Lipschitz constants by MIP (``exact-mip``): how the solve time grows with
width and depth, and the issue's goals, next to the naive product of induced norms and the
``lower-jacobian`` search, measured side by side in one run.

The sweep: random ReLU MLPs ``4 -> width x depth -> 1`` (torch's default initialization,
with biases, seeded), the *global* constant over all of R^4 (the homogenized MIP, see
``lipkit.estimate.mip``), one HiGHS thread, a time limit per network. A network not solved by
the limit shows its bracket's gap (upper / lower - 1).

The goals: a random 10-50-50-1 ReLU MLP (global, and local over l-inf balls of radius 0.05
and 0.1 around a seeded random point), and the LipSDP reference network 784-50-10 (trained on MNIST,
no biases; global) with a 300 s limit, then ``shor`` (Shor's SDP relaxation) on it: the
bracket [exact-mip's witness, shor's bound].

Usage:
    python benchmarks/bench_mip.py [--quick] [--time-limit 20] [--json PATH] [--png PATH]

The reference network is read from ``tests/reference`` in the repository, or from the folder
named by the ``LIPKIT_REFERENCE`` environment variable.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from lipkit.estimate import METHODS, Options, load_network, options_for
from lipkit.io import atomic_write_json, save_figure

# the copy the tests use (LIPKIT_REFERENCE overrides the folder)
REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "reference"
MNIST = Path(os.environ.get("LIPKIT_REFERENCE", REFERENCE)) / "lipsdp" / "mnist_weights.mat"


def random_mlp(widths: list[int], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def measure(name: str, network, time_limit: float, **keywords) -> dict:
    """exact-mip, naive and lower-jacobian on one network (l-inf)."""
    started = time.perf_counter()
    result = METHODS["exact-mip"].function(network, options_for(
        "exact-mip", network, norm="inf", time_limit=time_limit, **keywords))
    seconds = time.perf_counter() - started
    bounds = result if isinstance(result, list) else [result]
    if bounds[0].kind == "exact":
        lower = upper = bounds[0].value
    else:
        upper = bounds[0].value
        lower = bounds[1].value if len(bounds) > 1 else 0.0
    started = time.perf_counter()
    naive = METHODS["naive"].function(network, Options(norm="inf")).value
    naive_seconds = time.perf_counter() - started
    started = time.perf_counter()
    search = METHODS["lower-jacobian"].function(network, Options(norm="inf")).value
    search_seconds = time.perf_counter() - started
    details = bounds[0].details
    return {
        "network": name, "exact": bounds[0].kind == "exact", "lower": lower, "upper": upper,
        "gap": upper / lower - 1 if lower > 0 else math.inf, "seconds": seconds,
        "binaries": details["binaries"], "gates": details["gates"], "nodes": details["nodes"],
        "cuts": details["cuts"],
        "status": details["mip_status"], "domain": details["domain"], "naive": naive,
        "naive_seconds": naive_seconds, "lower_jacobian": search,
        "lower_jacobian_seconds": search_seconds,
    }


def with_shor(row: dict, network) -> dict:
    """The goal row with ``shor``'s upper bound (Shor's SDP relaxation) next to the MIP's."""
    started = time.perf_counter()
    bound = METHODS["shor"].function(network, Options(norm="inf"))
    return {**row, "shor": bound.value, "shor_seconds": time.perf_counter() - started}


def table(rows: list[dict]) -> str:
    lines = ["| network | exact-mip | gap | seconds | binaries (of gates) | nodes | cuts | "
             "naive / upper | lower-jacobian / lower |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        value = f"{r['lower']:.6g}" if r["exact"] else f"[{r['lower']:.5g}, {r['upper']:.5g}]"
        gap = "0 (exact)" if r["exact"] else f"{100 * r['gap']:.1f} %"
        # the search looks everywhere: no comparison with a local constant
        search = "-" if "local" in r["network"] else f"{r['lower_jacobian'] / r['lower']:.3f}"
        lines.append(
            f"| {r['network']} | {value} | {gap} | {r['seconds']:.1f} | {r['binaries']} "
            f"({r['gates']}) | {r['nodes']} | {r['cuts']} | {r['naive'] / r['upper']:.2f}x | "
            f"{search} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, time_limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axis, right) = plt.subplots(1, 2, figsize=(10, 4))
    for depth in sorted({r["depth"] for r in rows}):
        points = sorted((r for r in rows if r["depth"] == depth), key=lambda r: r["width"])
        widths = [r["width"] for r in points]
        line, = axis.plot(widths, [r["seconds"] for r in points], "-", label=f"depth {depth}")
        right.plot(widths, [r["upper"] / r["lower"] for r in points], "-",
                   color=line.get_color(), label=f"depth {depth}")
        for r in points:
            style = {"color": line.get_color(), "markersize": 7,
                     "fillstyle": "full" if r["exact"] else "none"}
            axis.plot(r["width"], r["seconds"], "o", **style)
            right.plot(r["width"], r["upper"] / r["lower"], "o", **style)
    axis.axhline(time_limit, color="grey", linestyle=":", linewidth=1)
    for ax in (axis, right):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width")
        ax.legend()
    axis.set_ylabel("seconds (filled: exact; hollow: time limit)")
    right.set_ylabel("upper / lower at the end (1: exact)")
    figure.suptitle("exact-mip, global l-inf constant of random 4 -> width x depth -> 1 ReLU MLPs")
    save_figure(figure, path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sweep, no goals")
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="seconds per sweep network (default 20)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--png", metavar="PATH", default="bench_mip.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    console = Console()
    widths = (4, 8) if args.quick else (4, 8, 16, 32)
    depths = (1, 2) if args.quick else (1, 2, 3)
    load = os.getloadavg()[0]
    sweep, goals, combined = [], [], []
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=len(widths) * len(depths))
        for depth in depths:
            for width in widths:
                progress.update(task, description=f"4-{width}x{depth}-1")
                network = load_network(random_mlp([4, *[width] * depth, 1], seed=0))
                row = measure(f"4-{width}x{depth}-1", network, args.time_limit)
                sweep.append({**row, "width": width, "depth": depth})
                progress.advance(task)
        if not args.quick:
            task = progress.add_task("goals", total=4)
            network = load_network(random_mlp([10, 50, 50, 1], seed=0))
            goals.append(measure("10-50-50-1 global", network, 60.0))
            progress.advance(task)
            center = torch.randn(10, generator=torch.Generator().manual_seed(1),
                                 dtype=torch.float64)
            for radius in (0.05, 0.1):
                goals.append(measure(f"10-50-50-1 local r={radius:g}", network, 60.0,
                                     center=center, radius=radius))
                progress.advance(task)
            if MNIST.exists():
                mnist = load_network(MNIST)
                goals.append(measure("mnist 784-50-10 global", mnist, 300.0))
                combined.append(with_shor(goals[-1], mnist))
            progress.advance(task)
    seconds = time.perf_counter() - started
    console.print(f"exact-mip sweep, time limit {args.time_limit:g} s per network, 1 HiGHS "
                  f"thread; load average at start {load:.2f}; {seconds:.0f} s in all\n")
    console.print(table(sweep))
    if goals:
        console.print("\ngoals\n")
        console.print(table(goals))
    for row in combined:
        console.print(f"\n{row['network']}: exact-mip's witness {row['lower']:.6g} "
                      f"({row['seconds']:.0f} s), shor's bound {row['shor']:.6g} "
                      f"({row['shor_seconds']:.0f} s): bracket gap "
                      f"{100 * (row['shor'] / row['lower'] - 1):.1f} %, exact-mip's own "
                      f"upper end {row['upper']:.6g}, naive {row['naive']:.6g}")
    plot(sweep, Path(args.png), args.time_limit)
    console.print(f"\nplot: {args.png}")
    if args.json:
        atomic_write_json(args.json, {"sweep": sweep, "goals": goals, "combined": combined,
                                      "seconds": seconds,
                                      "time_limit": args.time_limit, "load_average": load})


if __name__ == "__main__":
    main()
