"""Convolutional networks: each method that applies against the materialized matrices, and a
clear reason from each that does not."""

import pytest
import torch
from torch import nn

from lipkit.estimate import estimate, load_network
from lipkit.estimate.network import Affine, Convolution

UPPER = ("naive", "autolip", "seqlip", "compositional", "lipsdp-neuron")


def small_conv(activation=None):
    """conv (padding) -> conv (stride 2) -> dense on 1x8x8 inputs; no activation: linear."""
    torch.manual_seed(3)
    layers = [nn.Conv2d(1, 3, 3, padding=1), activation, nn.Conv2d(3, 2, 3, stride=2),
              activation, nn.Flatten(), nn.Linear(18, 3)]
    return nn.Sequential(*[layer for layer in layers if layer is not None]).double()


def test_linear_conv_net_every_upper_bound_holds_and_the_dense_ones_are_exact():
    model = small_conv()
    report = estimate(model, methods=UPPER, input_shape=(1, 8, 8), steps=10)
    network = report.network
    # the end-to-end matrix, column by column: the network applied to the basis (no biases
    # matter for differences)
    basis = torch.eye(64, dtype=torch.float64).reshape(64, 1, 8, 8)
    with torch.no_grad():
        matrix = (model(basis) - model(torch.zeros(1, 1, 8, 8, dtype=torch.float64))).T
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    values = {b.method: b.value for b in report.bounds}
    assert all(b.status == "ok" for b in report.bounds), [b.status for b in report.bounds]
    for name in UPPER:
        assert values[name] >= exact * (1 - 1e-9), (name, values[name], exact)
    for name in ("seqlip", "compositional", "lipsdp-neuron"):  # one dense matrix: exact
        assert values[name] == pytest.approx(exact, rel=1e-6), name
    # the operator norms of naive, per convolution, against each materialized operator
    for node in network.nodes:
        if isinstance(node.op, Affine) and isinstance(node.op.operator, Convolution):
            operator = node.op.operator
            dense = float(torch.linalg.matrix_norm(operator.matrix(), ord=2))
            assert dense <= operator.norm(2) * (1 + 1e-9)


def test_relu_conv_net_upper_bounds_above_attacks_and_compositional_below_naive():
    cheap = ("naive", "autolip", "seqlip", "compositional")  # LipSDP: minutes on 210 neurons
    report = estimate(small_conv(nn.ReLU()), methods=[*cheap, "lower-adversarial",
                                                      "lower-jacobian"],
                      input_shape=(1, 8, 8), steps=10)
    values = {b.method: b.value for b in report.bounds}
    lower = max(values["lower-adversarial"], values["lower-jacobian"])
    for name in cheap:
        assert values[name] >= lower * (1 - 1e-9), (name, values[name], lower)
    assert values["compositional"] <= values["naive"] * (1 + 1e-9)
    assert values["compositional"] <= values["seqlip"] * (1 + 1e-9)
    assert report.consistent


def test_large_conv_net_dense_methods_say_why_operator_methods_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16 * 32 * 32, 10)).double()
    network = load_network(model, (3, 32, 32))
    report = estimate(network, methods=list(UPPER))
    bounds = {b.method: b for b in report.bounds}
    for name in ("naive", "autolip"):
        assert bounds[name].status == "ok" and bounds[name].value > 0
    for name in ("seqlip", "compositional", "lipsdp-neuron"):
        status = bounds[name].status
        assert status.startswith("not applicable") and "dense matrix" in status, status


@pytest.mark.parametrize(("conv", "size"), [
    (nn.Conv2d(4, 6, 2, stride=2), (7, 6)),  # 2x2 windows of stride 2; a row left unread
    (nn.Conv2d(4, 6, 2, stride=3, dilation=2, groups=2, padding=1), (8, 8)),
    (nn.Conv2d(2, 2, 3, stride=3, padding=1, padding_mode="reflect"), (6, 6)),
    (nn.Conv1d(3, 5, 2, stride=2), (8,)),
])
def test_disjoint_windows_bound_the_strided_convolution_tightly(conv, size):
    torch.manual_seed(4)
    conv = conv.double()
    network = load_network(conv, (conv.in_channels, *size))
    operator = network.nodes[0].op.operator
    exact = float(torch.linalg.matrix_norm(operator.matrix(), ord=2))
    bound = operator.norm(2)
    assert exact <= bound * (1 + 1e-12)
    if conv.padding_mode == "zeros":  # every window holds a full copy of W_g: equality
        assert bound == pytest.approx(exact, rel=1e-9)
    # 2x2 average pooling of stride 2: exactly 1/2, where the stride-1 bound gives 1
    pool = load_network(nn.AvgPool2d(2), (3, 6, 6)).nodes[0].op.operator
    assert pool.norm(2) == pytest.approx(0.5, rel=1e-12)
