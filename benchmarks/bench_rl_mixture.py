"""The EM-trained stochastic model class (a mixture of Lipschitz maps) on gymnasium's
environments (issue 17): Theorem 1 for it, exactly, and planning with its mean map.

Per environment and seed: 10,000 random-action transitions (``lipkit rl``'s data), mixtures
of C = 1, 2, 3 components (each 64 x 2 ReLU, spectral normalization to K = 4, the largest
constant of ``lipkit rl``'s sweep) fitted by EM (10 rounds of 5 epochs; C = 1 is plain
regression, 50 epochs). Reported: the weights EM finds, ``Delta`` (the worst
``sum_i p_i ||f_i(s) - T(s)||`` over the true states reached), the expected path error
``E ||s_hat_n - s_n||`` exact over the component sequences (``C^n <= 4096``) against the
theorem's bound, the exact W1 where it has at most 20,000 atoms, and the return of CEM-MPC
with the mixture's mean map (2 episodes; the same episode seeds for every C). Every
finished (environment, seed, C) is appended to the results file and skipped when the
script starts again:

    python benchmarks/bench_rl_mixture.py             # results/rl_mixture.jsonl
    python benchmarks/bench_rl_mixture.py --table
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _results import append_row, read_rows
from lipkit.rl import (
    Planner,
    collect_transitions,
    fit_mixture_em,
    make_environment,
    make_mixture_model,
    mixture_compounding_error,
    mixture_lipschitz_bound,
    run_episode,
)

ENVIRONMENTS = ("Pendulum-v1", "CartPole-v1")
COMPONENTS = (1, 2, 3)
REPORTED = (1, 5, 7)


def run_one(environment_name: str, seed: int, components: int, args) -> dict:
    environment = make_environment(environment_name)
    data = collect_transitions(environment, 10_000, seed)
    model = make_mixture_model(environment.state_dimension, environment.action_space.dimension,
                               components, "spectral", 4.0, hidden=64, seed=seed)
    started = time.perf_counter()
    history = fit_mixture_em(model, data, iterations=10, epochs=5, seed=seed)
    fit_seconds = time.perf_counter() - started
    lipschitz = mixture_lipschitz_bound(model)
    starts = environment.start_states(200, seed + 1)
    actions = environment.action_space.sample((20,), np.random.default_rng(seed + 2))
    check = mixture_compounding_error(model, environment, starts, actions, lipschitz)
    planner = Planner(model, environment, "cem", 25, 250, 25, 3, seed)
    episode_seeds = [10_000 * (seed + 1) + e for e in range(args.episodes)]  # lipkit rl's
    returns = [run_episode(environment, planner, s)["return"] for s in episode_seeds]
    random_returns = [run_episode(environment, None, s)["return"] for s in episode_seeds]
    return {"environment": environment_name, "seed": seed, "components": components,
            "weights": sorted(model.weights.tolist(), reverse=True),
            "noise_variance": float(model.noise_variance),
            "log_likelihood": history.log_likelihood[-1], "lipschitz": lipschitz,
            **check.to_dict(), "returns": returns, "random_returns": random_returns,
            "fit_seconds": fit_seconds}


def table(args) -> None:
    rows = read_rows(args.results)
    for environment in ENVIRONMENTS:
        done = [r for r in rows if r["environment"] == environment]
        if not done:
            continue
        seeds = sorted({r["seed"] for r in done})
        print(f"\n{environment}: seeds {seeds}")
        print("| C | weights (sorted, mean) | K | Delta | " + " | ".join(
            f"n={n}: E error (bound) / W1" for n in REPORTED)
            + " | held | return: mean +- std over seeds |")
        print("|---|---|---|---|" + "---|" * len(REPORTED) + "---|---|")
        randoms = {r["seed"]: float(np.mean(r["random_returns"])) for r in done}
        for c in COMPONENTS:
            group = [r for r in done if r["components"] == c]
            if not group:
                continue
            weights = np.mean([r["weights"] for r in group], axis=0)
            cells = []
            for n in REPORTED:
                if n > min(len(r["expected_error"]) for r in group):
                    cells.append("-")
                    continue
                error = statistics.mean(r["expected_error"][n - 1] for r in group)
                bound = statistics.mean(r["bound"][n - 1] for r in group)
                w1 = [r["wasserstein"][n - 1] for r in group]
                w1_cell = (f"{statistics.mean(w1):.3g}" if all(w is not None for w in w1)
                           else "-")
                cells.append(f"{error:.3g} ({bound:.3g}) / {w1_cell}")
            returns = [float(np.mean(r["returns"])) for r in group]
            print(f"| {c} | " + ", ".join(f"{w:.2f}" for w in weights)
                  + f" | {statistics.mean(r['lipschitz'] for r in group):.3g} | "
                  f"{statistics.mean(r['delta'] for r in group):.3g} | " + " | ".join(cells)
                  + f" | {'yes' if all(r['holds'] for r in group) else 'NO'} | "
                  f"{statistics.mean(returns):.1f} +- {statistics.pstdev(returns):.1f} |")
        print("| random actions | | | | " + " | " * len(REPORTED) + " | "
              f"{statistics.mean(randoms.values()):.1f} +- "
              f"{statistics.pstdev(randoms.values()):.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path,
                        default=Path("benchmarks/results/rl_mixture.jsonl"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--environments", nargs="*", default=list(ENVIRONMENTS))
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        table(args)
        return
    torch.set_num_threads(1)
    for seed in range(args.seeds):
        for environment in args.environments:
            for components in COMPONENTS:
                done = {(r["environment"], r["seed"], r["components"])
                        for r in read_rows(args.results)}
                if (environment, seed, components) in done:
                    continue
                row = run_one(environment, seed, components, args)
                append_row(args.results, row)
                print(f"{environment} seed {seed} C={components}: weights {row['weights']}, "
                      f"held {row['holds']}, return {np.mean(row['returns']):.1f}", flush=True)


if __name__ == "__main__":
    main()
