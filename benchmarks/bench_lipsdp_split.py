"""LipSDP-Neuron on sub-networks: one after the other vs in worker processes, side by side.

The network: a random 784-64x8-10 ReLU MLP (LeCun-normal weights, seed 0) split into
sub-networks of 2 weight matrices (``split=2``: five SDPs). Each configuration is run twice
in the same process, alternating (a shared machine drifts), the best time of each kept; the
values must agree: serial with ``cpu_count`` BLAS threads, ``workers`` processes with
``cpu_count // workers`` BLAS threads each, and serial with one thread.

Usage:
    python benchmarks/bench_lipsdp_split.py [--workers 2] [--split 2]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from threadpoolctl import threadpool_limits

from bench_estimate import lecun_normal_mlp
from lipkit.estimate import load_network
from lipkit.estimate.lipsdp import lipsdp


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--split", type=int, default=2)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    torch.set_num_threads(cores)
    model = lecun_normal_mlp([784] + [64] * 8 + [10], torch.Generator().manual_seed(0))
    network = load_network(model)
    lipsdp(load_network(lecun_normal_mlp([4, 6, 6, 2], torch.Generator().manual_seed(0))))
    rows = []
    # (workers, BLAS threads of the serial run): serial on every core, in worker processes,
    # serial on one core (what each worker has)
    configurations = [(1, cores), (args.workers, cores), (1, 1)]
    for workers, threads in configurations * 2:
        with threadpool_limits(threads):
            torch.set_num_threads(threads)
            started = time.perf_counter()
            bound = lipsdp(network, "neuron", split=args.split, workers=workers)
            seconds = time.perf_counter() - started
        rows.append((workers, threads, bound.value, seconds))
        print(f"workers={workers}, threads={threads}: {bound.value:.6f} ({bound.status}) in "
              f"{seconds:.2f} s; {len(bound.details['pieces'])} sub-networks; load "
              f"{os.getloadavg()[0]:.2f}")
    best = {c: min(r[3] for r in rows if (r[0], r[1]) == c) for c in configurations}
    parallel = best[(args.workers, cores)]
    print(f"speed-up with {args.workers} workers on {cores} cores (best of two runs each, "
          f"alternated): {best[(1, cores)] / parallel:.2f}x over serial with {cores} BLAS "
          f"threads, {best[(1, 1)] / parallel:.2f}x over serial with 1; values equal: "
          f"{len({r[2] for r in rows}) == 1}")


if __name__ == "__main__":
    main()
