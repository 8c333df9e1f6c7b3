"""WGANs on the WGAN-GP toys with each method's own paper settings (issue 17's protocol).

Networks 3 x 512 (ReLU; MaxMin for orthogonal), batch 256, 5 critic steps per generator
step, ``--steps`` generator steps (>= 10,000), 3 seeds, 8 Gaussians / 25 Gaussians / Swiss
roll. Each method keeps its paper's optimizer, learning rate, betas, decay and weight
(:data:`lipkit.gan.OPTIMIZERS`):

- ``gp-toy``: WGAN-GP's own toy script ``gan_toy.py``: Adam 1e-4 (0.5, 0.9), weight 0.1;
- ``gp``: WGAN-GP's paper weight 10, same optimizer;
- ``wgan-lp``: Petzka et al.'s WGAN-LP as they train it, the one-sided gradient penalty at
  interpolates (lipkit ``gp-one-sided``), weight 10, WGAN-GP's optimizer;
- ``lp``: the seminar's pair form (lipkit ``lp``), weight 10, WGAN-GP's optimizer;
- ``alp``: ``wgan_alp.py``: Adam 2e-4 (0, 0.9) decayed linearly to 0, weight 10, xi 10,
  eps ~ U[0.1, 10], one power iteration;
- ``clip``: WGAN: RMSProp 5e-5, c = 0.01;
- ``spectral``: Miyato et al. setting A (Adam 1e-4, (0.5, 0.9), n_dis 5);
- ``orthogonal``: Björck + MaxMin (Anil et al.; WGAN-GP's optimizer, no toy setting).

The W1 noise floor, exact W1 (POT) between two independent 1,000-point samples of the true
distribution, is measured for each data set (10 pairs) and is the scale every figure is read
against: a generator cannot be shown better than the floor with 1,000-point evaluations.

Each run trains in its own folder under ``--runs`` with a checkpoint every 250 generator
steps, and is resumed from it when the script is started again. Every evaluation (every
``--eval-every`` steps: exact W1 of 1,000 generated against 1,000 real samples) is appended
to the results file as it happens, so a partial file holds the training curves so far:

    nice -n 15 python benchmarks/bench_gan_protocol.py       # results/gan_protocol.jsonl
    python benchmarks/bench_gan_protocol.py --table
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _results import append_row, read_rows
from lipkit.data import sample_toy
from lipkit.gan import GanConfig, TrainingDivergedError, exact_wasserstein, train_gan

DATA = ("8gaussians", "25gaussians", "swissroll")
# row -> (lipkit method, GanConfig changes); in the order they run
METHODS = {
    "gp-toy": ("gp", {"weight": 0.1}),
    "wgan-lp": ("gp-one-sided", {}),
    "gp": ("gp", {}),
    "lp": ("lp", {}),
    "alp": ("alp", {}),
    "clip": ("clip", {}),
    "spectral": ("spectral", {}),
    "orthogonal": ("orthogonal", {}),
}


def noise_floor(data: str, pairs: int = 10) -> list[float]:
    generator = torch.Generator().manual_seed(12345)
    return [exact_wasserstein(sample_toy(data, 1000, generator), sample_toy(data, 1000, generator))
            for _ in range(pairs)]


def run_one(row: str, data: str, seed: int, args) -> None:
    method, changes = METHODS[row]
    config = GanConfig(data=data, lipschitz=method, steps=args.steps, n_critic=5,
                       batch_size=256, hidden=512, depth=3, seed=seed,
                       eval_every=args.eval_every, eval_samples=1000, checkpoint_every=250,
                       **changes)
    out = args.runs / f"{row}-{data}-s{seed}"
    out.mkdir(parents=True, exist_ok=True)
    key = {"row": row, "data": data, "seed": seed, "steps": args.steps}
    started = time.perf_counter()

    def progress(event) -> None:
        step, info = event.step, event.figures
        if info and info["step"] == step:
            append_row(args.results, {**key, "kind": "evaluation", "step": step,
                                      "w1_exact": info["w1_exact"],
                                      "w1_critic": info["w1_critic"],
                                      "lipschitz_lower": info["lipschitz_lower"],
                                      "wall_seconds": time.perf_counter() - started})
            print(f"{row} {data} seed {seed} step {step}: W1 {info['w1_exact']:.4f}",
                  flush=True)

    try:
        result = train_gan(config, out, resume=True, progress=progress)
    except TrainingDivergedError as error:
        append_row(args.results, {**key, "kind": "diverged", "message": str(error)})
        return
    metrics = result.metrics
    append_row(args.results, {**key, "kind": "final", "w1_exact": metrics["final"]["w1_exact"],
                              "critic_bounds": metrics["critic_bounds"],
                              "config": metrics["config"], "optimizer": metrics["optimizer"],
                              "seconds_per_critic_step": metrics["seconds_per_critic_step"]})


def done(rows: list[dict], steps: int) -> set[tuple[str, str, int]]:
    return {(r["row"], r["data"], r["seed"]) for r in rows
            if r.get("kind") in ("final", "diverged") and r.get("steps") == steps}


def table(args) -> None:
    rows = read_rows(args.results)
    floors = {r["data"]: r["w1"] for r in rows if r.get("kind") == "floor"}
    print("| | " + " | ".join(DATA) + " |")
    print("|---|" + "---|" * len(DATA))
    print("| noise floor: W1 of two true 1,000-point samples, mean (min-max) | " + " | ".join(
        f"{statistics.mean(floors[d]):.3f} ({min(floors[d]):.3f}-{max(floors[d]):.3f})"
        if d in floors else "-" for d in DATA) + " |")
    for row in METHODS:
        cells = []
        for data in DATA:
            finals = [r["w1_exact"] for r in rows if r.get("kind") == "final"
                      and r["row"] == row and r["data"] == data and r["steps"] == args.steps]
            curve = {}
            for r in rows:
                if (r.get("kind") == "evaluation" and r["row"] == row and r["data"] == data
                        and r["steps"] == args.steps):
                    curve[(r["seed"], r["step"])] = r["w1_exact"]
            if finals:
                cells.append(f"{statistics.mean(finals):.3f} ({min(finals):.3f}-"
                             f"{max(finals):.3f}), {len(finals)} seeds")
            elif curve:
                seed, step = max(curve, key=lambda k: (k[1], -k[0]))
                cells.append(f"partial: {curve[seed, step]:.3f} at step {step} (seed {seed})")
            else:
                cells.append("-")
        print(f"| {row} | " + " | ".join(cells) + " |")


def plot_curves(args) -> None:
    """W1 against generator steps, one panel per data set, one line per (method, seed), the
    noise floor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(args.results)
    floors = {r["data"]: statistics.mean(r["w1"]) for r in rows if r.get("kind") == "floor"}
    figure, axes = plt.subplots(1, len(DATA), figsize=(5 * len(DATA), 3.6), squeeze=False)
    colors = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 2,
                      strict=False))
    for axis, data in zip(axes[0], DATA, strict=True):
        for row in METHODS:
            for seed in range(args.seeds):
                curve = {r["step"]: r["w1_exact"] for r in rows
                         if r.get("kind") == "evaluation" and r["row"] == row
                         and r["data"] == data and r["seed"] == seed
                         and r["steps"] == args.steps}
                if curve:
                    steps = sorted(curve)
                    axis.plot(steps, [curve[s] for s in steps], color=colors[row],
                              label=row if seed == 0 else None, linewidth=1)
        if data in floors:
            axis.axhline(floors[data], color="black", linestyle="--", linewidth=0.8,
                         label="noise floor")
        axis.set_yscale("log")
        axis.set_title(data)
        axis.set_xlabel("generator step")
        axis.set_ylabel("exact W1 (1,000 samples)")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.plot, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path,
                        default=Path("benchmarks/results/gan_protocol.jsonl"))
    parser.add_argument("--runs", type=Path, default=Path("runs/gan_protocol"))
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--data", nargs="*", default=list(DATA))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--plot", type=Path, default=None,
                        help="draw the training curves into this PNG and stop")
    args = parser.parse_args()
    if args.table:
        table(args)
        return
    if args.plot is not None:
        plot_curves(args)
        return
    torch.set_num_threads(1)
    floors = {r["data"] for r in read_rows(args.results) if r.get("kind") == "floor"}
    for data in DATA:
        if data not in floors:
            append_row(args.results, {"kind": "floor", "data": data, "w1": noise_floor(data)})
    # seed 0 of every method on every data set first, then the other seeds
    for seed in range(args.seeds):
        for data in args.data:
            for row in args.methods:
                if (row, data, seed) not in done(read_rows(args.results), args.steps):
                    run_one(row, data, seed, args)


if __name__ == "__main__":
    main()
