"""A small trainer for the variational estimators: maximize the objective over the critic.

Each step draws a batch, computes the critic's outputs, the estimator's objective and the
Lipschitz method's penalty (``lipkit.penalty.lipschitz_method``: any method, by name), and
takes one Adam step on ``-objective + penalty``. The estimate of each step is recorded.

- :func:`train_mutual_information`: correlated Gaussians with a staircase of known MI
  levels (Poole et al. 2019: dimension 20, levels 2..10 nats, batch 64, 4000 steps per level,
  Adam 5e-4), joint or separable critics (``critics.py``); writes ``metrics.json`` (per-step
  estimates, bias and variance per level) and ``mi.png`` atomically into ``out``.
- :func:`train_divergence`: any two samplers ``p``, ``q``; :func:`evaluate_divergence`
  estimates with a trained critic on fresh samples.

Both loops are :func:`lipkit.training.train` (``progress`` receives its
:class:`~lipkit.training.ProgressEvent`, figures ``mi`` / ``estimate``); a non-finite
objective stops the run with :class:`~lipkit.training.TrainingDivergedError` (also named
``EstimationDivergedError`` here) naming the step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from lipkit.divergence._values import joint_and_marginal
from lipkit.divergence.critics import CRITICS, critic_scores, joint_critic, separable_critic
from lipkit.divergence.dependency import wasserstein_dependency
from lipkit.divergence.donsker_varadhan import donsker_varadhan
from lipkit.divergence.estimators import Estimator, get_estimator
from lipkit.divergence.gaussians import sample_correlated_gaussians
from lipkit.divergence.infonce import info_nce
from lipkit.divergence.mine import MovingAverage, mine_objective
from lipkit.divergence.nwj import nguyen_wainwright_jordan
from lipkit.divergence.wasserstein import kantorovich_rubinstein
from lipkit.errors import (
    InvalidArgumentError,
    UnknownMethodError,
    check_positive,
    check_seed,
)
from lipkit.io import atomic_write_json, save_figure
from lipkit.nn import lipschitz_bound
from lipkit.penalty import LipschitzMethod, critic_mlp, lipschitz_method
from lipkit.penalty._samples import critic_values
from lipkit.training import ProgressEvent, TrainingDivergedError, train

Progress = Callable[[ProgressEvent], None]


# the objective or the penalty became NaN or infinite: lipkit.training's one error type
EstimationDivergedError = TrainingDivergedError


class Objective:
    """What one step maximizes and what it reports, for an estimator and a Lipschitz method.

    ``__call__(p_values, q_values, scores, penalty)`` returns ``(loss, estimate)``: the loss
    to minimize (``-objective + penalty``) and the step's estimate (a float). ``scores`` is
    the MI score matrix (None for two distributions). MINE keeps its moving average here.
    """

    def __init__(self, estimator: Estimator, method: LipschitzMethod, ema_rate: float = 0.01,
                 alpha: float = 2.0):
        self.estimator, self.method, self.alpha = estimator, method, float(alpha)
        self.average = MovingAverage(ema_rate)

    def __call__(self, p_values, q_values, scores, penalty) -> tuple[torch.Tensor, float]:
        name = self.estimator.name
        if name in ("infonce", "wpc"):
            objective = info_nce(scores)
            estimate = objective
        elif name == "wdm":
            objective = wasserstein_dependency(scores)
            estimate = objective / self.method.lipschitz
        elif name == "w1":
            objective = kantorovich_rubinstein(p_values, q_values)
            estimate = objective / self.method.lipschitz
        elif name == "w-alpha":
            objective = kantorovich_rubinstein(p_values, q_values)
            power = objective - penalty / self.method.weight  # the W^alpha dual's value
            estimate = power.clamp(min=0) ** (1.0 / self.alpha)
        elif name == "nwj":
            objective = nguyen_wainwright_jordan(p_values, q_values)
            estimate = objective
        elif name == "mine":
            objective = mine_objective(p_values, q_values, self.average)
            estimate = donsker_varadhan(p_values, q_values)
        else:  # dv, d-lambda: the constraint is the method's
            objective = donsker_varadhan(p_values, q_values)
            estimate = objective
        return penalty - objective, float(estimate.detach())


def _make_method(name: str, lipschitz: float, weight: float | None, options: dict,
                 alpha: float) -> LipschitzMethod:
    options = dict(options)
    if name == "unconstrained-alpha":
        options.setdefault("alpha", alpha)
    return lipschitz_method(name, lipschitz=lipschitz, weight=weight, **options)


def _check_int(owner: str, name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"{owner} {name} must be an integer >= 1, got {value!r}")


@dataclass
class MiConfig:
    """A mutual-information run on correlated Gaussians (saved in its metrics).

    ``mi`` is the staircase of true MI levels in nats, ``steps`` the steps per level;
    ``lipschitz`` the method name (``lipkit.penalty.METHODS``) and ``lipschitz_constant`` its
    ``lambda``; ``critic`` ``joint`` or ``separable`` (``embedding``, ``radius`` apply to the
    latter); ``ema_rate`` is MINE's moving-average rate.
    """

    estimator: str = "infonce"
    lipschitz: str = "none"
    lipschitz_constant: float = 1.0
    weight: float | None = None
    method_options: dict = field(default_factory=dict)
    critic: str = "separable"
    dim: int = 20
    mi: tuple[float, ...] = (2.0, 4.0, 6.0, 8.0, 10.0)
    steps: int = 1000
    batch_size: int = 64
    hidden: int = 256
    depth: int = 2
    embedding: int = 32
    radius: float | None = None
    lr: float = 5e-4
    ema_rate: float = 0.01
    seed: int = 0

    def check(self) -> Estimator:
        """Raise a one-line error for a bad value; returns the estimator."""
        estimator = get_estimator(self.estimator)
        estimator.check(self.lipschitz, mutual_information=True)
        if self.critic not in CRITICS:
            raise UnknownMethodError("critic", self.critic, CRITICS)
        for name in ("dim", "steps", "hidden", "depth", "embedding"):
            _check_int("MI", name, getattr(self, name))
        _check_int("MI", "batch_size", self.batch_size)
        if self.batch_size < 2:
            raise InvalidArgumentError(f"MI batch_size must be >= 2, got {self.batch_size}")
        if not self.mi:
            raise InvalidArgumentError("MI levels must not be empty")
        for level in self.mi:
            check_positive("MI level", level)
        check_positive("MI lr", self.lr)
        check_seed("MI seed", self.seed)
        return estimator

    def to_dict(self) -> dict:
        values = asdict(self)
        values["mi"] = [float(v) for v in self.mi]
        return values


@dataclass
class MiResult:
    """A finished MI run: the critic, the method and the metrics (also in ``out``)."""

    critic: nn.Module
    method: LipschitzMethod
    metrics: dict
    out: Path | None


def make_mi_critic(config: MiConfig, method: LipschitzMethod) -> nn.Module:
    """The config's joint or separable critic of pairs, prepared for ``method``."""
    if config.critic == "joint":
        return joint_critic(config.dim, config.dim, config.hidden, config.depth, method)
    return separable_critic(config.dim, config.dim, config.hidden, config.depth,
                            config.embedding, method, config.radius)


def mi_step_values(critic: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """``(scores, p_values, q_values, real, fake)`` of a batch of pairs: the score matrix,
    its diagonal and off-diagonal entries, and the pairs / mismatched pairs
    ``[x_i, y_i]``, ``[x_i, y_{i+1}]`` that the penalties sample between."""
    scores = critic_scores(critic, x, y)
    p_values, q_values = joint_and_marginal(scores)
    real = torch.cat([x, y], dim=1)
    fake = torch.cat([x, y.roll(1, dims=0)], dim=1)
    return scores, p_values, q_values, real, fake


def train_mutual_information(config: MiConfig | None = None, out: str | Path | None = None, *,
                             critic: nn.Module | None = None,
                             progress: Progress | None = None) -> MiResult:
    """Train ``config.estimator`` on the MI staircase; per-level bias and variance.

    Bias and variance of a level are over the per-step estimates of its second half (the
    critic has had half a level to adapt). ``critic``: a critic of concatenated pairs
    ``[x, y]`` of your own (e.g. built with ``lipkit.nn.make_lipschitz``; ``config.lipschitz``
    then only selects the penalty, and should be ``none`` or a penalty); default
    :func:`make_mi_critic`. ``progress(event)`` is called every step. Writes
    ``metrics.json`` and ``mi.png`` into ``out`` when given.
    """
    config = config or MiConfig()
    estimator = config.check()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    method = _make_method(config.lipschitz, config.lipschitz_constant, config.weight,
                          config.method_options, 2.0)
    critic = make_mi_critic(config, method) if critic is None else critic
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr)
    objective = Objective(estimator, method, config.ema_rate)
    where = f"{config.estimator} with {config.lipschitz} ({config.critic} critic)"
    total = config.steps * len(config.mi)
    estimates, truth = [], []
    started = time.perf_counter()

    def step(index: int) -> dict:
        level = float(config.mi[(index - 1) // config.steps])
        x, y = sample_correlated_gaussians(config.batch_size, config.dim, level, generator)
        scores, p_values, q_values, real, fake = mi_step_values(critic, x, y)
        penalty = method.penalty(critic, real, fake, generator=generator)
        loss, estimate = objective(p_values, q_values, scores, penalty)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        estimates.append(estimate)
        truth.append(level)
        return {"losses": {"loss": float(loss.detach())}, "mi": level, "estimate": estimate}

    train(step, total, progress=progress, context=where)
    metrics = {
        "config": config.to_dict(),
        "estimator": estimator.description,
        "units": estimator.units,
        "log_batch": math.log(config.batch_size),
        "seconds": time.perf_counter() - started,
        "estimates": estimates,
        "true_mi": truth,
        "levels": level_statistics(estimates, config.mi, config.steps),
    }
    if method.construction:
        metrics["certified_lipschitz"] = lipschitz_bound(critic)
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "metrics.json", metrics)
        plot_mutual_information({f"{config.estimator} ({config.lipschitz})": metrics},
                                out / "mi.png")
    return MiResult(critic, method, metrics, out)


def level_statistics(estimates: list[float], levels, steps: int) -> list[dict]:
    """Per MI level: the mean, bias (mean - truth), variance and standard deviation of the
    per-step estimates over the second half of the level."""
    rows = []
    for index, level in enumerate(levels):
        window = torch.tensor(estimates[index * steps + steps // 2:(index + 1) * steps],
                              dtype=torch.float64)
        mean = float(window.mean())
        variance = float(window.var()) if len(window) > 1 else 0.0
        rows.append({"true_mi": float(level), "mean": mean, "bias": mean - float(level),
                     "variance": variance, "std": math.sqrt(variance)})
    return rows


def smooth(values: list[float], rate: float = 0.05) -> list[float]:
    """An exponential moving average, for plotting noisy per-step estimates."""
    smoothed, current = [], None
    for value in values:
        current = value if current is None else (1 - rate) * current + rate * value
        smoothed.append(current)
    return smoothed


def plot_mutual_information(runs: dict[str, dict], path: str | Path, columns: int = 3) -> Path:
    """Estimate vs step (light: per step; dark: smoothed) against the true MI, one panel per
    run (``runs``: title -> metrics of :func:`train_mutual_information`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(columns, len(runs))
    rows = math.ceil(len(runs) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows),
                                squeeze=False)
    for axis, (title, metrics) in zip(axes.flat, runs.items(), strict=False):
        estimates = metrics["estimates"]
        axis.plot(estimates, color="tab:blue", alpha=0.25, linewidth=0.6)
        axis.plot(smooth(estimates), color="tab:blue", linewidth=1.4, label="estimate")
        axis.plot(metrics["true_mi"], color="black", linewidth=1.0, label="true MI")
        if metrics["units"] == "nats":
            axis.axhline(metrics["log_batch"], color="tab:red", linestyle=":", linewidth=1.0,
                         label="log(batch)")
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step")
        axis.set_ylabel("nats" if metrics["units"] == "nats" else metrics["units"])
        top = max(max(metrics["true_mi"]) * 1.4, metrics["log_batch"] * 1.2)
        axis.set_ylim(min(-0.5, min(estimates)) if min(estimates) > -top else -top / 4, top)
    for axis in list(axes.flat)[len(runs):]:
        axis.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="upper left")
    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)


@dataclass
class DivergenceResult:
    """A trained critic for two distributions, its method and per-step estimates."""

    critic: nn.Module
    method: LipschitzMethod
    estimates: list[float]


def train_divergence(estimator: str, sample_p: Callable, sample_q: Callable,
                     lipschitz: str = "none", *, lipschitz_constant: float = 1.0,
                     weight: float | None = None, critic: nn.Module | None = None,
                     hidden: int = 64, depth: int = 2, steps: int = 1000,
                     batch_size: int = 256, lr: float = 1e-3, ema_rate: float = 0.01,
                     alpha: float = 2.0, seed: int = 0, method_options: dict | None = None,
                     progress: Progress | None = None) -> DivergenceResult:
    """Train a critic for ``estimator`` between ``p`` and ``q``.

    Args:
        estimator: one of ``lipkit.divergence.DIVERGENCES``.
        sample_p, sample_q: ``sample(n, generator) -> (n, features)`` tensors.
        lipschitz: the Lipschitz method's name; ``lipschitz_constant`` its ``lambda``.
        critic: a critic to train (prepared for the method by the caller); default a
            :func:`lipkit.penalty.critic_mlp` of ``hidden`` x ``depth``.
        alpha: the exponent of ``w-alpha``.
    """
    spec = get_estimator(estimator)
    spec.check(lipschitz, mutual_information=False)
    _check_int("divergence", "steps", steps)
    _check_int("divergence", "batch_size", batch_size)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    method = _make_method(lipschitz, lipschitz_constant, weight, method_options or {}, alpha)
    if critic is None:
        features = sample_p(2, generator).shape[1]
        critic = critic_mlp(features, hidden, depth, method)
    optimizer = torch.optim.Adam(critic.parameters(), lr=check_positive("lr", lr))
    objective = Objective(spec, method, ema_rate, alpha)
    estimates = []

    def step(index: int) -> dict:
        p, q = sample_p(batch_size, generator), sample_q(batch_size, generator)
        values = critic_values(critic, torch.cat([p, q]), estimator)
        penalty = method.penalty(critic, p, q, generator=generator)
        loss, estimate = objective(values[:batch_size], values[batch_size:], None, penalty)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        estimates.append(estimate)
        return {"losses": {"loss": float(loss.detach())}, "estimate": estimate}

    train(step, steps, progress=progress, context=f"{estimator} with {lipschitz}")
    return DivergenceResult(critic, method, estimates)


@torch.no_grad()
def evaluate_divergence(estimator: str, critic: nn.Module, method: LipschitzMethod,
                        p: torch.Tensor, q: torch.Tensor) -> float:
    """The estimate of a trained critic on samples ``p``, ``q`` (e.g. large fresh ones).

    ``w1`` divides by the certified bound (``lipkit.nn.lipschitz_bound``) for construction
    methods, so that it is a lower bound on W1 between the two samples; ``w-alpha`` is not
    evaluated here (its value needs the adversarial constant: train and read the estimates).
    """
    values_p = critic_values(critic, p, estimator)
    values_q = critic_values(critic, q, estimator)
    if estimator == "w1":
        constant = lipschitz_bound(critic) if method.construction else method.lipschitz
        return float(kantorovich_rubinstein(values_p, values_q)) / constant
    if estimator == "nwj":
        return float(nguyen_wainwright_jordan(values_p, values_q))
    if estimator in ("dv", "mine", "d-lambda"):
        return float(donsker_varadhan(values_p, values_q))
    raise InvalidArgumentError(f"evaluate_divergence: estimator '{estimator}' is not evaluated "
                               f"here; choose from: d-lambda, dv, mine, nwj, w1")
