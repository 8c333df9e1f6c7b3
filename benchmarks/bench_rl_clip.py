"""Asadi, Misra & Littman (ICML 2018)'s sweep of the weight-clip value c (issue 17's protocol).

Transition models ``s' = f(s, a)`` 32 x 2 wide (ReLU) with every weight clipped to
``[-c, c]`` (``lipkit.rl`` method ``clip-value``), c = 0.05 ... 2, and an unconstrained model,
on gymnasium's Pendulum-v1 and CartPole-v1, >= 10 seeds; per model: the proven state-map
constant ``K_hat``, the compounding error against the theorem's bound, the value error and
the return of CEM-MPC (``lipkit.rl.run_sweep``, 2 planning episodes per model and seed).
The paper's finding to test: an intermediate clip value plans best.

Every finished (environment, seed) is appended to the results file, and is skipped when the
script starts again:

    nice -n 15 python benchmarks/bench_rl_clip.py          # results/rl_clip.jsonl
    python benchmarks/bench_rl_clip.py --table
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from _results import append_row, read_rows
from lipkit.rl import Settings, run_sweep

CLIP_VALUES = (0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0)
ENVIRONMENTS = ("Pendulum-v1", "CartPole-v1")


def table(args) -> None:
    rows = [r for r in read_rows(args.results) if r.get("hidden") == args.hidden]
    for environment in ENVIRONMENTS:
        done = [r for r in rows if r["environment"] == environment]
        if not done:
            continue
        print(f"\n{environment}: {len(done)} seeds")
        print("| model | K_hat | Delta | W1 n=20 | bound n=20 | bound held | value error | "
              "return: mean +- std over seeds | seeds where best |")
        print("|---|---|---|---|---|---|---|---|---|")
        labels = [run["label"] for run in done[0]["runs"]]
        best = {label: 0 for label in labels}
        for row in done:
            means = {run["label"]: np.mean(run["returns"]) for run in row["runs"]}
            best[max(means, key=means.get)] += 1
        for label in labels:
            group = [run for row in done for run in row["runs"] if run["label"] == label]
            returns = [float(np.mean(run["returns"])) for run in group]
            print(f"| {label} | {statistics.mean(r['k_hat'] for r in group):.3g} | "
                  f"{statistics.mean(r['delta'] for r in group):.3g} | "
                  f"{statistics.mean(r['w1'][-1] for r in group):.3g} | "
                  f"{statistics.mean(r['bound'][-1] for r in group):.3g} | "
                  f"{'yes' if all(r['held'] for r in group) else 'no'} | "
                  f"{statistics.mean(r['value_error'] for r in group):.3g} | "
                  f"{statistics.mean(returns):.1f} +- {statistics.pstdev(returns):.1f} | "
                  f"{best[label]} |")
        randoms = [float(np.mean(row["random_returns"])) for row in done]
        print(f"| random actions | | | | | | | {statistics.mean(randoms):.1f} +- "
              f"{statistics.pstdev(randoms):.1f} | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results/rl_clip.jsonl"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--environments", nargs="*", default=list(ENVIRONMENTS))
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--quick", action="store_true", help="a smoke run of seconds")
    args = parser.parse_args()
    if args.table:
        table(args)
        return
    torch.set_num_threads(1)
    for seed in range(args.seeds):
        for environment in args.environments:
            done = {(r["environment"], r["seed"]) for r in read_rows(args.results)
                    if r.get("hidden") == args.hidden}
            if (environment, seed) in done:
                continue
            settings = (Settings.quick() if args.quick
                        else Settings(hidden=args.hidden, episodes=args.episodes))
            metrics = run_sweep(environment, list(CLIP_VALUES), "clip-value", (seed,),
                                settings)
            runs = []
            for run in metrics["runs"]:
                compounding = run["compounding"]
                label = ("unconstrained" if run["target"] is None else f"c={run['target']:g}")
                runs.append({"label": label, "k_hat": run["state_lipschitz"]["value"],
                             "delta": float(compounding["delta"]),
                             "w1": [float(v) for v in compounding["wasserstein"]],
                             "bound": [float(v) for v in compounding["bound"]],
                             "held": bool(compounding["holds"]),
                             "value_error": float(run["value"]["mean_absolute_error"]),
                             "value_bound": run["value_bound"],  # Theorem 2 (or why not)
                             "returns": [float(v) for v in run["planning_returns"]],
                             "final_loss": float(run["final_loss"])})
            append_row(args.results, {
                "environment": environment, "seed": seed, "hidden": args.hidden,
                "episodes": args.episodes, "runs": runs,
                "random_returns": [float(v) for v in metrics["random_baseline"][0]["returns"]],
                "seconds": metrics["seconds"]})
            print(f"{environment} seed {seed}: " + ", ".join(
                f"{r['label']} {np.mean(r['returns']):.0f}" for r in runs), flush=True)


if __name__ == "__main__":
    main()
