"""``exact-mip`` with and without the tangent bounds from the unit ball's vertices
(``MipOptions.vertex_bounds``), side by side: each network's two runs go at the same time, one
per core, one HiGHS thread each, the same time limit.

The networks: a random 10-50-50-1 ReLU MLP (``bench_mip.random_mlp``, seed 0), global and over
the l-inf ball of radius 1 around 0; a random 4-16-16-1 (seed 0), global; and the LipSDP
reference network 784-50-10 (MNIST, global; one hidden layer over 784 inputs: the vertices
are not enumerated there, both runs are the same model).

Usage:
    python benchmarks/bench_mip_bounds.py [--scale 1.0] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor

import torch

from bench_mip import MNIST, random_mlp
from lipkit.estimate import METHODS, load_network, options_for
from lipkit.io import atomic_write_json

CASES = [  # name, time limit (s), domain
    ("10-50-50-1 global", 60.0, {}),
    ("10-50-50-1 ball r=1", 60.0, {"center": [0.0] * 10, "radius": 1.0}),
    ("4-16-16-1 global", 20.0, {}),
    ("mnist 784-50-10 global", 120.0, {}),
]


def _network(name: str):
    if name.startswith("mnist"):
        return load_network(MNIST)
    widths = [int(w) for w in name.split()[0].split("-")]
    return load_network(random_mlp(widths, seed=0))


def run(name: str, time_limit: float, domain: dict, vertex_bounds: bool) -> dict:
    torch.set_num_threads(1)
    network = _network(name)
    result = METHODS["exact-mip"].function(network, options_for(
        "exact-mip", network, norm="inf", time_limit=time_limit, vertex_bounds=vertex_bounds,
        **domain))
    bounds = result if isinstance(result, list) else [result]
    exact = bounds[0].kind == "exact"
    lower = bounds[0].value if exact else (bounds[1].value if len(bounds) > 1 else 0.0)
    return {"network": name, "vertex_bounds": vertex_bounds, "exact": exact, "lower": lower,
            "upper": bounds[0].value, "seconds": bounds[0].seconds,
            "nodes": bounds[0].details["nodes"],
            "gap": bounds[0].value / lower - 1 if lower > 0 else math.inf}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="times every time limit")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    rows = []
    with ProcessPoolExecutor(2) as pool:
        for name, limit, domain in CASES:
            jobs = [pool.submit(run, name, limit * args.scale, domain, flag)
                    for flag in (False, True)]
            before, after = (job.result() for job in jobs)
            rows += [before, after]
            print(f"| {name} | {limit * args.scale:g} | "
                  + " | ".join("exact {:.6g}".format(r["lower"]) if r["exact"] else
                               "[{:.4g}, {:.4g}]".format(r["lower"], r["upper"])
                               for r in (before, after))
                  + f" | {before['upper'] / after['upper']:.2f}x | "
                  f"{before['seconds']:.1f} / {after['seconds']:.1f} | "
                  f"{before['nodes']} / {after['nodes']} |", flush=True)
    if args.json:
        atomic_write_json(args.json, rows)


if __name__ == "__main__":
    main()
