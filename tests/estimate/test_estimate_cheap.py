"""naive, autolip, seqlip and the lower-bound searches: truths that could fail."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.estimate import METHODS, estimate, load_network, options_for
from lipkit.estimate.network import NotApplicableError
from lipkit.estimate.registry import option_fields

from .conftest import (
    exact_l2_constant_2d,
    local_jacobian_max,
    random_mlp,
    segment_jacobian_max,
)

UPPER = ("naive", "autolip", "seqlip")
LOWER = ("lower-jacobian", "lower-gradient", "lower-adversarial")


def run(name, network, norm="2", **keywords):
    if "steps" in option_fields(METHODS[name].options):
        keywords.setdefault("steps", 20)
    return METHODS[name].function(network, options_for(name, network, norm=norm, **keywords))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 8), min_size=1, max_size=3))
def test_every_lower_below_exact_below_every_upper_on_2d_nets(seed, widths):
    network = load_network(random_mlp([2, *widths, 2], seed=seed))
    exact = exact_l2_constant_2d(network)
    uppers = {name: run(name, network).value for name in UPPER}
    lower_bounds = {name: run(name, network) for name in LOWER}
    lowers = {name: bound.value for name, bound in lower_bounds.items()}
    # the grid can miss a thin activation region or one outside it: add a fine grid around
    # every witness and the whole segment between its two points, so the oracle covers the
    # regions the searches found (Jacobians by autograd on the net)
    for bound in lower_bounds.values():
        first, second = bound.details["witness"]["x1"], bound.details["witness"]["x2"]
        exact = max(exact, local_jacobian_max(network, first),
                    segment_jacobian_max(network, first, second))
    for name, value in uppers.items():
        assert value >= exact * (1 - 1e-9), (name, value, exact)
    for name, value in lowers.items():
        # a lower bound is a real pair's ratio: it can never exceed the true constant
        assert value <= exact * (1 + 1e-6), (name, value, exact)
    assert uppers["seqlip"] <= uppers["naive"] * (1 + 1e-9)
    assert uppers["autolip"] <= uppers["naive"] * (1 + 1e-9)


def test_lower_searches_come_close_on_fixed_2d_nets():
    # quality, not soundness: on these (seeded, deterministic) nets the searches find >= 90 %
    for seed in range(3):
        network = load_network(random_mlp([2, 10, 12, 2], seed=seed))
        exact = exact_l2_constant_2d(network)
        best = max(run(name, network).value for name in LOWER)
        assert 0.9 * exact <= best <= exact * (1 + 1e-6), (seed, best, exact)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), shape=st.tuples(st.integers(1, 6), st.integers(1, 6)))
def test_linear_network_every_method_equals_the_operator_norm(seed, shape):
    torch.manual_seed(seed)
    layer = nn.Linear(shape[1], shape[0]).double()
    network = load_network(layer)
    for norm, exact in (("2", torch.linalg.matrix_norm(layer.weight, 2)),
                        ("inf", layer.weight.abs().sum(1).max()),
                        ("1", layer.weight.abs().sum(0).max())):
        exact = float(exact)
        for name in ("naive", "autolip", "lower-jacobian", "lower-adversarial"):
            value = run(name, network, norm).value
            if name == "lower-adversarial":
                # a search (a few power iterations, l2 directions): close, never above
                slack = 1e-3 if norm == "2" else 0.5
                assert (1 - slack) * exact <= value <= exact * (1 + 1e-9), (norm, value, exact)
                continue
            assert math.isclose(value, exact, rel_tol=1e-5), (norm, name, value, exact)
    assert math.isclose(run("seqlip", network).value, float(
        torch.linalg.matrix_norm(layer.weight, 2)), rel_tol=1e-9)


def test_one_hidden_neuron_closed_form():
    # f(x) = w2 * relu(w1 . x): the constant is |w2| * ||w1||, every method must find it
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 1, bias=False), nn.ReLU(),
                          nn.Linear(1, 3, bias=False)).double()
    exact = float(model[0].weight.norm() * model[2].weight.norm())
    network = load_network(model)
    for name in UPPER:
        assert math.isclose(run(name, network).value, exact, rel_tol=1e-9), name
    best_lower = max(run(name, network).value for name in LOWER)
    assert math.isclose(best_lower, exact, rel_tol=1e-4), (best_lower, exact)


def test_residual_network_autolip_adds_branches():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(x + torch.tanh(self.inner(x)))

    torch.manual_seed(1)
    model = Block().double()
    network = load_network(model)
    inner = float(torch.linalg.matrix_norm(model.inner.weight, 2))
    head = float(torch.linalg.matrix_norm(model.head.weight, 2))
    assert math.isclose(run("naive", network).value, head * (1 + inner), rel_tol=1e-9)
    report = estimate(network, methods=["naive", "lower-jacobian", "seqlip"])
    assert report.bounds[2].status.startswith("not applicable")
    low, high = report.interval
    assert 0 < low <= high


def test_seqlip_exact_vertices_are_tighter_than_relaxation_yet_sound():
    network = load_network(random_mlp([2, 10, 10, 2], seed=3))
    exact = exact_l2_constant_2d(network)
    enumerated = run("seqlip", network, exact_width=14)
    relaxed = run("seqlip", network, exact_width=0)
    assert enumerated.details["exact_layers"] == 2 and relaxed.details["relaxed_layers"] == 2
    assert exact * (1 - 1e-9) <= enumerated.value <= relaxed.value * (1 + 1e-9)


def test_lower_bound_witness_reproduces_its_value():
    network = load_network(random_mlp([3, 16, 16, 2], seed=4))
    for name in LOWER:
        bound = run(name, network)
        first = bound.details["witness"]["x1"].unsqueeze(0)
        second = bound.details["witness"]["x2"].unsqueeze(0)
        with torch.no_grad():
            ratio = (network(first) - network(second)).norm() / (first - second).norm()
        assert math.isclose(float(ratio), bound.value, rel_tol=1e-9), name


def test_smooth_network_gradient_ascent_improves_on_its_start():
    network = load_network(random_mlp([4, 12, 12, 1], activation=nn.Tanh, seed=5))
    start = run("lower-jacobian", network, points=32)
    ascended = run("lower-gradient", network, steps=40)
    assert ascended.value >= start.value * 0.999
    assert ascended.value <= run("naive", network).value


def test_gradient_ascent_stops_when_it_stalls_and_keeps_its_value():
    """A linear map's Jacobian is constant: every round finds the operator norm, so the
    search stalls after its start points and MIN_ROUNDS refining rounds, long before its
    time limit; ``stall=None`` runs its rounds to the end; both find the norm."""
    from lipkit.estimate.gradient_ascent import MIN_ROUNDS

    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    network = load_network(layer)
    norm = float(torch.linalg.matrix_norm(layer.weight.detach().double(), ord=2))
    stalled = run("lower-gradient", network, time_limit=120, steps=5)
    assert stalled.details["stalled"] and stalled.seconds < 60
    starts = math.ceil(128 / 8)  # the candidate pool, 8 start points a round
    assert stalled.details["rounds"] == starts + MIN_ROUNDS
    whole = run("lower-gradient", network, time_limit=120, steps=5, stall=None, rounds=40)
    assert not whole.details["stalled"] and whole.details["rounds"] == 40
    for bound in (stalled, whole):
        assert math.isclose(bound.value, norm, rel_tol=1e-6), bound.value


def test_chain_refuses_groupsort():
    from lipkit.nn import MaxMin

    network = load_network(nn.Sequential(nn.Linear(4, 4), MaxMin(), nn.Linear(4, 2)))
    try:
        network.chain()
    except NotApplicableError as error:
        assert "groupsort" in str(error)
    else:
        raise AssertionError("a GroupSort network is not a chain of elementwise activations")
