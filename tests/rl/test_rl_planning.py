"""Planning: MPC beats random actions on Pendulum-v1; episodes reproducible; termination."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn import export
from lipkit.rl import (
    Planner,
    collect_transitions,
    make_environment,
    make_transition_model,
    run_episode,
    train_transition_model,
)
from lipkit.rl.planning import sequence_returns
from lipkit.rl.value import value_estimation_error


@pytest.fixture(scope="module")
def pendulum_model():
    environment = make_environment("Pendulum-v1")
    data = collect_transitions(environment, 5000, 0)
    model = make_transition_model(3, 1, "spectral", 4.0, hidden=64, seed=0)
    train_transition_model(model, data, epochs=20)  # one-step loss ~0.002
    return environment, export(model)


def test_cem_planning_on_pendulum_beats_random_actions(pendulum_model):
    environment, model = pendulum_model
    planner = Planner(model, environment, "cem", horizon=25, candidates=150, elites=15,
                      iterations=3, seed=0)
    seeds = (1, 2)
    planned = [run_episode(environment, planner, s, 150)["return"] for s in seeds]
    random = [run_episode(environment, None, s, 150)["return"] for s in seeds]
    assert np.mean(planned) > np.mean(random) + 200, (planned, random)


def test_episodes_are_reproducible_by_seed(pendulum_model):
    environment, model = pendulum_model
    runs = []
    for _ in range(2):
        planner = Planner(model, environment, "random-shooting", horizon=5, candidates=20,
                          seed=3)
        runs.append(run_episode(environment, planner, 9, 20))
    assert runs[0] == runs[1]
    other = run_episode(environment, Planner(model, environment, "random-shooting", horizon=5,
                                             candidates=20, seed=4), 9, 20)
    assert other["return"] != runs[0]["return"]
    assert run_episode(environment, None, 5, 30) == run_episode(environment, None, 5, 30)
    data = collect_transitions(environment, 50, 2), collect_transitions(environment, 50, 2)
    assert torch.equal(data[0].next_states, data[1].next_states)


class _Falling(nn.Module):
    """A CartPole 'model' whose pole falls 0.3 rad at every step."""

    def forward(self, states, actions):
        return states + torch.tensor([0.0, 0.0, 0.3, 0.0])


def test_cartpole_returns_stop_at_the_predicted_termination():
    """The pole passes 12 degrees (0.209 rad) after the first step: every sequence scores
    exactly 1 (the terminating step counts, as in gymnasium), whatever its length."""
    environment = make_environment("CartPole-v1")
    sequences = 2.0 * torch.randint(0, 2, (7, 10, 1)).float() - 1
    returns = sequence_returns(_Falling(), environment, torch.zeros(4), sequences)
    assert returns.tolist() == [1.0] * 7
    planner = Planner(_Falling(), environment, "cem", horizon=6, candidates=10, elites=2,
                      iterations=2)
    action = planner(np.zeros(4))
    assert action.shape == (1,) and abs(float(action[0])) == 1.0


def test_value_error_of_a_perfect_cartpole_model_is_zero_and_counts_termination():
    from lipkit.rl.compounding import rollout

    environment = make_environment("CartPole-v1")

    class Perfect(nn.Module):
        def forward(self, states, actions):
            return torch.as_tensor(environment.step(states.double().numpy(),
                                                    actions.double().numpy()))

    starts = environment.start_states(10, 0)
    actions = np.ones((60, 1))  # always push right: the episode terminates within 60 steps
    rollouts = rollout(Perfect(), environment, starts, actions)
    error = value_estimation_error(environment, rollouts, discount=1.0)
    assert error.mean_absolute_error == 0.0
    assert 1.0 <= error.mean_absolute_value < 60.0  # terminated: fewer than 60 rewards


def test_bad_planner_arguments():
    environment = make_environment("Pendulum-v1")
    with pytest.raises(InvalidArgumentError, match="unknown planner 'mppi'"):
        Planner(nn.Identity(), environment, "mppi")
    with pytest.raises(InvalidArgumentError, match="elites"):
        Planner(nn.Identity(), environment, "cem", candidates=5, elites=10)
