"""Transposed convolutions: the operator against the torch module (its output, its Jacobian,
the exact spectral norm of the materialized matrix), the ONNX ConvTranspose against torch and
onnxruntime, and every estimation method on small conv / transposed-conv networks."""

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import helper
from torch import nn

from lipkit.errors import UnsupportedModuleError
from lipkit.estimate import estimate, load_network
from lipkit.estimate.importers.onnx_file import import_onnx
from lipkit.estimate.network import Affine, TransposedConvolution
from lipkit.estimate.witness import jacobians

from .test_estimate_onnx import (
    TOLERANCE,
    check_against_onnxruntime,
    check_same_function,
    export,
    inputs,
    save,
)

# (module, input shape): strides, paddings, output paddings (also >= the stride, allowed
# where it is below the dilation), dilations, groups, in 1-D to 3-D
LAYERS = {
    "1d-stride2-outpad": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1,
                                                     output_padding=1), (3, 7)),
    "2d-groups-dilation": (lambda: nn.ConvTranspose2d(4, 6, (3, 2), stride=(2, 3),
                                                      padding=(1, 0), output_padding=(1, 2),
                                                      dilation=(1, 2), groups=2), (4, 4, 5)),
    "2d-outpad-above-stride": (lambda: nn.ConvTranspose2d(2, 3, 3, output_padding=2,
                                                          dilation=3, bias=False), (2, 3, 4)),
    "2d-padding-beyond-outpad": (lambda: nn.ConvTranspose2d(2, 2, 4, stride=2, padding=2,
                                                            output_padding=1), (2, 4, 4)),
    "3d-stride2": (lambda: nn.ConvTranspose3d(2, 2, 2, stride=2, padding=1, output_padding=1),
                   (2, 3, 2, 3)),
}


def layer(name):
    torch.manual_seed(1)
    build, shape = LAYERS[name]
    return build().double(), shape


@pytest.mark.parametrize("name", list(LAYERS))
def test_operator_is_the_module_its_jacobian_and_its_adjoint(name):
    module, shape = layer(name)
    network = load_network(module, shape)
    operator = network.nodes[0].op.operator
    assert isinstance(operator, TransposedConvolution)
    x = torch.randn(4, *shape, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x)
    assert operator.out_shape == tuple(expected.shape[1:])
    torch.testing.assert_close(network(x), expected, atol=1e-12, rtol=1e-12)
    jacobian = torch.autograd.functional.jacobian(lambda v: module(v[None])[0],
                                                  torch.zeros(shape, dtype=torch.float64))
    matrix = operator.matrix()
    torch.testing.assert_close(matrix, jacobian.reshape(operator.out_features, -1),
                               atol=1e-12, rtol=1e-12)
    y = torch.randn(3, *operator.out_shape, dtype=torch.float64)
    torch.testing.assert_close(operator.adjoint(y).reshape(3, -1), y.reshape(3, -1) @ matrix,
                               atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", list(LAYERS))
def test_operator_norms_bound_the_materialized_matrix(name):
    module, shape = layer(name)
    operator = load_network(module, shape).nodes[0].op.operator
    matrix = operator.matrix()
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    bound = operator.norm(2)
    assert exact <= bound * (1 + 1e-12), (exact, bound)
    assert bound <= 2 * exact, (exact, bound)  # the torus bound on these small sizes
    rows, columns = float(matrix.abs().sum(1).max()), float(matrix.abs().sum(0).max())
    assert operator.norm(math.inf) == pytest.approx(rows, rel=1e-12)  # small: dense
    assert operator.norm(1) == pytest.approx(columns, rel=1e-12)
    # what a large operator uses instead: the convolution's l1 / l-inf norms, swapped
    assert operator.convolution.norm(1) >= rows * (1 - 1e-12)
    assert operator.convolution.norm(math.inf) >= columns * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dims=st.sampled_from([1, 2]), groups=st.integers(1, 2),
       kernel=st.integers(1, 3), stride=st.integers(1, 3), dilation=st.integers(1, 2),
       padding=st.integers(0, 2), size=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_random_transposed_convolutions(data, dims, groups, kernel, stride, dilation, padding,
                                        size, seed):
    output_padding = data.draw(st.integers(0, max(stride, dilation) - 1), label="out pad")
    full = (size - 1) * stride + dilation * (kernel - 1) + 1
    assume(full - 2 * padding + output_padding >= 1)
    torch.manual_seed(seed)
    module = (nn.ConvTranspose1d, nn.ConvTranspose2d)[dims - 1](
        groups * data.draw(st.integers(1, 2), label="in per group"),
        groups * data.draw(st.integers(1, 2), label="out per group"), kernel, stride, padding,
        output_padding, groups, dilation=dilation).double()
    shape = (module.in_channels, *(size,) * dims)
    operator = load_network(module, shape).nodes[0].op.operator
    x = torch.randn(2, *shape, dtype=torch.float64)
    with torch.no_grad():
        expected = module(x) - module.bias.reshape(-1, *([1] * dims))
    torch.testing.assert_close(operator.apply(x), expected, atol=1e-12, rtol=1e-12)
    matrix = operator.matrix()
    y = torch.randn(2, *operator.out_shape, dtype=torch.float64)
    torch.testing.assert_close(operator.adjoint(y).reshape(2, -1), y.reshape(2, -1) @ matrix,
                               atol=1e-12, rtol=1e-12)
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    assert exact <= operator.norm(2) * (1 + 1e-12)
    assert float(matrix.abs().sum(1).max()) <= operator.convolution.norm(1) * (1 + 1e-12)
    assert float(matrix.abs().sum(0).max()) <= operator.convolution.norm(math.inf) * (1 + 1e-12)


def test_large_operator_norms_are_sound_without_the_dense_matrix():
    torch.manual_seed(2)
    module = nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1).double()
    operator = load_network(module, (8, 24, 24)).nodes[0].op.operator
    assert operator.in_features * operator.out_features > 4_000_000
    # each entry of the operator is one kernel entry (or 0): the operator of |K| is |A|, and
    # |A| 1, |A|^T 1 are the absolute row and column sums, the exact l-inf and l1 norms
    absolute = TransposedConvolution(module.weight.abs(), operator.stride, operator.padding,
                                     operator.output_padding, operator.dilation,
                                     operator.groups, operator.in_shape)
    rows = float(absolute.apply(torch.ones(1, *operator.in_shape, dtype=torch.float64)).max())
    columns = float(absolute.adjoint(torch.ones(1, *operator.out_shape,
                                                dtype=torch.float64)).max())
    kernel = module.weight.detach().abs()
    assert rows <= operator.norm(math.inf) * (1 + 1e-12)
    assert columns <= operator.norm(1) * (1 + 1e-12)
    # no worse than summing the kernel over every tap and channel it meets
    assert operator.norm(math.inf) <= float(kernel.sum(dim=(0, 2, 3)).max()) * (1 + 1e-12)
    assert operator.norm(1) <= float(kernel.sum(dim=(1, 2, 3)).max()) * (1 + 1e-12)
    # l2: above the power iteration's estimate (from below) through apply and adjoint
    u = torch.randn(1, *operator.in_shape, dtype=torch.float64)
    for _ in range(30):
        u = operator.adjoint(operator.apply(u))
        u = u / u.norm()
    estimate_from_below = float(operator.apply(u).norm())
    assert estimate_from_below <= operator.norm(2) <= 1.5 * estimate_from_below


def test_per_channel_scaling_folds_into_the_kernel():
    module, shape = layer("2d-groups-dilation")
    operator = load_network(module, shape).nodes[0].op.operator
    scale = torch.linspace(-2, 3, operator.out_shape[0], dtype=torch.float64)
    per_output = scale.repeat_interleave(math.prod(operator.out_shape[1:]))
    torch.testing.assert_close(operator.scaled(scale).matrix(),
                               per_output[:, None] * operator.matrix(), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_exported_conv_transpose_is_the_same_function(name, tmp_path):
    module, shape = layer(name)
    model = nn.Sequential(module.float(), nn.ReLU())
    if name == "2d-outpad-above-stride":  # onnxruntime refuses output_padding >= stride
        network = import_onnx(export(model, shape, tmp_path / "model.onnx"))
        x = inputs(shape)
        with torch.no_grad():
            torch.testing.assert_close(network(x), model(x).double(), **TOLERANCE)
    else:
        network = check_same_function(model, shape, tmp_path / "model.onnx")
    assert isinstance(network.nodes[0].op.operator, TransposedConvolution)


@pytest.mark.parametrize("attributes", [
    {"auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"auto_pad": "SAME_LOWER", "strides": [2, 1]},
    {"auto_pad": "VALID", "strides": [1, 2]},
    {"output_shape": [8, 9], "strides": [2, 2]},
    {"output_shape": [8, 9], "strides": [2, 2], "auto_pad": "SAME_UPPER"},
    {"output_shape": [8, 9], "strides": [2, 2], "output_padding": [1, 0]},
    {"pads": [1, 0, 2, 1], "strides": [2, 2], "output_padding": [1, 1], "group": 2},
])
def test_handmade_conv_transpose_against_onnxruntime(attributes, tmp_path):
    rng = np.random.default_rng(0)
    groups = attributes.get("group", 1)
    initializers = {"w": rng.normal(size=(4, 6 // groups, 3, 4)), "b": rng.normal(size=6)}
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up", **attributes)
    path = save([node], initializers, [4, 4, 5], ["N", 6, "H", "W"], tmp_path / "m.onnx")
    network = check_against_onnxruntime(path, (4, 4, 5))
    if "output_shape" in attributes:
        assert network.nodes[0].op.operator.out_shape == (6, 8, 9)


def test_unmappable_settings_are_errors_naming_the_layer(tmp_path):
    rng = np.random.default_rng(0)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", output_shape=[20])
    path = save([node], {"w": rng.normal(size=(2, 2, 3))}, [2, 5], ["N", 2, 20],
                tmp_path / "m.onnx")
    with pytest.raises(UnsupportedModuleError, match=r"'up'.*output_shape"):
        import_onnx(path)
    reflect = nn.Sequential(nn.ConvTranspose1d(2, 2, 3))
    reflect[0].padding_mode = "reflect"  # torch refuses it in the constructor only
    with pytest.raises(UnsupportedModuleError, match=r"'0'.*padding_mode"):
        load_network(reflect, (2, 5))

    class SizedUpsampling(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose1d(2, 2, 3, stride=2)

        def forward(self, x):
            return self.up(x, output_size=[12])

    with pytest.raises(UnsupportedModuleError, match=r"'up'.*output_size"):
        load_network(SizedUpsampling(), (2, 5))


def autoencoder(activation=None, batch_norm=False):
    """conv (stride 2) -> act -> conv-transpose (stride 2) -> [BatchNorm] -> act ->
    conv-transpose: on odd sizes the input's shape back, as in autoencoders and GAN
    generators. No activation: a linear network."""
    torch.manual_seed(5)
    layers = [nn.Conv2d(1, 3, 3, stride=2, padding=1), activation,
              nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1),
              nn.BatchNorm2d(2) if batch_norm else None, activation,
              nn.ConvTranspose2d(2, 1, 3, padding=1)]
    model = nn.Sequential(*[layer for layer in layers if layer is not None]).double()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_var.uniform_(0.3, 2.0)
                module.weight.uniform_(-2, 2)
    return model.eval()


@pytest.mark.parametrize(("norm", "upper"), [
    ("2", ("naive", "autolip", "seqlip", "compositional", "lipsdp-neuron")),
    ("inf", ("naive", "autolip", "lp-jacobian")),
])
def test_autoencoder_upper_bounds_above_the_lower_bounds(norm, upper):
    model = autoencoder(nn.ReLU(), batch_norm=True)
    report = estimate(model, methods=[*upper, "lower-jacobian", "lower-adversarial"],
                      norm=norm, input_shape=(1, 5, 5), steps=10)
    values = {b.method: b.value for b in report.bounds}
    assert all(b.status == "ok" for b in report.bounds), [b.status for b in report.bounds]
    assert report.network.nodes[-1].op.operator.out_shape == (1, 5, 5)
    lower = max(values["lower-jacobian"], values["lower-adversarial"])
    assert values["naive"] >= values["autolip"] * (1 - 1e-12)
    for name in upper:
        assert values[name] >= lower * (1 - 1e-9), (name, values[name], lower)
    assert report.consistent


def test_linear_autoencoder_dense_methods_are_exact_and_lp_bounds_l_infinity():
    model = autoencoder()
    basis = torch.eye(49, dtype=torch.float64).reshape(49, 1, 7, 7)
    with torch.no_grad():
        matrix = (model(basis) - model(torch.zeros(1, 1, 7, 7, dtype=torch.float64))
                  ).reshape(49, -1).T
    exact = float(torch.linalg.matrix_norm(matrix, ord=2))
    upper = ("naive", "autolip", "seqlip", "compositional", "lipsdp-neuron")
    report = estimate(model, methods=upper, input_shape=(1, 7, 7), steps=10)
    values = {b.method: b.value for b in report.bounds}
    for name in upper:
        assert values[name] >= exact * (1 - 1e-9), (name, values[name], exact)
    for name in ("seqlip", "compositional", "lipsdp-neuron"):
        assert values[name] == pytest.approx(exact, rel=1e-6), name
    # l-infinity: the largest absolute row sum of the network's matrix
    rows = float(matrix.abs().sum(1).max())
    report = estimate(model, methods=["naive", "autolip", "lp-jacobian"], norm="inf",
                      input_shape=(1, 7, 7))
    for bound in report.bounds:
        assert bound.status == "ok", (bound.method, bound.status)
        assert bound.value >= rows * (1 - 1e-9), (bound.method, bound.value, rows)
    assert {b.method: b.value for b in report.bounds}["lp-jacobian"] == pytest.approx(
        rows, rel=1e-6)


def test_large_conv_transpose_dense_methods_say_why_operator_methods_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.ConvTranspose2d(16, 16, 4, stride=2, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 1, 3, padding=1)).double()
    network = load_network(model, (16, 16, 16))
    assert isinstance(network.nodes[0].op, Affine)
    report = estimate(network, methods=["naive", "autolip", "seqlip", "compositional",
                                        "lipsdp-neuron"])
    bounds = {b.method: b for b in report.bounds}
    for name in ("naive", "autolip"):
        assert bounds[name].status == "ok" and bounds[name].value > 0
    for name in ("seqlip", "compositional", "lipsdp-neuron"):
        status = bounds[name].status
        assert status.startswith("not applicable") and "'0'" in status, status


def test_decoder_jacobians_in_forward_mode_and_its_bounds():
    # more outputs than inputs: witness.jacobians takes one forward-mode pass per input
    torch.manual_seed(6)
    model = nn.Sequential(nn.Unflatten(1, (3, 1, 1)), nn.ConvTranspose2d(3, 4, 3), nn.Tanh(),
                          nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1),
                          nn.LeakyReLU(0.1)).double()
    network = load_network(model, (3,))
    assert network.out_features > network.in_features
    points = torch.randn(5, 3, dtype=torch.float64)
    expected = torch.stack([torch.autograd.functional.jacobian(
        lambda v: model(v[None]).flatten(), point) for point in points])
    torch.testing.assert_close(jacobians(network, points), expected, atol=1e-12, rtol=1e-12)
    report = estimate(network, methods=["naive", "autolip", "compositional", "lower-jacobian"])
    values = {b.method: b.value for b in report.bounds}
    for name in ("naive", "autolip", "compositional"):
        assert values[name] >= values["lower-jacobian"] * (1 - 1e-9), (name, values)


@pytest.mark.parametrize("dim", [0, 2, -3])
def test_unflatten_of_the_batch_or_a_missing_dimension_is_an_error(dim):
    with pytest.raises(UnsupportedModuleError, match=r"'0'.*unflattens dimension"):
        load_network(nn.Sequential(nn.Unflatten(dim, (2, 3))), (6,))
    unflattened = load_network(nn.Sequential(nn.Unflatten(-1, (2, 3))), (6,))
    assert unflattened.nodes[0].op.operator.out_shape == (2, 3)
