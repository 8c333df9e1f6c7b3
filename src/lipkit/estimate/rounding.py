"""One rounding policy for float64 computations that must be proven.

``gamma(k) = k u / (1 - k u)`` (``u = 2^-53``) bounds the relative error of a sum or dot
product of ``k`` terms computed in float64 in any order (Higham, *Accuracy and Stability
of Numerical Algorithms*, 2nd ed., Lemma 3.1 and eq. 3.5): ``|fl(sum a_i b_i) - sum a_i b_i|
<= gamma(k) sum |a_i b_i|``. Every proven bound in :mod:`lipkit.estimate` adds its
rounding with this one function and rounds its final number outwards (``np.nextafter``).

:func:`forward_error` is a running error analysis of :meth:`Network.forward` in float64:
for a point ``x`` it returns the computed output ``y`` and a bound ``e`` with
``|y - f(x)| <= e`` elementwise, ``f`` the network in exact arithmetic on the same float64
weights. Per node, with ``v`` the computed input and ``e`` its error bound:

- affine ``A v + b`` over ``n`` terms: ``|A| e + gamma(n + 1) (|A| |v| + |b|)``, with
  ``|A|`` the operator of the absolute weights, itself computed with a ``(1 + gamma)``
  margin;
- an elementwise activation of Lipschitz constant ``L``: ``L e`` plus its own evaluation
  error: none for ReLU / identity (exact), ``u |phi(v)|`` for a product with a slope
  (LeakyReLU, PReLU, clipping), and ``64 u (|phi(v)| + L |v|)`` for the transcendental ones
  (libm-grade ``exp`` / ``tanh`` / ``erf`` are accurate to a few units in the last place;
  64 covers the compositions of a few of them torch uses, including cancellation in
  ``x * (1 + erf(x / sqrt 2)) / 2``, whose absolute error scales with ``|x|``);
- GroupSort: a comparison network, 1-Lipschitz in the l-infinity norm of each group, so the
  group's largest input error;
- a sum of ``k`` nodes: ``sum e_i + gamma(k) sum |v_i|``.

The same local terms are also carried in the l2 norm, ``E_out = ||A||_2 E_in + ||fresh||_2``
(``L E`` through an activation; sorting is 1-Lipschitz in l2): on deep networks ``|A|``
amplifies errors far more than ``A``, and the norm form stays near the true rounding.

A lower bound divides such a difference by ``||x1 - x2||``, so a pair whose separation is
tiny next to ``e`` proves little: :func:`lipkit.estimate.witness.certified_ratios` subtracts
the error and reports what remains.
"""

from __future__ import annotations

import copy
import math
import weakref

import numpy as np
import torch

# the float64 rounding model and the proven spectral norm, shared with lipkit.nn
from lipkit.linalg import GRAM_LIMIT, UNIT, gamma, round_up, spectral_norm_upper  # noqa: F401

#: ulps allowed to the float64 evaluation of a transcendental activation (see above)
TRANSCENDENTAL_ULPS = 64.0
_EXACT_KINDS = ("relu", "identity", "groupsort")
_PRODUCT_KINDS = ("leaky_relu", "prelu", "hardtanh", "relu6", "clip", "rrelu")


def round_down(value: float) -> float:
    """The next float64 below ``value``."""
    return float(np.nextafter(value, -np.inf))


def induced_norm_upper(matrix: torch.Tensor, p: float) -> float:
    """A proven upper bound on the induced ``p``-norm (``p`` in 1, 2, inf) of a matrix, its
    float64 rounding included: the one induced-norm function of the proven bounds."""
    from lipkit.errors import InvalidArgumentError

    matrix = matrix.detach().to(torch.float64)
    if matrix.numel() == 0:
        return 0.0
    if p == 2:
        return spectral_norm_upper(matrix)
    if p == math.inf:
        return round_up(float(matrix.abs().sum(dim=1).max()) * (1 + gamma(matrix.shape[1] + 1)))
    if p == 1:
        return round_up(float(matrix.abs().sum(dim=0).max()) * (1 + gamma(matrix.shape[0] + 1)))
    raise InvalidArgumentError(f"unsupported norm {p!r}; choose from 1, 2, inf")


def induced_norms(matrices: np.ndarray, norm: str) -> np.ndarray:
    """Induced norms of a batch of matrices in float64 (``norm`` ``"inf"``: the largest row
    l1 norm; ``"1"``: the largest column l1 norm; ``"2"``: the spectral norm), for searches
    that compare patterns (exact-mip, exact-bab); not rounded."""
    matrices = np.asarray(matrices)
    if matrices.shape[0] == 0 or matrices.size == 0:
        return np.zeros(matrices.shape[0])
    if norm == "inf":
        return np.abs(matrices).sum(axis=2).max(axis=1)
    if norm == "1":
        return np.abs(matrices).sum(axis=1).max(axis=1)
    return np.linalg.norm(matrices, ord=2, axis=(1, 2))


def _terms(operator) -> int:
    from lipkit.estimate.network import Convolution, Diagonal, Matrix, Permute, Reshape

    """The number of products summed per output (a safe overestimate)."""
    if isinstance(operator, Matrix):
        return operator.weight.shape[1]
    if isinstance(operator, Convolution):
        return int(operator.weight[0].numel())
    if isinstance(operator, Diagonal | Reshape | Permute):
        return 1
    return operator.in_features


def _absolute(operator):
    """The operator of the absolute weights (``|A|`` entrywise), applied to batches."""
    from lipkit.estimate.network import Diagonal, Matrix, Permute, Reshape

    if isinstance(operator, Matrix):
        return Matrix(operator.weight.abs(), operator.in_shape, operator.out_shape).apply
    if isinstance(operator, Diagonal):
        return Diagonal(operator.scale.abs(), operator.in_shape).apply
    if isinstance(operator, Reshape | Permute):
        return operator.apply
    if hasattr(operator, "weight"):
        absolute = copy.copy(operator)
        absolute.weight = operator.weight.abs()
        return absolute.apply
    matrix = operator.matrix().abs()
    return Matrix(matrix, operator.in_shape, operator.out_shape).apply


_NORMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _operator_norm(operator) -> float:
    """A proven upper bound on ``||A||_2``, cached per operator (shared with the methods that
    ask the operator for its norm)."""
    if operator not in _NORMS:
        _NORMS[operator] = float(operator.norm(2))
    return _NORMS[operator]


@torch.no_grad()
def forward_error(network, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y, e, E)``: the float64 output at ``x``, an elementwise bound ``|y - f(x)| <= e``,
    and a bound ``||y - f(x)||_2 <= E`` per point (see above: the same local rounding terms,
    carried by ``|A|`` elementwise and by ``||A||_2`` in norm; the norm form stays tight on
    deep networks, where ``|A|`` multiplies errors far more than ``A`` does)."""
    from lipkit.estimate.network import DTYPE, Activation, Add, Affine

    x = x.detach().to(DTYPE)
    values: list[torch.Tensor] = []
    errors: list[torch.Tensor] = []
    totals: list[torch.Tensor] = []
    zero = torch.zeros(x.shape[0], dtype=DTYPE)

    def read(index):
        if index == -1:
            return x, torch.zeros_like(x), zero
        return values[index], errors[index], totals[index]

    def size(tensor):
        return tensor.flatten(1).norm(dim=1) * (1 + gamma(tensor[0].numel() + 2))

    for node in network.nodes:
        op = node.op
        if isinstance(op, Affine):
            v, e, total = read(node.inputs[0])
            y = op(v)
            absolute = _absolute(op.operator)
            magnitude = absolute(v.abs())
            if op.bias is not None:
                magnitude = magnitude + op.bias.abs()
            n = _terms(op.operator)
            fresh = gamma(n + 2) * magnitude * (1 + gamma(n + 2))
            error = absolute(e) * (1 + gamma(n + 2)) + fresh
            total = _operator_norm(op.operator) * total * (1 + 4 * UNIT) + size(fresh)
        elif isinstance(op, Activation):
            v, e, total = read(node.inputs[0])
            y = op(v)
            if op.kind == "groupsort":  # a sorting network: 1-Lipschitz in l-inf and l2
                size_ = op.params["group_size"]
                grouped = e.reshape(e.shape[0], -1, size_)
                error = grouped.amax(dim=2, keepdim=True).expand_as(grouped).reshape(e.shape)
            else:
                lipschitz = op.lipschitz
                error = lipschitz * e * (1 + 4 * UNIT)
                total = lipschitz * total * (1 + 4 * UNIT)
                fresh = None
                if op.kind in _PRODUCT_KINDS:
                    fresh = 2 * UNIT * y.abs()
                elif op.kind not in _EXACT_KINDS:
                    fresh = TRANSCENDENTAL_ULPS * UNIT * (y.abs() + lipschitz * v.abs()) + 1e-300
                if fresh is not None:
                    error = error + fresh
                    total = total + size(fresh)
        elif isinstance(op, Add):
            inputs = [read(i) for i in node.inputs]
            y = op(*[v for v, _, _ in inputs])
            k = len(inputs)
            fresh = gamma(k + 1) * sum(v.abs() for v, _, _ in inputs)
            error = sum(e for _, e, _ in inputs) * (1 + gamma(k + 1)) + fresh
            total = sum(t for _, _, t in inputs) * (1 + gamma(k + 1)) + size(fresh)
        else:  # pragma: no cover - the Network's node types are closed
            raise TypeError(f"unknown node type {type(op).__name__}")
        values.append(y)
        errors.append(error)
        totals.append(total)
    return values[-1], errors[-1], totals[-1]
