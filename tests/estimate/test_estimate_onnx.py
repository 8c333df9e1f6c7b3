"""The ONNX importer: an exported model is the same function as the torch model, as
onnxruntime running the file and as the torch.fx importer's network; operators it cannot
translate and files that are not ONNX are one-line errors naming the node or the file."""

import itertools
import math
import re
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.estimate.importers import import_module, load_network
from lipkit.estimate.importers.onnx_file import import_onnx
from lipkit.estimate.network import Activation, Add, Affine, Convolution, Diagonal
from lipkit.nn import FullSort, GroupSort, MaxMin

TOLERANCE = {"atol": 1e-5, "rtol": 1e-5}  # float32 (torch, onnxruntime) vs float64


def export(model: nn.Module, input_shape, path, dynamic: bool = True, **options):
    """``torch.onnx.export`` (the TorchScript exporter: no extra package) to ``path``."""
    model.eval()
    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(model, (torch.randn(2, *input_shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes, **options)
    return path


def run_onnxruntime(path, x: torch.Tensor) -> torch.Tensor:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return torch.from_numpy(output)


def inputs(input_shape, batch: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(seed))


def check_same_function(model, input_shape, path, fx: bool = True, **options):
    """Export, import, and compare with torch, onnxruntime and (``fx``) import_module."""
    export(model, input_shape, path, **options)
    network = import_onnx(path)
    assert network.input_shape == tuple(input_shape)
    x = inputs(input_shape, batch=5 if options.get("dynamic", True) else 2)
    with torch.no_grad():
        expected = model(x).double()
        got = network(x)
    torch.testing.assert_close(got, expected, **TOLERANCE, msg="differs from torch")
    torch.testing.assert_close(got, run_onnxruntime(path, x).double(), **TOLERANCE,
                               msg="differs from onnxruntime")
    if fx:
        # the same float32 weights: equal to rounding, unless BatchNorm is computed in float32
        # (import_module) or folded into a conv in float32 (the exporter)
        batch_norm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
        tolerance = TOLERANCE if batch_norm else {"atol": 1e-9, "rtol": 1e-9}
        reference = import_module(model, input_shape)
        with torch.no_grad():
            torch.testing.assert_close(got, reference(x), **tolerance,
                                       msg="differs from import_module")
    return network


def randomize_batch_norm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    generator = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.2)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))
    return model.eval()


# -- the zoo ---------------------------------------------------------------------------------
ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.2), "softplus": nn.Softplus, "elu": nn.ELU,
    "silu": nn.SiLU,
}


@pytest.mark.parametrize("kind", list(ACTIVATIONS))
def test_mlp_same_function(kind, tmp_path):
    torch.manual_seed(0)
    activation = ACTIVATIONS[kind]
    model = nn.Sequential(nn.Linear(6, 8), activation(), nn.Linear(8, 8), activation(),
                          nn.Linear(8, 3))
    network = check_same_function(model, (6,), tmp_path / "mlp.onnx")
    assert [n.op.kind for n in network.nodes if isinstance(n.op, Activation)] == [kind, kind]
    # a chain: Gemm, activation, Gemm, activation, Gemm
    assert network.is_chain() and len(network.nodes) == 5


def test_cnn_same_function(tmp_path):
    torch.manual_seed(1)
    model = randomize_batch_norm(nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=2, dilation=2, groups=3), nn.ReLU(), nn.BatchNorm2d(6),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(24, 4),
    ))
    network = check_same_function(model, (3, 9, 9), tmp_path / "cnn.onnx")
    convolutions = [n.op.operator for n in network.nodes
                    if isinstance(n.op, Affine) and isinstance(n.op.operator, Convolution)]
    assert [c.geometry.groups for c in convolutions] == [1, 3, 6]  # the pool is depthwise
    assert convolutions[1].geometry.dilation == (2, 2)


def test_batch_normalization_nodes_kept_by_the_exporter(tmp_path):
    # TrainingMode.PRESERVE keeps BatchNormalization nodes (in inference form) after convs
    torch.manual_seed(2)
    model = randomize_batch_norm(nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(), nn.Linear(36, 5),
        nn.BatchNorm1d(5),
    ), seed=2)
    path = tmp_path / "bn.onnx"
    network = check_same_function(model, (2, 5, 5), path,
                                  training=torch.onnx.TrainingMode.PRESERVE)
    operators = [n.op_type for n in onnx.load(str(path)).graph.node]
    assert operators.count("BatchNormalization") == 2
    diagonals = [n for n in network.nodes if isinstance(n.op, Affine)
                 and isinstance(n.op.operator, Diagonal)]
    assert len(diagonals) == 2


def test_conv1d_same_function(tmp_path):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv1d(2, 4, 3, stride=2), nn.Tanh(), nn.AvgPool1d(2),
                          nn.Flatten(), nn.Linear(12, 2))
    check_same_function(model, (2, 13), tmp_path / "conv1d.onnx")


class Residual(nn.Module):
    """``relu(x + conv(relu(conv(x))))`` flattened with ``view(x.size(0), -1)``."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv2d(3, 3, 3, padding=1)
        self.second = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        y = torch.relu(x + self.second(torch.relu(self.first(x))))
        return y.view(y.size(0), -1)


@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic-batch", "static-batch"])
def test_residual_block_same_function(dynamic, tmp_path):
    torch.manual_seed(4)
    network = check_same_function(Residual(), (3, 5, 5), tmp_path / "residual.onnx",
                                  dynamic=dynamic)
    joins = [node for node in network.nodes if isinstance(node.op, Add)]
    assert len(joins) == 1 and -1 in joins[0].inputs and not network.is_chain()


class Normalized(nn.Module):
    """Input normalization ``(x - mean) / std`` as the first operation, then a CNN."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.5, -1.0, 2.0]).reshape(3, 1, 1))
        self.register_buffer("std", torch.tensor([0.25, 2.0, 0.5]).reshape(3, 1, 1))
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.linear = nn.Linear(16, 2)

    def forward(self, x):
        return self.linear(torch.flatten(torch.sigmoid(self.conv((x - self.mean) / self.std)), 1))


def test_input_normalization_is_one_diagonal_node(tmp_path):
    torch.manual_seed(5)
    network = check_same_function(Normalized(), (3, 5, 5), tmp_path / "normalized.onnx")
    first = network.nodes[0].op
    assert isinstance(first.operator, Diagonal), network.summary()
    torch.testing.assert_close(first.operator.scale[:, 0, 0],
                               torch.tensor([4.0, 0.5, 2.0], dtype=torch.float64))
    torch.testing.assert_close(first.bias[:, 0, 0],
                               torch.tensor([-2.0, 0.5, -4.0], dtype=torch.float64))


def test_reflect_padding_folds_into_the_conv(tmp_path):
    # PyTorch exports padding_mode="reflect" as Pad(mode=reflect) + Conv(pads=0)
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), nn.ReLU(),
                          nn.Conv2d(3, 2, 3, padding=(1, 2), padding_mode="replicate"))
    network = check_same_function(model, (2, 6, 5), tmp_path / "reflect.onnx")
    geometries = [n.op.operator.geometry for n in network.nodes
                  if isinstance(n.op, Affine) and isinstance(n.op.operator, Convolution)]
    assert [g.padding_mode for g in geometries] == ["reflect", "replicate"]
    assert geometries[1].padding == ((1, 1), (2, 2))


class Difference(nn.Module):
    """``linear(a) - a`` with ``a = relu(linear(x))``: a join with a negated branch."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(4, 5), nn.Linear(5, 5)

    def forward(self, x):
        a = torch.relu(self.first(x))
        return self.second(a) - a


def test_difference_of_branches_same_function(tmp_path):
    torch.manual_seed(10)
    network = check_same_function(Difference(), (4,), tmp_path / "difference.onnx")
    assert sum(isinstance(node.op, Add) for node in network.nodes) == 1


class Transposed(nn.Module):
    """A Linear on the last axis of a transposed (channels, length) input: MatMul on 3-D."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)

    def forward(self, x):
        return torch.tanh(self.linear(x.permute(0, 2, 1))).flatten(1)


def test_transpose_and_matmul_on_leading_dimensions(tmp_path):
    torch.manual_seed(7)
    # torch.fx's importer has no permute: compared with torch and onnxruntime only
    check_same_function(Transposed(), (3, 5), tmp_path / "transposed.onnx", fx=False)


def test_load_network_dispatches_onnx_files(tmp_path):
    torch.manual_seed(8)
    path = export(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), (3,), tmp_path / "model.onnx")
    network = load_network(str(path))
    assert network.input_shape == (3,) and network.source == "model.onnx"


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    widths=st.lists(st.integers(1, 7), min_size=0, max_size=3),
    kind=st.sampled_from(sorted(ACTIVATIONS)),
    bias=st.booleans(),
)
def test_random_mlps_same_function(seed, widths, kind, bias, tmp_path_factory):
    torch.manual_seed(seed)
    sizes = [4, *widths, 2]
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[kind]())
    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    check_same_function(nn.Sequential(*layers), (4,), path)


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    dims=st.sampled_from([1, 2]),
    groups=st.integers(1, 2),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 2),
    padding=st.integers(0, 2),
    mode=st.sampled_from(["zeros", "reflect", "replicate"]),
    dilation=st.integers(1, 2),
    kind=st.sampled_from(["relu", "tanh", "leaky_relu", "elu"]),
    batch_norm=st.booleans(),
    pool=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_random_cnns_same_function(data, dims, groups, kernel, stride, padding, mode,
                                   dilation, kind, batch_norm, pool, seed, tmp_path_factory):
    torch.manual_seed(seed)
    in_channels = groups * data.draw(st.integers(1, 2), label="in per group")
    out_channels = groups * data.draw(st.integers(1, 2), label="out per group")
    size = data.draw(st.integers(3, 7), label="size")
    spatial = (size,) * dims
    out = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    assume(out >= (2 if pool else 1) and (mode != "reflect" or padding < size))
    conv = (nn.Conv1d, nn.Conv2d)[dims - 1]
    layers = [conv(in_channels, out_channels, kernel, stride, padding, dilation, groups,
                   padding_mode=mode)]
    if batch_norm:
        layers.append((nn.BatchNorm1d, nn.BatchNorm2d)[dims - 1](out_channels))
    layers.append(ACTIVATIONS[kind]())
    if pool:
        layers.append((nn.AvgPool1d, nn.AvgPool2d)[dims - 1](2))
        out //= 2
    layers += [nn.Flatten(), nn.Linear(out_channels * out ** dims, 3)]
    model = randomize_batch_norm(nn.Sequential(*layers), seed)
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    check_same_function(model, (in_channels, *spatial), path)


# -- hand-written graphs: the operators and attributes exporters rarely emit ----------------
def constant(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"make_{name}",
                            value=numpy_helper.from_array(np.asarray(value), name))


def save(nodes, initializers, input_shape, output_shape, path, opset: int = 17):
    graph = helper.make_graph(
        nodes, "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        [numpy_helper.from_array(value.astype(np.float32), name)
         for name, value in initializers.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def check_against_onnxruntime(path, shape, input_shape=None):
    network = import_onnx(path, input_shape)
    x = inputs(shape, seed=11)
    with torch.no_grad():
        got = network(x)
    torch.testing.assert_close(got, run_onnxruntime(path, x).double(), **TOLERANCE)
    return network


def test_handmade_graph_with_every_supported_operator(tmp_path):
    rng = np.random.default_rng(0)
    initializers = {
        "mean": rng.normal(size=(1, 2, 1, 1)),
        "conv_w": rng.normal(size=(4, 1, 3, 3)), "conv_b": rng.normal(size=4),
        "bn_scale": rng.normal(size=4), "bn_bias": rng.normal(size=4),
        "bn_mean": rng.normal(size=4), "bn_var": rng.uniform(0.5, 2, size=4),
        "gemm_bt": rng.normal(size=(6, 36)),  # B^T: transposed back by a folded Transpose
        "gemm_c": rng.normal(size=(1, 6)),
        "left": rng.normal(size=(3, 1)), "right": rng.normal(size=(6, 2)),
        "scale": rng.uniform(0.5, 2, size=(2,)),
    }
    nodes = [
        helper.make_node("Sub", ["mean", "x"], ["centred"], name="negate_centre"),
        constant("pads", np.array([0, 0, 1, 0, 0, 0, 0, 1], dtype=np.int64)),
        helper.make_node("Pad", ["centred", "pads"], ["padded"], name="pad"),
        helper.make_node("Conv", ["padded", "conv_w", "conv_b"], ["conv"], name="conv",
                         group=2, strides=[2, 2], auto_pad="SAME_UPPER"),  # (4, 3, 3)
        helper.make_node("BatchNormalization", ["conv", "bn_scale", "bn_bias", "bn_mean",
                                                "bn_var"], ["bn"], name="bn", epsilon=1e-3),
        helper.make_node("LeakyRelu", ["bn"], ["leaky"], name="leaky", alpha=0.3),
        helper.make_node("AveragePool", ["leaky"], ["pool"], name="pool", kernel_shape=[2, 2],
                         pads=[1, 1, 0, 0], count_include_pad=1),  # (4, 3, 3)
        helper.make_node("Elu", ["pool"], ["elu"], name="elu"),
        constant("target", np.array([0, -1], dtype=np.int64)),
        helper.make_node("Reshape", ["elu", "target"], ["flat"], name="reshape"),
        helper.make_node("Transpose", ["gemm_bt"], ["gemm_b"], name="transpose_weight",
                         perm=[1, 0]),
        helper.make_node("Gemm", ["flat", "gemm_b", "gemm_c"], ["gemm"], name="gemm",
                         alpha=0.5, beta=2.0),  # (6,)
        helper.make_node("Dropout", ["gemm"], ["dropped"], name="dropout"),
        helper.make_node("Identity", ["dropped"], ["same"], name="identity"),
        constant("axes", np.array([1], dtype=np.int64)),
        helper.make_node("Unsqueeze", ["same", "axes"], ["row"], name="unsqueeze"),  # (1, 6)
        helper.make_node("MatMul", ["left", "row"], ["outer"], name="outer"),  # (3, 6)
        helper.make_node("MatMul", ["outer", "right"], ["mixed"], name="mixed"),  # (3, 2)
        helper.make_node("Div", ["mixed", "scale"], ["scaled"], name="divide"),
        helper.make_node("Softplus", ["scaled"], ["soft"], name="softplus"),
        helper.make_node("Transpose", ["soft"], ["swapped"], name="swap", perm=[0, 2, 1]),
        helper.make_node("Neg", ["swapped"], ["negated"], name="neg"),
        helper.make_node("Flatten", ["negated"], ["flattened"], name="flatten"),
        helper.make_node("GlobalAveragePool", ["conv"], ["global"], name="global"),
        helper.make_node("Flatten", ["global"], ["global_flat"], name="global_flatten"),
        constant("keep", np.array([[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]] * 4, dtype=np.float32)),
        helper.make_node("MatMul", ["global_flat", "keep"], ["global_six"], name="embed"),
        helper.make_node("Sum", ["flattened", "global_six"], ["y"], name="join"),
    ]
    path = save(nodes, initializers, (2, 5, 5), ["N", 6], tmp_path / "handmade.onnx")
    network = check_against_onnxruntime(path, (2, 5, 5))
    conv = next(n.op.operator for n in network.nodes if n.name == "conv")
    # the Pad's (1, 0) and (0, 1), plus SAME_UPPER's (0, 1) on the padded 6 x 6 input
    assert conv.geometry.padding == ((1, 1), (0, 2)) and conv.geometry.groups == 2


def test_opset_10_pad_attribute_and_ceil_mode(tmp_path):
    nodes = [
        helper.make_node("Pad", ["x"], ["padded"], name="pad", mode="edge",
                         pads=[0, 0, 2, 1, 0, 0, 2, 0]),
        helper.make_node("AveragePool", ["padded"], ["pool"], name="pool",
                         kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),  # no partial window
        helper.make_node("Flatten", ["pool"], ["y"], name="flatten"),
    ]
    path = save(nodes, {}, (2, 5, 4), ["N", 2 * 4 * 2], tmp_path / "opset10.onnx", opset=10)
    check_against_onnxruntime(path, (2, 5, 4))


@pytest.mark.parametrize("opset", [18, 21])
def test_newer_opsets_pad_with_axes_input(opset, tmp_path):
    """Opset 18 on, Pad takes the axes its pads apply to as an input (negative allowed)."""
    nodes = [
        constant("pads", np.array([2, 1, 0, 1], dtype=np.int64)),
        constant("axes", np.array([-1, 2], dtype=np.int64)),  # width, then height
        helper.make_node("Pad", ["x", "pads", "", "axes"], ["padded"], name="pad",
                         mode="reflect"),
        helper.make_node("AveragePool", ["padded"], ["pool"], name="pool",
                         kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool"], ["y"], name="flatten"),
    ]
    # height 5 + 1 + 1 = 7 -> 3, width 4 + 2 + 0 = 6 -> 3
    path = save(nodes, {}, (2, 5, 4), ["N", 2 * 3 * 3], tmp_path / "pad.onnx", opset=opset)
    check_against_onnxruntime(path, (2, 5, 4))


def test_symbolic_input_dimensions_need_input_shape(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu")]
    path = save(nodes, {}, (2, "H"), ["N", 2, "H"], tmp_path / "symbolic.onnx")
    with pytest.raises(InvalidArgumentError, match="pass input_shape"):
        import_onnx(path)
    with pytest.raises(InvalidArgumentError, match="does not match"):
        import_onnx(path, input_shape=(3, 4))
    network = check_against_onnxruntime(path, (2, 7), input_shape=(2, 7))
    assert network.input_shape == (2, 7)


# -- errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("content", ["truncated", "random", "empty"])
def test_broken_files_are_invalid_argument_errors(content, tmp_path):
    path = export(nn.Sequential(nn.Linear(30, 30), nn.ReLU()), (30,), tmp_path / "good.onnx")
    data = path.read_bytes()
    broken = tmp_path / "broken.onnx"
    broken.write_bytes({"truncated": data[: len(data) // 2],
                        "random": np.random.default_rng(0).bytes(2000),
                        "empty": b""}[content])
    with pytest.raises(InvalidArgumentError) as error:
        import_onnx(broken)
    message = str(error.value)
    assert message.startswith(f"{broken}: not a valid ONNX model (") and "\n" not in message
    with pytest.raises(InvalidArgumentError, match="no such file"):
        import_onnx(tmp_path / "missing.onnx")


class Square(nn.Module):
    def forward(self, x):
        return x * x


@pytest.mark.parametrize(("model", "input_shape", "node", "operator", "reason"), [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2)), (1, 5, 5),
     "/1/Resize", "Resize", "no translation"),
    (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=-1)), (3,), "/1/Softmax", "Softmax",
     "export the model without its final softmax"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), (1, 6, 6), "/1/MaxPool", "MaxPool",
     "no translation"),
    (Square(), (3,), "/Mul", "Mul", "multiplies two tensors"),
    (nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular"), (1, 4, 4), "/Slice", "Slice",
     "no translation"),
])
def test_unsupported_operators_are_named(model, input_shape, node, operator, reason, tmp_path):
    path = export(model, input_shape, tmp_path / "unsupported.onnx")
    with pytest.raises(UnsupportedModuleError) as error:
        import_onnx(path)
    message = str(error.value)
    assert f"'{node}'" in message and f"ONNX {operator}" in message and reason in message
    assert error.value.path == node and "\n" not in message


@pytest.mark.parametrize(("target", "reason"), [
    ([-1], "changes the batch dimension"),
    ([3, -1], "batch dimension first"),
    ([-1, 2], "changes the batch dimension"),
    ([-1, -1], "two inferred"),
])
def test_reshapes_touching_the_batch_dimension_are_errors(target, reason, tmp_path):
    nodes = [constant("target", np.array(target, dtype=np.int64)),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="bad_reshape")]
    path = save(nodes, {}, (4,), ["N", 4], tmp_path / "reshape.onnx")
    with pytest.raises(UnsupportedModuleError, match=reason) as error:
        import_onnx(path)
    assert error.value.path == "bad_reshape"


def test_unsupported_node_in_a_handmade_graph_names_it(tmp_path):
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], name="Pool_3", kernel_shape=[3, 3])]
    path = save(nodes, {}, (2, 4, 4), ["N", 2, 2, 2], tmp_path / "pool.onnx")
    with pytest.raises(UnsupportedModuleError,
                       match=r"^unsupported module 'Pool_3' of type ONNX MaxPool: "):
        import_onnx(path)


def test_the_network_is_float64_and_evaluates_any_batch(tmp_path):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 1))
    network = import_onnx(export(model, (1, 3, 4), tmp_path / "m.onnx", dynamic=False))
    x = inputs((1, 3, 4), batch=7)
    with torch.no_grad():
        got = network(x)
        torch.testing.assert_close(got, model(x).double(), **TOLERANCE)
    assert got.dtype == torch.float64
    assert math.isclose(network.out_features, 1)


def test_weights_in_an_external_data_file(tmp_path):
    torch.manual_seed(12)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 2))
    exported = onnx.load(str(export(model, (5,), tmp_path / "inline.onnx")))
    path = tmp_path / "external.onnx"
    onnx.save_model(exported, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    assert (tmp_path / "weights.bin").is_file()
    x = inputs((5,))
    with torch.no_grad():
        torch.testing.assert_close(import_onnx(path)(x), model(x).double(), **TOLERANCE)


# -- GroupSort, as torch exports lipkit's MaxMin / GroupSort / FullSort ------------------------
def _group_sizes(network):
    return [n.op.params["group_size"] for n in network.nodes
            if isinstance(n.op, Activation) and n.op.kind == "groupsort"]


def _preset_convnet():
    from lipkit.certify import lipschitz_convnet
    from lipkit.nn import export as plain

    torch.manual_seed(3)
    model = lipschitz_convnet(2, 8, 3, "small")
    model(torch.rand(2, 2, 8, 8))  # record the convolutions' input sizes
    return plain(model)


def _preset_mlp():
    from lipkit.certify import lipschitz_mlp
    from lipkit.nn import export as plain

    torch.manual_seed(2)
    return plain(lipschitz_mlp(6, 3, hidden=(8, 4)))


@pytest.mark.parametrize(("build", "input_shape", "sizes", "fx"), [
    (lambda: nn.Sequential(nn.Linear(6, 8), GroupSort(4), nn.Linear(8, 8), FullSort(),
                           nn.Linear(8, 3)), (6,), [4, 8], True),
    (_preset_convnet, (2, 8, 8), [2, 2, 2], False),  # MaxMin on channels of feature maps
    (lambda: nn.Sequential(nn.Conv2d(2, 4, 3), MaxMin(dim=-1), nn.Flatten(), nn.Linear(64, 3)),
     (2, 6, 6), [2], False),  # MaxMin along the width
])
def test_exported_groupsort_is_the_same_function(build, input_shape, sizes, fx, tmp_path):
    torch.manual_seed(0)
    network = check_same_function(build(), input_shape, tmp_path / "groupsort.onnx", fx=fx)
    assert _group_sizes(network) == sizes


def test_preset_mlp_imports_as_a_plain_chain(tmp_path):
    network = check_same_function(_preset_mlp(), (6,), tmp_path / "mlp.onnx")
    assert _group_sizes(network) == [2, 2]
    # Gemm, MaxMin, Gemm, MaxMin, Gemm: the exporter's reshapes around MaxMin cancel out
    assert network.is_chain() and len(network.nodes) == 5


def _maxmin_nodes(order=("max", "min"), opset: int = 17):
    squeeze = {"axes": [1]} if opset < 13 else {}
    inputs = (lambda name, *rest: [name, *rest]) if opset >= 13 else (lambda name, *_: [name])
    split = (helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1, num_outputs=2)
             if opset >= 18 else  # opset 18 on: num_outputs instead of the sizes
             helper.make_node("Split", inputs("x", "halves"), ["a", "b"], name="split", axis=1,
                              **({"split": [1, 1]} if opset < 13 else {})))
    nodes = [split,
             helper.make_node("Squeeze", inputs("a", "axes"), ["a1"], name="sq_a", **squeeze),
             helper.make_node("Squeeze", inputs("b", "axes"), ["b1"], name="sq_b", **squeeze),
             helper.make_node("Max", ["a1", "b1"], ["max"], name="max"),
             helper.make_node("Min", ["b1", "a1"], ["min"], name="min"),
             helper.make_node("Unsqueeze", inputs(order[0], "axes"), ["u0"], name="un_0",
                              **squeeze),
             helper.make_node("Unsqueeze", inputs(order[1], "axes"), ["u1"], name="un_1",
                              **squeeze),
             helper.make_node("Concat", ["u0", "u1"], ["y"], name="concat", axis=1)]
    if opset >= 13:
        nodes = [constant("halves", np.array([1, 1], dtype=np.int64)),
                 constant("axes", np.array([1], dtype=np.int64)), *nodes]
    return nodes


@pytest.mark.parametrize("opset", [11, 17, 18, 21])
def test_handmade_maxmin_pattern(opset, tmp_path):
    path = save(_maxmin_nodes(opset=opset), {}, (2,), ["N", 2], tmp_path / "maxmin.onnx",
                opset=opset)
    network = check_against_onnxruntime(path, (2,))
    assert _group_sizes(network) == [2] and len(network.nodes) == 1


@pytest.mark.parametrize(("nodes", "input_shape", "node", "operator", "reason"), [
    (_maxmin_nodes(order=("min", "max")), (2,), "concat", "Concat", "Max then Min"),
    ([helper.make_node("Relu", ["x"], ["r"], name="relu"),
      helper.make_node("Max", ["x", "r"], ["y"], name="max")], (2,), "max", "Max",
     "only inside MaxMin"),
    ([constant("k", np.array([2], dtype=np.int64)),
      helper.make_node("TopK", ["x", "k"], ["y", "i"], name="topk", axis=1)], (4,), "topk",
     "TopK", "TopK of 2 of 4 values"),
    ([constant("parts", np.array([1, 1, 1], dtype=np.int64)),
      helper.make_node("Split", ["x", "parts"], ["a", "b", "c"], name="split", axis=1),
      helper.make_node("Max", ["a", "b"], ["y"], name="max")], (3,), "split", "Split",
     "a Split of 3 values"),
    ([constant("halves", np.array([1, 1], dtype=np.int64)),
      helper.make_node("Split", ["x", "halves"], ["a", "b"], name="split", axis=1),
      helper.make_node("Relu", ["a"], ["y"], name="relu")], (2,), "relu", "Relu",
     "reads a part of Split 'split'"),
])
def test_lookalikes_of_maxmin_are_named_errors(nodes, input_shape, node, operator, reason,
                                               tmp_path):
    path = save(nodes, {}, input_shape, ["N", "M"], tmp_path / "lookalike.onnx")
    with pytest.raises(UnsupportedModuleError) as error:
        import_onnx(path)
    message = str(error.value)
    assert error.value.path == node and f"ONNX {operator}" in message and reason in message
    assert "\n" not in message


# -- activations: every attribute read, the shared translations ---------------------------
def _activation_graph(op: str, path, opset: int = 20, inputs_=(), initializers=None,
                      **attributes):
    """x (N, 3, 4) -> 3x-stretched by a constant Mul (so inputs reach the tails) -> op."""
    nodes = [constant("stretch", np.float32(6.0)),
             helper.make_node("Mul", ["x", "stretch"], ["h"], name="stretch"),
             helper.make_node(op, ["h", *inputs_], ["y"], name="act", **attributes)]
    return save(nodes, initializers or {}, (3, 4), ["N", 3, 4], path, opset=opset)


ONNX_ACTIVATIONS = [
    ("Relu", {}, {}, (0.0, 1.0)),
    ("LeakyRelu", {"alpha": -0.5}, {}, (-0.5, 1.0)),
    ("LeakyRelu", {"alpha": 2.5}, {}, (1.0, 2.5)),
    ("PRelu", {}, {"slope": np.array([[-0.5], [0.25], [3.0]])}, (-0.5, 3.0)),
    ("PRelu", {}, {"slope": np.array([0.3])}, (0.3, 1.0)),
    ("Elu", {"alpha": 3.0}, {}, (0.0, 3.0)),
    ("Celu", {"alpha": 2.0}, {}, (0.0, 1.0)),
    ("Selu", {}, {}, (0.0, 1.7580993)),
    ("Selu", {"alpha": 2.0, "gamma": 0.5}, {}, (0.0, 1.0)),
    ("Softplus", {}, {}, (0.0, 1.0)),
    ("Softsign", {}, {}, (0.0, 1.0)),
    ("Sigmoid", {}, {}, (0.0, 0.25)),
    ("HardSigmoid", {"alpha": -0.3, "beta": 0.4}, {}, (-0.3, 0.0)),
    ("HardSwish", {}, {}, (-0.5, 1.5)),
    ("Tanh", {}, {}, (0.0, 1.0)),
    ("Gelu", {}, {}, (-0.1289041, 1.1289041)),
    ("Gelu", {"approximate": "tanh"}, {}, (-0.1289931, 1.1289931)),
    ("Mish", {}, {}, (-0.1125261, 1.0884982)),
    ("Clip", {}, {"low": np.array(-0.5), "high": np.array(2.0)}, (0.0, 1.0)),
    ("ThresholdedRelu", {"alpha": 0.0}, {}, (0.0, 1.0)),
    ("Shrink", {"bias": 0.3, "lambd": 0.3}, {}, (0.0, 1.0)),
]


@pytest.mark.parametrize(("op", "attributes", "extra", "slope"), ONNX_ACTIVATIONS,
                         ids=[f"{op}-{i}" for i, (op, *_) in enumerate(ONNX_ACTIVATIONS)])
def test_activations_with_their_attributes_match_onnxruntime(op, attributes, extra, slope,
                                                             tmp_path):
    path = _activation_graph(op, tmp_path / "act.onnx", inputs_=list(extra),
                             initializers=extra, **attributes)
    network = check_against_onnxruntime(path, (3, 4))
    (activation,) = [node.op for node in network.nodes if not isinstance(node.op, Affine)]
    assert activation.slope == pytest.approx(slope, abs=1e-6), op


@pytest.mark.parametrize(("op", "attributes", "reason"), [
    ("Gelu", {"approximate": "fast"}, "approximate='fast'"),
    ("Shrink", {"bias": 0.0, "lambd": 0.5}, "discontinuous"),
    ("ThresholdedRelu", {"alpha": 1.0}, "discontinuous"),
    ("Celu", {"alpha": -1.0}, "alpha <= 0"),
])
def test_activations_lipkit_cannot_import_exactly_are_named(op, attributes, reason, tmp_path):
    path = _activation_graph(op, tmp_path / "act.onnx", **attributes)
    with pytest.raises(UnsupportedModuleError, match=reason) as error:
        import_onnx(path)
    assert f"'act' of type ONNX {op}" in str(error.value)


def test_clip_by_a_computed_tensor_is_refused(tmp_path):
    nodes = [helper.make_node("Clip", ["x", "x"], ["y"], name="clip")]
    path = save(nodes, {}, (3, 4), ["N", 3, 4], tmp_path / "clip.onnx")
    with pytest.raises(UnsupportedModuleError, match=r"'clip' of type ONNX Clip.*constant"):
        import_onnx(path)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("b", np.array([1.0, np.inf, np.nan]), "initializer 'b'.*has 2 non-finite entries"),
    ("w", np.full((3, 4), np.nan), "initializer 'w'.*has 12 non-finite entries"),
])
def test_non_finite_initializers_are_named(name, value, message, tmp_path):
    initializers = {"w": np.ones((3, 4)), "b": np.zeros(3)} | {name: value}
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in initializers.items()])
    path = tmp_path / "nan.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InvalidArgumentError, match=message):
        import_onnx(path)


def test_boolean_weights_are_refused(tmp_path):
    weight = numpy_helper.from_array(np.ones((3, 4), dtype=bool), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weight])
    path = tmp_path / "bool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(InvalidArgumentError, match=r"initializer 'w'.*has type bool"):
        import_onnx(path)


def test_huge_initializers_are_refused_before_they_are_read(tmp_path, monkeypatch):
    """A weight whose declared dims exceed the limit is refused from its dims alone: the
    conversion to an array (3.2 GB in float64 for 20000 x 20000) never starts."""
    from lipkit.estimate.importers import onnx_file

    weight = numpy_helper.from_array(np.zeros((300, 300), dtype=np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 300])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 300])], [weight])
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    monkeypatch.setattr(onnx_file, "_MAX_ENTRIES", 300 * 300 - 1)
    converted = onnx_file.numpy_helper.to_array

    def forbidden(tensor, *args, **kwargs):
        assert tensor.name != "w", "the oversized initializer was converted"
        return converted(tensor, *args, **kwargs)

    monkeypatch.setattr(onnx_file.numpy_helper, "to_array", forbidden)
    with pytest.raises(InvalidArgumentError, match=r"initializer 'w' has shape \[300, 300\]"):
        import_onnx(path)


# -- normalization: one opset, folding by onnx's reference evaluator, sizes checked first ---
class SqueezesAndClips(nn.Module):
    """Clip (attributes before opset 11, inputs after), Unsqueeze / Squeeze (axes attribute
    before opset 13, input after) and the Shape -> Gather -> Concat -> Reshape of a view."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 8)
        self.clip = nn.Hardtanh(-0.5, 2.0)
        self.conv = nn.Conv1d(1, 1, 3)
        self.out = nn.Linear(6, 3)

    def forward(self, x):
        h = self.conv(self.clip(self.fc(x)).unsqueeze(1)).squeeze(1)
        return self.out(h.view(h.size(0), -1))


def test_models_exported_at_several_opsets_import_to_the_same_network(tmp_path):
    torch.manual_seed(21)
    model = SqueezesAndClips().eval()
    x = inputs((6,), seed=3) * 3
    outputs = {}
    for opset in (10, 11, 13, 17, 20):
        path = export(model, (6,), tmp_path / f"opset{opset}.onnx", opset_version=opset)
        assert onnx.load(str(path)).opset_import[0].version == opset
        network = import_onnx(path)
        with torch.no_grad():
            outputs[opset] = network(x)
        kinds = [node.op.kind for node in network.nodes if isinstance(node.op, Activation)]
        assert kinds == ["hardtanh"], opset
    with torch.no_grad():
        expected = model(x).double()
    for opset, got in outputs.items():
        torch.testing.assert_close(got, expected, **TOLERANCE, msg=f"opset {opset}")
        torch.testing.assert_close(got, outputs[20], atol=1e-12, rtol=1e-12, msg=f"{opset}")


@pytest.mark.parametrize("opset", [None, 17])
@pytest.mark.parametrize(("activation", "kind"), [
    (nn.GELU(), "gelu"), (nn.GELU(approximate="tanh"), "gelu"), (nn.LogSigmoid(), "logsigmoid"),
    (nn.Tanhshrink(), "tanhshrink"), (nn.Softshrink(), "softshrink"),
    (nn.Softshrink(0.3), "softshrink"),
])
def test_activations_exported_as_op_patterns_are_read(activation, kind, opset, tmp_path):
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 6), activation, nn.Linear(6, 2))
    options = {} if opset is None else {"opset_version": opset}
    network = check_same_function(model, (3,), tmp_path / "pattern.onnx", **options)
    kinds = [node.op.kind for node in network.nodes if isinstance(node.op, Activation)]
    assert kinds == [kind]
    (node,) = [node for node in network.nodes if isinstance(node.op, Activation)]
    if isinstance(activation, nn.Softshrink):
        assert node.op.params["lambd"] == activation.lambd
    if isinstance(activation, nn.GELU):  # below opset 20 the tanh form is an op pattern
        assert node.op.params.get("approximate", "none") == activation.approximate


SQRT2 = np.float32(math.sqrt(2))  # 1.41421353816986083984375, as torch writes it


def _gelu_nodes(sqrt2=SQRT2, one=1.0, half=0.5):
    return [constant("sqrt2", sqrt2), constant("one", np.float32(one)),
            constant("half", np.float32(half)),
            helper.make_node("Div", ["x", "sqrt2"], ["scaled"], name="div"),
            helper.make_node("Erf", ["scaled"], ["erf"], name="erf"),
            helper.make_node("Add", ["erf", "one"], ["plus"], name="plus_one"),
            helper.make_node("Mul", ["x", "plus"], ["double"], name="times_x"),
            helper.make_node("Mul", ["double", "half"], ["y"], name="halve")]


GELU_TANH_SCALE = np.float32(math.sqrt(2 / math.pi))


def _gelu_tanh_nodes(cube=0.044715, scale=GELU_TANH_SCALE, one=1.0, half=0.5, power=False):
    """GELU's tanh form, with x^3 as Pow (tf2onnx-style) or as x * (x * x) (PyTorch), the
    final halving on x first: (0.5 x) * (1 + Tanh(.))."""
    cubed = ([constant("three", np.float32(3.0)),
              helper.make_node("Pow", ["x", "three"], ["x3"], name="cube")] if power else
             [helper.make_node("Mul", ["x", "x"], ["x2"], name="square"),
              helper.make_node("Mul", ["x2", "x"], ["x3"], name="cube")])
    return [constant("c", np.float32(cube)), constant("k", np.float32(scale)),
            constant("one", np.float32(one)), constant("half", np.float32(half)), *cubed,
            helper.make_node("Mul", ["x3", "c"], ["cx3"], name="times_c"),
            helper.make_node("Add", ["cx3", "x"], ["inner"], name="inner"),
            helper.make_node("Mul", ["k", "inner"], ["scaled"], name="times_k"),
            helper.make_node("Tanh", ["scaled"], ["t"], name="tanh"),
            helper.make_node("Add", ["t", "one"], ["plus"], name="plus_one"),
            helper.make_node("Mul", ["x", "half"], ["half_x"], name="half_x"),
            helper.make_node("Mul", ["half_x", "plus"], ["y"], name="times_half_x")]


def _softshrink_nodes(greater=0.5, sub=0.5, less=-0.5, add=0.5, zero=0.0):
    return [constant("g", np.float32(greater)), constant("s", np.float32(sub)),
            constant("l", np.float32(less)), constant("a", np.float32(add)),
            constant("zero", np.float32(zero)),
            helper.make_node("Greater", ["x", "g"], ["above"], name="above"),
            helper.make_node("Sub", ["x", "s"], ["shifted_down"], name="shift_down"),
            helper.make_node("Where", ["above", "shifted_down", "zero"], ["upper"], name="upper"),
            helper.make_node("Less", ["x", "l"], ["below"], name="below"),
            helper.make_node("Add", ["x", "a"], ["shifted_up"], name="shift_up"),
            helper.make_node("Where", ["below", "shifted_up", "zero"], ["lower"], name="lower"),
            helper.make_node("Add", ["upper", "lower"], ["y"], name="sum")]


def test_handmade_patterns_match_onnxruntime(tmp_path):
    for name, nodes, kind in [("gelu", _gelu_nodes(), "gelu"),
                              ("gelu_tanh", _gelu_tanh_nodes(), "gelu"),
                              ("gelu_tanh_pow", _gelu_tanh_nodes(power=True), "gelu"),
                              ("softshrink", _softshrink_nodes(), "softshrink")]:
        path = save(nodes, {}, (3, 4), ["N", 3, 4], tmp_path / f"{name}.onnx")
        network = check_against_onnxruntime(path, (3, 4))
        assert [node.op.kind for node in network.nodes if isinstance(node.op, Activation)] \
            == [kind]
        if name.startswith("gelu_tanh"):
            (node,) = [node for node in network.nodes if isinstance(node.op, Activation)]
            assert node.op.params["approximate"] == "tanh"


@pytest.mark.parametrize(("nodes", "node", "operator", "reason"), [
    (_gelu_nodes(sqrt2=np.float32(1.4142)), "erf", "Erf", "not x / sqrt(2)"),
    (_gelu_nodes(sqrt2=np.nextafter(SQRT2, np.float32(2))), "erf", "Erf", "not x / sqrt(2)"),
    (_gelu_nodes(one=2.0), "plus_one", "Add", "only as GELU"),
    (_gelu_nodes(half=0.25), "halve", "Mul", "only as GELU"),
    (_gelu_tanh_nodes(cube=0.0447), "times_c", "Mul", "only as GELU"),
    (_gelu_tanh_nodes(scale=0.8), "times_k", "Mul", "only as GELU"),
    (_gelu_tanh_nodes(one=2.0), "plus_one", "Add", "only as GELU"),
    (_gelu_tanh_nodes(half=0.25), "times_half_x", "Mul", "only as GELU"),
    ([constant("two", np.float32(2.0)), helper.make_node("Pow", ["x", "two"], ["y"],
                                                         name="square")],
     "square", "Pow", "only as x^3"),
    ([helper.make_node("Mul", ["x", "x"], ["x2"], name="square"),
      helper.make_node("Relu", ["x2"], ["y"], name="relu")], "relu", "Relu", "pattern begun"),
    (_softshrink_nodes(sub=0.4), "upper", "Where", "only inside Softshrink"),
    (_softshrink_nodes(less=-0.4), "lower", "Where", "only inside Softshrink"),
    (_softshrink_nodes(zero=0.1), "upper", "Where", "only inside Softshrink"),
    (_softshrink_nodes(greater=-0.5, sub=-0.5, less=0.5, add=-0.5), "upper", "Where",
     "l >= 0"),
    ([helper.make_node("Tanh", ["x"], ["t"], name="tanh"),
      helper.make_node("Log", ["t"], ["y"], name="log")], "log", "Log", "only as LogSigmoid"),
])
def test_lookalikes_of_exported_patterns_are_named(nodes, node, operator, reason, tmp_path):
    path = save(nodes, {}, (3, 4), ["N", 3, 4], tmp_path / "lookalike.onnx")
    with pytest.raises(UnsupportedModuleError, match=re.escape(reason)) as error:
        import_onnx(path)
    assert error.value.path == node and f"ONNX {operator}" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("nodes", "node", "shape"), [
    ([constant("size", np.array([1 << 20, 1 << 20], dtype=np.int64)),
      helper.make_node("ConstantOfShape", ["size"], ["big"], name="bomb")],
     "bomb", [1 << 20, 1 << 20]),
    ([constant("size", np.array([1 << 28, 4], dtype=np.int64)),
      constant("ones", np.ones((1, 4), dtype=np.float32)),
      helper.make_node("Expand", ["ones", "size"], ["big"], name="bomb")],
     "bomb", [1 << 28, 4]),
    ([constant("ones", np.ones((1, 4), dtype=np.float32)),
      constant("repeats", np.array([1 << 27, 1], dtype=np.int64)),
      helper.make_node("Tile", ["ones", "repeats"], ["big"], name="bomb")],
     "bomb", [1 << 27, 4]),
])
def test_constant_bombs_are_refused_before_they_are_computed(nodes, node, shape, tmp_path,
                                                              monkeypatch):
    from lipkit.estimate.importers import onnx_file

    nodes = [*nodes, helper.make_node("Add", ["x", "big"], ["y"], name="add")]
    path = save(nodes, {}, (4,), ["N", 4], tmp_path / "bomb.onnx")

    class Forbidden:
        def __init__(self, model, *args, **kwargs):
            raise AssertionError(f"evaluated {[n.op_type for n in model.graph.node]}")

    monkeypatch.setattr(onnx_file, "ReferenceEvaluator", Forbidden)
    with pytest.raises(InvalidArgumentError) as error:
        import_onnx(path)
    message = str(error.value)
    assert f"node '{node}'" in message and f"would have shape {shape}" in message
    assert "\n" not in message


def test_small_constants_are_folded_by_the_reference_evaluator(tmp_path, monkeypatch):
    from lipkit.estimate.importers import onnx_file

    calls = []
    evaluator = onnx_file.ReferenceEvaluator

    def counted(model, *args, **kwargs):
        calls.append(model.graph.node[0].op_type)
        return evaluator(model, *args, **kwargs)

    monkeypatch.setattr(onnx_file, "ReferenceEvaluator", counted)
    nodes = [constant("size", np.array([3, 4], dtype=np.int64)),
             constant("two", np.float32(2.0)),
             helper.make_node("ConstantOfShape", ["size"], ["ones"], name="ones",
                              value=numpy_helper.from_array(np.array([1.5], np.float32))),
             helper.make_node("Mul", ["ones", "two"], ["threes"], name="threes"),
             helper.make_node("Add", ["x", "threes"], ["y"], name="add")]
    path = save(nodes, {}, (3, 4), ["N", 3, 4], tmp_path / "fold.onnx")
    network = check_against_onnxruntime(path, (3, 4))
    assert calls == ["ConstantOfShape", "Mul"]
    (node,) = network.nodes
    torch.testing.assert_close(node.op.bias, torch.full((3, 4), 3.0, dtype=torch.float64))


def test_files_over_the_size_limit_are_refused_before_they_are_parsed(tmp_path, monkeypatch):
    import lipkit.io

    path = export(nn.Sequential(nn.Linear(30, 30), nn.ReLU()), (30,), tmp_path / "big.onnx")
    size = path.stat().st_size
    monkeypatch.setattr(lipkit.io, "MAX_MODEL_BYTES", size - 1)

    def forbidden(*args, **kwargs):
        raise AssertionError("the oversized file was parsed")

    monkeypatch.setattr(onnx, "load", forbidden)
    monkeypatch.setattr(onnx.checker, "check_model", forbidden)
    with pytest.raises(InvalidArgumentError,
                       match=rf"^{re.escape(str(path))}: {size} bytes, more than the {size - 1} "):
        import_onnx(path)


def test_external_data_over_the_size_limit_is_refused_before_it_is_read(tmp_path,
                                                                        monkeypatch):
    import lipkit.io
    from lipkit.estimate.importers import onnx_file

    exported = onnx.load(str(export(nn.Linear(40, 40), (40,), tmp_path / "inline.onnx")))
    path = tmp_path / "external.onnx"
    onnx.save_model(exported, str(path), save_as_external_data=True, location="weights.bin",
                    size_threshold=0)
    limit = path.stat().st_size + (tmp_path / "weights.bin").stat().st_size - 1
    monkeypatch.setattr(lipkit.io, "MAX_MODEL_BYTES", limit)

    def forbidden(*args, **kwargs):
        raise AssertionError("the external data was read")

    monkeypatch.setattr(onnx_file, "load_external_data_for_model", forbidden)
    with pytest.raises(InvalidArgumentError, match=r"in 'weights.bin' the model takes \d+ "
                                                   rf"bytes, more than the {limit} ") as error:
        import_onnx(path)
    assert str(error.value).startswith(f"{path}: with the external data of tensor ")


def test_shapes_that_disagree_with_the_declared_ones_name_the_node(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    path = save(nodes, {"w": np.ones((3, 4))}, (4,), ["N", 5], tmp_path / "declared.onnx")
    with pytest.raises(InvalidArgumentError,
                       match=r"node 'relu' \(op Relu\): its output 'y' has features of shape "
                             r"\(3,\), where onnx declares or infers \[\?, 5\]"):
        import_onnx(path)
