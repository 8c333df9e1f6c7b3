"""lipkit.nn.aol: almost-orthogonal rescaling (Prach & Lampert, 2022) is ``lambda``-Lipschitz.

Oracle: the SVD of the rescaled weight, or of the rescaled convolution operator materialized
through torch's own convolution, for random kernels and geometries.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn import aol, lipschitz_bound

SEEDS = st.integers(0, 2**31 - 1)
LIPSCHITZ = st.floats(0.1, 10.0)


@settings(max_examples=40)
@given(rows=st.integers(1, 12), columns=st.integers(1, 12), target=LIPSCHITZ, seed=SEEDS,
       scale=st.floats(1e-3, 1e3))
def test_dense_norm_is_at_most_lambda(rows, columns, target, seed, scale, oracle):
    layer = aol(nn.Linear(columns, rows).double(), lipschitz=target)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(
            scale * torch.randn(rows, columns, generator=generator, dtype=torch.float64))
    exact = oracle.operator_norm(layer)
    assert exact <= target * (1 + 1e-9), f"||W diag(d)|| = {exact} > {target}"
    bound = lipschitz_bound(layer)
    assert exact * (1 - 1e-9) <= bound <= target * (1 + 1e-9), (exact, bound, target)


def test_an_orthogonal_weight_is_left_unchanged():
    # W^T W = I: every absolute row sum of the Gram matrix is 1, so d = 1
    q = torch.linalg.qr(torch.randn(9, 6, dtype=torch.float64))[0]
    layer = nn.Linear(6, 9).double()
    with torch.no_grad():
        layer.weight.copy_(q)
    aol(layer, lipschitz=2.0)
    torch.testing.assert_close(layer.weight, 2.0 * q, rtol=1e-12, atol=1e-12)


@settings(max_examples=50)
@given(data=st.data(), target=LIPSCHITZ)
def test_convolution_operator_norm_is_at_most_the_guarantee(data, target, conv_layers, oracle):
    conv, shape = data.draw(conv_layers())
    aol(conv, lipschitz=target)
    constraint = conv.parametrizations.weight[0]
    guarantee = constraint.guarantee(conv)
    exact = oracle.operator_norm(conv, shape)
    assert exact <= guarantee * (1 + 1e-9), f"exact {exact} > guarantee {guarantee} for {conv}"
    conv(torch.zeros(1, *shape, dtype=torch.float64))  # records the input size
    assert exact * (1 - 1e-9) <= lipschitz_bound(conv) <= guarantee * (1 + 1e-9)


@settings(max_examples=40)
@given(data=st.data(), target=LIPSCHITZ)
def test_zero_and_circular_padding_give_lambda_up_to_rounding(data, target, conv_layers,
                                                             oracle):
    # the guarantee is AOL's proof checked on the float64 weight: lambda, plus rounding
    conv, shape = data.draw(conv_layers(padding_modes=("zeros", "circular"), same=True))
    aol(conv, lipschitz=target)
    guarantee = conv.parametrizations.weight[0].guarantee(conv)
    exact = oracle.operator_norm(conv, shape)
    assert exact <= guarantee <= target * (1 + 1e-9)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_aol_trains_and_keeps_its_bound(kind, dtype, device, oracle):
    torch.manual_seed(0)
    if kind == "linear":
        layer, shape = nn.Linear(6, 4), (6,)
    else:
        layer, shape = nn.Conv2d(4, 4, 3, padding=1, groups=2), (4, 5, 6)
    layer = aol(layer.to(device, dtype), lipschitz=0.7)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = torch.randn(8, *shape, device=device, dtype=dtype)
    target = torch.randn_like(layer(x))
    for _ in range(10):
        optimizer.zero_grad()
        (layer(x) - target).square().mean().backward()
        optimizer.step()
    grad = layer.parametrizations.weight.original.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert oracle.operator_norm(layer, shape) <= 0.7 * (1 + 1e-5)


def test_bad_arguments_raise():
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        aol(nn.Linear(3, 3), lipschitz=-2.0)
    with pytest.raises(UnsupportedModuleError, match="Embedding"):
        aol(nn.Embedding(3, 3))
