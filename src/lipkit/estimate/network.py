"""The one network description every estimator works on.

Importers (:mod:`lipkit.estimate.importers`) turn a ``torch.nn.Module``, an ONNX file or a
LipSDP ``.mat`` weight file into a :class:`Network`: a list of nodes in topological order,
each reading the outputs of earlier nodes (index ``-1`` is the network's input):

- :class:`Affine`: ``x -> A x + b`` with ``A`` a :class:`LinearOperator` —
  :class:`Matrix` (dense), :class:`Convolution` (with its geometry and input shape),
  :class:`TransposedConvolution` (``ConvTranspose``: a convolution's adjoint),
  :class:`Diagonal` (folded BatchNorm, input normalization), :class:`Reshape` (flatten),
  :class:`Permute` (transpose);
- :class:`Activation`: an elementwise nonlinearity with its slope range ``[alpha, beta]``
  (``(phi(a) - phi(b)) / (a - b)`` always lies in it; LipSDP's slope restriction), or a
  non-elementwise 1-Lipschitz one (GroupSort, MaxMin);
- :class:`Add`: the sum of several nodes (a residual join).

Everything is float64. Tensors carry the batch dimension first; operators act on the shape
without it. :meth:`Network.forward` evaluates the description (with autograd), which is how
the importers are checked against the original model and how lower bounds are searched.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lipkit.errors import InvalidArgumentError, LipkitError
from lipkit.estimate.activations import elementwise
from lipkit.estimate.rounding import induced_norm_upper

if TYPE_CHECKING:  # imported where used: lipkit.nn is not needed for dense networks (start-up)
    from lipkit.nn.operator_norm import ConvGeometry

_CONV_TRANSPOSE_FUNCTIONS = {1: F.conv_transpose1d, 2: F.conv_transpose2d,
                             3: F.conv_transpose3d}

DTYPE = torch.float64


class NotApplicableError(LipkitError):
    """A method does not apply to this network (the message says why)."""


class LinearOperator:
    """A linear map from tensors of ``in_shape`` to tensors of ``out_shape`` (no batch dim)."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def in_features(self) -> int:
        return math.prod(self.in_shape)

    @property
    def out_features(self) -> int:
        return math.prod(self.out_shape)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """``A^T y``, by default through autograd (exact for any linear ``apply``)."""
        with torch.enable_grad():
            x = torch.zeros((y.shape[0], *self.in_shape), dtype=y.dtype, device=y.device,
                            requires_grad=True)
            (grad,) = torch.autograd.grad(self.apply(x), x, y, create_graph=y.requires_grad)
        return grad

    def matrix(self) -> torch.Tensor:
        """The operator as a dense ``(out_features, in_features)`` matrix."""
        basis = torch.eye(self.in_features, dtype=DTYPE).reshape(-1, *self.in_shape)
        with torch.no_grad():
            return self.apply(basis).reshape(self.in_features, -1).T.contiguous()

    def norm(self, p: float = 2) -> float:
        """A sound upper bound on the induced ``p``-norm (exact where cheap)."""
        return _induced_norm(self.matrix(), p)


def _float64(tensor: torch.Tensor, what: str) -> torch.Tensor:
    """``tensor`` as float64, refusing a boolean / integer / complex one (a weight that was
    never a real number: a corrupt or mistyped file)."""
    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        kind = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InvalidArgumentError(f"a {what} of type {kind}; lipkit needs float weights")
    return tensor.detach().to(DTYPE)


def _non_finite(node: Node) -> str | None:
    """``"<count> non-finite entries in its <tensor>"`` for a node's first tensor (weight,
    scale, bias, PReLU slopes) holding NaN or inf, else None."""
    op = node.op
    tensors = []
    if isinstance(op, Affine):
        operator = op.operator
        for name in ("weight", "scale"):
            if isinstance(getattr(operator, name, None), torch.Tensor):
                tensors.append((name, getattr(operator, name)))
        if op.bias is not None:
            tensors.append(("bias", op.bias))
    for name, tensor in tensors:
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"{bad} non-finite entries in its {name}"
    return None


_NORM_CACHE: dict[int, tuple] = {}  # id(tensor) -> (weak reference, {p: norm})


def _induced_norm(matrix: torch.Tensor, p: float) -> float:
    """A proven upper bound on the induced ``p``-norm (rounding.py's one function), cached
    per weight tensor: every method of a run asks for the same norms."""
    key = id(matrix)
    entry = _NORM_CACHE.get(key)
    if entry is None or entry[0]() is not matrix:
        entry = (weakref.ref(matrix, lambda _, key=key: _NORM_CACHE.pop(key, None)), {})
        _NORM_CACHE[key] = entry
    cache = entry[1]
    if p not in cache:
        cache[p] = induced_norm_upper(matrix, p)
    return cache[p]


@dataclass(eq=False)
class Matrix(LinearOperator):
    """A dense matrix acting on the flattened input."""

    weight: torch.Tensor  # (out, in)
    in_shape: tuple[int, ...] = None
    out_shape: tuple[int, ...] = None

    def __post_init__(self):
        self.weight = _float64(self.weight, "dense weight")
        self.in_shape = tuple(self.in_shape or (self.weight.shape[1],))
        self.out_shape = tuple(self.out_shape or (self.weight.shape[0],))

    def apply(self, x):
        return (x.reshape(x.shape[0], -1) @ self.weight.T).reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y):
        return (y.reshape(y.shape[0], -1) @ self.weight).reshape(y.shape[0], *self.in_shape)

    def matrix(self):
        return self.weight


@dataclass(eq=False)
class Convolution(LinearOperator):
    """A convolution operator (no bias) on inputs of ``in_shape = (channels, *spatial)``."""

    weight: torch.Tensor
    geometry: ConvGeometry
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...] = None

    def __post_init__(self):
        self.weight = _float64(self.weight, "convolution weight")
        self.in_shape = tuple(self.in_shape)
        if self.geometry.input_size is None:
            self.geometry = self.geometry.with_input_size(self.in_shape[1:])
        if self.out_shape is None:
            spatial = self.geometry.output_size(self.weight.shape[2:])
            self.out_shape = (self.weight.shape[0], *spatial)

    def apply(self, x):
        return self.geometry.apply(x, self.weight)

    def _disjoint_windows_norm(self) -> float:
        """``max_g ||W_g||_2`` (``W_g``: group ``g``'s kernel as an ``out x (in * taps)``
        matrix) when no two windows overlap (stride >= the dilated kernel's extent, as in
        2x2 pooling of stride 2), else inf. Each padded input is then read by one tap of one
        window: the operator is the padding map followed by a block-diagonal matrix of
        copies of the ``W_g`` (rows and columns permuted), so its l2 norm is at most
        ``max_g ||W_g||_2`` times the padding map's norm (equality when a window fits)."""
        geometry = self.geometry
        kernel = self.weight.shape[2:]
        if geometry.padding_mode == "circular" or any(
                s < d * (k - 1) + 1 for s, d, k in zip(geometry.stride, geometry.dilation,
                                                       kernel, strict=True)):
            return math.inf
        blocks = self.weight.reshape(geometry.groups, self.weight.shape[0] // geometry.groups,
                                     -1)
        padding = geometry._padding_norm() if any(map(any, geometry.padding)) else 1.0
        return float(torch.linalg.matrix_norm(blocks, ord=2).max()) * padding

    def adjoint(self, y):
        return self.geometry.apply_adjoint(y, self.weight)

    def scaled(self, scale: torch.Tensor) -> Convolution:
        """The operator followed by scaling output channel ``c`` by ``scale[c]``."""
        shape = (-1, *([1] * (self.weight.ndim - 1)))
        return Convolution(self.weight * scale.reshape(shape), self.geometry, self.in_shape)

    def norm(self, p: float = 2) -> float:
        if p == 2:
            from lipkit.nn.operator_norm import conv_operator_norm_upper

            return min(conv_operator_norm_upper(self.weight, self.geometry),
                       self._disjoint_windows_norm())
        if self.in_features * self.out_features <= 4_000_000:
            return _induced_norm(self.matrix(), p)
        # a row (an output) sums |K| over at most all taps of its group's input channels;
        # a column (an input) is used at most once by each tap of each output channel
        absolute = self.weight.abs()
        padding = self.geometry._padding_norm() ** 2  # copies made by the padding map
        if p == math.inf:
            return float(absolute.flatten(1).sum(dim=1).max()) * padding
        return float(absolute.transpose(0, 1).flatten(1).sum(dim=1).max()) * padding


def _flat_pads(pairs) -> list[int]:
    """``(before, after)`` pairs per spatial dimension as ``F.pad`` wants them (last first)."""
    return [value for pair in reversed(pairs) for value in pair]


@dataclass(eq=False)
class TransposedConvolution(LinearOperator):
    """A transposed convolution (no bias) on inputs of ``in_shape = (channels, *spatial)``,
    as ``nn.ConvTranspose1d/2d/3d`` and ONNX ``ConvTranspose`` compute it.

    ``weight`` has torch's layout ``(in_channels, out_channels / groups, *kernel)``. Per
    spatial dimension, the full transposed convolution of an input of size ``n`` has
    ``F = (n - 1) s + d (k - 1) + 1`` outputs; the operator keeps those from ``before`` to
    ``F - after + output_padding - 1`` (``padding[i] = (before, after)``; zeros past
    ``F - 1``), ``F - before - after + output_padding`` samples. The full transposed
    convolution is the adjoint of the convolution ``C`` (same weight, stride, dilation,
    groups, no padding) on inputs of size ``F``, and the crop has norm 1, so
    ``||A||_2 = ||A^T||_2 <= ||C||_2`` (the DFT bound on the torus of size ``F``, the same
    torus as the convolution ``A^T`` read with its padding), and ``||A||_inf <= ||C||_1``,
    ``||A||_1 <= ||C||_inf``.

    Example (nearest-neighbour upsampling by 2: each sample copied twice, norm ``sqrt(2)``):
        >>> import torch
        >>> up = TransposedConvolution(torch.ones(1, 1, 2), stride=(2,), padding=((0, 0),),
        ...                            output_padding=(0,), dilation=(1,), groups=1,
        ...                            in_shape=(1, 3))
        >>> up.apply(torch.tensor([[[1.0, 2.0, 3.0]]], dtype=torch.float64))
        tensor([[[1., 1., 2., 2., 3., 3.]]], dtype=torch.float64)
        >>> round(up.norm(2) ** 2, 9), round(up.norm(float("inf")), 9), round(up.norm(1), 9)
        (2.0, 1.0, 2.0)
    """

    weight: torch.Tensor
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...] = None

    def __post_init__(self):
        self.weight = _float64(self.weight, "transposed-convolution weight")
        self.in_shape = tuple(self.in_shape)
        dims = self.weight.ndim - 2
        self.stride, self.dilation = tuple(self.stride), tuple(self.dilation)
        self.padding = tuple((int(b), int(a)) for b, a in self.padding)
        self.output_padding = tuple(self.output_padding)
        if not (len(self.in_shape) == len(self.stride) + 1 == len(self.dilation) + 1 ==
                len(self.padding) + 1 == len(self.output_padding) + 1 == dims + 1):
            raise InvalidArgumentError(
                f"a transposed convolution of weight {tuple(self.weight.shape)} on inputs of "
                f"shape {self.in_shape} needs {dims} strides, paddings, output paddings and "
                "dilations")
        if self.in_shape[0] != self.weight.shape[0] or self.weight.shape[0] % self.groups:
            raise InvalidArgumentError(
                f"{self.in_shape[0]} input channels do not fit a transposed-convolution weight "
                f"of shape {tuple(self.weight.shape)} with groups={self.groups}")
        kernel = self.weight.shape[2:]
        full = tuple((n - 1) * s + d * (k - 1) + 1 for n, s, d, k in zip(
            self.in_shape[1:], self.stride, self.dilation, kernel, strict=True))
        spatial = tuple(f - b - a + o for f, (b, a), o in zip(
            full, self.padding, self.output_padding, strict=True))
        if min(min(pair) for pair in self.padding) < 0 or min(self.output_padding) < 0:
            raise InvalidArgumentError(f"negative padding {self.padding} or output_padding "
                                       f"{self.output_padding}")
        if min(spatial) < 1:
            raise InvalidArgumentError(
                f"padding {self.padding} and output_padding {self.output_padding} leave no "
                f"output of the {full} full transposed convolution")
        channels = self.weight.shape[1] * self.groups
        if self.out_shape is None:
            self.out_shape = (channels, *spatial)
        # the convolution C whose adjoint is the full transposed convolution
        from lipkit.nn.operator_norm import ConvGeometry

        geometry = ConvGeometry(dims, self.stride, ((0, 0),) * dims, self.dilation,
                                self.groups, "zeros", full)
        self.convolution = Convolution(self.weight, geometry, (channels, *full))
        # F.pad of the full output: crop ``before``, crop ``after`` and append the output
        # padding (negative entries crop)
        self._crop = _flat_pads([(-b, o - a) for (b, a), o in zip(
            self.padding, self.output_padding, strict=True)])

    def apply(self, x):
        full = _CONV_TRANSPOSE_FUNCTIONS[len(self.stride)](
            x, self.weight, None, self.stride, 0, 0, self.groups, self.dilation)
        return F.pad(full, self._crop) if any(self._crop) else full

    def adjoint(self, y):
        padded = F.pad(y, [-c for c in self._crop]) if any(self._crop) else y
        return self.convolution.apply(padded)

    def norm(self, p: float = 2) -> float:
        if p == 2:
            return self.convolution.norm(2)
        if self.in_features * self.out_features <= 4_000_000:
            return _induced_norm(self.matrix(), p)
        if p == math.inf:
            return self.convolution.norm(1)
        return self.convolution.norm(math.inf)

    def scaled(self, scale: torch.Tensor) -> TransposedConvolution:
        """The operator followed by scaling output channel ``c`` by ``scale[c]``."""
        groups = self.groups
        shape = (groups, 1, self.weight.shape[1], *([1] * (self.weight.ndim - 2)))
        weight = self.weight.reshape(groups, -1, *self.weight.shape[1:]) * scale.reshape(shape)
        return TransposedConvolution(weight.reshape(self.weight.shape), self.stride,
                                     self.padding, self.output_padding, self.dilation, groups,
                                     self.in_shape)


@dataclass(eq=False)
class Diagonal(LinearOperator):
    """Elementwise scaling by ``scale`` (broadcast over ``in_shape``)."""

    scale: torch.Tensor
    in_shape: tuple[int, ...]

    def __post_init__(self):
        self.in_shape = tuple(self.in_shape)
        self.out_shape = self.in_shape
        self.scale = torch.broadcast_to(_float64(self.scale, "diagonal scale"),
                                        self.in_shape).clone()

    def apply(self, x):
        return x * self.scale

    def adjoint(self, y):
        return y * self.scale

    def matrix(self):
        return torch.diag(self.scale.reshape(-1))

    def norm(self, p: float = 2) -> float:
        return float(self.scale.abs().max()) if self.scale.numel() else 0.0


@dataclass(eq=False)
class Reshape(LinearOperator):
    """A reshape (flatten, unflatten): the identity on the row-major flattened vector."""

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def __post_init__(self):
        self.in_shape, self.out_shape = tuple(self.in_shape), tuple(self.out_shape)
        if math.prod(self.in_shape) != math.prod(self.out_shape):
            raise InvalidArgumentError(f"cannot reshape {self.in_shape} to {self.out_shape}")

    def apply(self, x):
        return x.reshape(x.shape[0], *self.out_shape)

    def adjoint(self, y):
        return y.reshape(y.shape[0], *self.in_shape)

    def norm(self, p: float = 2) -> float:
        return 1.0


@dataclass(eq=False)
class Permute(LinearOperator):
    """A permutation of the (non-batch) dimensions: ``dims`` as in ``Tensor.permute``."""

    dims: tuple[int, ...]
    in_shape: tuple[int, ...]

    def __post_init__(self):
        self.dims, self.in_shape = tuple(self.dims), tuple(self.in_shape)
        self.out_shape = tuple(self.in_shape[d] for d in self.dims)

    def apply(self, x):
        return x.permute(0, *(d + 1 for d in self.dims))

    def adjoint(self, y):
        inverse = [0] * len(self.dims)
        for position, d in enumerate(self.dims):
            inverse[d] = position
        return y.permute(0, *(d + 1 for d in inverse))

    def norm(self, p: float = 2) -> float:
        return 1.0


@dataclass(eq=False)
class Affine:
    """``x -> operator(x) + bias``."""

    operator: LinearOperator
    bias: torch.Tensor | None = None

    def __post_init__(self):
        if self.bias is not None:
            self.bias = torch.broadcast_to(
                _float64(self.bias, "bias"), self.operator.out_shape
            ).clone()

    def __call__(self, x):
        y = self.operator.apply(x)
        return y if self.bias is None else y + self.bias


@dataclass(eq=False)
class Activation:
    """A nonlinearity: an elementwise one (``kind`` and ``params`` as in
    :mod:`lipkit.estimate.activations`, with its exact function and slope range
    ``(alpha, beta)``), or GroupSort / MaxMin (``kind='groupsort'``, ``params['group_size']``).
    """

    kind: str
    slope: tuple[float, float] | None = None
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind == "groupsort":
            self.slope = None
            self.params.setdefault("group_size", 2)
            self.function = None
            return
        if self.kind == "leaky_relu":
            self.params.setdefault("negative_slope", 0.01)
        self.function = elementwise(self.kind, self.params)
        self.slope = self.function.slope

    @property
    def elementwise(self) -> bool:
        return self.slope is not None

    @property
    def lipschitz(self) -> float:
        """The Lipschitz constant in every lp norm (1 for GroupSort)."""
        return 1.0 if self.slope is None else max(abs(self.slope[0]), abs(self.slope[1]))

    @property
    def minimum(self) -> float | None:
        """For ``phi`` decreasing then increasing, a lower bound on its minimum, else None."""
        return None if self.function is None else self.function.minimum

    def __call__(self, x):
        if self.kind == "groupsort":
            size = self.params["group_size"]
            grouped = x.unflatten(1, (x.shape[1] // size, size))
            if size == 2:  # MaxMin: max / min is much faster than sort
                first, second = grouped.unbind(2)
                return torch.stack((torch.maximum(first, second), torch.minimum(first, second)),
                                   dim=2).flatten(1, 2)
            return grouped.sort(dim=2, descending=True).values.flatten(1, 2)
        return self.function.function(x)


@dataclass(eq=False)
class Add:
    """The sum of the node's inputs (a residual join)."""

    def __call__(self, *xs):
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total


@dataclass(eq=False)
class Node:
    """One step: ``op`` applied to the outputs of ``inputs`` (-1: the network input)."""

    name: str
    op: Affine | Activation | Add
    inputs: list[int]


@dataclass(eq=False)
class Layer:
    """One layer of a chain: ``activation(weight @ x + bias)`` (no activation: the output)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    activation: Activation | None
    names: list[str]


def dense_size_reason(network: Network, max_entries: int) -> str | None:
    """Why :meth:`Network.chain` should not materialize ``network`` (an operator — a
    convolution, a reshape — whose dense matrix has more than ``max_entries`` entries), or
    None. Methods that work on dense matrices call it before ``chain()``."""
    for node in network.nodes:
        if isinstance(node.op, Affine):
            operator = node.op.operator
            if operator.in_features * operator.out_features > max_entries:
                return (f"layer '{node.name}' ({type(operator).__name__.lower()}, "
                        f"{operator.in_features} -> {operator.out_features}) would be a dense "
                        f"matrix of more than {max_entries:,} entries; the operator-norm "
                        "methods (naive, autolip) bound it without one")
    return None



def dense_chain(network: Network, max_entries: int) -> tuple[list | None, str | None]:
    """``(network.chain(), None)`` when the network is a chain whose operators fit in dense
    matrices of at most ``max_entries`` entries, else ``(None, why not)``."""
    reason = dense_size_reason(network, max_entries)
    if reason is not None:
        return None, reason
    try:
        return network.chain(), None
    except NotApplicableError as error:
        return None, str(error)

@dataclass(eq=False)
class Network:
    """A feed-forward network description (see the module docstring)."""

    input_shape: tuple[int, ...]
    nodes: list[Node]
    source: str = ""

    def __post_init__(self):
        self.input_shape = tuple(self.input_shape)
        for index, node in enumerate(self.nodes):
            if any(i >= index or i < -1 for i in node.inputs):
                raise InvalidArgumentError(f"node {node.name!r} reads a later node")
            # every method reads these tensors: NaN / inf would end in a solver's failure
            problem = _non_finite(node)
            if problem is not None:
                raise InvalidArgumentError(f"layer '{node.name}' has {problem}")

    @property
    def in_features(self) -> int:
        return math.prod(self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluate on a batch ``(batch, *input_shape)`` (differentiable)."""
        values: list[torch.Tensor] = []
        x = x.to(DTYPE)
        for node in self.nodes:
            args = [x if i == -1 else values[i] for i in node.inputs]
            values.append(node.op(*args))
        return values[-1] if values else x

    __call__ = forward

    @property
    def out_features(self) -> int:
        with torch.no_grad():
            return self.forward(torch.zeros(1, *self.input_shape)).shape[1:].numel()

    def is_chain(self) -> bool:
        return all(node.inputs == [index - 1] for index, node in enumerate(self.nodes))

    def chain(self) -> list[Layer]:
        """The network as ``x -> W_L s(... s(W_1 x + b_1) ...) + b_L`` with elementwise
        activations, consecutive affine nodes multiplied into one matrix.

        Raises NotApplicableError for residual joins or non-elementwise activations.
        """
        if not self.is_chain():
            raise NotApplicableError("the network has residual joins (not a chain)")
        layers: list[Layer] = []
        weight = torch.eye(self.in_features, dtype=DTYPE)
        bias = torch.zeros(self.in_features, dtype=DTYPE)
        names: list[str] = []
        for node in self.nodes:
            if isinstance(node.op, Affine):
                matrix = node.op.operator.matrix()
                weight = matrix @ weight
                bias = matrix @ bias
                if node.op.bias is not None:
                    bias = bias + node.op.bias.reshape(-1)
                names.append(node.name)
            elif isinstance(node.op, Activation):
                if not node.op.elementwise:
                    raise NotApplicableError(
                        f"activation '{node.name}' ({node.op.kind}) is not elementwise"
                    )
                layers.append(Layer(weight, bias, node.op, names))
                weight = torch.eye(weight.shape[0], dtype=DTYPE)
                bias = torch.zeros(weight.shape[0], dtype=DTYPE)
                names = []
            else:
                raise NotApplicableError(f"node '{node.name}' is not affine or elementwise")
        layers.append(Layer(weight, bias, None, names))
        return layers

    def summary(self) -> str:
        """One line: input shape, node kinds and sizes."""
        parts = []
        for node in self.nodes:
            if isinstance(node.op, Affine):
                op = node.op.operator
                parts.append(f"{type(op).__name__.lower()}{list(op.out_shape)}")
            elif isinstance(node.op, Activation):
                parts.append(node.op.kind)
            else:
                parts.append("add")
        return f"input{list(self.input_shape)} -> " + " -> ".join(parts)
