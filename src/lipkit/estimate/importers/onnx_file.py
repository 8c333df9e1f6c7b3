"""Import an ONNX file into a :class:`~lipkit.estimate.network.Network`.

The file is read as data with the ``onnx`` package (parsed, checked by ``onnx.checker``,
external weight files beside it included, initializers converted with
``onnx.numpy_helper``); nothing in it is executed. The graph's nodes are
translated in their (topological) order, the ones the output does not depend on skipped:

- dense layers: ``Gemm`` (``transA=0``, any ``transB`` / ``alpha`` / ``beta``), ``MatMul`` with
  a constant on either side (on inputs with leading dimensions, a block-diagonal matrix);
- convolutions: ``Conv`` (1-D to 3-D; ``pads``, ``strides``, ``dilations``, ``group``,
  ``auto_pad``), ``AveragePool`` and ``GlobalAveragePool`` (depthwise convolutions of
  weight ``1/k``), a ``Pad`` folded into the ``Conv`` / ``AveragePool`` that reads it (zero,
  reflect, edge and wrap padding, as ``ConvGeometry``'s padding modes); ``ConvTranspose``
  (1-D to 3-D; ``pads``, ``strides``, ``dilations``, ``group``, ``output_padding``, and
  ``output_shape`` / ``auto_pad`` as the specification derives pads from them);
- per-element affine maps: ``BatchNormalization`` (inference: running statistics), ``Add`` /
  ``Sub`` of a constant, ``Mul`` / ``Div`` by a constant, ``Neg`` (input normalization
  ``(x - mean) / std`` becomes one diagonal node);
- joins: ``Add`` / ``Sub`` / ``Sum`` of tensors computed from the input (residual joins);
- activations, every attribute read through the translations the torch importer shares
  (:mod:`~lipkit.estimate.importers.translations`): ``Relu``, ``LeakyRelu``, ``PRelu``,
  ``Elu``, ``Celu``, ``Selu``, ``Softplus``, ``Softsign``, ``Sigmoid``, ``HardSigmoid``,
  ``HardSwish``, ``Tanh``, ``Gelu`` (exact and tanh), ``Mish``, ``Clip``, ``ThresholdedRelu``
  and ``Shrink`` where continuous, ``x * Sigmoid(x)`` (SiLU) and ``x * Tanh(Softplus(x))``
  (Mish) as PyTorch exports them; constants must be finite floats (NaN / inf refused, naming
  the initializer), and no initializer larger than ``_MAX_ENTRIES`` is converted;
- GroupSort, as PyTorch exports lipkit's: a descending ``TopK`` over a whole axis (GroupSort,
  FullSort), and MaxMin's ``Split`` of an axis of size 2 into halves, (``Squeeze``,) ``Max``
  and ``Min`` of the halves, (``Unsqueeze``,) ``Concat`` of max then min on that axis. Both
  sort groups along one axis: the tensor is viewed with that axis last of the first
  dimension, where the description's GroupSort sorts consecutive groups;
- shapes: ``Flatten``, ``Reshape``, ``Squeeze``, ``Unsqueeze`` (the batch dimension kept in
  front; consecutive reshapes are one), ``Transpose`` (a permutation of the non-batch
  dimensions), ``Identity``, ``Dropout`` (the identity at inference);
- constants: initializers, ``Constant`` nodes, and the shape arithmetic exporters emit on
  them (``Shape``, ``Gather``, ``Slice``, ``Concat``, ``Reshape``, ``Transpose``, ``Cast``,
  arithmetic, ...), folded with numpy. ``Shape`` of a computed tensor stands for the batch
  size by a marker that may only end up as the leading entry of a ``Reshape``'s shape.

The first dimension of the graph's input is the batch; the input shape (without it) comes
from the input's declared type, or from ``input_shape`` where the type leaves a dimension
symbolic. Anything else is an :class:`~lipkit.errors.UnsupportedModuleError` naming the node
and its operator; a file that is not a valid ONNX model is an
:class:`~lipkit.errors.InvalidArgumentError` naming the file.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, LipkitError, UnsupportedModuleError
from lipkit.estimate.importers import translations as T
from lipkit.estimate.network import (
    DTYPE,
    Activation,
    Add,
    Affine,
    Convolution,
    Diagonal,
    LinearOperator,
    Matrix,
    Network,
    Node,
    Permute,
    Reshape,
    TransposedConvolution,
)
from lipkit.nn.operator_norm import ConvGeometry

try:  # onnx is in the "all" extra
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover - depends on the installation
    onnx = None

# ONNX Pad modes -> ConvGeometry padding modes
_PAD_MODES = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
# Shape(x)[0] of a tensor computed from the input: the batch size, unknown until run time
_BATCH = -(1 << 40)
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_MAX_ENTRIES = 1 << 26  # the largest dense matrix / constant built here (512 MiB in float64)


def import_onnx(path, input_shape=None) -> Network:
    """Translate the ONNX model in the file ``path`` into a Network.

    ``input_shape`` excludes the batch dimension; it is needed only where the graph's input
    type leaves a non-batch dimension symbolic (and must agree with the declared sizes).
    """
    if onnx is None:  # pragma: no cover - depends on the installation
        raise LipkitError("reading ONNX files needs the onnx package: pip install 'lipkit[all]'")
    path = Path(path)
    model = _load(path)
    return _Translator(model, path, input_shape).run()


def _load(path: Path):
    """Parse and check the file; every failure is one InvalidArgumentError naming it."""
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    try:
        # checked by path: external data files are then checked to lie beside the model
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path))
    except Exception as error:  # protobuf and the checker raise many types
        raise InvalidArgumentError(f"{path}: not a valid ONNX model ({_describe(error)})"
                                   ) from None
    return model


@dataclass
class _Step:
    """One ONNX node being translated."""

    label: str  # the node's name, or op_type_position when it has none
    op: str
    inputs: list[str]  # "" for an omitted optional input
    outputs: list[str]
    attributes: dict

    def attribute(self, name: str, default=None):
        return self.attributes.get(name, default)


@dataclass
class _PendingPad:
    """A Pad's output: folded into the geometry of the Conv / AveragePool that reads it."""

    label: str
    index: int
    shape: tuple[int, ...]  # the unpadded input's shape
    padding: tuple[tuple[int, int], ...]  # (before, after) per spatial dimension
    mode: str  # a ConvGeometry padding mode


@dataclass
class _Half:
    """A pending value inside MaxMin's exported pattern: a half of a Split (``part`` 0 or 1),
    or the Max / Min of the two halves (``part`` "max" / "min")."""

    label: str  # the Split's label
    source: str  # the split value
    axis: int  # the split axis, without the batch dimension
    part: int | str
    squeezed: bool  # the split axis (of size 1) removed


class _Translator:
    def __init__(self, model, path: Path, input_shape):
        self.graph = model.graph
        self.path = path
        self.given_shape = input_shape
        self.opset = next((entry.version for entry in model.opset_import
                           if entry.domain in ("", "ai.onnx")), 1)
        self.nodes: list[Node] = []
        # value name -> (index of the Network node producing it (-1 input), shape w/o batch)
        self.values: dict[str, tuple[int, tuple[int, ...]]] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.pads: dict[str, _PendingPad] = {}
        self.halves: dict[str, _Half] = {}
        # value name -> (x, kind) for sigmoid(x) ("silu") and tanh(softplus(x)) ("mish"),
        # to recognise x * gate as one activation; softplus output -> its input
        self.gates: dict[str, tuple[str, str]] = {}
        self.softplus_inputs: dict[str, str] = {}
        self.static_batch: int | None = None

    # -- the graph ---------------------------------------------------------------------
    def run(self) -> Network:
        graph = self.graph
        if len(graph.sparse_initializer):
            raise InvalidArgumentError(f"{self.path}: sparse initializers are not supported")
        for tensor in graph.initializer:
            _check_declared_size(tensor, f"{self.path}: initializer '{tensor.name}'")
            try:
                self.constants[tensor.name] = numpy_helper.to_array(tensor)
            except Exception as error:  # a corrupt tensor: unknown type, wrong data size
                raise InvalidArgumentError(f"{self.path}: initializer '{tensor.name}' cannot "
                                           f"be read ({_describe(error)})") from None
        inputs = [value for value in graph.input if value.name not in self.constants]
        if len(inputs) != 1:
            names = ", ".join(repr(value.name) for value in inputs) or "none"
            raise InvalidArgumentError(
                f"{self.path}: lipkit imports models with one input; this one has {names}"
            )
        if len(graph.output) != 1:
            raise InvalidArgumentError(
                f"{self.path}: lipkit imports models with one output; this one has "
                f"{len(graph.output)}"
            )
        input_shape = self.input_shape(inputs[0])
        self.values[inputs[0].name] = (-1, input_shape)
        output = graph.output[0].name
        needed = self.needed(output)
        for position, node in enumerate(graph.node):
            if any(name in needed for name in node.output):
                self.translate(node, position)
        if output not in self.values:
            reason = ("it is a Pad not followed by a Conv" if output in self.pads
                      else "it does not depend on the input")
            raise InvalidArgumentError(f"{self.path}: cannot import the output '{output}': "
                                       f"{reason}")
        index, _ = self.values[output]
        nodes = _fold_diagonals(_prune(self.nodes, index))
        return Network(input_shape, nodes, source=self.path.name)

    def input_shape(self, value) -> tuple[int, ...]:
        """The input's shape without the batch dimension (declared, or ``input_shape``)."""
        name = value.name
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise InvalidArgumentError(f"{self.path}: the input '{name}' is not a tensor ({kind})")
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in _FLOAT_TYPES:
            element = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            raise InvalidArgumentError(
                f"{self.path}: the input '{name}' has element type {element}; lipkit imports "
                "models of real (float) inputs"
            )
        declared = None
        if tensor_type.HasField("shape"):
            declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                        for d in tensor_type.shape.dim]
            text = "[" + ", ".join("?" if d is None else str(d) for d in declared) + "]"
            if not declared:
                raise InvalidArgumentError(
                    f"{self.path}: the input '{name}' is a scalar; lipkit expects a batch "
                    "dimension first"
                )
            self.static_batch = declared[0]
            declared = declared[1:]
        if self.given_shape is not None:
            try:
                given = tuple(int(s) for s in self.given_shape)
            except (TypeError, ValueError):
                raise InvalidArgumentError(
                    f"input_shape must be a tuple of sizes, got {self.given_shape!r}"
                ) from None
            if min(given, default=1) < 1:
                raise InvalidArgumentError(f"input_shape must be positive sizes, got {given}")
            if declared is not None and (len(given) != len(declared) or any(
                    d is not None and d != g for d, g in zip(declared, given, strict=False))):
                raise InvalidArgumentError(
                    f"{self.path}: input_shape {given} does not match the input '{name}' of "
                    f"shape {text} (input_shape excludes the batch dimension)"
                )
            return given
        if declared is None or any(d is None for d in declared):
            shown = "unknown" if declared is None else text
            raise InvalidArgumentError(
                f"{self.path}: the input '{name}' has shape {shown}; pass input_shape (without "
                "the batch dimension)"
            )
        return tuple(declared)

    def needed(self, output: str) -> set[str]:
        """The names of the values the output depends on."""
        needed = {output}
        for node in reversed(self.graph.node):
            if any(name in needed for name in node.output):
                needed.update(name for name in node.input if name)
        return needed

    def translate(self, node, position: int) -> None:
        step = _Step(label=node.name or f"{node.op_type}_{position}", op=node.op_type,
                     inputs=list(node.input), outputs=list(node.output), attributes={})
        if node.domain not in ("", "ai.onnx"):
            raise self.unsupported(step, f"operators of domain '{node.domain}' are not supported")
        try:
            step.attributes = {attribute.name: _attribute_value(attribute)
                               for attribute in node.attribute}
            self.translate_step(step)
        except LipkitError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as error:
            # a checked but inconsistent model (shapes that do not fit, corrupt attributes)
            raise self.invalid(step, f"cannot be translated ({_describe(error)})") from None

    def translate_step(self, step: _Step) -> None:
        for name in step.inputs:
            if name and not (name in self.values or name in self.constants or name in self.pads
                             or name in self.halves):
                raise self.unsupported(
                    step, f"reads '{name}', which no supported node produces"
                )
        if step.op == "Constant":
            self.constants[step.outputs[0]] = self.constant_node(step)
        elif step.op in _FOLDERS and all(not name or name in self.constants
                                         for name in step.inputs):
            self.constants[step.outputs[0]] = _FOLDERS[step.op](self, step)
        elif step.op in _HANDLERS:
            _HANDLERS[step.op](self, step)
        else:
            raise self.unsupported(step, "no translation into the network description exists "
                                         "for this operator")

    # -- errors ------------------------------------------------------------------------
    def unsupported(self, step: _Step, reason: str) -> UnsupportedModuleError:
        return UnsupportedModuleError(step.label, f"ONNX {step.op}", reason)

    def invalid(self, step: _Step, reason: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{self.path}: node '{step.label}' (op {step.op}): {reason}")

    # -- inputs and outputs ------------------------------------------------------------
    def is_tensor(self, step: _Step, position: int) -> bool:
        return position < len(step.inputs) and (step.inputs[position] in self.values
                                                or step.inputs[position] in self.pads
                                                or step.inputs[position] in self.halves)

    def tensor(self, step: _Step, position: int = 0) -> tuple[int, tuple[int, ...]]:
        """A computed input: (index of its Network node, shape without batch)."""
        name = step.inputs[position] if position < len(step.inputs) else ""
        if name in self.values:
            return self.values[name]
        if name in self.halves:
            raise self.unsupported(step, f"reads a part of Split '{self.halves[name].label}'; "
                                         "lipkit reads a Split of a computed tensor only as "
                                         "MaxMin (Split in halves, Max and Min, Concat)")
        if name in self.pads:
            raise self.unsupported(step, f"reads the output of Pad '{self.pads[name].label}'; "
                                         "lipkit folds a Pad only into a following Conv or "
                                         "AveragePool")
        raise self.unsupported(step, f"input {position} ('{name}') is not computed from the "
                                     "network input")

    def padded_tensor(self, step: _Step) -> tuple[int, tuple[int, ...], _PendingPad | None]:
        """Input 0 of a Conv / AveragePool, with the Pad in front of it if there is one."""
        name = step.inputs[0]
        if name in self.pads:
            pad = self.pads[name]
            return pad.index, pad.shape, pad
        index, shape = self.tensor(step, 0)
        return index, shape, None

    def constant(self, step: _Step, position: int, default=None) -> np.ndarray | None:
        """A constant input (an initializer, a Constant, folded), or ``default`` if omitted."""
        name = step.inputs[position] if position < len(step.inputs) else ""
        if not name:
            return default
        if name in self.constants:
            return self.constants[name]
        raise self.unsupported(step, f"input {position} ('{name}') is computed from the network "
                                     "input; lipkit needs a constant there")

    def floats(self, step: _Step, position: int, default=None) -> np.ndarray | None:
        """A constant input the network computes with (a weight, a bias, a scale): real and
        finite, as float64 (a writable copy, for torch)."""
        value = self.constant(step, position, default)
        if value is None:
            return None
        _check_no_batch(self, step, value)
        name = step.inputs[position]
        value = np.asarray(value)
        if value.dtype.kind != "f":
            raise InvalidArgumentError(f"{self.path}: initializer '{name}' (read by node "
                                       f"'{step.label}') has type {value.dtype}; lipkit "
                                       "needs float weights")
        bad = int(np.count_nonzero(~np.isfinite(value)))
        if bad:
            raise InvalidArgumentError(f"{self.path}: initializer '{name}' (read by node "
                                       f"'{step.label}') has {bad} non-finite entries "
                                       "(NaN or inf)")
        return np.array(value, dtype=np.float64)

    def emit(self, step: _Step, op, inputs: list[int], shape) -> None:
        self.nodes.append(Node(step.label, op, inputs))
        self.values[step.outputs[0]] = (len(self.nodes) - 1, tuple(shape))

    def affine(self, step: _Step, operator: LinearOperator, bias, index: int) -> None:
        if bias is not None:
            bias = torch.as_tensor(np.ascontiguousarray(bias), dtype=DTYPE)
        self.emit(step, Affine(operator, bias), [index], operator.out_shape)

    def alias(self, step: _Step, name: str) -> None:
        """The output is the input ``name`` unchanged (Identity, Dropout, no-op reshapes)."""
        if name in self.pads:
            self.pads[step.outputs[0]] = self.pads[name]
        else:
            self.values[step.outputs[0]] = self.values[name]

    def reshape(self, step: _Step, index: int, shape, out_shape) -> None:
        out_shape = tuple(int(s) for s in out_shape)
        self.values[step.outputs[0]] = (self.reshaped(step.label, index, shape, out_shape),
                                        out_shape)

    def reshaped(self, label: str, index: int, shape, out_shape) -> int:
        """The index of a node holding the tensor ``index`` reshaped to ``out_shape``; a
        reshape of a reshape is one reshape of the first one's input (or that input)."""
        out_shape, shape = tuple(out_shape), tuple(shape)
        if index >= 0:
            op = self.nodes[index].op
            if (isinstance(op, Affine) and isinstance(op.operator, Reshape)
                    and op.bias is None):
                index, shape = self.nodes[index].inputs[0], op.operator.in_shape
        if out_shape == shape:
            return index
        self.nodes.append(Node(label, Affine(Reshape(shape, out_shape)), [index]))
        return len(self.nodes) - 1

    def broadcast(self, step: _Step, constant: np.ndarray, shape) -> np.ndarray:
        """A constant broadcast to a computed tensor's shape (never growing it)."""
        constant = np.asarray(constant, dtype=np.float64)
        if constant.ndim > len(shape) + 1:
            raise self.unsupported(step, f"a constant of shape {constant.shape} would grow the "
                                         f"tensor of shape {tuple(shape)}")
        full = (1,) * (len(shape) + 1 - constant.ndim) + constant.shape
        if full[0] != 1:
            raise self.unsupported(step, f"the constant of shape {constant.shape} differs "
                                         "across the batch dimension")
        try:
            return np.broadcast_to(constant.reshape(full[1:]), tuple(shape))
        except ValueError:
            raise self.unsupported(step, f"the constant of shape {constant.shape} does not "
                                         f"broadcast to the tensor's shape {tuple(shape)}"
                                   ) from None

    # -- constants ---------------------------------------------------------------------
    def constant_node(self, step: _Step) -> np.ndarray:
        for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
            if key in step.attributes:
                value = step.attributes[key]
                if key == "value":
                    return value
                dtype = np.float32 if "float" in key else np.int64
                return np.asarray(value, dtype=dtype)
        raise self.unsupported(step, "only numeric dense constants are supported")

    # -- dense layers ------------------------------------------------------------------
    def gemm(self, step: _Step) -> None:
        if not self.is_tensor(step, 0):
            raise self.unsupported(step, "lipkit needs the first input (A) computed from the "
                                         "network input and B constant")
        index, shape = self.tensor(step, 0)
        if step.attribute("transA", 0):
            raise self.unsupported(step, "transA=1 transposes the batch dimension")
        if len(shape) != 1:
            raise self.invalid(step, f"A must be a matrix (batch, features), got features of "
                                     f"shape {shape}")
        b = self.floats(step, 1)
        if b.ndim != 2:
            raise self.invalid(step, f"B must be a matrix, got shape {b.shape}")
        if step.attribute("transB", 0):
            b = b.T
        if b.shape[0] != shape[0]:
            raise self.invalid(step, f"A has {shape[0]} columns, B has {b.shape[0]} rows")
        alpha, beta = float(step.attribute("alpha", 1.0)), float(step.attribute("beta", 1.0))
        c = self.floats(step, 2)
        bias = None if c is None else beta * self.broadcast(step, c, (b.shape[1],))
        self.affine(step, Matrix(torch.as_tensor(alpha * b.T)), bias, index)

    def matmul(self, step: _Step) -> None:
        if self.is_tensor(step, 0) and self.is_tensor(step, 1):
            raise self.unsupported(step, "multiplies two tensors computed from the input")
        right = self.is_tensor(step, 0)
        index, shape = self.tensor(step, 0 if right else 1)
        constant = self.floats(step, 1 if right else 0)
        if constant.ndim != 2:
            raise self.unsupported(step, f"lipkit handles MatMul by 2-D constants, got one of "
                                         f"shape {constant.shape}")
        if right:  # x (..., K) @ B (K, N): B^T on every row
            if not shape or shape[-1] != constant.shape[0]:
                raise self.invalid(step, f"cannot multiply features of shape {shape} by a "
                                         f"{constant.shape} matrix")
            lead = shape[:-1]
            self.check_size(step, math.prod(shape) * math.prod(lead) * constant.shape[1])
            weight = np.kron(np.eye(math.prod(lead)), constant.T)
            out_shape = (*lead, constant.shape[1])
        else:  # A (M, K) @ x (..., K, N): A on every column
            if len(shape) < 2 or shape[-2] != constant.shape[1]:
                raise self.invalid(step, f"cannot multiply a {constant.shape} matrix by "
                                         f"features of shape {shape}")
            lead = shape[:-2]
            self.check_size(step, math.prod(shape) * math.prod(lead) * constant.shape[0])
            weight = np.kron(np.eye(math.prod(lead)), np.kron(constant, np.eye(shape[-1])))
            out_shape = (*lead, constant.shape[0], shape[-1])
        self.affine(step, Matrix(torch.as_tensor(weight), shape, out_shape), None, index)

    def check_size(self, step: _Step, entries: int) -> None:
        if entries > _MAX_ENTRIES:
            raise self.unsupported(step, f"the block-diagonal matrix of this MatMul on inputs "
                                         f"with leading dimensions would have {entries} entries")

    # -- convolutions ------------------------------------------------------------------
    def conv_weight(self, step: _Step, shape, transposed: bool):
        """A (transposed) convolution's weight, its spatial dimensions, groups and kernel,
        checked against the input features ``shape`` and the ``kernel_shape`` attribute."""
        weight = self.floats(step, 1)
        dims = weight.ndim - 2
        if dims not in (1, 2, 3) or len(shape) != dims + 1:
            raise self.invalid(step, f"a weight of shape {weight.shape} on features of shape "
                                     f"{shape}")
        groups = int(step.attribute("group", 1))
        channels = weight.shape[0] if transposed else weight.shape[1] * groups
        if shape[0] != channels or weight.shape[0] % groups:
            raise self.invalid(step, f"{shape[0]} input channels do not fit a weight of shape "
                                     f"{weight.shape} with group={groups}")
        kernel = tuple(weight.shape[2:])
        if tuple(step.attribute("kernel_shape", kernel)) != kernel:
            raise self.invalid(step, f"kernel_shape {step.attribute('kernel_shape')} differs "
                                     f"from the weight's {kernel}")
        return weight, dims, groups, kernel

    def conv(self, step: _Step) -> None:
        index, shape, pad = self.padded_tensor(step)
        weight, dims, groups, kernel = self.conv_weight(step, shape, transposed=False)
        geometry = self.geometry(step, shape, kernel, groups, pad)
        convolution = Convolution(torch.as_tensor(weight), geometry, shape)
        bias = self.floats(step, 2)
        if bias is not None:
            bias = bias.reshape(-1, *([1] * dims))
        self.affine(step, convolution, bias, index)

    def conv_transpose(self, step: _Step) -> None:
        """``ConvTranspose``: the crop of the full transposed convolution is ``pads``, or
        derived from ``output_shape`` / ``auto_pad=SAME_*`` as the ONNX specification says."""
        index, shape = self.tensor(step, 0)
        weight, dims, groups, kernel = self.conv_weight(step, shape, transposed=True)
        stride = tuple(int(s) for s in step.attribute("strides", (1,) * dims))
        dilation = tuple(int(d) for d in step.attribute("dilations", (1,) * dims))
        output_padding = tuple(int(o) for o in step.attribute("output_padding", (0,) * dims))
        if not len(stride) == len(dilation) == len(output_padding) == dims:
            raise self.invalid(step, f"strides {stride}, dilations {dilation} and "
                                     f"output_padding {output_padding} for {dims} dimensions")
        auto_pad = step.attribute("auto_pad", "NOTSET") or "NOTSET"
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise self.invalid(step, f"unknown auto_pad {auto_pad!r}")
        output_shape = step.attribute("output_shape")
        if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            output_shape = [n * s for n, s in zip(shape[1:], stride, strict=True)]
        if output_shape is not None:
            output_shape = [int(o) for o in output_shape][-dims:]
            padding = []
            for n, k, s, d, o, out in zip(shape[1:], kernel, stride, dilation, output_padding,
                                          output_shape, strict=True):
                total = (n - 1) * s + d * (k - 1) + 1 + o - out
                if total < 0:
                    raise self.unsupported(step, f"output_shape {output_shape} is larger than "
                                                 "the transposed convolution's output")
                small, large = total // 2, total - total // 2
                padding.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        elif auto_pad == "VALID":
            padding = [(0, 0)] * dims
        else:
            pads = [int(p) for p in step.attribute("pads", (0,) * (2 * dims))]
            if len(pads) != 2 * dims or min(pads) < 0:
                raise self.unsupported(step, f"pads {pads} (lipkit reads {2 * dims} "
                                             "non-negative pads)")
            padding = [(pads[i], pads[i + dims]) for i in range(dims)]
        try:
            operator = TransposedConvolution(torch.as_tensor(weight), stride, padding,
                                             output_padding, dilation, groups, shape)
        except InvalidArgumentError as error:
            raise self.invalid(step, str(error)) from None
        bias = self.floats(step, 2)
        if bias is not None:
            bias = bias.reshape(-1, *([1] * dims))
        self.affine(step, operator, bias, index)

    def geometry(self, step: _Step, shape, kernel, groups: int, pad: _PendingPad | None,
                 count_include_pad: bool = True) -> ConvGeometry:
        """The ConvGeometry of a Conv / AveragePool: its own padding plus a folded Pad's."""
        dims = len(kernel)
        stride = tuple(int(s) for s in step.attribute("strides", (1,) * dims))
        dilation = tuple(int(d) for d in step.attribute("dilations", (1,) * dims))
        size = tuple(shape[1:])
        mode = "zeros"
        if pad is not None:
            mode = pad.mode
            size = tuple(n + b + a for n, (b, a) in zip(size, pad.padding, strict=True))
        auto_pad = step.attribute("auto_pad", "NOTSET")
        if auto_pad in ("NOTSET", ""):
            pads = [int(p) for p in step.attribute("pads", (0,) * (2 * dims))]
            own = tuple((pads[i], pads[i + dims]) for i in range(dims))
        elif auto_pad == "VALID":
            own = ((0, 0),) * dims
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            own = []
            for n, k, s, d in zip(size, kernel, stride, dilation, strict=True):
                total = max(0, (-(-n // s) - 1) * s + d * (k - 1) + 1 - n)
                small, large = total // 2, total - total // 2
                own.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
            own = tuple(own)
        else:
            raise self.invalid(step, f"unknown auto_pad {auto_pad!r}")
        if min(min(pair) for pair in own) < 0:
            raise self.unsupported(step, "negative pads (cropping)")
        if any(any(pair) for pair in own):
            if mode != "zeros":
                raise self.unsupported(step, f"its own zero padding after a {pad.mode} Pad")
            if not count_include_pad:
                raise self.unsupported(step, "count_include_pad=0 with padding (the divisor "
                                             "varies near the border)")
        padding = own if pad is None else tuple(
            (b + own_b, a + own_a) for (b, a), (own_b, own_a) in zip(pad.padding, own,
                                                                    strict=True))
        geometry = ConvGeometry(dims, stride, padding, dilation, groups, mode, tuple(shape[1:]))
        for n, (before, after) in zip(shape[1:], padding, strict=True):
            if (mode == "reflect" and max(before, after) >= n) or (
                    mode == "circular" and max(before, after) > n):
                raise self.unsupported(step, f"{mode} padding of {max(before, after)} on a "
                                             f"dimension of size {n}")
        if min(geometry.output_size(kernel)) < 1:
            raise self.invalid(step, f"the kernel {kernel} does not fit the padded input "
                                     f"{geometry.padded_size()}")
        return geometry

    def pad(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        rank = len(shape) + 1
        mode = step.attribute("mode", "constant")
        if self.opset < 11:
            pads, value, axes = step.attribute("pads"), step.attribute("value", 0.0), None
        else:
            pads, value = self.constant(step, 1), self.constant(step, 2, 0.0)
            axes = self.constant(step, 3)
        pads = [int(p) for p in np.asarray(pads).reshape(-1)]
        axes = list(range(rank)) if axes is None else [
            int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).reshape(-1)]
        if len(pads) != 2 * len(axes):
            raise self.invalid(step, f"{len(pads)} pads for {len(axes)} axes")
        before, after = [0] * rank, [0] * rank
        for i, axis in enumerate(axes):
            before[axis], after[axis] = pads[i], pads[i + len(axes)]
        if mode not in _PAD_MODES:
            raise self.unsupported(step, f"padding mode {mode!r}")
        if mode == "constant" and float(np.asarray(value, dtype=np.float64).reshape(-1)[0]):
            raise self.unsupported(step, f"padding with the constant {value} (not zero)")
        if min(before + after) < 0:
            raise self.unsupported(step, "negative pads (cropping)")
        if rank < 3 or any(before[:2]) or any(after[:2]):
            raise self.unsupported(step, "pads the batch or channel dimension")
        padding = tuple(zip(before[2:], after[2:], strict=True))
        self.pads[step.outputs[0]] = _PendingPad(step.label, index, shape, padding,
                                                 _PAD_MODES[mode])

    def average_pool(self, step: _Step) -> None:
        index, shape, pad = self.padded_tensor(step)
        kernel = tuple(int(k) for k in step.attribute("kernel_shape", ()))
        if len(kernel) != len(shape) - 1 or not kernel:
            raise self.invalid(step, f"kernel_shape {kernel} on features of shape {shape}")
        # count_include_pad concerns the op's own pads (checked by geometry), not a Pad's
        geometry = self.geometry(step, shape, kernel, shape[0], pad,
                                 count_include_pad=bool(step.attribute("count_include_pad", 0)))
        affine = T.average_pool(step.label, f"ONNX {step.op}", shape, kernel, geometry,
                                bool(step.attribute("ceil_mode", 0)), count_include_pad=True)
        self.emit(step, affine, [index], affine.operator.out_shape)

    def global_average_pool(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        if len(shape) < 2:
            raise self.invalid(step, f"features of shape {shape} have no spatial dimensions")
        kernel = tuple(shape[1:])
        dims = len(kernel)
        geometry = ConvGeometry(dims, (1,) * dims, ((0, 0),) * dims, (1,) * dims, shape[0],
                                "zeros", kernel)
        self.depthwise_mean(step, index, shape, kernel, geometry)

    def depthwise_mean(self, step, index, shape, kernel, geometry) -> None:
        weight = torch.full((shape[0], 1, *kernel), 1.0 / math.prod(kernel), dtype=DTYPE)
        self.affine(step, Convolution(weight, geometry, shape), None, index)

    # -- per-element affine maps and joins ---------------------------------------------
    def batch_normalization(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        if step.attribute("training_mode", 0) or not step.attribute("spatial", 1) or (
                self.opset < 7 and not step.attribute("is_test", 0)):
            raise self.unsupported(step, "BatchNormalization in training mode (lipkit imports "
                                         "the inference form, with running statistics)")
        gamma, beta, mean, variance = (torch.as_tensor(self.floats(step, i))
                                       for i in range(1, 5))
        try:
            affine = T.batch_norm(step.label, f"ONNX {step.op}", shape, mean, variance,
                                  float(step.attribute("epsilon", 1e-5)), gamma, beta)
        except InvalidArgumentError as error:
            raise self.invalid(step, str(error)) from None
        self.emit(step, affine, [index], shape)

    def add(self, step: _Step, subtract: bool = False) -> None:
        left, right = self.is_tensor(step, 0), self.is_tensor(step, 1)
        if left and right:
            self.join(step, [0, 1], subtract)
            return
        index, shape = self.tensor(step, 0 if left else 1)
        constant = self.floats(step, 1 if left else 0)
        bias = self.broadcast(step, -constant if subtract and left else constant, shape)
        # c - x = -x + c
        scale = -1.0 if subtract and not left else 1.0
        self.affine(step, Diagonal(torch.tensor(scale), shape), bias, index)

    def join(self, step: _Step, positions: list[int], subtract: bool = False) -> None:
        sources = [self.tensor(step, position) for position in positions]
        shape = sources[0][1]
        if any(s != shape for _, s in sources):
            raise self.unsupported(step, "joins tensors of shapes "
                                   + ", ".join(str(s) for _, s in sources))
        indices = [index for index, _ in sources]
        if subtract:
            negated = Affine(Diagonal(-torch.ones(()), shape))
            self.nodes.append(Node(step.label + "_negate", negated, [indices[1]]))
            indices[1] = len(self.nodes) - 1
        self.emit(step, Add(), indices, shape)

    def sum(self, step: _Step) -> None:
        if not all(self.is_tensor(step, i) for i in range(len(step.inputs))):
            raise self.unsupported(step, "Sum with constants (lipkit joins computed tensors)")
        if len(step.inputs) == 1:
            self.alias(step, step.inputs[0])
        else:
            self.join(step, list(range(len(step.inputs))))

    def mul(self, step: _Step, divide: bool = False) -> None:
        left, right = self.is_tensor(step, 0), self.is_tensor(step, 1)
        if left and right and not divide:
            for x, gate in ((0, 1), (1, 0)):
                source, kind = self.gates.get(step.inputs[gate], (None, None))
                if source == step.inputs[x]:
                    # x * sigmoid(x) = silu(x), x * tanh(softplus(x)) = mish(x), as PyTorch
                    # exports nn.SiLU and nn.Mish
                    index, shape = self.tensor(step, x)
                    self.emit(step, T.activation(step.label, "ONNX Mul", kind), [index], shape)
                    return
            raise self.unsupported(step, "multiplies two tensors computed from the input")
        if divide and right:
            raise self.unsupported(step, "divides by a tensor computed from the input")
        index, shape = self.tensor(step, 0 if left else 1)
        factor = self.broadcast(step, self.floats(step, 1 if left else 0), shape)
        if divide:
            if not np.all(factor != 0):
                raise self.invalid(step, "divides by zero")
            factor = 1.0 / factor
        self.affine(step, Diagonal(torch.as_tensor(np.array(factor)), shape), None, index)

    def neg(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        self.affine(step, Diagonal(-torch.ones(()), shape), None, index)

    # -- activations -------------------------------------------------------------------
    def activation(self, step: _Step) -> None:
        """An activation op, every attribute read (an unknown one refused)."""
        index, shape = self.tensor(step, 0)
        attributes, translate = _ACTIVATIONS[step.op]
        unknown = sorted(set(step.attributes) - set(attributes))
        if unknown:
            raise self.unsupported(step, f"attributes {unknown} (lipkit reads "
                                         f"{sorted(attributes) or 'none'})")
        values = {name: step.attribute(name, default) for name, default in attributes.items()}
        activation = translate(self, step, values, shape)
        # the gates of x * sigmoid(x) (SiLU) and x * tanh(softplus(x)) (Mish), as exported
        if step.op == "Sigmoid":
            self.gates[step.outputs[0]] = (step.inputs[0], "silu")
        elif step.op == "Softplus":
            self.softplus_inputs[step.outputs[0]] = step.inputs[0]
        elif step.op == "Tanh" and step.inputs[0] in self.softplus_inputs:
            self.gates[step.outputs[0]] = (self.softplus_inputs[step.inputs[0]], "mish")
        self.emit(step, activation, [index], shape)

    def clip(self, step: _Step, values: dict, shape) -> Activation:
        """Clip: ``min`` / ``max`` are inputs (opset 11 on) or attributes (before)."""
        ends = []
        for position, name in ((1, "min"), (2, "max")):
            value = self.constant(step, position)
            if value is None:
                value = values.get(name)
            elif np.size(value) != 1:
                raise self.unsupported(step, f"{name} of shape {np.shape(value)} (lipkit reads "
                                             "one number)")
            ends.append(None if value is None else float(np.asarray(value).reshape(())))
        return T.activation(step.label, f"ONNX {step.op}", "hardtanh", min_val=ends[0],
                            max_val=ends[1])

    def prelu(self, step: _Step, values: dict, shape) -> Activation:
        """PRelu: the slope input broadcast (from the right) to the input, batch first."""
        slope = self.floats(step, 1)
        while slope.ndim > len(shape) and slope.shape[0] == 1:
            slope = slope[0]
        if slope.ndim > len(shape):
            raise self.unsupported(step, f"a slope of shape {slope.shape} differs across the "
                                         "batch dimension")
        return T.prelu(step.label, f"ONNX {step.op}", torch.as_tensor(slope), shape)

    def identity(self, step: _Step) -> None:
        if step.op == "Dropout":
            training = self.constant(step, 2) if self.opset >= 12 else None
            if (training is not None and bool(np.asarray(training).reshape(-1)[0])) or (
                    self.opset < 7 and not step.attribute("is_test", 0)):
                raise self.unsupported(step, "Dropout in training mode")
        self.alias(step, step.inputs[0])

    # -- shapes --------------------------------------------------------------------------
    def flatten(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        rank = len(shape) + 1
        axis = int(step.attribute("axis", 1))
        axis = axis + rank if axis < 0 else axis
        if axis == 0 or math.prod(shape[:axis - 1]) != 1:
            raise self.unsupported(step, f"Flatten with axis={axis} merges the batch dimension "
                                         f"with others (features of shape {shape})")
        self.reshape(step, index, shape, (math.prod(shape[axis - 1:]),))

    def reshape_node(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        target = [int(t) for t in np.asarray(self.constant(step, 1)).reshape(-1)]
        copy_zeros = not step.attribute("allowzero", 0)
        batch_entries = (-1, _BATCH) + ((0,) if copy_zeros else ()) + (
            (self.static_batch,) if self.static_batch else ())
        if not target or target[0] not in batch_entries:
            raise self.unsupported(step, f"the target shape {_shape_text(target)} does not keep "
                                         "the batch dimension first")
        rest = []
        for position, size in enumerate(target[1:]):
            if size == 0 and copy_zeros:
                if position >= len(shape):
                    raise self.invalid(step, f"a 0 in {_shape_text(target)} copies a dimension "
                                             f"that {shape} lacks")
                rest.append(shape[position])
            elif size >= -1:
                rest.append(size)
            elif size == _BATCH:
                raise self.unsupported(step, f"the target shape {_shape_text(target)} moves the "
                                             "batch dimension")
            else:
                raise self.invalid(step, f"invalid target shape {_shape_text(target)}")
        features = math.prod(shape)
        if -1 in rest:
            known = math.prod(s for s in rest if s != -1)
            if rest.count(-1) > 1 or target[0] == -1:
                raise self.unsupported(step, f"the target shape {_shape_text(target)} has two "
                                             "inferred (-1) dimensions")
            if known == 0 or features % known:
                raise self.invalid(step, f"cannot reshape {shape} to {_shape_text(target)}")
            rest[rest.index(-1)] = features // known
        if math.prod(rest) != features:
            raise self.unsupported(step, f"reshaping features of shape {shape} to "
                                         f"{_shape_text(target)} changes the batch dimension")
        self.reshape(step, index, shape, rest)

    def squeeze(self, step: _Step, unsqueeze: bool = False) -> None:
        axes = step.attribute("axes")
        if axes is None:
            axes = self.constant(step, 1)
        if step.inputs[0] in self.halves:
            self.squeeze_half(step, axes, unsqueeze)
            return
        index, shape = self.tensor(step, 0)
        rank = len(shape) + 1 + (0 if axes is None or not unsqueeze else np.size(axes))
        if axes is None:  # squeeze every non-batch dimension of size 1
            self.reshape(step, index, shape, [s for s in shape if s != 1])
            return
        axes = sorted(int(a) + rank if int(a) < 0 else int(a) for a in np.ravel(axes))
        if 0 in axes:
            raise self.unsupported(step, "squeezes or unsqueezes the batch dimension")
        if unsqueeze:
            out = list(shape)
            for axis in axes:
                out.insert(axis - 1, 1)
        else:
            if any(axis > len(shape) or shape[axis - 1] != 1 for axis in axes):
                raise self.invalid(step, f"cannot squeeze axes {axes} of {shape}")
            out = [s for i, s in enumerate(shape, start=1) if i not in axes]
        self.reshape(step, index, shape, out)

    def transpose(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        rank = len(shape) + 1
        perm = [int(p) for p in step.attribute("perm", range(rank - 1, -1, -1))]
        if sorted(perm) != list(range(rank)):
            raise self.invalid(step, f"perm {perm} is not a permutation of {rank} axes")
        if perm[0] != 0:
            raise self.unsupported(step, f"perm {perm} moves the batch dimension")
        dims = tuple(p - 1 for p in perm[1:])
        if dims == tuple(range(len(shape))):
            self.values[step.outputs[0]] = (index, shape)
        else:
            self.affine(step, Permute(dims, shape), None, index)

    # -- GroupSort (see the module docstring) -------------------------------------------
    def group_sort(self, step: _Step, index: int, shape, axis: int) -> None:
        """Sort each group of the values along the non-batch ``axis`` in descending order."""
        size = shape[axis]
        merged = (math.prod(shape[:axis + 1]), *shape[axis + 1:])
        index = self.reshaped(step.label + "_groups", index, shape, merged)
        activation = Activation("groupsort", params={"group_size": size})
        self.nodes.append(Node(step.label, activation, [index]))
        self.reshape(step, len(self.nodes) - 1, merged, shape)

    def top_k(self, step: _Step) -> None:
        index, shape = self.tensor(step, 0)
        k = step.attribute("k") if self.opset < 10 else self.constant(step, 1)
        k = int(np.asarray(k).reshape(-1)[0])
        axis = self.axis(step, step.attribute("axis", -1), len(shape) + 1)
        if not step.attribute("largest", 1) or not step.attribute("sorted", 1):
            raise self.unsupported(step, "lipkit reads TopK as a descending sort (GroupSort): "
                                         "largest=1, sorted=1")
        if k != shape[axis]:
            raise self.unsupported(step, f"TopK of {k} of {shape[axis]} values (lipkit reads "
                                         "TopK over a whole axis, as GroupSort)")
        self.group_sort(step, index, shape, axis)

    def axis(self, step: _Step, axis, rank: int) -> int:
        """A non-batch axis (counted without the batch dimension) from an ONNX axis."""
        axis = int(axis) + rank if int(axis) < 0 else int(axis)
        if not 0 < axis < rank:
            raise self.unsupported(step, f"axis {axis} is the batch dimension or out of range")
        return axis - 1

    def split(self, step: _Step) -> None:
        _, shape = self.tensor(step, 0)
        axis = self.axis(step, step.attribute("axis", 0), len(shape) + 1)
        sizes = step.attribute("split") if self.opset < 13 else self.constant(step, 1)
        sizes = [shape[axis] // len(step.outputs)] * len(step.outputs) if sizes is None \
            else [int(s) for s in np.ravel(sizes)]
        if len(step.outputs) != 2 or sizes != [1, 1] or shape[axis] != 2:
            raise self.unsupported(step, f"a Split of {shape[axis]} values in {sizes} (lipkit "
                                         "reads a Split of a computed tensor only as MaxMin: "
                                         "an axis of size 2 in halves)")
        for part, name in enumerate(step.outputs):
            self.halves[name] = _Half(step.label, step.inputs[0], axis, part, False)

    def squeeze_half(self, step: _Step, axes, unsqueeze: bool) -> None:
        half = self.halves[step.inputs[0]]
        rank = len(self.values[half.source][1]) + 1
        axes = [int(a) + rank if int(a) < 0 else int(a) for a in np.ravel(axes)]
        if axes != [half.axis + 1] or half.squeezed != unsqueeze:
            raise self.unsupported(step, f"axes {axes} of a part of Split '{half.label}' (lipkit "
                                         "reads it only as MaxMin)")
        self.halves[step.outputs[0]] = _Half(half.label, half.source, half.axis, half.part,
                                             not unsqueeze)

    def extreme(self, step: _Step) -> None:
        """Max / Min of the halves of one Split (the rest of MaxMin's pattern waits)."""
        halves = [self.halves.get(name) for name in step.inputs]
        if (len(halves) != 2 or None in halves or {h.part for h in halves} != {0, 1}
                or len({(h.source, h.axis, h.squeezed) for h in halves}) != 1):
            raise self.unsupported(step, f"{step.op} of tensors computed from the input (lipkit "
                                         "reads Max and Min only inside MaxMin, of the halves "
                                         "of one Split)")
        first = halves[0]
        self.halves[step.outputs[0]] = _Half(first.label, first.source, first.axis,
                                             step.op.lower(), first.squeezed)

    def concat(self, step: _Step) -> None:
        """MaxMin's last step: the Max then the Min of a Split's halves, on its axis."""
        halves = [self.halves.get(name) for name in step.inputs]
        if (len(halves) == 2 and None not in halves and [h.part for h in halves] == ["max", "min"]
                and len({(h.source, h.axis) for h in halves}) == 1
                and not any(h.squeezed for h in halves)):
            index, shape = self.values[halves[0].source]
            if self.axis(step, step.attribute("axis"), len(shape) + 1) == halves[0].axis:
                self.group_sort(step, index, shape, halves[0].axis)
                return
        raise self.unsupported(step, "Concat of tensors computed from the input (lipkit reads "
                                     "it only as the end of MaxMin: Max then Min of a Split's "
                                     "halves, on the split axis)")

    def shape(self, step: _Step) -> None:
        """Shape of a computed tensor, with the batch size as a marker (see module doc)."""
        _, shape = self.tensor(step, 0)
        full = np.array([_BATCH, *shape], dtype=np.int64)
        start, end = step.attribute("start", 0), step.attribute("end")
        self.constants[step.outputs[0]] = full[start:end]


def _plain(kind: str, **params):
    def translate(translator, step, values, shape):
        named = {key: values[name] for key, name in params.items()}
        return T.activation(step.label, f"ONNX {step.op}", kind, **named)
    return translate


# op -> (its attributes with their defaults, the translation of their values)
_ACTIVATIONS = {
    "Relu": ({}, _plain("relu")),
    "Sigmoid": ({}, _plain("sigmoid")),
    "Tanh": ({}, _plain("tanh")),
    "Softplus": ({}, _plain("softplus")),  # log(exp(x) + 1): no threshold
    "Softsign": ({}, _plain("softsign")),
    "HardSwish": ({}, _plain("hardswish")),
    "Mish": ({}, _plain("mish")),
    "LeakyRelu": ({"alpha": 0.01}, _plain("leaky_relu", negative_slope="alpha")),
    "Elu": ({"alpha": 1.0}, _plain("elu", alpha="alpha")),
    "Celu": ({"alpha": 1.0}, _plain("celu", alpha="alpha")),
    # the defaults are float32 numbers, read (as attributes are) as their shortest decimals
    "Selu": ({"alpha": 1.6732632, "gamma": 1.050701},
             _plain("selu", alpha="alpha", scale="gamma")),
    "HardSigmoid": ({"alpha": 0.2, "beta": 0.5},
                    _plain("hardsigmoid", scale="alpha", offset="beta")),
    "Gelu": ({"approximate": "none"}, _plain("gelu", approximate="approximate")),
    "Clip": ({"min": None, "max": None}, _Translator.clip),
    "PRelu": ({}, _Translator.prelu),
    "ThresholdedRelu": ({"alpha": 1.0}, lambda translator, step, values, shape:
                        T.thresholded_relu(step.label, f"ONNX {step.op}", values["alpha"])),
    "Shrink": ({"bias": 0.0, "lambd": 0.5}, lambda translator, step, values, shape:
               T.shrink(step.label, f"ONNX {step.op}", values["bias"], values["lambd"])),
}

_HANDLERS = {
    **dict.fromkeys(_ACTIVATIONS, _Translator.activation),
    "Gemm": _Translator.gemm,
    "MatMul": _Translator.matmul,
    "Conv": _Translator.conv,
    "ConvTranspose": _Translator.conv_transpose,
    "Pad": _Translator.pad,
    "AveragePool": _Translator.average_pool,
    "GlobalAveragePool": _Translator.global_average_pool,
    "BatchNormalization": _Translator.batch_normalization,
    "Add": _Translator.add,
    "Sub": lambda self, step: self.add(step, subtract=True),
    "Sum": _Translator.sum,
    "Mul": _Translator.mul,
    "Div": lambda self, step: self.mul(step, divide=True),
    "Neg": _Translator.neg,
    "Identity": _Translator.identity,
    "Dropout": _Translator.identity,
    "Flatten": _Translator.flatten,
    "Reshape": _Translator.reshape_node,
    "Squeeze": _Translator.squeeze,
    "Unsqueeze": lambda self, step: self.squeeze(step, unsqueeze=True),
    "Transpose": _Translator.transpose,
    "Shape": _Translator.shape,
    "TopK": _Translator.top_k,
    "Split": _Translator.split,
    "Max": _Translator.extreme,
    "Min": _Translator.extreme,
    "Concat": _Translator.concat,
}


# -- constant folding (numpy on initializers and Constant outputs) -------------------------
def _check_no_batch(translator: _Translator, step: _Step, *values) -> None:
    for value in values:
        array = np.asarray(value)
        if array.dtype.kind in "iu" and np.any(array == _BATCH):
            raise translator.unsupported(step, "computes with the batch size (lipkit keeps it "
                                               "symbolic)")


def _fold_arithmetic(function):
    def fold(translator: _Translator, step: _Step) -> np.ndarray:
        values = [translator.constant(step, i) for i in range(len(step.inputs))]
        _check_no_batch(translator, step, *values)
        result = function(*values)
        if step.op == "Div" and all(np.asarray(v).dtype.kind in "iu" for v in values):
            result = np.trunc(result).astype(np.result_type(*values))
        return np.asarray(result)
    return fold


def _fold_reshape(translator: _Translator, step: _Step) -> np.ndarray:
    data, target = translator.constant(step, 0), translator.constant(step, 1)
    target = [int(t) for t in np.ravel(target)]
    if not step.attribute("allowzero", 0):
        target = [data.shape[i] if t == 0 else t for i, t in enumerate(target)]
    return np.reshape(data, target)


def _fold_squeeze(translator: _Translator, step: _Step, unsqueeze: bool = False) -> np.ndarray:
    data = translator.constant(step, 0)
    axes = step.attribute("axes")
    if axes is None:
        axes = translator.constant(step, 1)
    if axes is None:
        return np.squeeze(data)
    axes = tuple(int(a) for a in np.ravel(axes))
    if not unsqueeze:
        return np.squeeze(data, axis=axes)
    rank = data.ndim + len(axes)
    return np.expand_dims(data, tuple(a + rank if a < 0 else a for a in axes))


def _fold_slice(translator: _Translator, step: _Step) -> np.ndarray:
    data = translator.constant(step, 0)
    if translator.opset < 10:
        starts, ends = step.attribute("starts"), step.attribute("ends")
        axes, steps = step.attribute("axes"), None
    else:
        starts, ends, axes, steps = (translator.constant(step, i) for i in range(1, 5))
    starts, ends = [int(s) for s in np.ravel(starts)], [int(e) for e in np.ravel(ends)]
    axes = range(len(starts)) if axes is None else [int(a) for a in np.ravel(axes)]
    steps = [1] * len(starts) if steps is None else [int(s) for s in np.ravel(steps)]
    for start, end, axis, stride in zip(starts, ends, axes, steps, strict=True):
        axis = axis + data.ndim if axis < 0 else axis
        size = data.shape[axis]
        start = start + size if start < 0 else start
        end = end + size if end < 0 else end
        if stride > 0:
            start, end = min(max(start, 0), size), min(max(end, 0), size)
        else:
            start, end = min(max(start, 0), size - 1), min(max(end, -1), size - 1)
        data = np.take(data, range(start, end, stride), axis=axis)
    return data


def _fold_cast(translator: _Translator, step: _Step) -> np.ndarray:
    dtype = helper.tensor_dtype_to_np_dtype(step.attribute("to"))
    return np.asarray(translator.constant(step, 0)).astype(dtype)


def _fold_flatten(translator: _Translator, step: _Step) -> np.ndarray:
    data = translator.constant(step, 0)
    axis = int(step.attribute("axis", 1))
    axis = axis + data.ndim if axis < 0 else axis
    return data.reshape(math.prod(data.shape[:axis]), -1)


def _fold_constant_of_shape(translator: _Translator, step: _Step) -> np.ndarray:
    shape = [int(s) for s in np.ravel(translator.constant(step, 0))]
    _check_no_batch(translator, step, shape)
    if min(shape, default=0) < 0 or math.prod(shape) > _MAX_ENTRIES:
        raise translator.invalid(step, f"a constant of shape {shape}")
    value = step.attribute("value")
    value = np.zeros(1, dtype=np.float32) if value is None else np.ravel(value)
    return np.full(shape, value[0], dtype=value.dtype)


_FOLDERS = {
    "Identity": lambda t, s: t.constant(s, 0),
    "Dropout": lambda t, s: t.constant(s, 0),
    "Cast": _fold_cast,
    "Transpose": lambda t, s: np.transpose(t.constant(s, 0), s.attribute("perm")),
    "Reshape": _fold_reshape,
    "Flatten": _fold_flatten,
    "Squeeze": _fold_squeeze,
    "Unsqueeze": lambda t, s: _fold_squeeze(t, s, unsqueeze=True),
    "Concat": lambda t, s: np.concatenate(
        [t.constant(s, i) for i in range(len(s.inputs))], axis=s.attribute("axis")),
    "Gather": lambda t, s: np.take(t.constant(s, 0), t.constant(s, 1),
                                   axis=s.attribute("axis", 0)),
    "Slice": _fold_slice,
    "Shape": lambda t, s: np.array(np.shape(t.constant(s, 0)), dtype=np.int64)[
        s.attribute("start", 0):s.attribute("end")],
    "ConstantOfShape": _fold_constant_of_shape,
    "Add": _fold_arithmetic(np.add),
    "Sub": _fold_arithmetic(np.subtract),
    "Mul": _fold_arithmetic(np.multiply),
    "Div": _fold_arithmetic(np.divide),
    "Neg": _fold_arithmetic(np.negative),
    "Sqrt": _fold_arithmetic(np.sqrt),
    "Reciprocal": _fold_arithmetic(np.reciprocal),
    "Mod": lambda t, s: _fold_arithmetic(np.fmod if s.attribute("fmod", 0) else np.mod)(t, s),
    "Max": _fold_arithmetic(lambda *values: np.maximum.reduce(np.broadcast_arrays(*values))),
    "Min": _fold_arithmetic(lambda *values: np.minimum.reduce(np.broadcast_arrays(*values))),
}


# -- attributes, output ------------------------------------------------------------------
def _check_declared_size(tensor, what: str) -> None:
    """Refuse a tensor whose declared dims hold more than ``_MAX_ENTRIES`` entries, before
    its data is converted (a 20000 x 20000 weight would take 3.2 GB as float64)."""
    entries = math.prod(tensor.dims)
    if min(tensor.dims, default=0) < 0 or entries > _MAX_ENTRIES:
        raise InvalidArgumentError(f"{what} has shape {list(tensor.dims)} ({entries:,} "
                                   f"entries; lipkit reads at most {_MAX_ENTRIES:,})")


def _attribute_value(attribute):
    if attribute.type == onnx.AttributeProto.TENSOR:
        _check_declared_size(attribute.t, f"the tensor attribute '{attribute.name}'")
        return numpy_helper.to_array(attribute.t)
    value = helper.get_attribute_value(attribute)
    # a float attribute is stored as float32: read it as the shortest decimal that rounds to
    # it (the 0.2 a user wrote, not 0.20000000298...)
    if attribute.type == onnx.AttributeProto.FLOAT:
        return float(str(np.float32(value)))
    if attribute.type == onnx.AttributeProto.FLOATS:
        return [float(str(np.float32(v))) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def _describe(error: Exception) -> str:
    """``Type: first line of the message`` (one line, for error messages)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _shape_text(target) -> str:
    return "[" + ", ".join("batch" if t == _BATCH else str(t) for t in target) + "]"


def _prune(nodes: list[Node], output: int) -> list[Node]:
    """The nodes ``output`` depends on, in order, with their inputs renumbered."""
    if output < 0:
        return []
    keep, stack = set(), [output]
    while stack:
        index = stack.pop()
        if index >= 0 and index not in keep:
            keep.add(index)
            stack.extend(nodes[index].inputs)
    renumber = {-1: -1}
    kept = []
    for index in sorted(keep):
        renumber[index] = len(kept)
        node = nodes[index]
        kept.append(Node(node.name, node.op, [renumber[i] for i in node.inputs]))
    return kept


def _fold_diagonals(nodes: list[Node]) -> list[Node]:
    """Merge a diagonal affine node into the affine node it alone reads, where exact.

    ``D2 (D1 x + b1) + b2`` is one diagonal node; ``A x + b1`` followed by a pure shift is
    one node. (Input normalization ``(x - mean) / std`` becomes one node.)
    """
    readers = Counter(i for node in nodes for i in node.inputs)
    merged: list[Node] = []
    renumber = {-1: -1}
    for index, node in enumerate(nodes):
        inputs = [renumber[i] for i in node.inputs]
        op = node.op
        if (isinstance(op, Affine) and isinstance(op.operator, Diagonal) and inputs[0] >= 0
                and readers[node.inputs[0]] == 1 and isinstance(merged[inputs[0]].op, Affine)):
            previous = merged[inputs[0]]
            combined = _compose(previous.op, op)
            if combined is not None:
                merged[inputs[0]] = Node(f"{previous.name}+{node.name}", combined,
                                         previous.inputs)
                renumber[index] = inputs[0]
                continue
        renumber[index] = len(merged)
        merged.append(Node(node.name, op, inputs))
    return merged


def _compose(first: Affine, second: Affine) -> Affine | None:
    """``second(first(x))`` as one Affine, when ``second`` is diagonal and that is exact."""
    scale = second.operator.scale
    shift = second.bias
    if isinstance(first.operator, Diagonal):
        bias = None if first.bias is None else first.bias * scale
        if shift is not None:
            bias = shift if bias is None else bias + shift
        return Affine(Diagonal(first.operator.scale * scale, first.operator.in_shape), bias)
    if bool(torch.all(scale == 1)):
        if shift is None:
            return first
        return Affine(first.operator, shift if first.bias is None else first.bias + shift)
    return None
