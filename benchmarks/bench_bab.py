"""Exact Lipschitz constants of networks with few inputs: ``exact-bab`` (input-space branch
and bound) against ``exact-mip`` (LipMIP-style MIP on HiGHS), side by side in one run.

The sweep: random ReLU MLPs ``n -> width x depth -> 1`` (torch's default initialization, with
biases, seed 0) for n = 2 and 4 inputs, the *global* l-infinity constant over all of R^n,
both methods with the same time limit, one thread each (``torch.set_num_threads(1)``, one
HiGHS thread), run one after the other on the same machine. A network not solved by the
limit shows its bracket. The l2 constant (which the MIP does not encode) is measured by
``exact-bab`` on the same networks, next to the ``lipsdp-neuron`` upper bound and the
``lower-jacobian`` search.

Usage:
    python benchmarks/bench_bab.py [--quick] [--time-limit 20] [--json PATH] [--png PATH]
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

from bench_mip import random_mlp
from lipkit.estimate import METHODS, Options, load_network
from lipkit.estimate.report import run_method
from lipkit.io import atomic_write_json, save_figure


def solve(method: str, network, norm: str, time_limit: float) -> dict:
    started = time.perf_counter()
    result = METHODS[method].function(network, Options(norm=norm, time_limit=time_limit))
    seconds = time.perf_counter() - started
    bounds = result if isinstance(result, list) else [result]
    exact = bounds[0].kind == "exact"
    upper = bounds[0].value
    lower = upper if exact else (bounds[1].value if len(bounds) > 1 else 0.0)
    return {"exact": exact, "lower": lower, "upper": upper, "seconds": seconds}


def cell(result: dict) -> str:
    if result["exact"]:
        return f"{result['lower']:.6g} ({result['seconds']:.1f} s)"
    return f"[{result['lower']:.4g}, {result['upper']:.4g}] ({result['seconds']:.0f} s)"


def table(rows: list[dict]) -> str:
    lines = ["| network | exact-bab, l-inf | exact-mip, l-inf | mip / bab seconds | "
             "exact-bab, l2 | lipsdp-neuron / l2 | lower-jacobian / l2 |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        bab, mip, l2 = r["bab"], r["mip"], r["bab_l2"]
        both = bab["exact"] and mip["exact"]
        ratio = f"{mip['seconds'] / bab['seconds']:.2f}x" if both else (
            ">= " + f"{mip['seconds'] / bab['seconds']:.2f}x" if bab["exact"] else "-")
        sdp = f"{r['lipsdp'] / l2['upper']:.3f}" if math.isfinite(r["lipsdp"]) else "-"
        lines.append(f"| {r['network']} | {cell(bab)} | {cell(mip)} | {ratio} | {cell(l2)} | "
                     f"{sdp} | {r['lower_jacobian'] / l2['lower']:.3f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, time_limit: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = sorted({r["inputs"] for r in rows})
    figure, axes = plt.subplots(1, len(inputs), figsize=(5 * len(inputs), 4), squeeze=False)
    for axis, n in zip(axes[0], inputs, strict=True):
        for depth in sorted({r["depth"] for r in rows}):
            points = sorted((r for r in rows if r["depth"] == depth and r["inputs"] == n),
                            key=lambda r: r["width"])
            widths = [r["width"] for r in points]
            for method, style in (("bab", "-"), ("mip", "--")):
                line, = axis.plot(widths, [r[method]["seconds"] for r in points], style,
                                  label=f"exact-{method}, depth {depth}")
                for r in points:
                    axis.plot(r["width"], r[method]["seconds"], "o", color=line.get_color(),
                              fillstyle="full" if r[method]["exact"] else "none")
        axis.axhline(time_limit, color="grey", linestyle=":", linewidth=1)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("hidden width")
        axis.set_ylabel("seconds (filled: exact; hollow: time limit)")
        axis.set_title(f"{n} inputs, global l-inf constant")
        axis.legend(fontsize=7)
    save_figure(figure, path)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller sweep")
    parser.add_argument("--time-limit", type=float, default=20.0,
                        help="seconds per network and method (default 20)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--png", metavar="PATH", default="bench_bab.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    console = Console()
    inputs = (2,) if args.quick else (2, 4)
    widths = (8, 16) if args.quick else (8, 16, 32, 50)
    depths = (1, 2)
    load = os.getloadavg()[0]
    rows = []
    started = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sweep", total=len(inputs) * len(widths) * len(depths))
        for n in inputs:
            for depth in depths:
                for width in widths:
                    name = f"{n}-{width}x{depth}-1"
                    progress.update(task, description=name)
                    network = load_network(random_mlp([n, *[width] * depth, 1], seed=0))
                    row = {"network": name, "inputs": n, "width": width, "depth": depth,
                           "bab": solve("exact-bab", network, "inf", args.time_limit),
                           "mip": solve("exact-mip", network, "inf", args.time_limit),
                           "bab_l2": solve("exact-bab", network, "2", args.time_limit)}
                    sdp = run_method("lipsdp-neuron", network, Options(norm="2"))
                    row["lipsdp"] = sdp.value if sdp.usable else math.inf
                    row["lower_jacobian"] = METHODS["lower-jacobian"].function(
                        network, Options(norm="2")).value
                    rows.append(row)
                    progress.advance(task)
    seconds = time.perf_counter() - started
    console.print(f"exact-bab vs exact-mip, time limit {args.time_limit:g} s per network and "
                  f"method, one thread; load average at start {load:.2f}; {seconds:.0f} s\n")
    console.print(table(rows))
    plot(rows, Path(args.png), args.time_limit)
    console.print(f"\nplot: {args.png}")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "seconds": seconds,
                                      "time_limit": args.time_limit, "load_average": load})


if __name__ == "__main__":
    main()
