"""shor: Shor's relaxation of the l-inf constant of one-hidden-layer nets against brute force
over sign vectors, exact-mip, the interval bound and the naive product."""

import itertools
import math

import numpy as np
import pytest
from torch import nn

from lipkit.estimate import METHODS, Options, load_network, options_for
from lipkit.estimate.network import NotApplicableError
from lipkit.estimate.shor import certified_bound, shor_matrix

from .conftest import random_mlp


def shor(network, **keywords):
    return METHODS["shor"].function(network, options_for("shor", network, norm="inf",
                                                         **keywords))


def signs(size):
    return np.array(list(itertools.product((-1.0, 1.0), repeat=size)))


def test_matrix_encodes_the_sign_and_pattern_problem_and_every_shift_bounds_it():
    rng = np.random.default_rng(0)
    n, m = 4, 3
    linear, bilinear = rng.normal(size=n), rng.normal(size=(n, m))
    matrix = shor_matrix(linear, bilinear)
    x = signs(1 + n + m)
    quadratic = np.einsum("bi,ij,bj->b", x, matrix, x).max()
    patterns = np.array(list(itertools.product((0.0, 1.0), repeat=m)))
    direct = (signs(n) @ (linear[:, None] + bilinear @ patterns.T)).max()
    assert math.isclose(quadratic, direct, rel_tol=1e-12)
    for _ in range(20):  # any diagonal shift gives an upper bound
        shift = rng.normal(size=1 + n + m) * rng.uniform(0, 3)
        assert certified_bound(matrix, shift) >= quadratic * (1 - 1e-12)


@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.3)],
                         ids=["relu", "leaky"])
def test_between_exact_mip_and_the_naive_product(activation):
    for seed in range(4):
        network = load_network(random_mlp([6, 5, 3], activation, seed=seed))
        bound = shor(network)
        exact = METHODS["exact-mip"].function(network, Options(norm="inf"))
        assert exact.kind == "exact"
        assert bound.value >= exact.value * (1 - 1e-9), (seed, bound.value, exact.value)
        naive = METHODS["naive"].function(network, Options(norm="inf")).value
        assert bound.value <= naive * (1 + 1e-12)
        assert all(r <= i * (1 + 1e-12) for r, i in zip(bound.details["rows"],
                                                       bound.details["interval_rows"],
                                                       strict=True))


def test_much_tighter_than_the_interval_bound_and_close_to_exact():
    # 10 hidden units on 12 inputs: every pattern is realized, so the problem relaxed is the
    # exact one; Shor's relaxation lands within 10 % of it where the interval bound (the
    # LP's root) is 1.4-1.9x above
    for seed in range(4):
        network = load_network(random_mlp([12, 10, 2], seed=seed))
        bound = shor(network)
        exact = METHODS["exact-mip"].function(network, Options(norm="inf")).value
        assert exact * (1 - 1e-9) <= bound.value <= 1.1 * exact, (seed, bound.value, exact)
        assert bound.value <= 0.8 * max(bound.details["interval_rows"])


def test_refusals():
    deep = load_network(random_mlp([4, 5, 5, 1], seed=0))
    assert "one hidden" in METHODS["shor"].fits(deep)
    with pytest.raises(NotApplicableError):
        shor(deep)
    network = load_network(random_mlp([4, 5, 1], seed=0))
    with pytest.raises(NotApplicableError, match="l-infinity"):
        METHODS["shor"].function(network, Options(norm="2"))


def test_time_limit_keeps_a_valid_bound():
    network = load_network(random_mlp([12, 10, 2], seed=0))
    exact = METHODS["exact-mip"].function(network, Options(norm="inf")).value
    rushed = METHODS["shor"].function(network, Options(norm="inf", time_limit=0.0))
    assert rushed.status == "ok: time limit reached" and rushed.usable
    assert rushed.value >= exact * (1 - 1e-9)
    assert rushed.value >= shor(network).value * (1 - 1e-9)
