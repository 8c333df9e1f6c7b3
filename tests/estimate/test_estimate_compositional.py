"""The compositional bound: sound (>= exact constants and attack lower bounds), <= the naive
product, exact on linear networks, and at least as tight as ECLipsE-Fast."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.estimate import METHODS, estimate, load_network, options_for
from lipkit.estimate.compositional import compositional_bound

from .conftest import exact_l2_constant_2d, random_mlp
from .test_estimate_cheap import run

NO_BUDGET = {"tuning_time_ratio": math.inf}  # a fixed number of steps: deterministic values


def compositional(network, steps=20):
    return compositional_bound(network, steps=steps, tuning_time_ratio=math.inf)


def eclipse_fast_reference(weights):
    """ECLipsE-Fast (Xu & Sivaranjani, 2024) for ReLU, written plainly from the paper:
    ``X_0 = I``, ``lambda_i = 1 / (2 m^2 lambda_max(W_i X^{-1} W_i^T))``, ``m = 1/2``,
    ``X_i = lambda_i I - lambda_i^2 m^2 W_i X^{-1} W_i^T``, ``L^2 = lambda_max(W_l^T W_l
    X^{-1})``."""
    x = np.eye(weights[0].shape[1])
    for weight in weights[:-1]:
        middle = weight @ np.linalg.inv(x) @ weight.T
        lam = 1 / (2 * 0.25 * np.linalg.eigvals(middle).real.max())
        x = lam * np.eye(weight.shape[0]) - lam**2 * 0.25 * middle
    last = weights[-1]
    return math.sqrt(np.linalg.eigvals(last.T @ last @ np.linalg.inv(x)).real.max())


def line_constant(network, radius=50.0, samples=400_001):
    """The l2 constant of a 1-D-input network along a dense grid of the line: exact for
    piecewise-linear activations (the secant is the slope on every piece; the range contains
    every breakpoint of these small nets, the outer pieces reach its ends), a lower bound
    (secant slopes) for smooth ones."""
    x = torch.linspace(-radius, radius, samples, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        y = network(x)
    slopes = (y[1:] - y[:-1]) / (x[1:] - x[:-1])  # exact on every linear piece
    return float(torch.linalg.vector_norm(slopes, dim=1).max())


def test_linear_network_gives_the_spectral_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(7, 5), nn.Linear(5, 4)).double()
    network = load_network(model)
    exact = float(torch.linalg.matrix_norm(model[1].weight.detach() @ model[0].weight.detach(),
                                          ord=2))
    bound = compositional(network)
    assert bound.kind == "upper" and bound.status == "ok"
    assert exact <= bound.value <= exact * (1 + 1e-9)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 8), min_size=1, max_size=3))
def test_above_the_exact_constant_and_below_naive_on_2d_nets(seed, widths):
    network = load_network(random_mlp([2, *widths, 2], seed=seed))
    exact = exact_l2_constant_2d(network)
    value = compositional(network).value
    naive = run("naive", network).value
    lower = max(run(name, network).value for name in ("lower-jacobian", "lower-adversarial"))
    assert value >= exact * (1 - 1e-9), (value, exact)
    assert value >= lower * (1 - 1e-9), (value, lower)
    assert value <= naive * (1 + 1e-9), (value, naive)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, lambda: nn.LeakyReLU(0.2), nn.GELU])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_above_the_exact_constant_of_1d_input_nets(activation, seed):
    # the tuned multipliers (many steps) bring the bound closest to the truth: the
    # hardest place for a soundness bug to hide
    network = load_network(random_mlp([1, 6, 5, 3], activation=activation, seed=seed))
    exact = line_constant(network)
    value = compositional(network, steps=60).value
    assert value >= exact * (1 - 1e-9), (value, exact)
    assert value <= run("naive", network).value * (1 + 1e-9)


@pytest.mark.parametrize("widths", [[20, 30, 20, 5], [64, 32, 32, 32, 10]])
def test_starts_at_eclipse_fast_and_tuning_only_tightens(widths):
    model = random_mlp(widths, seed=3, bias=False)
    network = load_network(model)
    weights = [m.weight.detach().numpy() for m in model if isinstance(m, nn.Linear)]
    reference = eclipse_fast_reference(weights)
    untuned = compositional(network, steps=0)
    tuned = compositional(network, steps=20)
    assert untuned.value == pytest.approx(reference, rel=1e-6)
    assert untuned.details["eclipse_fast"] == pytest.approx(reference, rel=1e-9)
    # strictly tighter on these nets (a 5 % margin), and still above the attack bound
    assert tuned.value <= 0.95 * reference
    lower = run("lower-adversarial", network).value
    assert tuned.value >= lower


def test_registered_and_says_why_it_does_not_apply():
    model = random_mlp([3, 8, 2], seed=1)
    report = estimate(model, methods=["compositional", "naive"], steps=5)
    bound, naive = report.bounds
    assert bound.status == "ok" and bound.value <= naive.value * (1 + 1e-9)
    assert "compositional" in METHODS and METHODS["compositional"].norms == ("2",)
    from lipkit.nn import GroupSort

    sorted_model = nn.Sequential(nn.Linear(3, 4), GroupSort(2), nn.Linear(4, 2)).double()
    skipped = estimate(sorted_model, methods=["compositional"]).bounds[0]
    assert skipped.status.startswith("not applicable") and "elementwise" in skipped.status
    linf = estimate(model, methods=["compositional"], norm="inf").bounds[0]
    assert linf.status.startswith("not applicable")


def test_options_reach_the_method():
    network = load_network(random_mlp([4, 10, 10, 2], seed=5))
    bound = METHODS["compositional"].function(network, options_for(
        "compositional", network, steps=3, **NO_BUDGET))
    assert bound.details["steps"] == 3
