"""Piecewise-linear chains as gates, and their linear bound propagation over ``(x, t)`` boxes.

A chain of ReLU / leaky ReLU / GroupSort layers is written with gates: every hidden layer is
``h = P a + Q relu(G a)`` with ``a = W h_prev + b`` (:class:`PiecewiseLayer`; GroupSort of
groups larger than two becomes one such layer per round of an odd-even sorting network). The
exact methods (exact-mip's MIP, exact-bab's regions and Shor's relaxation) work on this
form, since each gate is one binary choice.

:func:`gate_ranges` bounds every gate's input over batches of boxes in homogenized
coordinates ``(x, t)``: the layers see ``x`` and their biases are multiplied by ``t``, so
``t = 1`` is a box of ``f`` itself and ``t`` in ``[0, 1]`` the cone that the global constant
is taken over (the supremum of ``||J||`` over all of R^n is attained on it, see
:mod:`lipkit.estimate.mip`). It propagates lower and upper affine forms of ``(x, t)``
(CROWN's chord above an unstable gate, the identity or zero below, whichever side is larger)
and concretizes them over each box with an outward widening for float64 rounding. Over a box
of ``f`` (``t = 1``), :func:`lipkit.estimate.engine.box_pre_activation_bounds` gives the
dense chain's bounds with its optimized relaxations, and the exact methods keep the
intersection of both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lipkit.estimate.network import Activation, Affine, Network, NotApplicableError

#: relative widening of every concretized gate bound (float64 rounding in the propagation)
WIDEN = 1e-10


@dataclass
class PiecewiseLayer:
    """One hidden layer ``h = P a + Q relu(G a)`` with ``a = W h_prev + b``."""

    weight: np.ndarray  # W (n, n_prev)
    bias: np.ndarray  # b (n,)
    gate: np.ndarray  # G (g, n)
    keep: np.ndarray  # P (n, n)
    relu: np.ndarray  # Q (n, g)

    def slope(self, pattern: np.ndarray) -> np.ndarray:
        """``S = P + Q diag(z) G``: the layer's Jacobian for the pattern ``z``."""
        return self.keep + (self.relu * pattern) @ self.gate


def _negative_slope(activation: Activation) -> float:
    """The slope for ``a < 0`` of a one-breakpoint activation (the slope for ``a > 0`` is 1)."""
    if activation.kind == "relu":
        return 0.0
    if activation.kind == "identity":
        return 1.0
    return float(activation.params.get("negative_slope", 0.01))


def sorting_rounds(size: int) -> list[list[tuple[int, int]]]:
    """Odd-even transposition sort of ``size`` entries: rounds of compare-exchanges
    ``(i, i + 1)`` (the larger value to ``i``) that sort any input in descending order after
    ``size`` rounds; empty rounds dropped."""
    rounds = [[(i, i + 1) for i in range(r % 2, size - 1, 2)] for r in range(size)]
    return [pairs for pairs in rounds if pairs]


def gate_count(activation: Activation, width: int, name: str) -> int:
    """How many binaries the activation needs on ``width`` units; raises NotApplicableError
    for activations that are not piecewise linear."""
    if activation.kind in ("relu", "leaky_relu", "identity"):
        return 0 if _negative_slope(activation) == 1.0 else width
    if activation.kind == "groupsort":
        size = activation.params["group_size"]
        if width % size:
            raise NotApplicableError(
                f"activation '{name}' is GroupSort with groups of {size} on a width {width} "
                "that is not a multiple of it")
        return width // size * sum(len(pairs) for pairs in sorting_rounds(size))
    raise NotApplicableError(f"activation '{name}' ({activation.kind}) is not piecewise linear")


def _activation_matrices(activation: Activation, width: int, name: str):
    """``[(G, P, Q)]``, one per piecewise-linear layer the activation becomes (GroupSort of
    groups larger than two: one per round of its sorting network)."""
    gate_count(activation, width, name)
    if activation.kind != "groupsort":
        negative = _negative_slope(activation)
        if negative == 1.0:
            return [(np.zeros((0, width)), np.eye(width), np.zeros((width, 0)))]
        # phi(a) = negative a + (1 - negative) relu(a)
        return [(np.eye(width), negative * np.eye(width), (1.0 - negative) * np.eye(width))]
    size = activation.params["group_size"]
    layers = []
    for pairs in sorting_rounds(size):
        exchanges = [(start + i, start + j) for start in range(0, width, size)
                     for i, j in pairs]
        gate, keep = np.zeros((len(exchanges), width)), np.eye(width)
        relu = np.zeros((width, len(exchanges)))
        for g, (i, j) in enumerate(exchanges):  # (a, b) -> (b + relu(a - b), a - relu(a - b))
            gate[g, i], gate[g, j] = 1.0, -1.0
            keep[i, i] = keep[j, j] = 0.0
            keep[i, j] = keep[j, i] = 1.0
            relu[i, g], relu[j, g] = 1.0, -1.0
        layers.append((gate, keep, relu))
    return layers


def piecewise_linear_chain(network: Network):
    """The network as hidden :class:`PiecewiseLayer` s and an output ``(W_L, b_L)`` (NumPy),
    consecutive affine nodes multiplied out.

    Raises NotApplicableError for residual joins or activations that are not piecewise
    linear (tanh, ...) (GroupSort with groups larger than 2 becomes several layers).
    """
    if not network.is_chain():
        raise NotApplicableError("the network has residual joins (not a chain)")
    weight = np.eye(network.in_features)
    bias = np.zeros(network.in_features)
    layers = []
    for node in network.nodes:
        if isinstance(node.op, Affine):
            matrix = node.op.operator.matrix().numpy()
            weight, bias = matrix @ weight, matrix @ bias
            if node.op.bias is not None:
                bias = bias + node.op.bias.reshape(-1).numpy()
        elif isinstance(node.op, Activation):
            for gate, keep, relu in _activation_matrices(node.op, weight.shape[0], node.name):
                layers.append(PiecewiseLayer(weight, bias, gate, keep, relu))
                weight, bias = np.eye(weight.shape[0]), np.zeros(weight.shape[0])
        else:
            raise NotApplicableError(f"node '{node.name}' is not affine or an activation")
    return layers, (weight, bias)


def affine_forms(matrix, lower, upper):
    """Lower / upper affine forms of ``matrix @ v`` from those of ``v`` (batched)."""
    positive, negative = np.clip(matrix, 0, None), np.clip(matrix, None, 0)
    return positive @ lower + negative @ upper, positive @ upper + negative @ lower


def concretize(lower, upper, low, high):
    """Interval of the forms over the boxes ``[low, high]`` (the last column: constants),
    widened by :data:`WIDEN` of the magnitude of their terms."""
    centre, radius = (low + high) / 2, (high - low) / 2
    coefficients_l, coefficients_u = lower[..., :-1], upper[..., :-1]
    spread_l = np.einsum("bgk,bk->bg", np.abs(coefficients_l), radius)
    spread_u = np.einsum("bgk,bk->bg", np.abs(coefficients_u), radius)
    middle_l = np.einsum("bgk,bk->bg", coefficients_l, centre) + lower[..., -1]
    middle_u = np.einsum("bgk,bk->bg", coefficients_u, centre) + upper[..., -1]
    size_l = np.einsum("bgk,bk->bg", np.abs(coefficients_l), np.abs(centre)) + spread_l \
        + np.abs(lower[..., -1])
    size_u = np.einsum("bgk,bk->bg", np.abs(coefficients_u), np.abs(centre)) + spread_u \
        + np.abs(upper[..., -1])
    return middle_l - spread_l - WIDEN * size_l, middle_u + spread_u + WIDEN * size_u


def gate_ranges(layers, low: np.ndarray, high: np.ndarray):
    """Per hidden layer, lower and upper bounds of its gates ``G a`` over each box.

    ``low, high``: ``(boxes, n + 1)`` corners in ``(x, t)``; the layers see ``x`` and the
    biases are multiplied by ``t`` (``t = 1`` for a box of ``f`` itself).
    """
    boxes, dims = low.shape
    n = dims - 1
    identity = np.zeros((boxes, n, dims + 1))
    identity[:, np.arange(n), np.arange(n)] = 1.0
    lower = upper = identity  # affine forms of the layer input, constants last
    ranges = []
    for layer in layers:
        lower_a, upper_a = affine_forms(layer.weight, lower, upper)
        lower_a[..., n] += layer.bias
        upper_a[..., n] += layer.bias
        lower_d, upper_d = affine_forms(layer.gate, lower_a, upper_a)
        bottom, top = concretize(lower_d, upper_d, low, high)
        ranges.append((bottom, top))
        on, off = bottom >= 0, top <= 0
        unstable = ~(on | off)
        width = np.where(unstable, top - bottom, 1.0)
        slope = np.where(on, 1.0, np.where(off, 0.0, top / width))
        # relu(d) <= slope (d - bottom) on unstable gates (the chord), d on the others
        upper_r = slope[..., None] * upper_d
        upper_r[..., -1] -= np.where(unstable, slope * bottom, 0.0)
        # relu(d) >= lam d with lam in {0, 1}: the identity when the positive side is larger
        lam = np.where(on, 1.0, np.where(off, 0.0, (top > -bottom).astype(float)))
        lower_r = lam[..., None] * lower_d
        keep_l, keep_u = affine_forms(layer.keep, lower_a, upper_a)
        relu_l, relu_u = affine_forms(layer.relu, lower_r, upper_r)
        lower, upper = keep_l + relu_l, keep_u + relu_u
    return ranges
