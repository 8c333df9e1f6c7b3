"""lipkit.nn.cpl and lipkit.nn.sll: residual blocks ``x - V^T relu(V x + b)``.

Oracles: Jacobians computed by torch autograd and their SVD (float64); the SVD of the layer's
operator materialized through plain torch layers; never the power iteration under test.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn import (
    ConvexPotentialBlock,
    CPLConv2d,
    CPLLinear,
    SLLConv2d,
    SLLLinear,
    cpl,
    export,
    lipschitz_bound,
    sll,
)

SEEDS = st.integers(0, 2**31 - 1)


def jacobian_norm(block: nn.Module, x: torch.Tensor) -> float:
    """sigma_1 of the block's Jacobian at ``x`` (one sample, float64)."""
    jacobian = torch.autograd.functional.jacobian(lambda z: block(z[None])[0], x)
    return float(torch.linalg.svdvals(jacobian.reshape(x.numel(), x.numel()))[0])


def train(block: nn.Module, x: torch.Tensor, steps: int = 5) -> None:
    optimizer = torch.optim.Adam(block.parameters(), lr=0.05)
    for _ in range(steps):
        loss = (block(x) - 3.0).pow(2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@settings(max_examples=15)
@given(features=st.integers(1, 8), hidden=st.integers(1, 12), seed=SEEDS,
       scale=st.floats(1e-2, 1e2))
def test_sll_dense_block_is_1_lipschitz_for_any_weight(features, hidden, seed, scale):
    torch.manual_seed(seed)
    block = SLLLinear(features, hidden).double()
    with torch.no_grad():
        block.layer.parametrizations.weight.original.mul_(scale)
        block.layer.parametrizations.weight[0].log_q.normal_()
        block.layer.bias.normal_()
    inner = torch.linalg.svdvals(block.layer.weight.detach())[0]
    assert inner <= 2**0.5 * (1 + 1e-9), f"||V|| = {inner} > sqrt(2)"
    for x in torch.randn(4, features, dtype=torch.float64):
        assert jacobian_norm(block, x) <= 1 + 1e-9
    assert lipschitz_bound(block) <= 1 + 1e-9


@settings(max_examples=10)
@given(seed=SEEDS, kernel=st.sampled_from([1, 3, 5]), scale=st.floats(1e-2, 1e2))
def test_sll_conv_operator_and_block_jacobian(seed, kernel, scale, oracle):
    torch.manual_seed(seed)
    block = SLLConv2d(2, 3, kernel).double()
    with torch.no_grad():
        block.layer.parametrizations.weight.original.mul_(scale)
        block.layer.parametrizations.weight[0].log_q.normal_()
    inner = oracle.operator_norm(block.layer, (2, 5, 4))
    assert inner <= 2**0.5 * (1 + 1e-9), f"conv operator ||V|| = {inner} > sqrt(2)"
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    assert jacobian_norm(block, x) <= 1 + 1e-9
    assert lipschitz_bound(block, example_input=x[None]) <= 1 + 1e-9


def test_cpl_certifies_the_proven_norm_not_the_estimate():
    """All units active (large bias): the Jacobian is I - V^T V, of norm exactly
    max(1, ||V||^2 - 1); a weight pushed above sqrt(2) makes the block expansive, and the
    bound reports it."""
    torch.manual_seed(0)
    block = CPLLinear(6, 6).double()
    with torch.no_grad():
        block.layer.bias.fill_(100.0)
    plain = export(block)
    with torch.no_grad():
        plain.layer.weight.mul_(1.3)
    s = float(torch.linalg.svdvals(plain.layer.weight.detach())[0])
    x = torch.randn(6, dtype=torch.float64)
    exact = jacobian_norm(plain, x)
    assert exact == pytest.approx(s * s - 1, rel=1e-9) and exact > 1.5
    assert lipschitz_bound(plain) == pytest.approx(exact, rel=1e-9)


@pytest.mark.parametrize("make", [lambda: CPLLinear(5, 7), lambda: SLLLinear(5, 7),
                                  lambda: CPLConv2d(3, 4), lambda: SLLConv2d(3, 4, 5),
                                  lambda: cpl(nn.Conv2d(3, 2, 3, padding="same")),
                                  lambda: sll(nn.Linear(4, 4))])
def test_trained_blocks_keep_their_bound_and_export_equal(make):
    torch.manual_seed(1)
    block = make().double()
    features = block.layer.in_features if isinstance(block.layer, nn.Linear) \
        else block.layer.in_channels
    shape = (features,) if isinstance(block.layer, nn.Linear) else (features, 6, 5)
    x = torch.randn(8, *shape, dtype=torch.float64)
    train(block, x)
    block.eval()
    bound = lipschitz_bound(block, example_input=x[:1])
    worst = max(jacobian_norm(block, sample) for sample in x[:3])
    assert worst <= bound * (1 + 1e-9), (worst, bound)
    if not (isinstance(block.layer, nn.Conv2d) and not hasattr(block.layer.parametrizations
                                                                 .weight[0], "log_q")):
        # SLL: a proof for every weight; dense CPL: the exact SVD of a normalized weight. (A
        # CPL convolution's certificate is the DFT bound on the padded torus, loose on
        # inputs this small: see test_cpl_conv_bound_is_the_formula_of_its_certified_norm)
        assert bound <= 1 + 1e-5, f"bound {bound} after training"
    plain = export(block)
    assert type(plain) is ConvexPotentialBlock
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    torch.testing.assert_close(plain(x), block(x), rtol=0, atol=1e-6)
    assert lipschitz_bound(plain, example_input=x[:1]) <= bound * (1 + 1e-6) + 1e-9


def test_sll_block_bound_is_exactly_one():
    block = SLLLinear(4, 9)
    assert lipschitz_bound(block) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("conv", [nn.Conv2d(2, 2, 3, stride=2, padding=1),
                                  nn.Conv2d(2, 2, 3, padding=0),
                                  nn.Conv2d(2, 2, 2, padding="same"),
                                  nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")])
def test_blocks_refuse_convolutions_that_change_the_size(conv):
    with pytest.raises(InvalidArgumentError, match="stride 1"):
        sll(conv)


def test_cpl_conv_bound_is_the_formula_of_its_certified_norm(oracle):
    torch.manual_seed(2)
    block = CPLConv2d(3, 4).double().eval()
    x = torch.randn(1, 3, 12, 12, dtype=torch.float64)
    block(x)
    exact = oracle.operator_norm(block.layer, (3, 12, 12))
    # the power iteration approaches ||V|| from below: V is normalized to sqrt(2) or above
    assert 2**0.5 * (1 - 1e-9) <= exact <= 2**0.5 * 1.01, exact
    layers = {}
    bound = lipschitz_bound(block, example_input=x, layers=layers)
    certified = layers["layer"]
    assert certified >= exact * (1 - 1e-9)
    assert bound == pytest.approx(max(1.0, certified**2 - 1), rel=1e-12)
