"""Import an ONNX file into a :class:`~lipkit.estimate.network.Network`.

The file is read as data with the ``onnx`` package (parsed, checked by ``onnx.checker``,
external weight files beside it included, initializers converted with
``onnx.numpy_helper``); nothing in it is executed. Its size, with its external data's, is
checked against ``lipkit.io.MAX_MODEL_BYTES`` before it is parsed. A model older than opset
17 is brought to opset 17 by onnx's version converter (where it can), and onnx's shape
inference records the shapes it can infer. The graph's nodes are
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
  (Mish) as PyTorch exports them, and the op patterns PyTorch writes for activations ONNX
  lacks (every constant checked exactly, a look-alike refused by name): GELU below opset 20
  ``x * (Erf(x / sqrt(2)) + 1) * 0.5`` and its tanh form ``x * (Tanh(sqrt(2 / pi) * (x +
  0.044715 * x^3)) + 1) * 0.5`` (``x^3`` as ``x * (x * x)`` or ``Pow(x, 3)``; the products
  in any order), LogSigmoid
  ``Log(Sigmoid(x))``, Tanhshrink ``x - Tanh(x)``, Softshrink ``Where(x > l, x - l, 0) +
  Where(x < -l, x + l, 0)``; constants must be finite floats (NaN / inf refused, naming
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
  ``ConstantOfShape``, ``Expand``, arithmetic, ...), computed by onnx's reference evaluator
  once onnx's shape inference has bounded each output (above ``_MAX_ENTRIES`` entries, an
  error naming the node: a ``ConstantOfShape`` / ``Expand`` / ``Tile`` bomb is never
  computed). ``Shape`` of a computed tensor stands for the batch size by a marker that only
  ops moving int64 entries may carry, and that may only end up as the leading entry of a
  ``Reshape``'s shape.

The first dimension of the graph's input is the batch; the input shape (without it) comes
from the input's declared type, or from ``input_shape`` where the type leaves a dimension
symbolic. Anything else is an :class:`~lipkit.errors.UnsupportedModuleError` naming the node
and its operator; a file that is not a valid ONNX model is an
:class:`~lipkit.errors.InvalidArgumentError` naming the file.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lipkit import io
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
    from onnx import helper, numpy_helper, shape_inference, version_converter
    from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_model
    from onnx.reference import ReferenceEvaluator
except ImportError:  # pragma: no cover - depends on the installation
    onnx = None

# ONNX Pad modes -> ConvGeometry padding modes
_PAD_MODES = {"constant": "zeros", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}
# Shape(x)[0] of a tensor computed from the input: the batch size, unknown until run time
_BATCH = -(1 << 40)
_FLOAT_TYPES = (1, 10, 11, 16)  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_MAX_ENTRIES = 1 << 26  # the largest dense matrix / constant built here (512 MiB in float64)
# the opset older models are converted to (onnx's version converter) before translation;
# newer models are read as they are: the converter's downgrades fail on operators added
# since (Gelu at 20), and the handlers still read the older forms of attributes as inputs
# for the models the converter cannot upgrade
_OPSET = 17
# a constant input of a folded node at most this large is given to shape inference as an
# initializer (its value read: a Reshape's shape, an Expand's sizes); a larger one by its type
_INFERENCE_VALUE_ENTRIES = 4096


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
    """Parse, check and normalize the file; every failure is one InvalidArgumentError
    naming it. The file's size (and its external data's) is checked before it is parsed."""
    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    limit = io.MAX_MODEL_BYTES
    size = path.stat().st_size
    if size > limit:
        raise InvalidArgumentError(f"{path}: {size} bytes, more than the {limit} lipkit reads")
    try:
        # checked by path: external data files are then checked to lie beside the model
        onnx.checker.check_model(str(path))
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf and the checker raise many types
        raise InvalidArgumentError(f"{path}: not a valid ONNX model ({_describe(error)})"
                                   ) from None
    if _external_data_bytes(model, path, size, limit):
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as error:
            raise InvalidArgumentError(f"{path}: its external data cannot be read "
                                       f"({_describe(error)})") from None
    return _normalize(model)


def _external_tensors(graph):
    """The tensors of ``graph`` (initializers, Constant attributes, subgraphs) stored in
    external data files."""
    for tensor in graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            yield tensor
    for node in graph.node:
        for attribute in node.attribute:
            for tensor in (attribute.t, *attribute.tensors):
                if tensor.data_location == onnx.TensorProto.EXTERNAL:
                    yield tensor
            for subgraph in (attribute.g, *attribute.graphs):
                yield from _external_tensors(subgraph)


def _external_data_bytes(model, path: Path, size: int, limit: int) -> int:
    """The bytes the model's external data adds, refused (naming the tensor) where the file
    and its external data together exceed ``limit``, before any of it is read."""
    total = 0
    for tensor in _external_tensors(model.graph):
        info = ExternalDataInfo(tensor)
        location = path.parent / info.location
        try:
            length = (info.length if info.length is not None and info.length > 0
                      else location.stat().st_size - (info.offset or 0))
        except OSError as error:
            raise InvalidArgumentError(f"{path}: the external data '{info.location}' of tensor "
                                       f"'{tensor.name}' cannot be read ({_describe(error)})"
                                       ) from None
        total += max(length, 0)
        if size + total > limit:
            raise InvalidArgumentError(
                f"{path}: with the external data of tensor '{tensor.name}' in "
                f"'{info.location}' the model takes {size + total} bytes, more than the "
                f"{limit} lipkit reads"
            )
    return total


def _normalize(model):
    """The model at opset ``_OPSET`` at least (onnx's version converter) with the shapes onnx
    infers recorded (``value_info``), where onnx can do either; else the model as it is."""
    opset = next((entry.version for entry in model.opset_import
                  if entry.domain in ("", "ai.onnx")), 1)
    # a failed conversion (no adapter for some op) keeps the original model: the handlers
    # read the older forms (Squeeze's axes attribute, Clip's min / max attributes, ...)
    if opset < _OPSET:
        with contextlib.suppress(Exception):
            model = version_converter.convert_version(model, _OPSET)
    # inference is an aid (fold sizes are inferred again per node); the handlers check shapes
    with contextlib.suppress(Exception):
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    return model


@dataclass
class _Step:
    """One ONNX node being translated."""

    label: str  # the node's name, or op_type_position when it has none
    op: str
    inputs: list[str]  # "" for an omitted optional input
    outputs: list[str]
    attributes: dict
    node: object = None  # the NodeProto

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


@dataclass
class _Pattern:
    """A pending value inside one of the op patterns PyTorch exports for an activation
    (GELU below opset 20, Softshrink): the rest of the pattern waits for it."""

    label: str  # the node that began the pattern
    # GELU: "erf", "erf+1", "(erf+1)/2", "2gelu"; its tanh form: "square", "cube", "c*cube",
    # "inner", "scaled", "tanh", "tanh+1", "(tanh+1)/2", "2gelu_tanh"; Softshrink: "greater",
    # "less", "upper", "lower"
    kind: str
    source: str  # the value x the activation is applied to
    value: np.ndarray | None = None  # the compared constant (Softshrink's lambd)


_GELU_PATTERN = "x * (Erf(x / sqrt(2)) + 1) * 0.5"
_GELU_TANH_PATTERN = "x * (Tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)) + 1) * 0.5"
_GELU_TANH_CUBE = 0.044715
_GELU_TANH_SCALE = math.sqrt(2 / math.pi)
_SOFTSHRINK_PATTERN = "Where(x > l, x - l, 0) + Where(x < -l, x + l, 0)"


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
        # activation output -> (op, input name), for Log(Sigmoid(x)) and x - Tanh(x)
        self.applied: dict[str, tuple[str, str]] = {}
        # output of x + c, x - c, x * c, x / c of a scalar constant c -> (op, x, c)
        self.scalar_steps: dict[str, tuple[str, str, np.ndarray]] = {}
        self.patterns: dict[str, _Pattern] = {}
        self.pattern_ops: dict[str, str] = {}  # a pattern's first node -> its operator
        self.static_batch: int | None = None
        # value name -> the shape onnx declares or infers for it (None: a symbolic size)
        self.inferred: dict[str, list[int | None]] = {}
        for value in (*self.graph.value_info, *self.graph.output):
            tensor_type = value.type.tensor_type
            if value.type.HasField("tensor_type") and tensor_type.HasField("shape"):
                self.inferred[value.name] = [d.dim_value if d.HasField("dim_value") else None
                                             for d in tensor_type.shape.dim]

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
        if output in self.patterns:  # a pattern left unfinished (x * x alone, ...)
            label = self.patterns[output].label
            op = self.pattern_ops.get(label, "?")
            what = ("multiplies two tensors computed from the input" if op == "Mul"
                    else "begins an op pattern")
            raise UnsupportedModuleError(
                label, f"ONNX {op}", f"{what}, which lipkit reads only inside GELU "
                f"({_GELU_PATTERN} or {_GELU_TANH_PATTERN}) or Softshrink "
                f"({_SOFTSHRINK_PATTERN}); the graph's output '{output}' is inside it")
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
                     inputs=list(node.input), outputs=list(node.output), attributes={},
                     node=node)
        if node.domain not in ("", "ai.onnx"):
            raise self.unsupported(step, f"operators of domain '{node.domain}' are not supported")
        try:
            step.attributes = {attribute.name: _attribute_value(attribute)
                               for attribute in node.attribute}
            self.translate_step(step)
            self.check_inferred(step)
        except LipkitError:
            raise
        except (ArithmeticError, LookupError, TypeError, ValueError, MemoryError) as error:
            # a checked but inconsistent model (shapes that do not fit, corrupt attributes)
            raise self.invalid(step, f"cannot be translated ({_describe(error)})") from None

    def translate_step(self, step: _Step) -> None:
        for name in step.inputs:
            if name and not (name in self.values or name in self.constants or name in self.pads
                             or name in self.halves or name in self.patterns):
                raise self.unsupported(
                    step, f"reads '{name}', which no supported node produces"
                )
        if step.op == "Constant":
            self.constants[step.outputs[0]] = self.constant_node(step)
        elif step.op in _FOLDABLE and all(not name or name in self.constants
                                          for name in step.inputs):
            self.fold(step)
        elif step.op in _HANDLERS:
            _HANDLERS[step.op](self, step)
            for name in step.outputs:  # the operator that began a pattern, for messages
                if name in self.patterns and self.patterns[name].label == step.label:
                    self.pattern_ops.setdefault(step.label, step.op)
        else:
            raise self.unsupported(step, _no_translation(step.op))

    # -- constant folding ----------------------------------------------------------------
    def fold(self, step: _Step) -> None:
        """A node of constant inputs, computed by onnx's reference evaluator once shape
        inference (reading the small inputs' values) bounds the size of its outputs."""
        marker = _FOLDABLE[step.op]
        if step.op == "Cast" and step.attribute("to") != onnx.TensorProto.INT64:
            marker = ()
        values = {}
        for position, name in enumerate(step.inputs):
            if name:
                values[name] = np.asarray(self.constants[name])
                if marker != "all" and position not in marker and _has_batch(values[name]):
                    raise self.unsupported(step, "computes with the batch size (lipkit keeps "
                                                 "it symbolic)")
        known = {name: value for name, value in values.items()
                 if value.size <= _INFERENCE_VALUE_ENTRIES}
        try:
            graph = helper.make_graph(
                [step.node], "fold",
                [helper.make_tensor_value_info(
                    name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape)
                 for name, value in values.items() if name not in known],
                [onnx.ValueInfoProto(name=name) for name in step.outputs if name],
                [numpy_helper.from_array(value, name) for name, value in known.items()])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("",
                                                                                self.opset)])
            model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as error:  # onnx raises many types for an inconsistent node
            raise self.invalid(step, f"cannot be folded ({_describe(error)})") from None
        for output in model.graph.output:
            tensor_type = output.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else None
                    for d in tensor_type.shape.dim]
            if not tensor_type.HasField("shape") or None in dims:
                raise self.unsupported(step, f"the size of its output '{output.name}' is not "
                                             "known before it is computed (lipkit folds "
                                             "constants of inferred size only)")
            entries = math.prod(dims)
            if entries > _MAX_ENTRIES:
                raise self.invalid(step, f"its output '{output.name}' would have shape {dims} "
                                         f"({entries:,} entries; lipkit computes at most "
                                         f"{_MAX_ENTRIES:,})")
        try:
            results = ReferenceEvaluator(model).run(
                None, {name: value for name, value in values.items() if name not in known})
        except Exception as error:  # the evaluator raises what numpy raises
            raise self.invalid(step, f"cannot be folded ({_describe(error)})") from None
        for name, result in zip((n for n in step.outputs if n), results, strict=True):
            self.constants[name] = np.array(result)  # a writable copy, for torch

    def check_inferred(self, step: _Step) -> None:
        """The shapes the translation computed agree with those onnx declares or infers."""
        for name in step.outputs:
            inferred = self.inferred.get(name)
            if inferred is None or name not in self.values:
                continue
            shape = self.values[name][1]
            if len(inferred) != len(shape) + 1 or any(
                    i is not None and i != s for i, s in zip(inferred[1:], shape, strict=True)):
                text = "[" + ", ".join("?" if i is None else str(i) for i in inferred) + "]"
                raise self.invalid(step, f"its output '{name}' has features of shape {shape}, "
                                         f"where onnx declares or infers {text}")

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
        if name in self.patterns:
            pattern = self.patterns[name]
            raise self.unsupported(step, f"reads '{name}' of the pattern begun at "
                                         f"'{pattern.label}', which lipkit reads only as "
                                         "PyTorch exports GELU (" + _GELU_PATTERN + " or "
                                         + _GELU_TANH_PATTERN + ") or "
                                         "Softshrink (" + _SOFTSHRINK_PATTERN + ")")
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
            bias = torch.as_tensor(np.array(bias), dtype=DTYPE)  # a writable copy
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
        if self.pattern_add(step, subtract):
            return
        left, right = self.is_tensor(step, 0), self.is_tensor(step, 1)
        if left and right:
            if subtract and self.applied.get(step.inputs[1]) == ("Tanh", step.inputs[0]):
                # x - tanh(x) = tanhshrink(x), as PyTorch exports nn.Tanhshrink
                index, shape = self.tensor(step, 0)
                self.emit(step, T.activation(step.label, "ONNX Sub", "tanhshrink"), [index],
                          shape)
                return
            self.join(step, [0, 1], subtract)
            return
        index, shape = self.tensor(step, 0 if left else 1)
        constant = self.floats(step, 1 if left else 0)
        self.record_scalar_step(step, 1 if left else 0)
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
        if not divide and self.pattern_mul(step):
            return
        left, right = self.is_tensor(step, 0), self.is_tensor(step, 1)
        if left and right and not divide and step.inputs[0] == step.inputs[1]:
            # x * x: only as the start of GELU's tanh form (x^3 = x * (x * x))
            self.patterns[step.outputs[0]] = _Pattern(step.label, "square", step.inputs[0])
            return
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
        self.record_scalar_step(step, 1 if left else 0)
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
        pattern = self.patterns.get(step.inputs[0])
        if step.op == "Tanh" and pattern is not None and pattern.kind == "scaled":
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "tanh", pattern.source)
            return
        index, shape = self.tensor(step, 0)
        attributes, translate = _ACTIVATIONS[step.op]
        unknown = sorted(set(step.attributes) - set(attributes))
        if unknown:
            raise self.unsupported(step, f"attributes {unknown} (lipkit reads "
                                         f"{sorted(attributes) or 'none'})")
        values = {name: step.attribute(name, default) for name, default in attributes.items()}
        activation = translate(self, step, values, shape)
        self.applied[step.outputs[0]] = (step.op, step.inputs[0])
        # the gates of x * sigmoid(x) (SiLU) and x * tanh(softplus(x)) (Mish), as exported
        if step.op == "Sigmoid":
            self.gates[step.outputs[0]] = (step.inputs[0], "silu")
        elif step.op == "Softplus":
            self.softplus_inputs[step.outputs[0]] = step.inputs[0]
        elif step.op == "Tanh" and step.inputs[0] in self.softplus_inputs:
            self.gates[step.outputs[0]] = (self.softplus_inputs[step.inputs[0]], "mish")
        self.emit(step, activation, [index], shape)

    # -- activations PyTorch exports as op patterns (every constant checked exactly) ------
    def record_scalar_step(self, step: _Step, position: int) -> None:
        """Remember ``x op c`` for a scalar float constant c (c at ``position``)."""
        constant = np.asarray(self.constant(step, position))
        if constant.size == 1 and constant.dtype.kind == "f":
            op = step.op if position == 1 or step.op in ("Add", "Mul") else "reversed"
            self.scalar_steps[step.outputs[0]] = (op, step.inputs[1 - position], constant)

    def emit_pattern(self, step: _Step, source: str, kind: str, **params) -> None:
        index, shape = self.values[source]
        self.emit(step, T.activation(step.label, f"ONNX {step.op}", kind, **params), [index],
                  shape)

    def erf(self, step: _Step) -> None:
        """Erf, only as the start of GELU's pattern: Erf(x / sqrt(2))."""
        op, source, constant = self.scalar_steps.get(step.inputs[0], (None, None, None))
        if op != "Div" or not _exactly(constant, math.sqrt(2)):
            raise self.unsupported(step, "lipkit reads Erf only inside GELU as PyTorch exports "
                                         f"it, {_GELU_PATTERN}; its input is not x / sqrt(2)")
        self.patterns[step.outputs[0]] = _Pattern(step.label, "erf", source)

    def pow(self, step: _Step) -> None:
        """Pow(x, 3), only inside GELU's tanh form."""
        exponent = self.constant(step, 1) if self.is_tensor(step, 0) else None
        if exponent is None or np.size(exponent) != 1 or float(np.ravel(exponent)[0]) != 3.0:
            raise self.unsupported(step, "lipkit reads Pow only as x^3 inside GELU's tanh form "
                                         f"as exporters write it, {_GELU_TANH_PATTERN}")
        self.patterns[step.outputs[0]] = _Pattern(step.label, "cube", step.inputs[0])

    def log(self, step: _Step) -> None:
        """Log, only as LogSigmoid: Log(Sigmoid(x))."""
        op, source = self.applied.get(step.inputs[0], (None, None))
        if op != "Sigmoid":
            raise self.unsupported(step, "lipkit reads Log only as LogSigmoid, Log(Sigmoid(x))")
        self.emit_pattern(step, source, "logsigmoid")

    def compare(self, step: _Step) -> None:
        """Greater / Less of x and a scalar, only inside Softshrink's pattern."""
        constant = self.constant(step, 1) if self.is_tensor(step, 0) else None
        if constant is None or np.size(constant) != 1 or np.asarray(constant).dtype.kind != "f":
            raise self.unsupported(step, "lipkit reads comparisons only inside Softshrink as "
                                         f"PyTorch exports it, {_SOFTSHRINK_PATTERN}")
        self.patterns[step.outputs[0]] = _Pattern(step.label, step.op.lower(), step.inputs[0],
                                                  np.asarray(constant))

    def where(self, step: _Step) -> None:
        """Where(x > l, x - l, 0) and Where(x < -l, x + l, 0), the halves of Softshrink."""
        condition = self.patterns.get(step.inputs[0])
        op, source, constant = self.scalar_steps.get(step.inputs[1], (None, None, None))
        zero = step.inputs[2] in self.constants and _exactly(self.constants[step.inputs[2]], 0)
        if condition is not None and zero and source == condition.source:
            lambd = condition.value
            if (condition.kind == "greater" and op == "Sub" and _equal(constant, lambd)
                    and float(lambd.reshape(())) >= 0):
                self.patterns[step.outputs[0]] = _Pattern(step.label, "upper", source, lambd)
                return
            if (condition.kind == "less" and op == "Add" and _equal(-constant, lambd)
                    and float(constant.reshape(())) >= 0):
                self.patterns[step.outputs[0]] = _Pattern(step.label, "lower", source,
                                                          constant)
                return
        raise self.unsupported(step, "lipkit reads Where only inside Softshrink as PyTorch "
                                     f"exports it, {_SOFTSHRINK_PATTERN} with l >= 0")

    def pattern_add(self, step: _Step, subtract: bool) -> bool:
        """GELU's Erf(.) + 1 and Softshrink's sum of its halves; False if no pattern."""
        patterns = [self.patterns.get(name) for name in step.inputs[:2]]
        if not any(patterns):
            return False
        first, second = patterns
        if not subtract and first and second and {first.kind, second.kind} == {"upper", "lower"}:
            if first.source == second.source and _equal(first.value, second.value):
                self.emit_pattern(step, first.source, "softshrink",
                                  lambd=_number(first.value))
                return True
            raise self.unsupported(step, f"adds halves of different Softshrinks (lipkit reads "
                                         f"{_SOFTSHRINK_PATTERN})")
        pattern = first or second
        other = step.inputs[1] if first else step.inputs[0]
        one = other in self.constants and _exactly(self.constants[other], 1)
        if not subtract and not (first and second):
            if pattern.kind in ("erf", "tanh") and one:
                self.patterns[step.outputs[0]] = _Pattern(pattern.label, pattern.kind + "+1",
                                                          pattern.source)
                return True
            if pattern.kind == "c*cube" and other == pattern.source:  # x + 0.044715 x^3
                self.patterns[step.outputs[0]] = _Pattern(pattern.label, "inner", other)
                return True
        raise self.unsupported(step, f"{step.op} of the pattern begun at '{pattern.label}' "
                                     f"(lipkit reads it only as GELU, {_GELU_PATTERN} or "
                                     f"{_GELU_TANH_PATTERN}, or Softshrink, "
                                     f"{_SOFTSHRINK_PATTERN})")

    def pattern_mul(self, step: _Step) -> bool:
        """The products of GELU's pattern, in any order; False if no pattern."""
        patterns = [self.patterns.get(name) for name in step.inputs[:2]]
        if not any(patterns):
            return False
        pattern = patterns[0] or patterns[1]
        other = step.inputs[1] if patterns[0] else step.inputs[0]
        half = other in self.constants and _exactly(self.constants[other], 0.5)
        x = pattern.source
        op, source, constant = self.scalar_steps.get(other, (None, None, None))
        half_x = op == "Mul" and source == x and _exactly(constant, 0.5)
        constant = self.constants.get(other)
        if all(patterns):
            pass
        elif pattern.kind == "square" and other == x:  # x * (x * x)
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "cube", x)
            return True
        elif pattern.kind == "cube" and constant is not None and _exactly(constant,
                                                                           _GELU_TANH_CUBE):
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "c*cube", x)
            return True
        elif pattern.kind == "inner" and constant is not None and _exactly(constant,
                                                                            _GELU_TANH_SCALE):
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "scaled", x)
            return True
        elif pattern.kind == "tanh+1" and half:
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "(tanh+1)/2", x)
            return True
        elif pattern.kind == "tanh+1" and other == x:
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "2gelu_tanh", x)
            return True
        elif ((pattern.kind == "tanh+1" and half_x)
              or (pattern.kind == "(tanh+1)/2" and other == x)
              or (pattern.kind == "2gelu_tanh" and half)):
            self.emit_pattern(step, x, "gelu", approximate="tanh")
            return True
        elif pattern.kind == "erf+1" and half:  # (Erf(.) + 1) * 0.5
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "(erf+1)/2", x)
            return True
        elif pattern.kind == "erf+1" and other == x:  # x * (Erf(.) + 1)
            self.patterns[step.outputs[0]] = _Pattern(pattern.label, "2gelu", x)
            return True
        elif ((pattern.kind == "erf+1" and half_x) or (pattern.kind == "(erf+1)/2" and other == x)
              or (pattern.kind == "2gelu" and half)):
            self.emit_pattern(step, x, "gelu")
            return True
        raise self.unsupported(step, f"Mul of the pattern begun at '{pattern.label}' (lipkit "
                                     f"reads it only as GELU, {_GELU_PATTERN} or "
                                     f"{_GELU_TANH_PATTERN})")

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
    "Erf": _Translator.erf,
    "Log": _Translator.log,
    "Pow": _Translator.pow,
    "Greater": _Translator.compare,
    "Less": _Translator.compare,
    "Where": _Translator.where,
}


# -- constant folding (onnx's reference evaluator on initializers and Constant outputs) -----
def _check_no_batch(translator: _Translator, step: _Step, *values) -> None:
    for value in values:
        if _has_batch(value):
            raise translator.unsupported(step, "computes with the batch size (lipkit keeps it "
                                               "symbolic)")


def _exactly(value, number: float) -> bool:
    """``value`` is one float equal to ``number`` rounded to its type (torch's float32
    sqrt(2) is 1.41421353816986083984375, exactly)."""
    value = np.asarray(value)
    return (value.dtype.kind == "f" and value.size == 1
            and bool(value.reshape(()) == np.asarray(number, dtype=value.dtype)))


def _equal(first, second) -> bool:
    """Two scalar constants of one float type with equal values."""
    first, second = np.asarray(first), np.asarray(second)
    return (first.dtype == second.dtype and first.size == second.size == 1
            and bool(first.reshape(()) == second.reshape(())))


def _number(value) -> float:
    """A float constant as the attributes are read: float32 as its shortest decimal."""
    value = np.asarray(value).reshape(())
    return float(str(value)) if value.dtype == np.float32 else float(value)


def _has_batch(value) -> bool:
    array = np.asarray(value)
    return array.dtype.kind in "iu" and bool(np.any(array == _BATCH))


# Operators folded by onnx's reference evaluator when every input is a constant (shape
# arithmetic, casts, element-wise math on initializers); no subgraphs, no random numbers.
# op -> the input positions that may hold the batch-size marker (see the module doc): ops
# that only move int64 entries around, so the marker comes out unchanged
_FOLDABLE = {
    **dict.fromkeys(("Identity", "Concat"), "all"),
    **dict.fromkeys(("Dropout", "Gather", "Slice", "Squeeze", "Unsqueeze", "Reshape",
                     "Flatten", "Transpose", "Cast"), (0,)),
    **dict.fromkeys(("Shape", "Size", "ConstantOfShape", "Expand", "Tile", "Range", "Add",
                     "Sub", "Mul", "Div", "Neg", "Abs", "Sqrt", "Reciprocal", "Pow", "Exp",
                     "Log", "Mod", "Max", "Min", "Floor", "Ceil", "Round", "Sign", "Equal",
                     "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or",
                     "Where", "CastLike", "Split", "GatherElements", "ReduceProd",
                     "ReduceSum", "ReduceMax", "ReduceMin"), ()),
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


def _no_translation(op: str) -> str:
    """Why an operator is refused, with the way out for a final softmax."""
    if op in ("Softmax", "LogSoftmax"):
        return T.SOFTMAX_REFUSAL
    return "no translation into the network description exists for this operator"

