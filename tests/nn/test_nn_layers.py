"""lipkit.nn.layers: the constrained layer classes train and keep their bound.

Oracle: the exact operator norm (SVD of the weight, or of the convolution operator
materialized through torch's own convolution) after a few Adam steps.
"""

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.nn import (
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    SpectralConv2d,
    SpectralLinear,
    lipschitz_bound,
)

LAMBDA = 1.7

# (factory, input shape, how the exact norm must relate to lambda)
LAYERS = {
    "SpectralLinear": (lambda **kw: SpectralLinear(6, 5, lipschitz=LAMBDA, **kw), (6,), "equal"),
    "BjorckLinear": (lambda **kw: BjorckLinear(4, 7, lipschitz=LAMBDA, **kw), (4,), "all"),
    "AOLLinear": (lambda **kw: AOLLinear(6, 5, lipschitz=LAMBDA, **kw), (6,), "at_most"),
    "SpectralConv2d": (lambda **kw: SpectralConv2d(2, 3, 3, stride=2, padding=1,
                                                   lipschitz=LAMBDA, n_power_iterations=5,
                                                   **kw), (2, 6, 5), "equal"),
    "AOLConv2d": (lambda **kw: AOLConv2d(4, 4, 3, padding=1, groups=2, lipschitz=LAMBDA, **kw),
                  (4, 5, 6), "at_most"),
    "BCOPConv2d": (lambda **kw: BCOPConv2d(3, 3, 3, padding_mode="circular", lipschitz=LAMBDA,
                                           **kw), (3, 5, 6), "all"),
    "BCOPConv2d-zeros": (lambda **kw: BCOPConv2d(3, 4, 3, lipschitz=LAMBDA, **kw), (3, 5, 6),
                         "at_most"),
    "BCOPConv2d-strided": (lambda **kw: BCOPConv2d(3, 3, 3, stride=2, lipschitz=LAMBDA, **kw),
                           (3, 6, 6), "at_most"),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_trains_and_keeps_its_bound(name, dtype, device, oracle):
    torch.manual_seed(0)
    build, shape, relation = LAYERS[name]
    layer = build(device=device, dtype=dtype)
    assert isinstance(layer, nn.Linear | nn.Conv2d) and parametrize.is_parametrized(layer)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.01)
    x = torch.randn(16, *shape, device=device, dtype=dtype)
    target = torch.randn_like(layer(x))
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = (layer(x) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name} did not train: {losses}"
    layer.eval()
    assert layer.weight.dtype == dtype and layer.weight.device.type == device.type
    matrix = oracle.operator_matrix(layer, shape)
    values = torch.linalg.svdvals(matrix)
    rtol = 1e-3 if relation == "equal" else 1e-4
    if relation == "all":  # orthonormal rows or columns times lambda
        torch.testing.assert_close(values, torch.full_like(values, LAMBDA), rtol=1e-4, atol=0)
    elif relation == "equal":
        assert values[0] == pytest.approx(LAMBDA, rel=rtol), values[0]
    else:
        assert values[0] <= LAMBDA * (1 + 1e-5), values[0]
    assert lipschitz_bound(layer, example_input=x[:1]) >= values[0] * (1 - 1e-5)


def test_constructor_arguments_reach_the_torch_layer():
    conv = AOLConv2d(4, 6, (3, 5), stride=(2, 1), padding=(1, 2), dilation=2, groups=2,
                     bias=False, padding_mode="reflect")
    assert (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups) == (
        (3, 5), (2, 1), (1, 2), (2, 2), 2)
    assert conv.bias is None and conv.padding_mode == "reflect"
    linear = BjorckLinear(3, 5, bias=False, order=2, backward="autograd")
    constraint = linear.parametrizations.weight[0]
    assert linear.bias is None and constraint.order == 2 and constraint.backward == "autograd"
    spectral = SpectralConv2d(2, 2, 3, input_size=(7, 7), n_power_iterations=3)
    assert spectral.parametrizations.weight[0].geometry.input_size == (7, 7)
    assert spectral.parametrizations.weight[0].n_power_iterations == 3
    assert spectral.weight.shape == (2, 2, 3, 3)  # known input size: readable before forward


@pytest.mark.parametrize("stride", [1, 2])
def test_bcop_layer_pads_to_keep_the_size(stride):
    conv = BCOPConv2d(3, 3, 5, stride=stride)
    out = conv(torch.randn(2, 3, 8, 9))
    assert out.shape == (2, 3, -(-8 // stride), -(-9 // stride))
