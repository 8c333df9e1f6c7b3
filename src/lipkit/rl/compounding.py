"""Compounding error of a Lipschitz model against the theorem (Asadi, Misra & Littman, 2018).

Theorem 1 of the paper: if ``W(T_hat(.|s), T(.|s)) <= Delta`` for every state ``s`` and the
state maps are ``K_hat``- and ``K``-Lipschitz, then for every start distribution ``mu``

    delta(n) = W(T_hat^n mu, T^n mu) <= Delta * sum_{i<n} K_bar^i,  K_bar = min(K_hat, K).

The proof needs less than every state: splitting
``W(T_hat T_hat^{n-1} mu, T T^{n-1} mu) <= W(T_hat T_hat^{n-1} mu, T_hat T^{n-1} mu)
+ W(T_hat T^{n-1} mu, T T^{n-1} mu) <= K_hat delta(n-1) + Delta`` only uses ``Delta`` on the
support of the true distributions ``T^k mu``, k < n (and the other split, with ``K``, on the
model's ``T_hat^k mu``).

How it is measured here, so that the inequality is the theorem itself and not a statistical
statement that could fail by chance: ``mu`` is the empirical distribution of N start states;
the environment and model are deterministic and every state receives the same open-loop
action ``a_k`` at step k (the theorem for a fixed action, step by step), so ``T^n mu`` and
``T_hat^n mu`` are exactly the N rolled-out points, and their W1 is computed exactly (POT's
network simplex, Euclidean cost). ``Delta`` is the worst one-step error
``||f_hat(s, a_k) - f(s, a_k)||`` (the W1 of two Diracs) over every true state ``s`` reached
at steps ``k < H``, and over the model's states too when the environment's constant is given.
Measuring ``Delta`` at the start states only, or W1 between independent samples, would not
be covered by the theorem (nothing bounds ``Delta`` off the sample, and two samples of one
distribution are at positive W1): such a check could fail spuriously. A violation here
means the constant ``K_hat`` is not an upper bound, or a bug.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


def wasserstein1(first: np.ndarray, second: np.ndarray,
                 first_weights: np.ndarray | None = None) -> float:
    """Exact W1 between two empirical distributions (Euclidean cost, POT's EMD): uniform, or
    ``first`` weighted by ``first_weights`` (normalized here).

    Example:
        >>> import numpy as np
        >>> round(wasserstein1(np.zeros((3, 2)), np.ones((3, 2))), 6)  # a shift by (1, 1)
        1.414214
    """
    import ot
    from scipy.spatial.distance import cdist

    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    # cdist takes each difference's norm directly; the |x|^2 + |y|^2 - 2 x.y expansion
    # (ot.dist) loses ~1e-8 to cancellation
    cost = cdist(first, second, metric="euclidean")
    if first_weights is None:
        weights_a = np.full(len(first), 1.0 / len(first))
    else:
        weights_a = np.asarray(first_weights, dtype=np.float64)
        weights_a = weights_a / weights_a.sum()
    weights_b = np.full(len(second), 1.0 / len(second))
    return float(ot.emd2(weights_a, weights_b, cost, numItermax=5_000_000))


def theorem_bound(delta: float, lipschitz: float, steps: int) -> float:
    """``Delta * sum_{i<n} K^i`` (the paper's Theorem 1), for ``n = steps``.

    Example:
        >>> theorem_bound(0.1, 2.0, 3)  # 0.1 * (1 + 2 + 4)
        0.7000000000000001
    """
    return delta * sum(lipschitz**i for i in range(steps))


@torch.no_grad()
def model_step(model, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The model's next states for a batch (float64 numpy in and out)."""
    parameter = next(model.parameters(), None)  # a model without parameters: float64
    dtype = parameter.dtype if parameter is not None else torch.float64
    prediction = model(torch.as_tensor(states, dtype=dtype), torch.as_tensor(actions, dtype=dtype))
    return prediction.double().numpy()


@dataclass
class Rollouts:
    """True and model states, ``(H + 1, N, d)``, from the same starts under the same actions."""

    true: np.ndarray
    model: np.ndarray
    actions: np.ndarray  # (H, k): the open-loop action of each step, shared by all starts


def rollout(model, environment, starts: np.ndarray, actions: np.ndarray) -> Rollouts:
    """Roll the environment and the model out from ``starts`` under open-loop ``actions``."""
    true, predicted = [np.asarray(starts, dtype=np.float64)], [np.asarray(starts, np.float64)]
    for action in actions:
        batch = np.repeat(action[None], len(starts), axis=0)
        true.append(environment.step(true[-1], batch))
        predicted.append(model_step(model, predicted[-1], batch))
    return Rollouts(np.stack(true), np.stack(predicted), np.asarray(actions))


@dataclass
class CompoundingError:
    """``delta(n)`` measured and the theorem's bound, n = 1..H (index n - 1)."""

    wasserstein: list[float]
    bound: list[float]
    delta: float                   # worst one-step error over the states the theorem uses
    delta_start: float             # worst one-step error at the start states alone
    model_lipschitz: float         # K_hat: a proven bound on the model's state map
    environment_lipschitz: float | None
    lipschitz: float               # K_bar used in the bound
    mean_error: list[float] = field(default_factory=list)  # per-trajectory mean ||s_hat - s||

    @property
    def holds(self) -> bool:
        """Whether every measured W1 is within the bound (up to float rounding)."""
        return all(w <= b * (1 + 1e-9) + 1e-9 for w, b in zip(self.wasserstein, self.bound,
                                                                strict=True))

    @property
    def holds_with_start_delta(self) -> bool:
        """The same check with ``Delta`` measured at the start states only: NOT the theorem
        (nothing bounds the error at the states reached later); reported to show that such
        a check can fail where the theorem holds."""
        return all(w <= theorem_bound(self.delta_start, self.lipschitz, n) * (1 + 1e-9) + 1e-9
                   for n, w in enumerate(self.wasserstein, start=1))

    def to_dict(self) -> dict:
        return {
            "holds_with_start_delta": self.holds_with_start_delta,
            "wasserstein": self.wasserstein, "bound": self.bound, "delta": self.delta,
            "delta_start": self.delta_start, "model_lipschitz": self.model_lipschitz,
            "environment_lipschitz": self.environment_lipschitz, "lipschitz": self.lipschitz,
            "mean_error": self.mean_error, "holds": self.holds,
        }


def compounding_error(model, environment, model_lipschitz: float, horizon: int = 20,
                      samples: int = 200, seed: int = 0,
                      environment_lipschitz: float | None = None,
                      rollouts: Rollouts | None = None) -> CompoundingError:
    """Measure ``W1(T_hat^n mu, T^n mu)`` for n = 1..``horizon`` next to the theorem's bound.

    Args:
        model: a transition model ``model(states, actions)``.
        environment: an :class:`~lipkit.rl.environment.Environment`.
        model_lipschitz: a proven upper bound ``K_hat`` on the model's state map.
        samples: N, the size of the empirical start distribution (drawn from ``mu`` by seed).
        environment_lipschitz: the true state map's constant ``K``, when known: then
            ``K_bar = min(K_hat, K)`` and ``Delta`` also covers the model's states.
        rollouts: reuse rollouts already computed (else drawn from ``seed``).
    """
    if rollouts is None:
        starts = environment.start_states(samples, seed)
        generator = np.random.default_rng(seed + 1)
        actions = environment.action_space.sample((horizon,), generator)
        rollouts = rollout(model, environment, starts, actions)
    true, predicted, actions = rollouts.true, rollouts.model, rollouts.actions
    horizon = len(actions)

    def one_step_errors(states: np.ndarray) -> np.ndarray:  # (H, N) errors at given states
        rows = []
        for step, action in enumerate(actions):
            batch = np.repeat(action[None], len(states[step]), axis=0)
            rows.append(np.linalg.norm(model_step(model, states[step], batch)
                                       - environment.step(states[step], batch), axis=1))
        return np.stack(rows)

    on_true = one_step_errors(true[:-1])  # row k: the states of T^k mu, k < H
    delta = float(on_true.max())
    lipschitz = model_lipschitz
    if environment_lipschitz is not None:
        delta = max(delta, float(one_step_errors(predicted[:-1]).max()))
        lipschitz = min(model_lipschitz, environment_lipschitz)
    wasserstein = [wasserstein1(predicted[n], true[n]) for n in range(1, horizon + 1)]
    bound = [theorem_bound(delta, lipschitz, n) for n in range(1, horizon + 1)]
    mean_error = [float(np.linalg.norm(predicted[n] - true[n], axis=1).mean())
                  for n in range(1, horizon + 1)]
    return CompoundingError(wasserstein, bound, delta, float(on_true[0].max()),
                            model_lipschitz, environment_lipschitz, lipschitz, mean_error)
