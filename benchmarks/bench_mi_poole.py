"""Poole et al. 2019's MI staircase, their protocol, with the controls of issue 17.

x, y in R^20 correlated Gaussians, true MI 2, 4, 6, 8, 10 nats, 4,000 steps per level,
batch 64, Adam 5e-4, critics 256 x 2 (separable: embeddings of 32; joint: an MLP on [x, y]),
3 seeds. Lipschitz estimators use lambda = 8 on pairs. Controls of the variance claim:

- ``DV, projected (radius 4)``: an unconstrained DV critic given only the projection of the
  embeddings onto the ball of radius 4 that the separable Lipschitz critics use (scores
  within [-16, 16]), without any Lipschitz constraint;
- ``D_lambda, 1-sided GP``: a Lipschitz penalty without any projection (unbounded scores);
- ``DV joint`` / ``D_lambda joint (spectral)``: joint critics have no projection at all, so
  their comparison isolates the Lipschitz constraint.

Every finished level of every run is appended to the results file (one JSON line: run,
seed, level statistics); a run counts when all its levels are there, and runs already
complete are skipped, so the script can be killed and started again:

    nice -n 15 python benchmarks/bench_mi_poole.py --results benchmarks/results/mi_poole.jsonl
    python benchmarks/bench_mi_poole.py --results benchmarks/results/mi_poole.jsonl --table
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import torch

from _results import append_row, read_rows
from lipkit.divergence import MiConfig, train_mutual_information
from lipkit.divergence.trainer import level_statistics

LEVELS = (2.0, 4.0, 6.0, 8.0, 10.0)
# title -> (estimator, lipschitz method, lambda, critic, radius); in the order they run
RUNS = {
    "DV": ("dv", "none", 1.0, "separable", None),
    "D_lambda (spectral)": ("d-lambda", "spectral", 8.0, "separable", 4.0),
    "DV, projected (radius 4)": ("dv", "none", 1.0, "separable", 4.0),
    "D_lambda (1-sided GP, no projection)": ("d-lambda", "gp-one-sided", 8.0, "separable",
                                             None),
    "MINE": ("mine", "none", 1.0, "separable", None),
    "NWJ": ("nwj", "none", 1.0, "separable", None),
    "InfoNCE": ("infonce", "none", 1.0, "separable", None),
    "NWJ, projected (radius 4)": ("nwj", "none", 1.0, "separable", 4.0),
    "DV joint": ("dv", "none", 1.0, "joint", None),
    "D_lambda joint (spectral)": ("d-lambda", "spectral", 8.0, "joint", None),
    "MINE joint": ("mine", "none", 1.0, "joint", None),
    "NWJ joint": ("nwj", "none", 1.0, "joint", None),
    "InfoNCE joint": ("infonce", "none", 1.0, "joint", None),
}
# the first four runs make the variance claim: all their seeds come first
GROUPS = (list(RUNS)[:4], list(RUNS)[4:8], list(RUNS)[8:])


def config_of(title: str, seed: int, args) -> MiConfig:
    estimator, method, constant, critic, radius = RUNS[title]
    return MiConfig(estimator=estimator, lipschitz=method, lipschitz_constant=constant,
                    critic=critic, radius=radius, mi=LEVELS, steps=args.steps, lr=5e-4,
                    batch_size=64, hidden=256, depth=2, embedding=32, seed=seed)


def complete(rows: list[dict], steps: int) -> dict[tuple[str, int], list[dict]]:
    """(run, seed) -> its level rows, for the runs with every level (the latest try)."""
    runs: dict[tuple[str, int], dict[float, dict]] = {}
    for row in rows:
        if row.get("steps") == steps:
            runs.setdefault((row["run"], row["seed"]), {})[row["true_mi"]] = row
    return {key: [levels[level] for level in LEVELS] for key, levels in runs.items()
            if all(level in levels for level in LEVELS)}


def run_one(title: str, seed: int, args) -> None:
    config = config_of(title, seed, args)
    estimates: list[float] = []
    started = time.perf_counter()

    def progress(event) -> None:
        step = event.step
        estimates.append(event.figures["estimate"])
        if step % config.steps == 0:
            index = step // config.steps - 1
            row = level_statistics(estimates[index * config.steps:], [LEVELS[index]],
                                   config.steps)[0]
            append_row(args.results, {"run": title, "seed": seed, "steps": config.steps,
                                      "seconds": time.perf_counter() - started,
                                      "config": config.to_dict(), **row})
            print(f"{title} seed {seed} MI {LEVELS[index]:g}: mean {row['mean']:.3f} "
                  f"variance {row['variance']:.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)

    train_mutual_information(config, progress=progress)


def partial(rows: list[dict], steps: int) -> dict[tuple[str, int], list[dict]]:
    """(run, seed) -> the levels finished so far, for the runs not complete yet."""
    runs: dict[tuple[str, int], dict[float, dict]] = {}
    for row in rows:
        if row.get("steps") == steps:
            runs.setdefault((row["run"], row["seed"]), {})[row["true_mi"]] = row
    finished = complete(rows, steps)
    return {key: [levels[level] for level in LEVELS if level in levels]
            for key, levels in runs.items() if key not in finished}


def table(args) -> None:
    unfinished = partial(read_rows(args.results), args.steps)
    if unfinished:
        print("runs in progress, finished levels (mean / variance):")
        for (title, seed), levels in unfinished.items():
            print(f"- {title}, seed {seed}: " + ", ".join(
                f"I = {row['true_mi']:g}: {row['mean']:.2f} / {row['variance']:.3g}"
                for row in levels))
        print()
    runs = complete(read_rows(args.results), args.steps)
    titles = [t for t in RUNS if any((t, s) in runs for s in range(args.seeds))]
    print("| run (seeds) | " + " | ".join(f"I = {level:g}" for level in LEVELS) + " |")
    print("|---|" + "---|" * len(LEVELS))
    for title in titles:
        seeds = [s for s in range(args.seeds) if (title, s) in runs]
        cells = []
        for index in range(len(LEVELS)):
            means = [runs[title, s][index]["mean"] for s in seeds]
            variances = [runs[title, s][index]["variance"] for s in seeds]
            cells.append(f"{statistics.mean(means):.2f} / {min(variances):.3g}-"
                         f"{max(variances):.3g}")
        print(f"| {title} ({len(seeds)}) | " + " | ".join(cells) + " |")
    print("\nvariance ratios, same seed (min-max over seeds):")
    pairs = [("DV", "D_lambda (spectral)"), ("DV, projected (radius 4)", "D_lambda (spectral)"),
             ("DV", "DV, projected (radius 4)"),
             ("D_lambda (1-sided GP, no projection)", "D_lambda (spectral)"),
             ("NWJ", "NWJ, projected (radius 4)"),
             ("DV joint", "D_lambda joint (spectral)")]
    for numerator, denominator in pairs:
        seeds = [s for s in range(args.seeds)
                 if (numerator, s) in runs and (denominator, s) in runs]
        if not seeds:
            continue
        cells = []
        for index in range(len(LEVELS)):
            ratios = [runs[numerator, s][index]["variance"]
                      / max(runs[denominator, s][index]["variance"], 1e-12) for s in seeds]
            cells.append(f"{min(ratios):.2g}-{max(ratios):.2g}")
        print(f"| {numerator} / {denominator} ({len(seeds)}) | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/mi_poole.jsonl"))
    parser.add_argument("--steps", type=int, default=4000, help="steps per level (Poole: 4000)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", action="append", default=[], help="a run title, repeatable")
    parser.add_argument("--table", action="store_true", help="print the tables and stop")
    args = parser.parse_args()
    if args.table:
        table(args)
        return
    torch.set_num_threads(1)
    for group in GROUPS:
        for seed in range(args.seeds):
            for title in group:
                if args.only and title not in args.only:
                    continue
                if (title, seed) in complete(read_rows(args.results), args.steps):
                    continue
                run_one(title, seed, args)
    if not math.isfinite(time.perf_counter()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
