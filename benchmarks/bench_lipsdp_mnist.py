"""LipSDP-Neuron at MNIST scale: the eigenvalue form against cvxpy's SDP, compositional and
ECLipsE-Fast, each run in a fresh subprocess for its peak memory.

Networks: 784-256-10 and 784-256-256-10 ReLU MLPs, trained for 10 epochs on scikit-learn's
digits upsampled to 28x28 (bilinear, ``torch.nn.functional.interpolate``; bundled data, no
download), and the same shapes with PyTorch's default initialization (seed 0). Methods:

- ``eigenvalue``: ``lipsdp-neuron`` (the eigenvalue form, proven in float64) under a time
  limit of ``--time-limit`` seconds (default 10: the descent stops at 80 % of it, then the proof);
- ``converged``: the same run to convergence (tolerance 1e-6, no time limit): the best known
  value of the SDP and its dual bound (the SDP optimum lies between them);
- ``cvxpy``: ``lipsdp-neuron`` with ``solver="scs"`` (cvxpy's reduced LMI, SCS to 1e-5) under
  ``--cvxpy-limit`` seconds;
- ``compositional``: lipkit's compositional bound (its value before tuning is ECLipsE-Fast's).

Every run appends one JSON line to ``--results`` (default ``lipsdp-mnist.jsonl``); a run
already there is skipped, so the script can be stopped and continued. Peak memory is the
subprocess's ``ru_maxrss`` (Python, torch, NumPy and BLAS included).

Usage:
    python benchmarks/bench_lipsdp_mnist.py [--time-limit 10] [--cvxpy-limit 600]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

NETWORKS = ("trained-784-256-10", "trained-784-256-256-10", "random-784-256-10",
            "random-784-256-256-10")
METHODS = ("eigenvalue", "converged", "cvxpy", "compositional")


def build(name: str, folder: Path) -> Path:
    """The network's state dict under ``folder`` (trained or initialized once, then reused)."""
    import torch
    import torch.nn.functional as functional

    path = folder / f"{name}.pt"
    if path.exists():
        return path
    kind, *widths = name.split("-")
    model = mlp([int(w) for w in widths])
    if kind == "trained":
        from lipkit.data.digits import load_digits

        split = load_digits(flat=False)

        def upsample(x):
            return functional.interpolate(x, size=(28, 28), mode="bilinear",
                                          align_corners=False).reshape(len(x), -1)

        x, y = upsample(split.x_train), split.y_train
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(10):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                batch = order[start:start + 64]
                loss = functional.cross_entropy(model(x[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            accuracy = float((model(upsample(split.x_test)).argmax(1) == split.y_test)
                             .float().mean())
        print(f"{name}: test accuracy {accuracy:.3f}")
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def mlp(widths):
    import torch

    torch.manual_seed(0)
    layers = []
    for index, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if index < len(widths) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def run_one(name: str, path: str, method: str, time_limit: float, cvxpy_limit: float) -> dict:
    """One method on one network, in this (fresh) process."""
    import resource

    import torch

    from lipkit.estimate import estimate
    from lipkit.estimate.importers import load_network

    model = mlp([int(w) for w in name.split("-")[1:]])
    model.load_state_dict(torch.load(path))
    network = load_network(model)
    started = time.perf_counter()
    if method == "compositional":
        bound = estimate(network, methods=["compositional"]).bounds[0]
    elif method == "eigenvalue":
        bound = estimate(network, methods=["lipsdp-neuron"], time_limit=time_limit,
                         solver="eigenvalue").bounds[0]
    elif method == "converged":
        bound = estimate(network, methods=["lipsdp-neuron"], solver="eigenvalue",
                         tolerance=1e-6).bounds[0]
    else:
        bound = estimate(network, methods=["lipsdp-neuron"], time_limit=cvxpy_limit,
                         solver="scs").bounds[0]
    seconds = time.perf_counter() - started
    details = bound.details
    return {"network": name, "method": method, "value": bound.value, "kind": bound.kind,
            "status": bound.status, "seconds": seconds,
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "sdp_lower": details.get("sdp_lower"), "solver_status": details.get("solver_status"),
            "solver_value": details.get("solver_value"),
            "eclipse_fast": details.get("eclipse_fast"), "load": os.getloadavg()[0]}


def table(rows: list[dict]) -> str:
    found = {(r["network"], r["method"]): r for r in rows}
    lines = ["| network | method | value | seconds | peak memory | value / best SDP lower | "
             "value / converged | seconds / cvxpy's |",
             "|---|---|---|---|---|---|---|---|"]
    for name in NETWORKS:
        converged = found.get((name, "converged"))
        cvxpy = found.get((name, "cvxpy"))
        lowers = [r["sdp_lower"] for r in rows if r["network"] == name and r["sdp_lower"]]
        lower = max(lowers) if lowers else math.nan
        for method in METHODS:
            row = found.get((name, method))
            if row is None:
                continue
            entries = [(method, row)]
            if method == "compositional" and row.get("eclipse_fast"):
                entries.append(("ECLipsE-Fast (compositional before tuning)",
                                {**row, "value": row["eclipse_fast"], "kind": "upper"}))
            for label, entry in entries:
                value = entry["value"]
                kind = "" if entry["kind"] == "upper" else f" ({entry['kind']})"
                timing = (f"{entry['seconds']:.2f} | {entry['peak_gb']:.2f} GB"
                          if entry is row else "(within compositional's) | -")
                ratio = (f"{entry['seconds'] / cvxpy['seconds']:.3f}"
                         if cvxpy and entry is row else "-")
                lines.append(
                    f"| {name} | {label} | {value:.6g}{kind} | {timing} | {value / lower:.5f} | "
                    f"{value / converged['value'] if converged else math.nan:.5f} | {ratio} |")
        if converged and converged.get("sdp_lower"):
            lines.append(f"| {name} | SDP optimum bracket | [{lower:.6g}, "
                         f"{converged['value']:.6g}] | | | certified gap "
                         f"{converged['value'] / lower - 1:.2e} | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time-limit", type=float, default=10.0)
    parser.add_argument("--cvxpy-limit", type=float, default=600.0)
    parser.add_argument("--results", default="lipsdp-mnist.jsonl")
    parser.add_argument("--cache", default=".bench-cache")
    parser.add_argument("--networks", nargs="*", default=list(NETWORKS))
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--one", nargs=3, metavar=("NETWORK", "PATH", "METHOD"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(run_one(*args.one, args.time_limit, args.cvxpy_limit)))
        return
    results = Path(args.results)
    rows = [json.loads(line) for line in results.read_text().splitlines()] \
        if results.exists() else []
    done = {(r["network"], r["method"]) for r in rows}
    for name in args.networks:
        path = build(name, Path(args.cache))
        for method in args.methods:
            if (name, method) in done:
                continue
            command = [sys.executable, __file__, "--one", name, str(path), method,
                       "--time-limit", str(args.time_limit),
                       "--cvxpy-limit", str(args.cvxpy_limit)]
            output = subprocess.run(command, capture_output=True, text=True, check=False)
            if output.returncode != 0:
                print(f"{name} {method}: failed: {output.stderr.strip().splitlines()[-1:]}")
                continue
            row = json.loads(output.stdout.strip().splitlines()[-1])
            rows.append(row)
            with results.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(f"{name} {method}: {row['value']:.6g} {row['kind']} in {row['seconds']:.2f} s,"
                  f" {row['peak_gb']:.2f} GB (load {row['load']:.1f})", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
