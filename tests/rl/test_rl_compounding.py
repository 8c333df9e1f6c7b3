"""Compounding error: exact W1, the theorem's bound on a linear system, and a check with teeth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from lipkit.nn import export
from lipkit.rl import (
    LinearSystem,
    collect_transitions,
    compounding_error,
    make_transition_model,
    rollout,
    state_lipschitz_bound,
    theorem_bound,
    train_transition_model,
    wasserstein1,
)

# a known linear system: a slow rotation scaled by 0.95, pushed by a 2-d action
ANGLE = 0.3
A = 0.95 * np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0.0],
                     [np.sin(ANGLE), np.cos(ANGLE), 0.0],
                     [0.0, 0.0, 0.9]])
B = np.array([[0.1, 0.0], [0.0, 0.1], [0.05, 0.05]])


@given(st.integers(1, 40), st.integers(0, 2**16))
def test_wasserstein1_in_one_dimension_is_the_sorted_matching(count, seed):
    """In 1-D the optimal coupling of two uniform samples matches them in sorted order."""
    generator = np.random.default_rng(seed)
    first, second = generator.normal(size=(count, 1)), generator.normal(1.0, 2.0, (count, 1))
    expected = np.abs(np.sort(first[:, 0]) - np.sort(second[:, 0])).mean()
    assert wasserstein1(first, second) == pytest.approx(expected, rel=1e-9, abs=1e-12)


@given(st.integers(1, 30), st.integers(1, 4), st.integers(0, 2**16))
def test_wasserstein1_equals_the_optimal_assignment(count, dimension, seed):
    """Two uniform samples of equal size: an optimal plan is a permutation (Birkhoff), so
    W1 is the optimal assignment's mean cost (scipy's Hungarian solver, an independent
    exact oracle)."""
    from scipy.optimize import linear_sum_assignment

    generator = np.random.default_rng(seed)
    first = generator.normal(size=(count, dimension))
    second = generator.normal(0.5, 1.5, size=(count, dimension))
    cost = np.linalg.norm(first[:, None] - second[None], axis=-1)
    rows, columns = linear_sum_assignment(cost)
    assert wasserstein1(first, second) == pytest.approx(cost[rows, columns].mean(), rel=1e-9)


def test_wasserstein1_is_zero_for_a_permutation_and_a_shift_costs_its_length():
    points = np.random.default_rng(0).normal(size=(50, 3))
    assert wasserstein1(points, points[::-1]) == pytest.approx(0.0, abs=1e-12)
    shift = np.array([0.3, -0.4, 1.2])
    assert wasserstein1(points, points + shift) == pytest.approx(np.linalg.norm(shift), rel=1e-9)


def _trained_linear_model(method: str, lipschitz: float, seed: int = 0):
    system = LinearSystem(A, B)
    data = collect_transitions(system, 1500, seed)
    model = make_transition_model(3, 2, method, lipschitz, hidden=32, seed=seed)
    train_transition_model(model, data, epochs=8, seed=seed)
    return system, model


@pytest.mark.parametrize("method,lipschitz", [("spectral", 1.0), ("clip", 2.0),
                                              ("orthogonal", 0.8), ("spectral", 3.0)])
def test_measured_error_never_exceeds_the_theorem_on_a_linear_system(method, lipschitz):
    """W1(T_hat^n mu, T^n mu) <= Delta sum_{i<n} K_bar^i for n = 1..25, with K_hat proven by
    construction and K = ||A||_2 known (both splits of the proof)."""
    system, model = _trained_linear_model(method, lipschitz)
    bound = state_lipschitz_bound(model)
    assert bound.value <= lipschitz * (1 + 1e-5)
    plain = export(model)
    for known in (None, system.lipschitz):
        error = compounding_error(plain, system, bound.value, horizon=25, samples=150, seed=3,
                                  environment_lipschitz=known)
        k_bar = bound.value if known is None else min(bound.value, known)
        assert error.lipschitz == pytest.approx(k_bar)
        for n, (measured, claimed) in enumerate(zip(error.wasserstein, error.bound,
                                                    strict=True), start=1):
            assert claimed == pytest.approx(error.delta * sum(k_bar**i for i in range(n)))
            assert measured <= claimed * (1 + 1e-9) + 1e-9, (method, known, n, measured, claimed)
        assert error.holds
        # the n = 1 error is a W1 of one-step predictions at mu: at most their mean, <= Delta
        assert error.wasserstein[0] <= error.mean_error[0] + 1e-9 <= error.delta + 2e-9
        assert error.delta_start <= error.delta


class _ShiftedModel(nn.Module):
    """``s -> M s + c``."""

    def __init__(self, matrix, shift):
        super().__init__()
        self.matrix = nn.Parameter(torch.as_tensor(matrix, dtype=torch.float64))
        self.shift = nn.Parameter(torch.as_tensor(shift, dtype=torch.float64))

    def forward(self, states, actions):
        return states @ self.matrix.T + self.shift


def test_the_bound_is_attained_and_a_too_small_constant_fails():
    """Not a tautology: the system 2 s and the model 2 s + c err by exactly |c| at every state
    (Delta = |c|), and the model's n-step cloud is the true one shifted by (2^n - 1) c, so
    W1 = |c| (2^n - 1) = Delta sum_{i<n} 2^i: the theorem is tight with the true K = 2, and
    a claimed K = 1 (bound n Delta) is violated from n = 2 on."""
    shift = np.array([0.03, -0.04])
    system = LinearSystem(2.0 * np.eye(2), np.zeros((2, 1)))
    model = _ShiftedModel(2.0 * np.eye(2), shift)
    honest = compounding_error(model, system, 2.0, horizon=8, samples=40, seed=0)
    assert honest.delta == pytest.approx(0.05, rel=1e-9)
    expected = [0.05 * (2**n - 1) for n in range(1, 9)]
    np.testing.assert_allclose(honest.wasserstein, expected, rtol=1e-7)
    np.testing.assert_allclose(honest.bound, expected, rtol=1e-9)
    assert honest.holds
    false = compounding_error(model, system, 1.0, horizon=8, samples=40, seed=0)
    assert not false.holds
    assert [w > b for w, b in zip(false.wasserstein, false.bound, strict=True)] == [False] + [
        True] * 7


def test_rollouts_are_reproducible_by_seed():
    system, model = _trained_linear_model("spectral", 1.0, seed=1)
    again_system, again = _trained_linear_model("spectral", 1.0, seed=1)
    starts = system.start_states(20, 5)
    actions = system.action_space.sample((6,), np.random.default_rng(5))
    first = rollout(model, system, starts, actions)
    second = rollout(again, again_system, again_system.start_states(20, 5),
                     again_system.action_space.sample((6,), np.random.default_rng(5)))
    np.testing.assert_array_equal(first.true, second.true)
    np.testing.assert_array_equal(first.model, second.model)
    other = rollout(model, system, system.start_states(20, 6), actions)
    assert not np.allclose(first.true, other.true)


def test_theorem_bound_closed_form():
    assert theorem_bound(0.5, 1.0, 7) == pytest.approx(3.5)
    assert theorem_bound(1.0, 0.5, 30) == pytest.approx(2 * (1 - 0.5**30))


@pytest.mark.parametrize("method,lipschitz", [("spectral", 1.0), ("clip", 2.0)])
def test_value_error_never_exceeds_theorem_2_on_a_linear_system(method, lipschitz):
    """|V_hat(s) - V(s)| <= K_R Delta sum_n gamma^n sum_{i<n} K^i for every start state, with
    K_R = 2 R the reward's constant on the ball holding both trajectories."""
    from lipkit.rl import value_error_bound, value_estimation_error
    from lipkit.rl.value import discounted_values

    system, model = _trained_linear_model(method, lipschitz)
    plain = export(model)
    bound = state_lipschitz_bound(model)
    starts = system.start_states(100, 5)
    actions = system.action_space.sample((15,), np.random.default_rng(6))
    rollouts = rollout(plain, system, starts, actions)
    error = compounding_error(plain, system, bound.value, rollouts=rollouts)
    radius = max(np.linalg.norm(rollouts.true, axis=-1).max(),
                 np.linalg.norm(rollouts.model, axis=-1).max())
    claimed = value_error_bound(error.delta, bound.value, system.reward_lipschitz(radius),
                                0.9, len(actions))
    per_start = np.abs(discounted_values(system, rollouts.model, actions, 0.9)
                       - discounted_values(system, rollouts.true, actions, 0.9))
    assert per_start.max() <= claimed * (1 + 1e-9), (per_start.max(), claimed)
    assert value_estimation_error(system, rollouts, 0.9).mean_absolute_error <= per_start.max()


def test_value_error_bound_tends_to_the_papers_closed_form():
    from lipkit.rl import value_error_bound

    for k in (0.0, 0.5, 1.01):  # gamma K < 1
        closed = 0.95 * 3.0 * 0.2 / ((1 - 0.95) * (1 - 0.95 * k))
        assert value_error_bound(0.2, k, 3.0, 0.95, 5000) == pytest.approx(closed, rel=1e-9)
    # three steps by hand: K_R Delta (gamma + gamma^2 (1 + K))
    assert value_error_bound(0.5, 2.0, 4.0, 0.5, 3) == pytest.approx(2.0 * (0.5 + 0.25 * 3))
