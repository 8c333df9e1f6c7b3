"""Value-estimation error of a transition model (Asadi, Misra & Littman, 2018, value bounds).

The value of an open-loop action sequence ``a_0..a_{H-1}`` from a start state ``s`` is
``V(s) = sum_{t<H} gamma^t alive_t r(s_t, a_t)`` (``alive_t`` is 0 after the first terminal
state); the model's estimate ``V_hat(s)`` is the same sum along the model's rollout with the
same known reward. The error reported is ``mean_s |V_hat(s) - V(s)|`` over the start
states, next to ``mean_s |V(s)|`` for scale.

:func:`value_bound_check` checks the paper's Theorem 2 start state by start state: the values
are taken with the environment's Lipschitz reward (equal to its reward on the states it can
be in, :meth:`~lipkit.rl.environment.Environment.lipschitz_reward`), whose constant ``K_R``
is proven on a convex set holding both trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def discounted_values(environment, states: np.ndarray, actions: np.ndarray,
                      discount: float, lipschitz_reward: bool = False) -> np.ndarray:
    """``V(s)`` of each trajectory in ``states`` ``(H + 1, N, d)`` under ``actions`` ``(H, k)``;
    ``lipschitz_reward``: with the environment's Lipschitz reward (which has no termination)."""
    states = torch.as_tensor(states, dtype=torch.float64)
    values = torch.zeros(states.shape[1], dtype=torch.float64)
    alive = torch.ones(states.shape[1], dtype=torch.bool)
    reward_of = environment.lipschitz_reward if lipschitz_reward else environment.reward
    for step, action in enumerate(torch.as_tensor(actions, dtype=torch.float64)):
        reward = reward_of(states[step], action.expand(states.shape[1], -1))
        values += discount**step * alive * reward
        if not lipschitz_reward:
            alive &= ~environment.terminated(states[step + 1])
    return values.numpy()


@dataclass
class ValueEstimationError:
    """Mean absolute value error and the mean absolute true value (for scale)."""

    mean_absolute_error: float
    mean_absolute_value: float
    discount: float

    def to_dict(self) -> dict:
        return {"mean_absolute_error": self.mean_absolute_error,
                "mean_absolute_value": self.mean_absolute_value, "discount": self.discount}


def value_estimation_error(environment, rollouts, discount: float = 0.99) -> ValueEstimationError:
    """``mean_s |V_hat(s) - V(s)|`` from :class:`~lipkit.rl.compounding.Rollouts`.

    Example:
        >>> import numpy as np
        >>> from lipkit.rl.compounding import Rollouts
        >>> from lipkit.rl.environment import LinearSystem
        >>> system = LinearSystem(np.eye(1), np.eye(1))
        >>> true = np.ones((3, 2, 1)); model = 2 * np.ones((3, 2, 1))
        >>> error = value_estimation_error(system, Rollouts(true, model, np.zeros((2, 1))), 0.5)
        >>> error.mean_absolute_error  # rewards -1 vs -4, twice: 3 + 0.5 * 3
        4.5
    """
    true = discounted_values(environment, rollouts.true, rollouts.actions, discount)
    predicted = discounted_values(environment, rollouts.model, rollouts.actions, discount)
    return ValueEstimationError(float(np.abs(predicted - true).mean()), float(np.abs(true).mean()),
                       discount)


def value_error_bound(delta: float, lipschitz: float, reward_lipschitz: float,
                      discount: float, horizon: int) -> float:
    """The paper's Theorem 2 for the ``horizon``-step open-loop values measured here:
    ``K_R Delta sum_{1 <= n < H} gamma^n sum_{i<n} K^i``.

    Each trajectory's error is at most ``sum_n gamma^n K_R ||s_hat_n - s_n||`` (``K_R``: the
    reward's constant in the state on a set holding both trajectories) and
    ``||s_hat_n - s_n|| <= Delta sum_{i<n} K^i`` by Theorem 1's induction, sample by sample.
    For ``gamma K < 1`` and ``H -> infinity`` the sum is the paper's closed form
    ``gamma K_R Delta / ((1 - gamma)(1 - gamma K))``.

    Example:
        >>> round(value_error_bound(0.1, 0.5, 2.0, 0.9, 400), 6)  # 0.9*2*0.1/(0.1*0.55)
        3.272727
    """
    total, partial = 0.0, 0.0  # partial = sum_{i<n} K^i
    for n in range(1, horizon):
        partial += lipschitz ** (n - 1)
        total += discount**n * partial
    return reward_lipschitz * delta * total


@dataclass
class ValueBoundCheck:
    """Theorem 2 checked per start state: the largest and mean ``|V_hat(s) - V(s)|`` under
    the Lipschitz reward, the bound with ``K_R`` proven on both trajectories, and whether
    every start state is within it (up to float rounding)."""

    max_error: float
    mean_error: float
    bound: float
    reward_lipschitz: float
    holds: bool

    def to_dict(self) -> dict:
        return {"max_error": self.max_error, "mean_error": self.mean_error,
                "bound": self.bound, "reward_lipschitz": self.reward_lipschitz,
                "holds": self.holds}


def value_bound_check(environment, rollouts, delta: float, lipschitz: float,
                      discount: float = 0.99) -> ValueBoundCheck:
    """Check ``|V_hat(s) - V(s)| <= value_error_bound(Delta, K, K_R, gamma, H)`` for every
    start state of ``rollouts`` (:class:`~lipkit.rl.compounding.Rollouts`), with ``Delta``
    the worst one-step error over the true states (``CompoundingError.delta``), ``K`` a
    proven bound on the model's state map and ``K_R`` the Lipschitz reward's constant on a
    set holding both trajectories. Raises (naming the reason) for an environment without a
    Lipschitz reward.

    Example:
        >>> from lipkit.rl.compounding import Rollouts
        >>> from lipkit.rl.environment import LinearSystem
        >>> system = LinearSystem(np.eye(1), np.eye(1))
        >>> true = np.ones((3, 1, 1)); model = true + np.array([0, 0.1, 0.2])[:, None, None]
        >>> check = value_bound_check(system, Rollouts(true, model, np.zeros((2, 1))), 0.1,
        ...                           1.0, 0.5)  # K_R = 2 * 1.1: the rewarded states' ball
        >>> round(check.max_error, 6), round(check.bound, 6), check.holds
        (0.105, 0.11, True)
    """
    # the rewards are taken at steps 0 .. H - 1: the last states play no part
    states = np.concatenate([rollouts.true[:-1], rollouts.model[:-1]], axis=1)
    reward_lipschitz = environment.reward_lipschitz_on(states)
    true = discounted_values(environment, rollouts.true, rollouts.actions, discount, True)
    predicted = discounted_values(environment, rollouts.model, rollouts.actions, discount, True)
    errors = np.abs(predicted - true)
    bound = value_error_bound(delta, lipschitz, reward_lipschitz, discount, len(rollouts.actions))
    holds = bool((errors <= bound * (1 + 1e-9) + 1e-9).all())
    return ValueBoundCheck(float(errors.max()), float(errors.mean()), float(bound),
                           float(reward_lipschitz), holds)
