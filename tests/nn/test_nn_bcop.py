"""lipkit.nn.bcop: block convolution orthogonal parametrization (Li et al., 2019).

Oracle: the convolution operator materialized through torch's own convolution and its SVD.
With circular "same" padding and stride 1 a BCOP convolution is orthogonal: every singular
value of the operator is ``lambda``.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn import bcop, lipschitz_bound

SEEDS = st.integers(0, 2**31 - 1)
LIPSCHITZ = st.floats(0.1, 10.0)


@st.composite
def _bcop_convs(draw, padding_mode="circular", equal_channels=True):
    """A BCOP ``Conv1d/2d`` in float64 and an input shape ``(C, *n)``."""
    dims = draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    size = tuple(draw(st.integers(2, 6)) for _ in range(dims))
    in_channels = draw(st.integers(1, 4))
    out_channels = in_channels if equal_channels else draw(st.integers(1, 4))
    if padding_mode == "circular":
        padding, stride = "same", 1
    else:
        padding = draw(st.sampled_from(["same", 0, 1]))
        stride = 1 if padding == "same" else draw(st.integers(1, 2))
        if padding != "same" and any(n + 2 * padding < k for n, k in zip(size, kernel,
                                                                         strict=True)):
            padding = "same"
            stride = 1
    kind = {1: nn.Conv1d, 2: nn.Conv2d}[dims]
    torch.manual_seed(draw(SEEDS))
    conv = kind(in_channels, out_channels, kernel, stride, padding, padding_mode=padding_mode,
                dtype=torch.float64)
    return bcop(conv, lipschitz=draw(LIPSCHITZ)), (in_channels, *size)


def _singular_values(conv, shape, oracle) -> torch.Tensor:
    return torch.linalg.svdvals(oracle.operator_matrix(conv, shape))


@settings(max_examples=40)
@given(layer=_bcop_convs())
def test_circular_same_convolution_is_orthogonal(layer, oracle):
    conv, shape = layer
    target = conv.parametrizations.weight[0].lipschitz
    values = _singular_values(conv, shape, oracle)
    torch.testing.assert_close(values, torch.full_like(values, target), rtol=1e-5, atol=0,
                               msg=f"singular values {values} for {conv}")


@settings(max_examples=30)
@given(layer=_bcop_convs(equal_channels=False))
def test_unequal_channels_give_orthonormal_rows_or_columns(layer, oracle):
    conv, shape = layer
    target = conv.parametrizations.weight[0].lipschitz
    values = _singular_values(conv, shape, oracle)
    # (out N) x (in N) with orthonormal rows or columns: all min(out, in) N values are lambda
    assert len(values) == min(conv.in_channels, conv.out_channels) * math.prod(shape[1:])
    torch.testing.assert_close(values, torch.full_like(values, target), rtol=1e-5, atol=0)


@settings(max_examples=30)
@given(layer=_bcop_convs(padding_mode="zeros", equal_channels=False))
def test_zero_padding_is_lambda_lipschitz(layer, oracle):
    conv, shape = layer
    target = conv.parametrizations.weight[0].lipschitz
    exact = oracle.operator_norm(conv, shape)
    assert exact <= target * (1 + 1e-5), f"{exact} > {target} for {conv}"
    bound = lipschitz_bound(conv, example_input=torch.zeros(1, *shape, dtype=torch.float64))
    assert exact * (1 - 1e-9) <= bound <= target * (1 + 1e-5)


def test_gradients_reach_the_parameter_and_descend():
    torch.manual_seed(0)
    conv = bcop(nn.Conv2d(3, 3, 3, padding=1, padding_mode="circular", dtype=torch.float64))
    parameter = conv.parametrizations.weight.original
    x = torch.randn(4, 3, 6, 6, dtype=torch.float64)
    target = torch.randn(4, 3, 6, 6, dtype=torch.float64)

    def loss():
        return (conv(x) - target).square().mean()

    value = loss()
    value.backward()
    grad = parameter.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # every stacked matrix (H and each projector's basis) receives gradient
    assert (grad.flatten(1).abs().sum(dim=1) > 0).all()
    with torch.no_grad():
        parameter.sub_(1e-4 * grad)
        assert loss() < value, "a small step against the gradient did not descend"


def test_still_orthogonal_after_optimizer_steps(dtype, device, oracle):
    torch.manual_seed(1)
    conv = bcop(nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular").to(device, dtype),
                lipschitz=1.3)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.05)
    x = torch.randn(8, 4, 5, 6, device=device, dtype=dtype)
    target = torch.randn_like(x)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        loss = (conv(x) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], "training did not descend"
    values = _singular_values(conv, (4, 5, 6), oracle)
    rtol = 1e-4 if dtype == torch.float32 else 1e-5
    torch.testing.assert_close(values, torch.full_like(values, 1.3), rtol=rtol, atol=0)


def test_bound_of_a_circular_bcop_is_lambda():
    conv = bcop(nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), lipschitz=2.5)
    assert lipschitz_bound(conv, example_input=torch.randn(1, 4, 8, 8)) == pytest.approx(
        2.5, rel=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(InvalidArgumentError, match="groups=1"):
        bcop(nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UnsupportedModuleError, match="Linear"):
        bcop(nn.Linear(4, 4))
    with pytest.raises(UnsupportedModuleError, match="Conv3d"):
        bcop(nn.Conv3d(4, 4, 3))
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        bcop(nn.Conv2d(4, 4, 3), lipschitz=0)
