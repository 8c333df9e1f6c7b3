"""Transition models: the proven state-map bound dominates measured Jacobians; bad input."""

from __future__ import annotations

import math

import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.rl import (
    Transitions,
    make_transition_model,
    state_lipschitz_bound,
    train_transition_model,
)


def _jacobian_norms(model, states, actions):
    """Spectral norms of d s'/d s and of d s'/d(s, a) at each point (torch autograd)."""
    def whole(inputs):
        return model.network(inputs)

    inputs = torch.cat([states, actions], dim=-1)
    jacobians = torch.func.vmap(torch.func.jacrev(whole))(inputs).detach().double()
    state_part = jacobians[:, :, : states.shape[1]]
    return (torch.linalg.matrix_norm(state_part, ord=2).max().item(),
            torch.linalg.matrix_norm(jacobians, ord=2).max().item())


def _random_data(count=400, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(count, 3, generator=generator)
    actions = 2 * torch.rand(count, 1, generator=generator) - 1
    # an expanding map, so that the constraint is active after training
    next_states = 3.0 * states.flip(1) + actions
    return Transitions(states, actions, next_states)


@pytest.mark.parametrize("method", ["clip", "spectral", "orthogonal", "aol"])
@pytest.mark.parametrize("lipschitz", [0.5, 2.0])
def test_constrained_model_bound_and_jacobian_stay_below_the_constant(method, lipschitz):
    """After training towards a map with constant 3, K_hat <= K and every measured Jacobian
    norm of the state map (and of the whole map) is <= K_hat."""
    model = make_transition_model(3, 1, method, lipschitz, hidden=16, seed=1)
    train_transition_model(model, _random_data(), epochs=3, batch_size=64)
    bound = state_lipschitz_bound(model)
    assert bound.source == "construction"
    assert bound.value <= lipschitz * (1 + 1e-5), (method, bound)
    assert bound.whole_map <= lipschitz * (1 + 1e-5)
    points = _random_data(600, seed=2)
    with torch.no_grad():
        state_norm, whole_norm = _jacobian_norms(model, 4 * points.states, points.actions)
    assert state_norm <= bound.value * (1 + 1e-4), (method, state_norm, bound.value)
    assert whole_norm <= bound.whole_map * (1 + 1e-4)


def test_unconstrained_model_bound_comes_from_an_estimate_upper_bound():
    model = make_transition_model(3, 1, "none", None, hidden=16, seed=0)
    train_transition_model(model, _random_data(), epochs=3, batch_size=64)
    bound = state_lipschitz_bound(model)
    assert bound.source in ("naive", "autolip", "seqlip")
    assert math.isfinite(bound.value)
    points = _random_data(600, seed=3)
    state_norm, whole_norm = _jacobian_norms(model, 4 * points.states, points.actions)
    assert state_norm <= bound.value * (1 + 1e-4)
    assert whole_norm <= bound.whole_map * (1 + 1e-4)


def test_state_columns_bound_can_be_tighter_than_the_whole_map():
    """An action column of norm 10 inflates ||(s, a) -> s'||_L but not the state map's."""
    model = make_transition_model(2, 1, "none", None, hidden=4, depth=1, seed=0)
    with torch.no_grad():
        model.network[0].weight.zero_()
        model.network[0].weight[0, 0] = 1.0
        model.network[0].weight[1, 2] = 10.0  # the action column
        model.network[2].weight.copy_(torch.eye(2, 4))
    bound = state_lipschitz_bound(model)
    assert bound.whole_map >= 10.0 - 1e-6
    assert bound.value == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "x"])
def test_non_positive_constant_is_an_error(bad):
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        make_transition_model(3, 1, "spectral", bad)


def test_unknown_method_names_the_choices():
    with pytest.raises(InvalidArgumentError, match=r"unknown method 'foo'.*spectral"):
        make_transition_model(3, 1, "foo", 1.0)


def test_nan_in_training_names_the_epoch():
    data = _random_data(64)
    data.next_states[5, 0] = math.nan
    model = make_transition_model(3, 1, "spectral", 1.0, hidden=8)
    from lipkit.training import TrainingDivergedError

    with pytest.raises(TrainingDivergedError, match="epoch 1: the transition model loss"):
        train_transition_model(model, data, epochs=2)


def test_clip_value_models_keep_every_weight_in_the_box_and_bound_what_it_implies():
    import torch

    from lipkit.nn import lipschitz_bound
    from lipkit.rl import make_transition_model, state_lipschitz_bound

    model = make_transition_model(3, 1, "clip-value", 0.05, hidden=32, seed=1)
    linears = [m for m in model.network if isinstance(m, torch.nn.Linear)]
    assert all(m.weight.abs().max().item() <= 0.05 * (1 + 1e-6) for m in linears)  # float32
    # the product of the layers' spectral norms bounds the map; each is <= c sqrt(m n)
    product = 1.0
    for m in linears:
        product *= float(torch.linalg.matrix_norm(m.weight.detach().double(), ord=2))
    bound = state_lipschitz_bound(model)
    assert bound.source == "construction"
    assert bound.whole_map <= lipschitz_bound(model.network) * (1 + 1e-6)
    assert bound.value <= product * (1 + 1e-5)
