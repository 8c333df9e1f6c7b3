"""Import a ``torch.nn.Module`` into a :class:`~lipkit.estimate.network.Network`.

The model is traced with ``torch.fx`` (``nn.Sequential`` and models with residual
additions, flatten / reshape, functional activations), then each graph node is translated:
dense, convolutional and transposed convolutional layers (``nn.ConvTranspose1d/2d/3d``;
lipkit's constrained layers contribute their current constrained weight), activations as
modules or functions with every parameter read (an unknown argument refused; see
:mod:`~lipkit.estimate.importers.translations`, shared with the ONNX importer),
BatchNorm in eval mode (a per-channel affine map), average pooling (a depthwise
convolution), flatten / unflatten / reshape, ``+`` between two branches (a residual join)
and adding or multiplying by constants. Anything else is an error naming the node and its
type. The model is evaluated in eval mode: BatchNorm uses its running
statistics and dropout is the identity.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.estimate.importers import translations
from lipkit.estimate.network import (
    DTYPE,
    Activation,
    Add,
    Affine,
    Convolution,
    Diagonal,
    Matrix,
    Network,
    Node,
    Reshape,
    TransposedConvolution,
)
from lipkit.nn.activation import GroupSort
from lipkit.nn.constraint import (
    PLAIN_BASES,
    forward_hook_reason,
    refresh_hooked_weight,
    replaced_forward,
    replaced_forward_reason,
)
from lipkit.nn.operator_norm import ConvGeometry
from lipkit.nn.pooling import L2NormPool2d, ScaledAvgPool2d

T = translations


def _plain(kind: str):
    def translate(label, op, module, shape):
        return T.activation(label, op, kind)
    return translate


# module type (exactly: a subclass may compute something else) -> its translation, reading
# every parameter; the model is imported in eval mode (dropout is the identity)
_MODULE_ACTIVATIONS = {
    **{cls: _plain("identity") for cls in (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d,
                                           nn.Dropout3d, nn.AlphaDropout,
                                           nn.FeatureAlphaDropout)},
    **{cls: _plain(kind) for cls, kind in (
        (nn.ReLU, "relu"), (nn.Tanh, "tanh"), (nn.Sigmoid, "sigmoid"), (nn.SELU, "selu"),
        (nn.Hardsigmoid, "hardsigmoid"), (nn.Hardswish, "hardswish"), (nn.SiLU, "silu"),
        (nn.Mish, "mish"), (nn.Softsign, "softsign"), (nn.LogSigmoid, "logsigmoid"),
        (nn.Tanhshrink, "tanhshrink"))},
    nn.ReLU6: lambda label, op, m, shape: T.activation(label, op, "hardtanh", min_val=0.0,
                                                       max_val=6.0),
    nn.LeakyReLU: lambda label, op, m, shape: T.activation(
        label, op, "leaky_relu", negative_slope=m.negative_slope),
    nn.PReLU: lambda label, op, m, shape: T.prelu(
        label, op, T.torch_prelu_slopes(m.weight, shape), shape),
    nn.RReLU: lambda label, op, m, shape: T.rrelu(label, op, m.lower, m.upper, m.training),
    nn.ELU: lambda label, op, m, shape: T.activation(label, op, "elu", alpha=m.alpha),
    nn.CELU: lambda label, op, m, shape: T.activation(label, op, "celu", alpha=m.alpha),
    nn.Softplus: lambda label, op, m, shape: T.activation(
        label, op, "softplus", beta=m.beta, threshold=m.threshold),
    nn.Hardtanh: lambda label, op, m, shape: T.activation(
        label, op, "hardtanh", min_val=m.min_val, max_val=m.max_val),
    nn.GELU: lambda label, op, m, shape: T.activation(label, op, "gelu",
                                                      approximate=m.approximate),
    nn.Softshrink: lambda label, op, m, shape: T.activation(label, op, "softshrink",
                                                            lambd=m.lambd),
    nn.Hardshrink: lambda label, op, m, shape: T.hardshrink(label, op, m.lambd),
    nn.Threshold: lambda label, op, m, shape: T.threshold(label, op, m.threshold, m.value),
}

_REQUIRED = object()  # an argument without a default
_INPLACE = ("inplace", False)  # accepted and ignored: it changes storage, not values


def _function(kind: str, *spec, **fixed):
    """A functional activation: its arguments after the input, ``(name, default)`` in
    order, and the Activation of ``kind`` they give (``fixed`` parameters added)."""
    def translate(label, op, arguments, shape):
        params = {name: value for name, value in arguments.items() if name != "inplace"}
        return T.activation(label, op, kind, **params, **fixed)
    return spec, translate


def _dropout(label, op, arguments, shape):
    if arguments["training"]:
        raise UnsupportedModuleError(label, op, "dropout with training=True is random")
    return T.activation(label, op, "identity")


def _clamp(label, op, arguments, shape):
    return T.activation(label, op, "hardtanh", min_val=arguments.get("min"),
                        max_val=arguments.get("max"))


# function (or method name) -> (its arguments after the input, its translation)
_FUNCTION_ACTIVATIONS = {
    **{f: _function("relu", _INPLACE) for f in (torch.relu, F.relu)},
    "relu": _function("relu"),
    **{f: _function("tanh") for f in (torch.tanh, F.tanh, "tanh")},
    **{f: _function("sigmoid") for f in (torch.sigmoid, F.sigmoid, "sigmoid")},
    F.relu6: _function("hardtanh", _INPLACE, min_val=0.0, max_val=6.0),
    F.leaky_relu: _function("leaky_relu", ("negative_slope", 0.01), _INPLACE),
    F.elu: _function("elu", ("alpha", 1.0), _INPLACE),
    F.celu: _function("celu", ("alpha", 1.0), _INPLACE),
    **{f: _function("selu", _INPLACE) for f in (F.selu, torch.selu)},
    F.softplus: _function("softplus", ("beta", 1.0), ("threshold", 20.0)),
    F.hardtanh: _function("hardtanh", ("min_val", -1.0), ("max_val", 1.0), _INPLACE),
    F.hardsigmoid: _function("hardsigmoid", _INPLACE),
    F.hardswish: _function("hardswish", _INPLACE),
    F.silu: _function("silu", _INPLACE),
    F.mish: _function("mish", _INPLACE),
    F.gelu: _function("gelu", ("approximate", "none")),
    F.softsign: _function("softsign"),
    F.logsigmoid: _function("logsigmoid"),
    F.tanhshrink: _function("tanhshrink"),
    F.softshrink: _function("softshrink", ("lambd", 0.5)),
    F.hardshrink: ((("lambd", 0.5),),
                   lambda label, op, a, shape: T.hardshrink(label, op, a["lambd"])),
    F.threshold: ((("threshold", _REQUIRED), ("value", _REQUIRED), _INPLACE),
                  lambda label, op, a, shape: T.threshold(label, op, a["threshold"],
                                                          a["value"])),
    F.rrelu: ((("lower", 1.0 / 8), ("upper", 1.0 / 3), ("training", False), _INPLACE),
              lambda label, op, a, shape: T.rrelu(label, op, a["lower"], a["upper"],
                                                  a["training"])),
    F.prelu: ((("weight", _REQUIRED),),
              lambda label, op, a, shape: T.prelu(
                  label, op, T.torch_prelu_slopes(a["weight"], shape), shape)),
    **{f: ((("min", None), ("max", None)), _clamp)
       for f in (torch.clamp, torch.clip, "clamp", "clip")},
    "clamp_min": ((("min", _REQUIRED),), _clamp),
    "clamp_max": ((("max", _REQUIRED),), _clamp),
    **{f: ((("p", 0.5), ("training", True), _INPLACE), _dropout)
       for f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
                 F.feature_alpha_dropout)},
}


class _Tracer(torch.fx.Tracer):
    """Keeps lipkit's and torch's layers as leaves (parametrized layers included)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d |
                      nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d | GroupSort |
                      ScaledAvgPool2d | L2NormPool2d):
            return True
        return super().is_leaf_module(module, qualified_name)


def import_module(model: nn.Module, input_shape=None) -> Network:
    """Translate ``model`` into a Network; ``input_shape`` excludes the batch dimension.

    ``input_shape`` may be omitted when the model's first layer is an ``nn.Linear``.
    """
    if input_shape is None:
        first = next((m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d |
                                                               nn.Conv2d | nn.Conv3d)), None)
        if not isinstance(first, nn.Linear):
            raise InvalidArgumentError(
                "input_shape is needed (e.g. input_shape=(3, 32, 32)) unless the model "
                "starts with nn.Linear"
            )
        input_shape = (first.in_features,)
    input_shape = tuple(int(s) for s in input_shape)
    for path, module in [("", None), *model.named_modules()]:
        hooked = forward_hook_reason(module)
        if hooked is not None:
            raise UnsupportedModuleError(path, model if module is None else module, hooked)
        if module is not None:
            refresh_hooked_weight(module)
    was_training = model.training
    model.eval()
    # fx traces into the root's forward: a bare layer is wrapped to stay a leaf
    traced = nn.Sequential(model) if _Tracer().is_leaf_module(model, "") else model
    try:
        graph = _Tracer().trace(traced)
    except Exception as error:  # torch.fx raises many types for untraceable code
        raise UnsupportedModuleError(
            "", model, f"torch.fx could not trace it ({type(error).__name__}: {error})"
        ) from None
    try:
        with torch.no_grad():
            return _Translator(traced, input_shape, model).run(graph)
    finally:
        model.train(was_training)


class _Translator:
    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], original=None):
        self.model = model
        self.original = original if original is not None else model
        self.modules = dict(model.named_modules())
        self.input_shape = input_shape
        self.nodes: list[Node] = []
        # fx node name -> (index of the Network node producing it (-1 input), output shape)
        self.values: dict[str, tuple[int, tuple[int, ...]]] = {}
        # fx node name -> a constant tensor (attributes, literals)
        self.constants: dict[str, torch.Tensor] = {}
        # fx node name -> the label users know (a module's path in the model)
        self.labels: dict[str, str] = {}

    def add(self, name: str, op, inputs: list[int], shape: tuple[int, ...]) -> None:
        self.nodes.append(Node(self.labels.get(name, name), op, inputs))
        self.values[name] = (len(self.nodes) - 1, tuple(shape))

    def run(self, graph: torch.fx.Graph) -> Network:
        output_name = None
        for node in graph.nodes:
            if node.op == "placeholder":
                if self.values:
                    raise UnsupportedModuleError(node.name, self.model,
                                                 "models with several inputs are not supported")
                self.values[node.name] = (-1, self.input_shape)
            elif node.op == "get_attr":
                self.constants[node.name] = _get_attr(self.model, node.target).detach()
            elif node.op == "call_module":
                prefix = "0." if self.model is not self.original else ""
                self.labels[node.name] = node.target.removeprefix(prefix) or node.target
                self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.call_function(node)
            elif node.op == "output":
                argument = node.args[0]
                if not isinstance(argument, torch.fx.Node):
                    raise UnsupportedModuleError("output", self.model,
                                                 "models with several outputs are not supported")
                output_name = argument.name
        index, _ = self.values[output_name]
        if index != len(self.nodes) - 1:
            raise UnsupportedModuleError(output_name, self.model,
                                         "the output is not the last computed value")
        return Network(self.input_shape, self.nodes, source=type(self.model).__name__)

    # -- helpers -----------------------------------------------------------------------
    def source(self, node: torch.fx.Node, position: int = 0) -> tuple[int, tuple[int, ...]]:
        argument = node.args[position]
        if not isinstance(argument, torch.fx.Node) or argument.name not in self.values:
            kind = "module" if node.op == "call_module" else "function"
            raise UnsupportedModuleError(node.name, f"{kind} {node.target}",
                                         "its input is not a tensor computed from the input")
        return self.values[argument.name]

    @staticmethod
    def parameters(path: str, module) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A layer's weight and bias, checked to be real and finite."""
        weight = T.weight(f"layer '{path}': weight", module.weight)
        bias = None if module.bias is None else T.weight(f"layer '{path}': bias", module.bias)
        return weight, bias

    def affine(self, node, operator_, bias, source_index):
        self.add(node.name, Affine(operator_, bias), [source_index], operator_.out_shape)

    # -- modules -----------------------------------------------------------------------
    def call_module(self, node: torch.fx.Node) -> None:
        module = self.modules[node.target]
        index, shape = self.source(node)
        path = node.target
        base = replaced_forward(module, (*PLAIN_BASES, GroupSort, ScaledAvgPool2d,
                                         L2NormPool2d))
        if base is not None:
            raise UnsupportedModuleError(path, module, replaced_forward_reason(module, base))
        if isinstance(module, nn.Linear):
            if shape[-1] != module.in_features or len(shape) != 1:
                raise UnsupportedModuleError(
                    path, module, f"expects {module.in_features} features, gets shape {shape}"
                )
            weight, bias = self.parameters(path, module)
            self.affine(node, Matrix(weight), bias, index)
        elif isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d):
            geometry = ConvGeometry.of(module, shape[1:])
            if shape[0] != module.in_channels:
                raise UnsupportedModuleError(
                    path, module, f"expects {module.in_channels} channels, gets shape {shape}"
                )
            weight, bias = self.parameters(path, module)
            convolution = Convolution(weight, geometry, shape)
            bias = None if bias is None else bias.reshape(-1, *([1] * (len(shape) - 1)))
            self.affine(node, convolution, bias, index)
        elif isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d):
            self.transposed_convolution(node, module, index, shape)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.running_var is None:
                raise UnsupportedModuleError(path, module, "BatchNorm without running statistics")
            affine = T.batch_norm(path, type(module).__name__, shape, module.running_mean,
                                  module.running_var, module.eps, module.weight, module.bias)
            self.add(node.name, affine, [index], shape)
        elif type(module) in _MODULE_ACTIVATIONS:
            if len(node.args) > 1 or node.kwargs:
                raise UnsupportedModuleError(path, module, "called with more than its input")
            translate = _MODULE_ACTIVATIONS[type(module)]
            self.add(node.name, translate(path, type(module).__name__, module, shape), [index],
                     shape)
        elif isinstance(module, GroupSort):
            size = shape[0] if module._size(shape[0]) == shape[0] else module.group_size
            if module.dim % (len(shape) + 1) != 1 or len(shape) != 1 or shape[0] % size:
                raise UnsupportedModuleError(path, module,
                                             "GroupSort is supported on (batch, features) inputs")
            self.add(node.name, Activation("groupsort", params={"group_size": size}), [index],
                     shape)
        elif isinstance(module, nn.Flatten):
            start = module.start_dim - 1 if module.start_dim > 0 else module.start_dim
            end = module.end_dim - 1 if module.end_dim > 0 else module.end_dim
            flat = list(shape[:start]) + [-1] + (list(shape[end + 1:]) if end != -1 else [])
            out_shape = torch.zeros(shape).reshape(*flat).shape
            self.affine(node, Reshape(shape, tuple(out_shape)), None, index)
        elif isinstance(module, nn.Unflatten):
            if module.dim == 0 or abs(module.dim) > len(shape):
                raise UnsupportedModuleError(path, module, f"unflattens dimension {module.dim} "
                                                           f"of a batch of shape {shape}")
            dim = module.dim - 1 if module.dim > 0 else module.dim
            out_shape = torch.zeros(shape).unflatten(dim, module.unflattened_size).shape
            self.affine(node, Reshape(shape, tuple(out_shape)), None, index)
        elif isinstance(module, nn.AvgPool1d | nn.AvgPool2d | ScaledAvgPool2d):
            self.average_pool(node, module, index, shape)
        elif isinstance(module, nn.Softmax | nn.LogSoftmax):
            raise UnsupportedModuleError(path, module, T.SOFTMAX_REFUSAL)
        else:
            raise UnsupportedModuleError(path, module, "no translation into the network "
                                                       "description exists for this module")

    def transposed_convolution(self, node, module, index, shape) -> None:
        path = node.target
        dims = len(module.kernel_size)
        if len(node.args) > 1 or node.kwargs:
            raise UnsupportedModuleError(path, module, "called with output_size (lipkit reads "
                                                       "output_padding from the module)")
        if module.padding_mode != "zeros":
            raise UnsupportedModuleError(path, module,
                                         f"padding_mode {module.padding_mode!r} (torch "
                                         "computes transposed convolutions with zeros only)")
        if len(shape) != dims + 1 or shape[0] != module.in_channels:
            raise UnsupportedModuleError(
                path, module, f"expects {module.in_channels} channels and {dims} spatial "
                              f"dimensions, gets shape {shape}")
        weight, bias = self.parameters(path, module)
        operator_ = TransposedConvolution(
            weight, module.stride, tuple((p, p) for p in module.padding),
            module.output_padding, module.dilation, module.groups, shape)
        bias = None if bias is None else bias.reshape(-1, *([1] * dims))
        self.affine(node, operator_, bias, index)

    def average_pool(self, node, module, index, shape) -> None:
        dims = len(shape) - 1

        def expand(value):
            return (value,) * dims if isinstance(value, int) else tuple(value)

        kernel = expand(module.kernel_size)
        stride = expand(module.stride if module.stride is not None else module.kernel_size)
        padding = expand(module.padding)
        factor = math.sqrt(math.prod(kernel)) if isinstance(module, ScaledAvgPool2d) else 1.0
        geometry = ConvGeometry(dims, stride, tuple((p, p) for p in padding), (1,) * dims,
                                shape[0], "zeros", tuple(shape[1:]))
        affine = T.average_pool(node.target, type(module).__name__, shape, kernel, geometry,
                                module.ceil_mode, module.count_include_pad,
                                getattr(module, "divisor_override", None), factor)
        self.add(node.name, affine, [index], affine.operator.out_shape)

    # -- functions and methods ---------------------------------------------------------
    def call_function(self, node: torch.fx.Node) -> None:
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        if node.op == "call_method" and target == "size":
            return  # x.size(0): the batch size, read by a later reshape
        arguments = [*node.args, *node.kwargs.values()]
        tracked = [a for a in arguments if isinstance(a, torch.fx.Node) and a.name in self.values]
        if not tracked and node.op == "call_function":
            # arithmetic on constants only (e.g. 1 - t of a Residual): fold it
            values = [self.constants.get(a.name) if isinstance(a, torch.fx.Node) else a
                      for a in node.args]
            if all(v is not None for v in values):
                self.constants[node.name] = torch.as_tensor(target(*values)).detach()
                return
        if target in _FUNCTION_ACTIVATIONS:
            index, shape = self.source(node)
            spec, translate = _FUNCTION_ACTIVATIONS[target]
            label = f"{'method' if node.op == 'call_method' else 'function'} {name}"
            arguments = self.arguments(node, label, spec)
            self.add(node.name, translate(node.name, label, arguments, shape), [index], shape)
        elif target in (operator.add, torch.add) or (node.op == "call_method" and
                                                      target == "add"):
            self.binary_add(node)
        elif target in (operator.mul, torch.mul, operator.truediv) or (
                node.op == "call_method" and target in ("mul", "div")):
            self.scale(node, divide=target in (operator.truediv, "div"))
        elif target is operator.sub or target == "sub":
            self.binary_add(node, subtract=True)
        elif target in (torch.flatten,) or (node.op == "call_method" and
                                            target in ("flatten", "view", "reshape")):
            self.reshape(node)
        else:
            raise UnsupportedModuleError(node.name, f"function {name}",
                                         "no translation into the network description exists")

    def arguments(self, node, label: str, spec) -> dict:
        """The arguments after the input by name (``spec``: ``(name, default)`` in order),
        constants only; an unknown or computed argument is refused."""
        names = [name for name, _ in spec]
        if len(node.args) - 1 > len(spec):
            raise UnsupportedModuleError(node.name, label, f"{len(node.args) - 1} arguments "
                                                           f"after the input; lipkit reads "
                                                           f"{names}")
        unknown = sorted(set(node.kwargs) - set(names))
        if unknown:
            raise UnsupportedModuleError(node.name, label, f"unknown arguments {unknown}; "
                                                           f"lipkit reads {names}")
        given = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
        arguments = {}
        for name, default in spec:
            value = given.get(name, default)
            if value is _REQUIRED:
                raise UnsupportedModuleError(node.name, label, f"argument {name!r} is missing")
            if isinstance(value, torch.fx.Node):
                if value.name not in self.constants:
                    raise UnsupportedModuleError(node.name, label, f"argument {name!r} is "
                                                                   "computed from the input")
                value = self.constants[value.name]
            arguments[name] = value
        return arguments

    def constant(self, argument) -> torch.Tensor | None:
        if isinstance(argument, int | float):
            return torch.tensor(float(argument), dtype=DTYPE)
        if isinstance(argument, torch.fx.Node) and argument.name in self.constants:
            return self.constants[argument.name].to(DTYPE)
        return None

    def binary_add(self, node, subtract: bool = False) -> None:
        left, right = node.args[0], node.args[1]
        constant_right, constant_left = self.constant(right), self.constant(left)
        if constant_right is not None or constant_left is not None:
            # x + c, c + x, x - c: an affine map with identity operator (c - x is not)
            if constant_left is not None and subtract:
                raise UnsupportedModuleError(node.name, f"function {node.target}",
                                             "constant minus tensor")
            tensor_argument = 0 if constant_right is not None else 1
            index, shape = self.source(node, tensor_argument)
            shift = constant_right if constant_right is not None else constant_left
            shift = -shift if subtract else shift
            identity = Diagonal(torch.ones(()), shape)
            self.affine(node, identity, torch.broadcast_to(shift, shape), index)
            return
        (i, shape_i), (j, shape_j) = self.source(node, 0), self.source(node, 1)
        if shape_i != shape_j:
            raise UnsupportedModuleError(node.name, f"function {node.target}",
                                         f"adds shapes {shape_i} and {shape_j}")
        if subtract:
            negated = Diagonal(-torch.ones(()), shape_j)
            self.add(node.name + "_negate", Affine(negated), [j], shape_j)
            j = len(self.nodes) - 1
        self.add(node.name, Add(), [i, j], shape_i)

    def scale(self, node, divide: bool) -> None:
        left, right = node.args[0], node.args[1]
        factor = self.constant(right)
        position = 0
        if factor is None and not divide:
            factor, position = self.constant(left), 1
        if factor is None:
            raise UnsupportedModuleError(node.name, f"function {node.target}",
                                         "multiplies two tensors computed from the input")
        index, shape = self.source(node, position)
        factor = 1.0 / factor if divide else factor
        self.affine(node, Diagonal(torch.broadcast_to(factor, shape), shape), None, index)

    def reshape(self, node) -> None:
        index, shape = self.source(node)
        probe = torch.zeros(1, *shape)
        arguments = [a for a in node.args[1:]]
        if node.target is torch.flatten or node.target == "flatten":
            start = arguments[0] if arguments else node.kwargs.get("start_dim", 0)
            end = arguments[1] if len(arguments) > 1 else node.kwargs.get("end_dim", -1)
            out = probe.flatten(start, end)
        else:
            sizes = arguments[0] if len(arguments) == 1 and isinstance(arguments[0], tuple | list
                                                                       ) else arguments
            resolved = []
            for size in sizes:
                if isinstance(size, torch.fx.Node):  # x.size(0): the batch dimension
                    resolved.append(1)
                else:
                    resolved.append(int(size))
            out = probe.reshape(*resolved)
        if out.shape[0] != 1:
            raise UnsupportedModuleError(node.name, f"function {node.target}",
                                         "reshapes the batch dimension")
        self.affine(node, Reshape(shape, tuple(out.shape[1:])), None, index)


def _get_attr(model: nn.Module, target: str) -> torch.Tensor:
    value = model
    for part in target.split("."):
        value = getattr(value, part)
    return value
