"""The LP bound on the l-infinity / l1 constant: above the exact constants, below the
product of induced norms and the interval bound, exact on linear maps, proven by its dual."""

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.estimate import estimate, load_network
from lipkit.estimate import lp_jacobian as lp
from lipkit.estimate.witness import jacobians

from .conftest import random_mlp
from .test_estimate_cheap import run


def induced(matrices: torch.Tensor, norm: str) -> torch.Tensor:
    """The induced l-inf (largest row sum) or l1 (largest column sum) norms of a batch."""
    return matrices.abs().sum(dim=2 if norm == "inf" else 1).amax(dim=1)


def grid_constant(network, norm, radius=8.0, resolution=601):
    """The largest Jacobian norm over a dense grid of a 2-D input plane (every activation
    region of these small ReLU nets meets it): the exact constant to the grid's resolution."""
    axis = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    return max(float(induced(jacobians(network, chunk), norm).max())
               for chunk in points.split(40_000))


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 8), min_size=1, max_size=3),
       norm=st.sampled_from(["inf", "1"]))
def test_between_the_exact_constant_and_the_product_of_induced_norms(seed, widths, norm):
    network = load_network(random_mlp([2, *widths, 3], seed=seed))
    bound = run("lp-jacobian", network, norm=norm)
    exact = grid_constant(network, norm)
    assert bound.kind == "upper" and bound.status == "ok"
    assert bound.value >= exact * (1 - 1e-9), (bound.value, exact)
    assert bound.value <= bound.details["interval_bound"] * (1 + 1e-9)
    assert bound.value <= run("naive", network, norm=norm).value * (1 + 1e-9)
    lower = run("lower-jacobian", network, norm=norm).value
    assert bound.value >= lower * (1 - 1e-9)


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh, lambda: nn.LeakyReLU(0.1)])
def test_above_the_constant_of_1d_input_nets_along_the_line(activation):
    network = load_network(random_mlp([1, 6, 6, 4], activation=activation, seed=2))
    x = torch.linspace(-40, 40, 200_001, dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        y = network(x)
    slopes = (y[1:] - y[:-1]) / (x[1:] - x[:-1])  # the secants: exact on linear pieces
    for norm, along in (("inf", slopes.abs().amax(dim=1)), ("1", slopes.abs().sum(dim=1))):
        bound = run("lp-jacobian", network, norm=norm)
        assert bound.value >= float(along.max()) * (1 - 1e-9), norm


def test_linear_map_gives_its_induced_norm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 3)).double()
    matrix = (model[1].weight @ model[0].weight).detach()
    for norm in ("inf", "1"):
        value = run("lp-jacobian", load_network(model), norm=norm).value
        exact = float(induced(matrix[None], norm)[0])
        assert exact <= value <= exact * (1 + 1e-12)


def test_dual_bound_is_above_the_lp_optimum_and_close_to_it():
    network = load_network(random_mlp([5, 12, 12, 3], seed=7))
    weights, slopes = lp._chain(network, "inf")
    c, a_ub, b_ub, a_eq, b_eq, lo, hi, interval = lp._row_program(weights, slopes, 1)
    result = scipy.optimize.linprog(-c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                                    bounds=np.stack([lo, hi], axis=1), method="highs")
    optimum = -result.fun
    proven = lp.dual_bound(c, a_ub, b_ub, a_eq, b_eq, lo, hi, -result.ineqlin.marginals,
                           -result.eqlin.marginals)
    assert optimum <= proven <= optimum * (1 + 1e-6) <= interval * (1 + 1e-6)
    # any multipliers give a bound (weak duality): zero multipliers give the box's
    assert lp.dual_bound(c, a_ub, b_ub, a_eq, b_eq, lo, hi, 0 * b_ub, 0 * b_eq) >= optimum


def test_not_applicable_cases_say_why():
    model = random_mlp([3, 8, 2], seed=1)
    l2 = estimate(model, methods=["lp-jacobian"]).bounds[0]
    assert l2.status.startswith("not applicable") and "inf" in l2.status


@pytest.mark.parametrize(("widths", "norm"), [([300, 4, 2], "1"), ([3, 4, 300], "inf")])
def test_more_rows_than_programs_are_bounded_not_refused(widths, norm):
    """One LP per row, largest interval bound first: rows past ``MAX_PROGRAMS`` (none here:
    the LPs stop once no other row's interval bound is higher) keep their interval bounds."""
    report = estimate(random_mlp(widths, seed=1), methods=["lp-jacobian", "lower-jacobian"],
                      norm=norm)
    bound, lower = report.bounds
    assert bound.status == "ok" and bound.details["programs"] <= lp.MAX_PROGRAMS
    assert lower.value <= bound.value <= bound.details["interval_bound"] * (1 + 1e-12)
