"""``lipkit rl``: sweep a transition model's Lipschitz constant on one environment.

For every seed: collect random-action transitions, then for every constant ``K`` (and an
unconstrained model) train a model, prove its state-map bound ``K_hat``, measure the
compounding error ``W1(T_hat^n mu, T^n mu)`` against the theorem's bound, the value-estimation
error, and the return of model-predictive control with it; random actions are the baseline.
Writes ``metrics.json``, PNGs and ``report.md`` into the output folder, each atomically.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.io import atomic_write_json, atomic_write_text, json_safe, save_figure
from lipkit.nn import export
from lipkit.rl.compounding import compounding_error, rollout
from lipkit.rl.environment import make_environment
from lipkit.rl.model import (
    UNCONSTRAINED,
    collect_transitions,
    make_transition_model,
    state_lipschitz_bound,
    train_transition_model,
)
from lipkit.rl.planning import PLANNERS, Planner, run_episode
from lipkit.rl.value import value_bound_check, value_estimation_error
from lipkit.training import ProgressEvent

REPORTED_STEPS = (1, 5, 10, 20)


@dataclass
class Settings:
    """Sizes of one sweep; ``Settings.quick()`` is a smoke run of a few seconds."""

    transitions: int = 10_000
    epochs: int = 30
    hidden: int = 64
    samples: int = 200       # N start states of the empirical mu
    horizon: int = 20        # H steps of compounding error
    discount: float = 0.99
    episodes: int = 4        # planning episodes per model
    episode_steps: int | None = None  # None: the environment's own limit
    planner: str = "cem"
    plan_horizon: int = 25
    candidates: int = 250
    elites: int = 25
    iterations: int = 3

    @classmethod
    def quick(cls) -> Settings:
        return cls(transitions=800, epochs=4, hidden=32, samples=48, horizon=10, episodes=1,
                   episode_steps=25, plan_horizon=8, candidates=48, elites=6, iterations=2)


def parse_constants(text: str) -> list[float]:
    """``"0.25,0.5,1"`` -> ``[0.25, 0.5, 1.0]``; every constant must be a finite number > 0."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise InvalidArgumentError(f"--lipschitz needs at least one constant, got {text!r}")
    return [check_positive("lipschitz", part) for part in parts]


def check_sweep(environment_name: str, method: str, planner: str):
    """Fail before any work on an unknown environment, constraint method or planner;
    returns the environment."""
    environment = make_environment(environment_name)
    make_transition_model(1, 1, method, 1.0)
    if planner not in PLANNERS:
        raise InvalidArgumentError(f"unknown planner '{planner}'; choose from: "
                                   f"{', '.join(PLANNERS)}")
    return environment


def run_sweep(environment_name: str, constants: list[float], method: str = "clip",
              seeds: tuple[int, ...] = (0,), settings: Settings | None = None,
              out_dir: str | Path | None = None, progress=None,
              unconstrained: bool = True) -> dict:
    """Run the sweep (module docstring); returns the metrics (and writes the folder).

    Args:
        constants: the target constants ``K`` of the constrained models.
        method: the ``lipkit.nn`` constraint (``"clip"`` is the paper's), or ``"none"``.
        progress: called with a :class:`lipkit.training.ProgressEvent` after the data of
            each seed and after each model (figures: ``status``, a line saying what was
            done), or None.
        unconstrained: add an unconstrained model (its ``K_hat`` from lipkit.estimate).
    """
    settings = settings or Settings()
    environment = check_sweep(environment_name, method, settings.planner)
    constants = [check_positive("lipschitz", k) for k in constants]
    if not seeds:
        raise InvalidArgumentError("run_sweep needs at least one seed")
    configurations = [] if method == UNCONSTRAINED else [(method, k) for k in constants]
    if unconstrained or method == UNCONSTRAINED:
        configurations.append((UNCONSTRAINED, None))
    started = time.perf_counter()
    total, done = len(seeds) * (len(configurations) + 1), 0

    def advance(status: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(ProgressEvent(done, total, {"status": status}))

    runs, baselines = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        data = collect_transitions(environment, settings.transitions, seed)
        episode_seeds = [10_000 * (seed + 1) + e for e in range(settings.episodes)]
        random_returns = [run_episode(environment, None, s, settings.episode_steps)["return"]
                          for s in episode_seeds]
        baselines.append({"seed": seed, "returns": random_returns})
        advance(f"seed {seed}: data and random baseline")
        starts = environment.start_states(settings.samples, seed + 1)
        actions = environment.action_space.sample((settings.horizon,),
                                                  np.random.default_rng(seed + 2))
        for constraint, target in configurations:
            run_started = time.perf_counter()
            model = make_transition_model(environment.state_dimension,
                                          environment.action_space.dimension, constraint,
                                          target, hidden=settings.hidden, seed=seed)
            losses = train_transition_model(model, data, settings.epochs, seed=seed)
            train_seconds = time.perf_counter() - run_started
            bound = state_lipschitz_bound(model)
            plain = export(model)
            rollouts = rollout(plain, environment, starts, actions)
            error = compounding_error(plain, environment, bound.value, rollouts=rollouts)
            value = value_estimation_error(environment, rollouts, settings.discount)
            if environment.no_lipschitz_reward is None:  # Theorem 2, start state by start state
                value_bound = value_bound_check(environment, rollouts, error.delta,
                                                error.lipschitz, settings.discount).to_dict()
            else:
                value_bound = {"not_checked": environment.no_lipschitz_reward}
            planner = Planner(plain, environment, settings.planner, settings.plan_horizon,
                              settings.candidates, settings.elites, settings.iterations, seed)
            plan_started = time.perf_counter()
            returns = [run_episode(environment, planner, s, settings.episode_steps)["return"]
                       for s in episode_seeds]
            runs.append({
                "seed": seed, "method": constraint, "target": target,
                "state_lipschitz": asdict(bound), "final_loss": losses[-1],
                "compounding": error.to_dict(), "value": value.to_dict(),
                "value_bound": value_bound,
                "planning_returns": returns, "train_seconds": train_seconds,
                "planning_seconds": time.perf_counter() - plan_started,
            })
            label = f"K={target:g}" if target is not None else "unconstrained"
            advance(f"seed {seed} {constraint} {label}: return {np.mean(returns):.1f}")
        metrics = {
            "environment": environment.id, "method": method, "constants": constants,
            "seeds": [b["seed"] for b in baselines], "settings": asdict(settings),
            "runs": runs, "random_baseline": baselines,
            "seconds": time.perf_counter() - started, "summary": summarize(runs, baselines),
            "complete": len(baselines) == len(seeds),
        }
        if out_dir is not None:  # after every seed: a killed sweep keeps the seeds it finished
            write_report(metrics, Path(out_dir))
    return metrics


def _label(run: dict) -> str:
    if run["target"] is None:
        return "unconstrained"
    return f"{run['method']} {'c' if run['method'] == 'clip-value' else 'K'}={run['target']:g}"


def summarize(runs: list[dict], baselines: list[dict]) -> list[dict]:
    """Mean and spread over seeds per model: W1 at n = 1, 5, 10, 20, return, Delta, holds."""
    rows = []
    for label in dict.fromkeys(_label(run) for run in runs):
        group = [run for run in runs if _label(run) == label]
        wasserstein = np.array([run["compounding"]["wasserstein"] for run in group])
        bounds = np.array([run["compounding"]["bound"] for run in group])
        returns = np.array([np.mean(run["planning_returns"]) for run in group])
        rows.append({
            "model": label,
            "state_lipschitz": float(np.mean([r["state_lipschitz"]["value"] for r in group])),
            "delta": float(np.mean([r["compounding"]["delta"] for r in group])),
            "delta_start": float(np.mean([r["compounding"]["delta_start"] for r in group])),
            "wasserstein": {n: float(wasserstein[:, n - 1].mean())
                            for n in REPORTED_STEPS if n <= wasserstein.shape[1]},
            "bound": {n: float(bounds[:, n - 1].mean())
                      for n in REPORTED_STEPS if n <= bounds.shape[1]},
            "value_error": float(np.mean([r["value"]["mean_absolute_error"] for r in group])),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "bound_held": all(r["compounding"]["holds"] for r in group),
            "start_delta_check_held": all(r["compounding"]["holds_with_start_delta"]
                                          for r in group),
            **_value_bound_summary(group),
        })
    random_returns = np.array([np.mean(b["returns"]) for b in baselines])
    rows.append({"model": "random actions", "return_mean": float(random_returns.mean()),
                 "return_std": float(random_returns.std())})
    return rows


def _value_bound_summary(group: list[dict]) -> dict:
    """Theorem 2 over a model's seeds: the largest error, the mean bound, whether it held
    everywhere; nothing where the environment has no Lipschitz reward."""
    checks = [r.get("value_bound", {}) for r in group]
    if not checks or any("holds" not in c for c in checks):
        return {}
    return {"value_max_error": max(c["max_error"] for c in checks),
            "value_bound": float(np.mean([c["bound"] for c in checks])),
            "value_bound_held": all(c["holds"] for c in checks)}


def write_report(metrics: dict, out_dir: Path) -> None:
    """``metrics.json``, ``compounding_error.png``, ``returns.png`` and ``report.md``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [_plot_compounding(metrics, out_dir / "compounding_error.png"),
               _plot_returns(metrics, out_dir / "returns.png")]
    atomic_write_json(out_dir / "metrics.json", json_safe(metrics))
    atomic_write_text(out_dir / "report.md", report_markdown(metrics, figures))


def report_markdown(metrics: dict, figures: list[str] | None = None) -> str:
    """The sweep as markdown: the setting, one table row per model, the figures."""
    settings = metrics["settings"]
    steps = [n for n in REPORTED_STEPS if n <= settings["horizon"]]
    header = ("| model | K_hat (proven) | Delta | Delta at mu only | "
              + " | ".join(f"W1 n={n} (bound)" for n in steps)
              + " | value error | Theorem 2: max error (bound, held) | planner return | "
              "bound held | check with Delta at mu |")
    lines = [
        f"# lipkit rl: {metrics['environment']}",
        "",
        f"Seeds {metrics['seeds']}; {settings['transitions']} random-action transitions, "
        f"{settings['epochs']} epochs; compounding error from N = {settings['samples']} start "
        f"states of mu under one random open-loop action sequence, H = {settings['horizon']}; "
        f"planner {settings['planner']} (horizon {settings['plan_horizon']}, "
        f"{settings['candidates']} candidates), {settings['episodes']} episode(s) per model; "
        f"{metrics['seconds']:.1f} s in all. Means over seeds."
        + ("" if metrics.get("complete", True) else " **Partial: the sweep was stopped.**"),
        "",
        "K_hat is a proven upper bound on the constant of the model's state map "
        "s -> f(s, a) (lipkit.nn construction, or lipkit.estimate for the unconstrained "
        "model); Delta is the worst one-step error over every true state the theorem uses; "
        "the bound is Delta * sum_{i<n} K_hat^i (Asadi et al., 2018, Theorem 1). The last "
        "column repeats the check with Delta measured at the start states only, which the "
        "theorem does not cover: where it fails, the model errs more at the states reached "
        "later than at mu. Theorem 2 (value error) is checked per start state with the "
        "environment's Lipschitz reward (equal to its reward on the states it can be in), "
        "its constant K_R proven on both trajectories: the largest |V_hat - V| over the "
        "start states, the bound K_R Delta sum_{1<=n<H} gamma^n sum_{i<n} K_hat^i (mean "
        "over seeds) and whether every start state was within it; '-' where the environment "
        "has no Lipschitz reward"
        + (f" ({metrics['environment']}: {no_reward})." if (no_reward := _no_reward(metrics))
           else "."),
        "",
        header,
        "|" + "---|" * (9 + len(steps)),
    ]
    for row in metrics["summary"]:
        if "delta" not in row:
            lines.append(f"| {row['model']} | | | | " + " | " * len(steps)
                         + f" | | {row['return_mean']:.1f} +- {row['return_std']:.1f} | | |")
            continue
        cells = " | ".join(f"{row['wasserstein'][n]:.4g} ({row['bound'][n]:.3g})" for n in steps)
        theorem = (f"{row['value_max_error']:.4g} ({row['value_bound']:.3g}, "
                   f"{'yes' if row['value_bound_held'] else 'NO'})"
                   if "value_bound" in row else "-")
        lines.append(
            f"| {row['model']} | {row['state_lipschitz']:.4g} | {row['delta']:.4g} | "
            f"{row['delta_start']:.4g} | {cells} | {row['value_error']:.4g} | {theorem} | "
            f"{row['return_mean']:.1f} +- {row['return_std']:.1f} | "
            f"{'yes' if row['bound_held'] else 'NO'} | "
            f"{'held' if row['start_delta_check_held'] else 'fails'} |")
    lines.append("")
    lines += [f"![{name}]({name})" for name in figures or []]
    return "\n".join(lines) + "\n"


def _no_reward(metrics: dict) -> str | None:
    """Why Theorem 2 was not checked in these runs (None where it was)."""
    for run in metrics["runs"]:
        if "not_checked" in run.get("value_bound", {}):
            return run["value_bound"]["not_checked"]
    return None


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_compounding(metrics: dict, path: Path) -> str:
    plt = _pyplot()
    seed = metrics["seeds"][0]
    runs = [run for run in metrics["runs"] if run["seed"] == seed]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, run in enumerate(runs):
        error = run["compounding"]
        steps = range(1, len(error["wasserstein"]) + 1)
        label = f"{_label(run)} (K_hat {run['state_lipschitz']['value']:.3g})"
        left.plot(steps, error["wasserstein"], color=f"C{index}", marker="o", markersize=3,
                  label=label)
        right.plot(steps, error["wasserstein"], color=f"C{index}", marker="o", markersize=3)
        right.plot(steps, error["bound"], color=f"C{index}", linestyle="--")
    left.set(xlabel="steps n", ylabel="W1(T_hat^n mu, T^n mu)",
             title=f"{metrics['environment']}: measured W1, seed {seed}")
    right.set(xlabel="steps n", yscale="log",
              title="measured (solid) and Delta sum_{i<n} K_hat^i (dashed)")
    left.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path.name


def _plot_returns(metrics: dict, path: Path) -> str:
    plt = _pyplot()
    rows = metrics["summary"]
    figure, axis = plt.subplots(figsize=(7, 3.8))
    names = [row["model"] for row in rows]
    axis.bar(range(len(rows)), [row["return_mean"] for row in rows],
             yerr=[row["return_std"] for row in rows], color=[f"C{i}" for i in range(len(rows))])
    axis.set_xticks(range(len(rows)), names, rotation=30, ha="right", fontsize=8)
    axis.set(ylabel="episode return (mean over seeds)",
             title=f"{metrics['environment']}: MPC ({metrics['settings']['planner']}) return")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
    return path.name

