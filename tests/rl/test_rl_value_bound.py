"""Theorem 2 of Asadi et al. (value error) on Pendulum-v1: the Lipschitz reward that agrees
with the environment's reward on its states, its proven constant against autograd and
against pairs of points, and the check on a trained model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.nn import export
from lipkit.rl import (
    collect_transitions,
    compounding_error,
    make_transition_model,
    rollout,
    state_lipschitz_bound,
    train_transition_model,
    value_bound_check,
    value_error_bound,
)
from lipkit.rl.environment import CartPole, Pendulum
from lipkit.rl.value import discounted_values


@pytest.fixture(scope="module")
def pendulum():
    return Pendulum()


def _cylinder(count: int, radius: float, speed: float, seed: int) -> torch.Tensor:
    """Points of the cylinder rho <= radius, |theta_dot| <= speed, many of them near the
    (cos, sin) plane's origin and near the branch cut theta = +-pi."""
    generator = np.random.default_rng(seed)
    rho = radius * np.concatenate([generator.uniform(0, 1, count // 2),
                                   generator.uniform(0, 1e-3, count // 4),
                                   generator.uniform(0.9, 1, count - count // 2 - count // 4)])
    theta = generator.uniform(-math.pi, math.pi, count)
    theta[: count // 4] = np.pi - generator.uniform(0, 1e-6, count // 4) * np.sign(
        generator.uniform(-1, 1, count // 4))
    speeds = generator.uniform(-speed, speed, count)
    return torch.tensor(np.stack([rho * np.cos(theta), rho * np.sin(theta), speeds], 1))


def test_the_lipschitz_reward_is_the_reward_on_the_environments_states(pendulum):
    generator = np.random.default_rng(0)
    theta = generator.uniform(-math.pi, math.pi, 500)
    states = torch.tensor(np.stack([np.cos(theta), np.sin(theta),
                                    generator.uniform(-8, 8, 500)], 1))
    actions = torch.tensor(generator.uniform(-2, 2, (500, 1)))
    expected = -(torch.tensor(theta) ** 2 + 0.1 * states[:, 2] ** 2 + 0.001 * actions[:, 0] ** 2)
    torch.testing.assert_close(pendulum.lipschitz_reward(states, actions), expected,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(pendulum.reward(states, actions), expected, rtol=1e-12,
                               atol=1e-12)


def test_the_proven_constant_bounds_autograd_gradients_and_pairs(pendulum):
    points = _cylinder(4000, 1.7, 9.0, 1)
    constant = pendulum.reward_lipschitz_on(points.numpy())
    assert constant == pytest.approx(math.hypot(2 * math.pi * 1.7 * math.sqrt(math.pi**2 + 1),
                                                0.2 * 9.0), rel=1e-3)
    states = points.clone().requires_grad_(True)
    actions = torch.zeros(len(points), 1, dtype=torch.float64)
    pendulum.lipschitz_reward(states, actions).sum().backward()
    gradients = states.grad.norm(dim=1)
    assert torch.isfinite(gradients).all()
    assert gradients.max() <= constant
    assert gradients.max() >= 0.5 * constant  # the bound is not loose by much
    # pairs straddling the branch cut and pairs around the origin
    rng = np.random.default_rng(2)
    for _ in range(2000):
        x = points[rng.integers(len(points))]
        y = x + torch.tensor(rng.normal(size=3) * rng.choice([1e-7, 1e-3, 0.3]))
        y[:2] *= min(1.0, 1.7 / float(y[:2].norm()))
        y[2] = y[2].clamp(-9, 9)
        pair = torch.stack([x, y])
        values = pendulum.lipschitz_reward(pair, torch.zeros(2, 1, dtype=torch.float64))
        assert abs(float(values[0] - values[1])) <= constant * float((x - y).norm()) + 1e-12
    # the environment's own reward is not Lipschitz there: near the origin it jumps
    pair = torch.tensor([[-1e-6, 1e-9, 0.0], [1e-6, 1e-9, 0.0]], dtype=torch.float64)
    jump = pendulum.reward(pair, torch.zeros(2, 1, dtype=torch.float64))
    assert abs(float(jump[0] - jump[1])) > 1e3 * constant * 2e-6


def test_theorem_2_holds_start_state_by_start_state_on_pendulum(pendulum):
    data = collect_transitions(pendulum, 1500, 0)
    for method, lipschitz in (("spectral", 0.5), ("spectral", 2.0)):
        model = make_transition_model(3, 1, method, lipschitz, hidden=32, seed=0)
        train_transition_model(model, data, epochs=4, seed=0)
        plain = export(model)
        bound = state_lipschitz_bound(model)
        starts = pendulum.start_states(60, 3)
        actions = pendulum.action_space.sample((12,), np.random.default_rng(4))
        rollouts = rollout(plain, pendulum, starts, actions)
        error = compounding_error(plain, pendulum, bound.value, rollouts=rollouts)
        check = value_bound_check(pendulum, rollouts, error.delta, error.lipschitz, 0.95)
        assert check.holds, (method, lipschitz, check)
        assert check.max_error <= check.bound
        assert check.bound == pytest.approx(value_error_bound(
            error.delta, error.lipschitz, check.reward_lipschitz, 0.95, 12))
        # the true values are the environment's own (its states lie on the circle)
        np.testing.assert_allclose(
            discounted_values(pendulum, rollouts.true, actions, 0.95, lipschitz_reward=True),
            discounted_values(pendulum, rollouts.true, actions, 0.95), rtol=1e-9)
        # and the errors are real: the model is not the environment
        assert check.max_error > 1e-3


def test_environments_without_a_lipschitz_reward_say_why():
    cartpole = CartPole()
    states = np.zeros((2, 1, 4))
    with pytest.raises(InvalidArgumentError, match="CartPole-v1: its reward is 1 per step"):
        cartpole.reward_lipschitz_on(states)
    with pytest.raises(InvalidArgumentError, match="termination"):
        cartpole.lipschitz_reward(torch.zeros(1, 4), torch.zeros(1, 1))
