"""WGAN on the WGAN-GP toy data with each Lipschitz method: quality and critic-step cost.

Two parts, both single-threaded (``torch.set_num_threads(1)``):

- ``grid``: for each data set (8gaussians, 25gaussians, swissroll), method (clip, gp, lp, alp,
  spectral, orthogonal, plus ``alp-small``: ALP with a search scaled to the data,
  ``epsilon ~ U[0.01, 1]``, ``xi = 1``; ``gp-alp-adam``: GP with ALP's optimizer;
  ``gp-toy``: GP with weight 0.1, as in ``gan_toy.py``) and seed,
  one :func:`lipkit.gan.train_gan` run with the same budget: ``--steps`` generator steps of
  5 critic steps, 3 x ``--hidden`` ReLU (MaxMin for orthogonal) networks, batch 256,
  learning rate ``--lr`` for every method (each keeps its paper's optimizer kind, betas and
  decay). The figure is the exact W1 (POT) between 1000 generated and 1000 real samples at
  the end and every ``--eval-every`` steps; a run that diverges is recorded as such.
- ``timing``: one critic step (penalty included, Adam step) of the paper-sized critic
  (3 x 512; also 3 x 64, the grid's) on a batch of 256 from 8 Gaussians against a fixed
  fake batch, every method timed in the same process, interleaved: each round times
  ``--timing-steps`` steps of each method in a shuffled order; the figure is a method's
  median step time over its rounds, and its ratio to GP is the median of the per-round
  ratios (interquartile range in brackets).

Results are appended to ``--json`` after every run (atomically), so a killed run keeps them.

Usage:
    python benchmarks/bench_gan.py [--part grid timing] [--steps 500] [--seeds 0 1 2]
        [--methods ...] [--data ...] [--hidden 64] [--json gan-bench.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

from lipkit.data import sample_toy
from lipkit.gan import GanConfig, TrainingDivergedError, critic_loss, train_gan
from lipkit.io import atomic_write_json
from lipkit.penalty import critic_mlp, lipschitz_method

METHODS = ("clip", "gp", "lp", "alp", "alp-small", "spectral", "orthogonal", "gp-alp-adam",
           "gp-toy")
DATA = ("8gaussians", "25gaussians", "swissroll")
VARIANTS = {"alp-small": ("alp", {"epsilon": (0.01, 1.0), "xi": 1.0}),
            "gp-alp-adam": ("gp", {}), "gp-toy": ("gp", {})}
# controls: gp-alp-adam trains GP with ALP's optimizer (betas (0, 0.9), linear decay)
# gp-toy: GP with the weight 0.1 of WGAN-GP's own toy script (10 in the paper's tables)
CONFIG_CHANGES = {"gp-alp-adam": {"betas": (0.0, 0.9), "lr_decay": True},
                     "gp-toy": {"weight": 0.1}}


def _method(name: str) -> tuple[str, dict]:
    return VARIANTS.get(name, (name, {}))


def run_grid(arguments, results: dict, path: Path | None) -> None:
    runs = results.setdefault("grid", [])
    done = {(r["data"], r["method"], r["seed"]) for r in runs}
    for seed in arguments.seeds:  # seed-major: a cut-short run still covers every cell
        for data in arguments.data:
            for name in arguments.methods:
                if (data, name, seed) in done:
                    continue
                method, options = _method(name)
                config = GanConfig(data=data, lipschitz=method, steps=arguments.steps,
                                   hidden=arguments.hidden, depth=3, batch_size=256,
                                   lr=arguments.lr, seed=seed, method_options=options,
                                   eval_every=arguments.eval_every, eval_samples=1000,
                                   checkpoint_every=arguments.steps,
                                   **CONFIG_CHANGES.get(name, {}))
                started = time.perf_counter()
                record = {"data": data, "method": name, "seed": seed}
                try:
                    metrics = train_gan(config).metrics
                    record.update(
                        diverged=None, w1_final=metrics["final"]["w1_exact"],
                        w1_curve=[(e["step"], e["w1_exact"]) for e in metrics["evaluations"]],
                        w1_critic=metrics["final"]["w1_critic"],
                        lipschitz_lower=metrics["final"]["lipschitz_lower"],
                        ms_per_critic_step=1e3 * metrics["seconds_per_critic_step"])
                except TrainingDivergedError as error:
                    record.update(diverged=str(error), w1_final=None)
                record["seconds"] = time.perf_counter() - started
                runs.append(record)
                print(f"{data:12s} {name:11s} seed {seed}: W1 {record['w1_final']} "
                      f"({record['seconds']:.0f} s)", flush=True)
                if path:
                    atomic_write_json(path, results)


def run_timing(arguments, results: dict, path: Path | None) -> None:
    for hidden in arguments.timing_hidden:
        results.setdefault("timing", {})[str(hidden)] = _timing(arguments, hidden)
        if path:
            atomic_write_json(path, results)


def _timing(arguments, hidden: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    real = sample_toy("8gaussians", 256, generator)
    fake = torch.randn(256, 2, generator=generator)
    setups = {}
    for name in arguments.methods:
        if name in CONFIG_CHANGES:  # a step of these is a GP step
            continue
        method_name, options = _method(name)
        if method_name == "clip":
            options = {"clip_value": 0.01}
        method = lipschitz_method(method_name, **options)
        torch.manual_seed(0)
        critic = critic_mlp(2, hidden, 3, method)
        optimizer = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.5, 0.9))
        setups[name] = (method, critic, optimizer)

    def step(name: str) -> None:
        method, critic, optimizer = setups[name]
        loss = critic_loss("wasserstein", critic(real).flatten(), critic(fake).flatten())
        loss = loss + method.penalty(critic, real, fake, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for name in setups:  # warm-up
        for _ in range(3):
            step(name)
    times = {name: [] for name in setups}
    order = list(setups)
    for _ in range(arguments.timing_rounds):
        random.shuffle(order)
        for name in order:
            started = time.perf_counter()
            for _ in range(arguments.timing_steps):
                step(name)
            times[name].append((time.perf_counter() - started) / arguments.timing_steps)
    rows = {}
    for name, values in times.items():
        ratios = sorted(v / g for v, g in zip(values, times["gp"], strict=True))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        rows[name] = {"ms_median": 1e3 * statistics.median(values),
                      "ratio_to_gp": statistics.median(ratios),
                      "ratio_iqr": [quartiles[0], quartiles[2]]}
        print(f"width {hidden}: {name:11s} {rows[name]['ms_median']:.2f} ms/critic step, "
              f"{rows[name]['ratio_to_gp']:.2f}x GP [{quartiles[0]:.2f}, {quartiles[2]:.2f}]",
              flush=True)
    return {"rows": rows, "rounds": arguments.timing_rounds,
            "steps_per_round": arguments.timing_steps, "hidden": hidden}


def summarize(results: dict) -> None:
    """Markdown tables: final W1 mean (min-max) over seeds per data set and method."""
    runs = results.get("grid", [])
    data = list(dict.fromkeys(r["data"] for r in runs))
    methods = list(dict.fromkeys(r["method"] for r in runs))
    print("\n| method | " + " | ".join(f"{d}: final W1" for d in data)
          + " | mean W1 over training | ms / critic step (grid runs) |")
    print("|---|" + "---|" * (len(data) + 2))
    for method in methods:
        cells, curve_means, ms = [], [], []
        for d in data:
            finals = [r["w1_final"] for r in runs if r["data"] == d and r["method"] == method
                      and r["w1_final"] is not None]
            failed = sum(1 for r in runs if r["data"] == d and r["method"] == method
                         and r["w1_final"] is None)
            text = (f"{statistics.mean(finals):.3f} ({min(finals):.3f}-{max(finals):.3f})"
                    if finals else "-")
            cells.append(text + (f", {failed} diverged" if failed else ""))
            for r in runs:
                if r["data"] == d and r["method"] == method and r["w1_final"] is not None:
                    curve_means.append(statistics.mean(w for _, w in r["w1_curve"]))
                    ms.append(r["ms_per_critic_step"])
        print(f"| {method} | " + " | ".join(cells)
              + f" | {statistics.mean(curve_means):.3f} | {statistics.median(ms):.1f} |"
              if curve_means else f"| {method} | " + " | ".join(cells) + " | - | - |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", nargs="+", default=["timing", "grid"],
                        choices=["grid", "timing"])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--data", nargs="+", default=list(DATA), choices=DATA)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--timing-rounds", type=int, default=15)
    parser.add_argument("--timing-steps", type=int, default=5)
    parser.add_argument("--timing-hidden", type=int, nargs="+", default=[512, 64],
                        help="critic widths timed (512: the papers' toy critic)")
    parser.add_argument("--json", type=Path, default=None,
                        help="results file; runs already in it are skipped")
    parser.add_argument("--summary-only", action="store_true")
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    path = arguments.json
    results = json.loads(path.read_text()) if path and path.exists() else {}
    results["machine"] = f"{platform.processor() or platform.machine()}, torch " \
                         f"{torch.__version__}, 1 thread"
    results["settings"] = {k: v for k, v in vars(arguments).items() if k != "json"}
    results["settings"]["json"] = str(path) if path else None
    if not arguments.summary_only:
        if "timing" in arguments.part:
            run_timing(arguments, results, path)
        if "grid" in arguments.part:
            run_grid(arguments, results, path)
    summarize(results)


if __name__ == "__main__":
    main()
