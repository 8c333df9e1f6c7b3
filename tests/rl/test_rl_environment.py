"""The environments: gymnasium's own dynamics, reproducible starts, termination, bad ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.rl import LinearSystem, make_environment
from lipkit.rl.environment import CartPole


@pytest.mark.parametrize("name", ["Pendulum-v1", "CartPole-v1"])
def test_batched_step_is_gymnasiums_own_trajectory(name):
    """Stepping the batch API from an episode's observations reproduces gymnasium's episode
    (to the float32 rounding of its observations)."""
    environment = make_environment(name)
    env = environment.make()
    observation, _ = env.reset(seed=4)
    generator = np.random.default_rng(4)
    for _ in range(15):
        action = environment.action_space.sample((1,), generator)
        predicted = environment.step(np.asarray(observation, np.float64)[None], action)[0]
        observation, _, terminated, _, _ = env.step(environment.gym_action(action[0]))
        np.testing.assert_allclose(predicted, observation, atol=2e-5, rtol=1e-5)
        if terminated:
            break
    env.close()


def test_start_states_are_reproducible_and_follow_reset():
    pendulum = make_environment("Pendulum-v1")
    first, again = pendulum.start_states(100, 7), pendulum.start_states(100, 7)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, pendulum.start_states(100, 8))
    np.testing.assert_allclose(first[:, 0] ** 2 + first[:, 1] ** 2, 1.0, rtol=1e-12)
    assert np.abs(first[:, 2]).max() <= 1.0
    cartpole = make_environment("CartPole-v1").start_states(100, 0)
    assert np.abs(cartpole).max() <= 0.05


def test_cartpole_termination_and_physics_beyond_it():
    """Termination is a property of the state; the physics goes on (no episode state leaks)."""
    environment = make_environment("CartPole-v1")
    states = torch.tensor([[0.0, 0, 0, 0], [2.5, 0, 0, 0], [0, 0, -0.25, 0], [0, 0, 0.2, 0]])
    assert environment.terminated(states).tolist() == [False, True, True, False]
    fallen = np.array([[0.0, 0.0, 0.5, 0.0]])
    first = environment.step(fallen, np.array([[-1.0]]))
    second = environment.step(fallen, np.array([[-1.0]]))
    np.testing.assert_array_equal(first, second)
    assert first[0, 3] > 0  # gravity and a push left keep turning the fallen pole
    assert environment.gym_action(np.array([-1.0])) == 0
    assert environment.gym_action(np.array([1.0])) == 1
    assert isinstance(environment, CartPole)


def test_pendulum_reward_is_gymnasiums():
    environment = make_environment("Pendulum-v1")
    env = environment.make()
    observation, _ = env.reset(seed=1)
    _, reward, _, _, _ = env.step(np.array([1.5], dtype=np.float32))
    ours = environment.reward(torch.as_tensor(observation, dtype=torch.float64)[None],
                              torch.tensor([[1.5]], dtype=torch.float64))
    assert float(ours[0]) == pytest.approx(reward, rel=1e-5)
    env.close()


def test_linear_system_constant_and_bad_shapes():
    system = LinearSystem(np.diag([3.0, -0.5]), np.ones((2, 1)))
    assert system.lipschitz == pytest.approx(3.0)
    np.testing.assert_allclose(system.step(np.array([[1.0, 2.0]]), np.array([[0.5]])),
                               [[3.5, -0.5]])
    with pytest.raises(InvalidArgumentError, match="square A"):
        LinearSystem(np.ones((2, 3)), np.ones((2, 1)))


def test_unknown_environment_is_an_error_naming_the_choices():
    with pytest.raises(InvalidArgumentError, match=r"unknown environment 'MountainCar-v0'.*"
                                                   r"Pendulum-v1"):
        make_environment("MountainCar-v0")
    assert math.isfinite(make_environment("CartPole-v1").theta_threshold)
