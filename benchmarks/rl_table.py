"""Print the BENCHMARKS.md tables of ``lipkit rl`` sweeps from their ``metrics.json``.

    python benchmarks/rl_table.py rl-pendulum/metrics.json [more/metrics.json ...]

Per model (means over seeds, +- the spread over seeds): the proven K_hat, Delta, the
measured W1 at n = 1, 5, 10, 20 with the ratio measured / theorem bound, the value error,
the planner's return and its ratio to the random-action return (Pendulum's returns are
negative costs: a ratio below 1 is better there; CartPole's are positive: above 1 is better),
whether the bound held, and the same check with Delta measured at the start states only
(which the theorem does not cover).
"""

from __future__ import annotations

import json
import sys

import numpy as np


def table(metrics: dict) -> str:
    steps = [n for n in (1, 5, 10, 20) if n <= metrics["settings"]["horizon"]]
    random_returns = [np.mean(b["returns"]) for b in metrics["random_baseline"]]
    random_mean = float(np.mean(random_returns))
    lines = [
        f"**{metrics['environment']}**, method `{metrics['method']}`, seeds {metrics['seeds']}, "
        f"{metrics['seconds']:.0f} s wall for the sweep; random actions: return "
        f"{random_mean:.1f} +- {np.std(random_returns):.1f}.",
        "",
        "| model | K_hat | Delta | " + " | ".join(f"W1 n={n} (W1/bound)" for n in steps)
        + " | value error | return | return / random | bound held | Delta at mu: check |",
        "|" + "---|" * (7 + len(steps)),
    ]
    labels = dict.fromkeys(
        (run["method"], run["target"]) for run in metrics["runs"])
    for method, target in labels:
        group = [r for r in metrics["runs"] if (r["method"], r["target"]) == (method, target)]
        name = f"{method} K={target:g}" if target is not None else "unconstrained"
        k_hat = np.mean([r["state_lipschitz"]["value"] for r in group])
        delta = np.mean([r["compounding"]["delta"] for r in group])
        cells = []
        for n in steps:
            w = np.array([r["compounding"]["wasserstein"][n - 1] for r in group])
            b = np.array([r["compounding"]["bound"][n - 1] for r in group])
            cells.append(f"{w.mean():.3g} ({np.mean(w / b):.2g})")
        value = np.mean([r["value"]["mean_absolute_error"] for r in group])
        returns = np.array([np.mean(r["planning_returns"]) for r in group])
        held = all(r["compounding"]["holds"] for r in group)
        start = np.mean([r["compounding"]["delta_start"] for r in group])
        naive = all(_holds_with_start_delta(r["compounding"]) for r in group)
        ratio = returns.mean() / random_mean if random_mean else float("nan")
        lines.append(f"| {name} | {k_hat:.3g} | {delta:.3g} | " + " | ".join(cells)
                     + f" | {value:.3g} | {returns.mean():.1f} +- {returns.std():.1f} | "
                     f"{ratio:.2f} | {'yes' if held else 'NO'} | "
                     f"{start:.3g}: {'held' if naive else 'fails'} |")
    return "\n".join(lines)


def _holds_with_start_delta(error: dict) -> bool:
    """The check with Delta measured at the start states only (not covered by the theorem)."""
    k, delta = error["lipschitz"], error["delta_start"]
    return all(w <= delta * sum(k**i for i in range(n)) * (1 + 1e-9) + 1e-9
               for n, w in enumerate(error["wasserstein"], start=1))


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path) as stream:
            print(table(json.load(stream)))
            print()
