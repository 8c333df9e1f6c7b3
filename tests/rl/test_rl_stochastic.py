"""The EM-trained mixture of Lipschitz maps (lipkit.rl.stochastic): it recovers a known
two-map environment, its kernel's W1 constant is bounded by its components' (exact optimal
transport as the oracle), and bad input is refused."""

import math

import numpy as np
import ot
import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.rl import (
    Transitions,
    fit_mixture_em,
    make_mixture_model,
    mixture_lipschitz_bound,
    state_lipschitz_bound,
)
from lipkit.training import TrainingDivergedError

A1 = torch.tensor([[0.5, 0.0], [0.0, 0.5]])
ANGLE = 0.6
A2 = 0.8 * torch.tensor([[math.cos(ANGLE), -math.sin(ANGLE)], [math.sin(ANGLE), math.cos(ANGLE)]])


def two_map_data(count=2000, p=0.3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.rand(count, 2, generator=generator) * 2 - 1
    actions = torch.zeros(count, 1)
    first = torch.rand(count, generator=generator) < p
    nexts = torch.where(first[:, None], states @ A1.T, states @ A2.T)
    return Transitions(states, actions, nexts), first


def test_em_recovers_a_known_mixture_and_its_kernel_is_k_lipschitz_in_w1():
    data, first = two_map_data()
    model = make_mixture_model(2, 1, components=2, method="spectral", lipschitz=1.0,
                               hidden=32, seed=0)
    history = fit_mixture_em(model, data, iterations=12, epochs=4, seed=0)
    # the likelihood rises overall (generalized EM with stochastic M-steps: not monotone)
    assert history.log_likelihood[-1] > history.log_likelihood[0]
    with torch.no_grad():
        means = model.means(data.states, data.actions)  # (2, n, 2)
    truths = torch.stack([data.states @ A1.T, data.states @ A2.T])
    # match components to maps by mean error, then check weights and fits
    cost = torch.tensor([[float(((means[i] - truths[j]) ** 2).sum(-1).sqrt().mean())
                          for j in range(2)] for i in range(2)])
    match = (0, 1) if cost[0, 0] + cost[1, 1] <= cost[0, 1] + cost[1, 0] else (1, 0)
    assert max(cost[0, match[0]], cost[1, match[1]]) < 0.05, cost
    weights = model.weights.tolist()
    assert abs(weights[match.index(0)] - float(first.float().mean())) < 0.05, weights
    bound = mixture_lipschitz_bound(model)
    assert bound <= 1.0 + 1e-6
    assert bound == max(state_lipschitz_bound(f).value for f in model.components)
    # the kernel's W1 constant: exact W1 between the two mixtures at random state pairs
    generator = torch.Generator().manual_seed(1)
    p = model.weights.double().numpy()
    for _ in range(50):
        pair = torch.rand(2, 2, generator=generator) * 4 - 2
        with torch.no_grad():
            support = model.means(pair, torch.zeros(2, 1)).double().numpy()  # (2 comps, 2, 2)
        cost = np.linalg.norm(support[:, 0][:, None] - support[:, 1][None], axis=-1)
        w1 = ot.emd2(p, p, cost)
        assert w1 <= bound * float((pair[0] - pair[1]).norm()) * (1 + 1e-5) + 1e-7


def test_samples_follow_the_weights_and_the_mean_is_the_weighted_mean():
    model = make_mixture_model(3, 1, components=3, method="clip", lipschitz=0.5, seed=4)
    model.weights.copy_(torch.tensor([0.2, 0.5, 0.3]))
    states = torch.zeros(20_000, 3)
    actions = torch.zeros(20_000, 1)
    with torch.no_grad():
        means = model.means(states[:1], actions[:1])[:, 0]
        drawn = model.sample(states, actions, torch.Generator().manual_seed(0))
        mean = model(states[:1], actions[:1])[0]
    counts = [(drawn == means[i]).all(-1).float().mean().item() for i in range(3)]
    assert np.allclose(counts, [0.2, 0.5, 0.3], atol=0.02), counts
    assert torch.allclose(mean, (model.weights[:, None] * means).sum(0), atol=1e-6)
    assert set(model.state_dict()) >= {"weights", "noise_variance"}


def test_bad_input_is_refused():
    with pytest.raises(InvalidArgumentError, match="components"):
        make_mixture_model(2, 1, components=0)
    model = make_mixture_model(2, 1, components=2)
    empty = Transitions(torch.zeros(0, 2), torch.zeros(0, 1), torch.zeros(0, 2))
    with pytest.raises(InvalidArgumentError, match="at least one transition"):
        fit_mixture_em(model, empty)
    with pytest.raises(InvalidArgumentError, match="iterations"):
        fit_mixture_em(model, two_map_data(20)[0], iterations=0)
    data, _ = two_map_data(64)
    data.next_states[5, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="EM iteration"):
        fit_mixture_em(model, data, iterations=3, epochs=1)


class _Shifted(torch.nn.Module):
    """``s -> a s + c`` (a component with a known map)."""

    state_dimension = 2
    action_dimension = 1

    def __init__(self, scale, shift):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(float(scale), dtype=torch.float64))
        self.shift = torch.nn.Parameter(torch.tensor(shift, dtype=torch.float64))

    def forward(self, states, actions):
        return self.scale * states + self.shift


def _expected_distance(scale, shifts, weights, steps):
    """E ||sum_k scale^(n-1-k) c_(I_k)|| over every sequence of components, by enumeration."""
    import itertools

    total = 0.0
    for sequence in itertools.product(range(len(shifts)), repeat=steps):
        offset = sum(scale ** (steps - 1 - k) * np.asarray(shifts[i])
                     for k, i in enumerate(sequence))
        total += math.prod(weights[i] for i in sequence) * float(np.linalg.norm(offset))
    return total


def test_theorem_1_for_a_mixture_is_exact_over_the_component_sequences():
    """Environment s -> 0.9 s; model 0.9 s + c_i with probabilities p: the n-step error is
    sum_k 0.9^(n-1-k) c_(I_k) whatever the start state, so its expectation is known by
    enumeration; far-apart start states make the synchronous coupling optimal, so the exact
    W1 equals it. Delta = sum_i p_i |c_i|, K = 0.9."""
    from lipkit.rl import LinearSystem, MixtureTransitionModel, mixture_compounding_error

    shifts, weights = [(0.1, 0.0), (0.0, -0.2)], [0.3, 0.7]
    model = MixtureTransitionModel([_Shifted(0.9, c) for c in shifts])
    model.weights.copy_(torch.tensor(weights))
    system = LinearSystem(0.9 * np.eye(2), np.zeros((2, 1)))
    starts = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    result = mixture_compounding_error(model, system, starts, np.zeros((9, 1)), 0.9,
                                       max_paths=256, max_atoms=1000)
    assert len(result.expected_error) == 8  # 2^8 = 256 paths
    assert result.delta == pytest.approx(0.3 * 0.1 + 0.7 * 0.2, rel=1e-6)  # float32 p
    for n, (expected, w1, bound) in enumerate(zip(result.expected_error, result.wasserstein,
                                                  result.bound, strict=True), start=1):
        assert expected == pytest.approx(_expected_distance(0.9, shifts, weights, n), rel=1e-6)
        assert bound == pytest.approx(result.delta * sum(0.9**i for i in range(n)))
        if n <= 8 and 2**n * 3 <= 1000:
            assert w1 == pytest.approx(expected, rel=1e-7, abs=1e-9)
        else:
            assert w1 is None
    assert result.holds


def test_the_mixture_bound_is_tight_for_aligned_shifts_and_fails_with_a_false_constant():
    """Both shifts along one direction: the error is |c_I| summed with weights 1.5^i, so with
    the true K = 1.5 and equal |c_i| the bound is attained; a claimed K = 1 is violated."""
    from lipkit.rl import LinearSystem, MixtureTransitionModel, mixture_compounding_error

    model = MixtureTransitionModel([_Shifted(1.5, (0.05, 0.0)), _Shifted(1.5, (0.05, 0.0))])
    system = LinearSystem(1.5 * np.eye(2), np.zeros((2, 1)))
    starts = np.random.default_rng(0).normal(size=(5, 2))
    honest = mixture_compounding_error(model, system, starts, np.zeros((6, 1)), 1.5)
    np.testing.assert_allclose(honest.expected_error, honest.bound, rtol=1e-9)
    assert honest.holds
    false = mixture_compounding_error(model, system, starts, np.zeros((6, 1)), 1.0)
    assert not false.holds


def test_an_em_mixture_on_pendulum_stays_within_theorem_1():
    from lipkit.rl import collect_transitions, mixture_compounding_error
    from lipkit.rl.environment import Pendulum

    pendulum = Pendulum()
    data = collect_transitions(pendulum, 1200, 0)
    model = make_mixture_model(3, 1, components=2, method="spectral", lipschitz=2.0,
                               hidden=32, seed=0)
    fit_mixture_em(model, data, iterations=3, epochs=2, seed=0)
    starts = pendulum.start_states(40, 1)
    actions = pendulum.action_space.sample((10,), np.random.default_rng(2))
    result = mixture_compounding_error(model, pendulum, starts, actions,
                                       mixture_lipschitz_bound(model), max_paths=64)
    assert len(result.expected_error) == 6
    assert result.holds
    assert all(w is not None and w <= e + 1e-9
               for w, e in zip(result.wasserstein, result.expected_error, strict=True))
    assert result.expected_error[0] > 1e-3  # a model, not the environment


def test_mixture_compounding_refuses_a_limit_that_allows_no_step():
    from lipkit.rl import LinearSystem, MixtureTransitionModel, mixture_compounding_error

    model = MixtureTransitionModel([_Shifted(1.0, (0.0, 0.0))] * 3)
    with pytest.raises(InvalidArgumentError, match="max_paths 2 allows no step"):
        mixture_compounding_error(model, LinearSystem(np.eye(2), np.zeros((2, 1))),
                                  np.zeros((1, 2)), np.zeros((3, 1)), 1.0, max_paths=2)
