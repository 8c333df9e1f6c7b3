"""LipSDP-Neuron on sub-networks: one after the other vs in worker processes, side by side.

The network: a random 784-64x8-10 ReLU MLP (LeCun-normal weights, seed 0) split into
sub-networks of 2 weight matrices (``split=2``: five SDPs). Each configuration is run in
the same process in turn (serial, then ``workers`` = 2, then serial again to see the drift
of a shared machine); the values must agree. The workers get ``cpu_count // workers`` BLAS
threads each; the serial runs get ``cpu_count``.

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
    with threadpool_limits(cores):
        for workers in (1, args.workers, 1):
            started = time.perf_counter()
            bound = lipsdp(network, "neuron", split=args.split, workers=workers)
            seconds = time.perf_counter() - started
            rows.append((workers, bound.value, seconds, bound.status))
            print(f"workers={workers}: {bound.value:.6f} ({bound.status}) in {seconds:.2f} s; "
                  f"{len(bound.details['pieces'])} sub-networks; load {os.getloadavg()[0]:.2f}")
    serial = (rows[0][2] + rows[2][2]) / 2
    print(f"speed-up with {args.workers} workers on {cores} cores: {serial / rows[1][2]:.2f}x "
          f"(serial: mean of the runs before and after); values equal: "
          f"{rows[0][1] == rows[1][1] == rows[2][1]}")


if __name__ == "__main__":
    main()
