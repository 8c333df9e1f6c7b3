"""lipkit.nn.residual: ``(1 - t) x + t f(x)`` is ``((1 - t) + t L_f)``-Lipschitz."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn import GroupSort, Residual, bjorck, lipschitz_bound

SEEDS = st.integers(0, 2**31 - 1)
T = st.floats(0.0, 1.0)


@settings(max_examples=30)
@given(t=T, seed=SEEDS, size=st.integers(1, 8))
def test_bound_dominates_the_exact_norm_of_a_linear_residual(t, seed, size, oracle):
    torch.manual_seed(seed)
    branch = nn.Linear(size, size, bias=False).double()
    block = Residual(branch, t)
    branch_bound = lipschitz_bound(branch)
    bound = lipschitz_bound(block)
    # the formula, up to t being stored (and 1 - t computed) in float32
    assert bound == pytest.approx((1 - t) + t * branch_bound, rel=1e-6, abs=1e-6)
    # the block is the linear map (1 - t) I + t B, with the forward's own rounding of t: the
    # bound must hold for what it computes, to the last digit
    exact = oracle.exact_norm(oracle.materialize(block, (size,)))
    assert exact <= bound * (1 + 1e-13), (exact, bound)


@settings(max_examples=30)
@given(t=T, seed=SEEDS)
def test_bound_dominates_observed_ratios_of_a_nonlinear_residual(t, seed, oracle):
    torch.manual_seed(seed)
    branch = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 6)).double()
    block = Residual(branch, t)
    bound = lipschitz_bound(block)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(128, 6, generator=generator, dtype=torch.float64)
    y = x + torch.randn(128, 6, generator=generator, dtype=torch.float64) * 0.1
    assert oracle.lipschitz_ratios(block, x, y).max() <= bound * (1 + 1e-12)
    for point in x[:5]:
        jacobian = torch.func.jacrev(block)(point)
        assert torch.linalg.matrix_norm(jacobian, ord=2) <= bound * (1 + 1e-12)


@settings(max_examples=20)
@given(t=T, seed=SEEDS)
def test_a_one_lipschitz_branch_gives_at_most_one(t, seed, oracle):
    torch.manual_seed(seed)
    branch = nn.Sequential(bjorck(nn.Linear(6, 6)), GroupSort(2), bjorck(nn.Linear(6, 6)))
    block = Residual(branch, t).eval()
    bound = lipschitz_bound(block)
    assert bound <= 1 + 1e-4, bound
    x = torch.randn(64, 6)
    assert oracle.lipschitz_ratios(block, x, torch.randn(64, 6)).max() <= bound * (1 + 1e-5)


def test_learnable_t_stays_in_the_unit_interval_and_sets_the_bound():
    torch.manual_seed(0)
    branch = nn.Linear(4, 4, bias=False)
    block = Residual(branch, 0.3, learnable=True)
    assert block.t.item() == pytest.approx(0.3, rel=1e-6)
    with torch.no_grad():
        block.logit.fill_(2.0)
    t = 1 / (1 + math.exp(-2.0))
    assert block.t.item() == pytest.approx(t, rel=1e-6)
    assert lipschitz_bound(block) == pytest.approx((1 - t) + t * lipschitz_bound(branch),
                                                   rel=1e-6)
    x = torch.randn(3, 4)
    block(x).sum().backward()
    assert block.logit.grad is not None and block.logit.grad != 0
    # t = 0 and t = 1 are the two ends: the identity and the branch
    torch.testing.assert_close(Residual(branch, 0.0)(x), x)
    torch.testing.assert_close(Residual(branch, 1.0)(x), branch(x))


@pytest.mark.parametrize("t", [-0.1, 1.0001, 2.0, float("nan")])
def test_t_outside_the_unit_interval_raises(t):
    with pytest.raises(InvalidArgumentError, match=r"\[0, 1\]"):
        Residual(nn.Identity(), t)
