"""Exact l1 / l-infinity Lipschitz constants of piecewise-linear networks by mixed-integer
programming, in the spirit of LipMIP (Jordan & Dimakis, "Exactly computing the local
Lipschitz constant of ReLU networks", NeurIPS 2020).

For a chain ``f = W_L phi(... phi(W_0 x + b_0) ...) + b_L`` whose activations are piecewise
linear with one breakpoint (ReLU, LeakyReLU, the identity) or MaxMin (GroupSort with groups
of two: ``(a, b) -> (b + relu(a - b), a - relu(a - b))``; larger groups become the rounds of
an odd-even transposition sorting network, each a layer of such compare-exchanges), every
hidden layer is
``h = P a + Q relu(G a)`` for its pre-activation ``a`` and fixed matrices ``G, P, Q``. An
activation pattern ``z`` (one binary per gate ``G a``) fixes the Jacobian
``J_z = W_L S_{L-1} ... S_0 W_0`` with ``S = P + Q diag(z) G``, and by Rademacher

    ||f||_L = sup_x ||J(x)||_{p->p} = max over patterns z realized by an open set of inputs
              of  max_{||s||_p <= 1} ||J_z s||_p,

the induced norm being the largest row l1 norm for ``p = inf`` and the largest column l1
norm for ``p = 1``. The MIP encodes this directly (forward mode, our formulation): the input
``x`` in the domain with its pre-activations (binary ``z``, big-M constraints exact for
binaries), and a tangent ``s`` in the unit ``p``-ball pushed through the same pattern,
``v_{k+1} = W_{k+1} (P v_k + Q (z * G v_k))`` (the products ``z * (G v)`` by their exact
McCormick constraints), ending in ``y = J_z s``; the objective is ``max_i y_i`` for ``p = inf``
(a binary selects the row; ``s`` is symmetric so no sign is needed) and ``sum_i |y_i|`` for
``p = 1`` (a binary per output sign). For a scalar output (or the option ``output=i``) both
are ``max y``. Only the pattern is discrete: the tangent needs no sign binaries.

**Domain.** ``Options.domain``, a box or an l-infinity ball (``estimate``'s ``center`` and
``radius``, or ``box=(lower, upper)``): the local constant over that box (run it alone: the
lower-bound searches of other methods look everywhere). Otherwise the *global* constant over
all of ``R^n``: the network ``g(x, t) = t f(x / t)`` (biases times ``t``) has, for every
``t > 0``, the activation pattern of ``f`` at ``x / t`` (ReLU, LeakyReLU and GroupSort are
positively homogeneous), and every open activation region of ``f`` contains a point ``y``,
reached at ``(y, 1) / max(1, ||y||_inf)``, a point of the boundary of the box
``[-1, 1]^n x [0, 1]`` away from the origin (where every gate is 0 and any pattern would be
allowed): one binary per face (``t = 1``, ``x_j = 1``, ``x_j = -1``) keeps ``(x, t)`` there.
So the MIP sees every pattern of ``R^n``, no box radius to guess. ``t = 0`` adds limit points
where some gates vanish together; an optimal pattern found there whose region has no
interior point is cut off by a no-good cut (``sum`` over its binaries of the flips ``>= 1``)
on the part of it that is already empty (the shortest prefix of layers with no interior, the
last layer's gates pruned one by one), and the MIP solved again. With one hidden layer whose
gates ``G W_0`` have full row rank every pattern is realized, and the input part of the MIP
is dropped.

**Big-M constants** come from interval propagation, tightened layer by layer with linear
programs over the relaxation of the layers before (option ``tighten="lp"``, the default;
``"interval"`` skips them), each widened by ``1e-6`` relative so that the LP solver's
tolerance never cuts off a feasible point. Gates whose bounds do not straddle 0 are fixed.
The tangent's bounds (the big-M constants of the products ``z * (G v)``) are first taken over
the vertices of the unit ball (:class:`TangentBounds`: for a fixed pattern the tangent is
linear in ``s``, so its extremes are at vertices, and from a vertex the first layer is exact),
for the l1 ball always and for the l-inf ball up to ``2 MAX_VERTICES`` vertices (``n <= 13``):
over all patterns the second layer's gate inputs are then exact, where plain intervals (and the
LPs over the relaxation) count every first-layer unit at its worst sign independently. The
output's bounds (the objective's) relax the last layer's products linearly per vertex
(:meth:`TangentBounds.output_bounds`). Option ``vertex_bounds=False`` skips all this,
for comparison.

**Witness and proof.** A pattern is checked by a linear program that finds the point deepest
inside its activation region (largest margin from every gate's hyperplane; in the global case
also ``t > 0``); at that point the Jacobian by autograd must equal the pattern's product (else a
``LipkitError``: a witness never silently disagrees), and its norm is the lower bound. The
candidates: the MIP's incumbents, a Jacobian search over random points and (one free hidden
layer) an alternating search over patterns, the best one given to HiGHS as its first
incumbent. A pattern whose region has a margin below ``1e-9`` counts as having no interior: the
exact value is exact up to regions thinner than that, which float64 cannot witness anyway.

**Result.** Solved to optimality (HiGHS's relative gap ``1e-6``) with a witness attaining the
MIP value to ``1e-5`` relative: one ``"exact"`` Bound whose value is the witness's
(``details["upper"]`` is the MIP's proven bound). Stopped by the time limit
(:class:`MipOptions`' ``time_limit`` or the run's share, default 60 s, including the
tightening) or the option ``node_limit``:
two Bounds, the ``"upper"`` MIP bound and the ``"lower"`` witness, status
``"ok: time limit reached, gap ..."``. "Proven" means to HiGHS's tolerances (feasibility
1e-7), not a floating-point certificate like LipSDP's.

The options (:class:`MipOptions`): ``time_limit``, ``output``, ``tighten``,
``vertex_bounds``, ``node_limit`` and ``threads`` (HiGHS's, default 1).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Literal

import highspy
import numpy as np
import scipy.sparse
import torch

from lipkit.errors import InvalidArgumentError, LipkitError
from lipkit.estimate import rounding
from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.domain import solver_box
from lipkit.estimate.engine import gate_bounds as engine_gate_bounds
from lipkit.estimate.engine.gates import PiecewiseLayer, gate_count, piecewise_linear_chain
from lipkit.estimate.network import Activation, Affine, Network, NotApplicableError
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.solvers import (
    feasible,
    mip_status_usable,
    new_highs,
    restore_threads,
)
from lipkit.estimate.witness import induced_norms, jacobians, random_points

DEFAULT_TIME_LIMIT = 60.0
MAX_GATES = 2000  # gates (binaries before fixing) beyond which the method does not fit
_RELATIVE_GAP = 1e-6
_WIDEN = 1e-6  # relative widening of every propagated bound
_MARGIN = 1e-9  # smallest margin of an activation region that counts as an interior point
_MAX_CUTS = 200  # no-good cuts on patterns without interior before giving the bracket


#: the range of the product of the layers' norms in which the solvers' absolute tolerances
#: (HiGHS: feasibility 1e-7, gaps 1e-9) are small next to the constant and its big-M values
SOLVER_SCALE = (1e-6, 1e7)


def _linf_norm(matrix: np.ndarray) -> float:
    """The largest row l1 norm (float64, not rounded: a scale, not a bound)."""
    return float(np.abs(matrix).sum(axis=1).max(initial=0.0))


def scale_reason(layers, output_weight) -> str | None:
    """Why the exact solvers cannot be trusted on this chain, or None: the product of its
    layers' l-inf norms (an upper bound on every slope product) outside
    :data:`SOLVER_SCALE`, where an absolute tolerance is no longer small next to the
    constant (tiny weights) or next to the big-M constants (huge weights)."""
    norm = _linf_norm
    product = norm(output_weight)
    for layer in layers:  # slope matrix P + Q diag(z) G: norm at most |P| + |Q| |G|
        product *= norm(layer.weight) * (norm(layer.keep) + norm(layer.relu) * norm(layer.gate))
    low, high = SOLVER_SCALE
    if product == 0.0 or low <= product <= high:
        return None
    return (f"the product of the layers' norms is {product:.3g}, outside [{low:g}, {high:g}] "
            "where the solver's absolute tolerances stay small next to the constant and its "
            "big-M values (rescale the weights)")


def rescaled_chain(layers, output_weight, output_bias=None):
    """The chain with each affine map multiplied by a power of two that brings its l-inf
    norm near 1, every bias by the product of the factors so far: ``(layers, (W, b), k)``.

    Every hidden layer ``h = P a + Q relu(G a)`` is positively homogeneous in ``a``, so the
    scaled chain has the same activation pattern at every input and computes ``2^k f``: its
    constant (and every pattern's Jacobian) is ``2^k`` times the network's, exactly (powers
    of two; ``None`` when a factor would round an entry: subnormal or overflowing values).
    """
    def power(matrix) -> int:
        norm = _linf_norm(matrix)
        return 0 if norm == 0.0 or not math.isfinite(norm) else -round(math.log2(norm))

    def exact(matrix, k):
        scaled = np.ldexp(matrix, k)
        return scaled if np.array_equal(np.ldexp(scaled, -k), matrix) else None

    total, scaled_layers = 0, []
    for layer in layers:
        k = power(layer.weight)
        total += k
        weight, bias = exact(layer.weight, k), exact(layer.bias, total)
        if weight is None or bias is None:
            return None
        scaled_layers.append(replace(layer, weight=weight, bias=bias))
    k = power(output_weight)
    total += k
    weight = exact(output_weight, k)
    bias = None if output_bias is None else exact(output_bias, total)
    if weight is None or (output_bias is not None and bias is None):
        return None
    return scaled_layers, (weight, bias), total


#: the largest bias a rescaled chain may have (the solvers' coordinates stay below 1e6 too)
MAX_RESCALED_BIAS = 1e6


def scaled_for_the_solver(layers, output):
    """``(layers, output, k)`` for the exact solvers: the chain as it is (``k = 0``) when its
    scale suits them, else :func:`rescaled_chain` when that brings it into
    :data:`SOLVER_SCALE`; raises NotApplicableError naming the scale otherwise."""
    reason = scale_reason(layers, output[0])
    if reason is None:
        return layers, output, 0
    rescaled = rescaled_chain(layers, *output)
    if rescaled is None:
        raise NotApplicableError(reason.replace("(rescale the weights)", "(a power-of-two "
                                                "rescaling would round some weights)"))
    biases = [layer.bias for layer in rescaled[0]]
    if rescaled[1][1] is not None:
        biases.append(rescaled[1][1])
    largest = max((float(np.abs(b).max(initial=0.0)) for b in biases), default=0.0)
    if largest > MAX_RESCALED_BIAS:
        # tiny weights with ordinary biases: the biases dominate every pre-activation but
        # far from the origin, and no rescaling of the layers changes that
        raise NotApplicableError(reason.replace(
            "(rescale the weights)", f"(rescaled layer by layer to norms near 1, the biases "
            f"would reach {largest:.3g}, above {MAX_RESCALED_BIAS:g})"))
    again = scale_reason(rescaled[0], rescaled[1][0])
    if again is not None:
        raise NotApplicableError(again.replace("(rescale the weights)",
                                               "(after rescaling each layer by a power of two)"))
    return rescaled


# --------------------------------------------------------------------------------------
# the model


def _interval(blocks, lower, upper):
    """Interval bounds of ``sum_b M_b x[idx_b]`` (+ a constant) from the bounds of x."""
    low = high = 0.0
    for matrix, index in blocks:
        positive, negative = np.clip(matrix, 0, None), np.clip(matrix, None, 0)
        low = low + positive @ lower[index] + negative @ upper[index]
        high = high + positive @ upper[index] + negative @ lower[index]
    return low, high


def _widen(low, high):
    pad = _WIDEN * (1.0 + np.maximum(np.abs(low), np.abs(high)))
    return low - pad, high + pad


class _Model:
    """A HiGHS model grown variable block by variable block, with a copy of the bounds."""

    def __init__(self, threads: int, seed: int):
        self.highs = new_highs(threads)
        self.highs.setOptionValue("random_seed", int(seed))
        self.lower = np.zeros(0)
        self.upper = np.zeros(0)
        self.binary: list[np.ndarray] = []

    @property
    def size(self) -> int:
        return len(self.lower)

    def variables(self, lower, upper) -> np.ndarray:
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        start = self.size
        self.highs.addVars(len(lower), lower, upper)
        self.lower = np.concatenate([self.lower, lower])
        self.upper = np.concatenate([self.upper, upper])
        return np.arange(start, self.size, dtype=np.int32)

    def binaries(self, fixed: np.ndarray) -> np.ndarray:
        """Binaries, fixed to ``fixed`` where it is 0 or 1 (nan: free)."""
        free = np.isnan(fixed)
        index = self.variables(np.where(free, 0.0, fixed), np.where(free, 1.0, fixed))
        self.binary.append(index)
        return index

    def set_bounds(self, index, lower, upper) -> None:
        self.lower[index], self.upper[index] = lower, upper
        self.highs.changeColsBounds(len(index), index, self.lower[index], self.upper[index])

    def intersect(self, index, lower, upper) -> None:
        """Tightens the bounds of ``index`` to ``[lower, upper]`` where that is tighter."""
        self.set_bounds(index, np.maximum(self.lower[index], lower),
                        np.minimum(self.upper[index], upper))

    def rows(self, blocks, lower, upper) -> None:
        """Rows ``lower <= sum_b M_b x[idx_b] <= upper``."""
        count = len(lower)
        matrix = scipy.sparse.csr_matrix((count, self.size))
        for coefficients, index in blocks:
            coefficients = np.broadcast_to(coefficients, (count, len(index)))
            columns = scipy.sparse.csr_matrix(
                (np.ones(len(index)), (np.arange(len(index)), index)),
                shape=(len(index), self.size))
            matrix = matrix + scipy.sparse.csr_matrix(coefficients) @ columns
        matrix = matrix.tocsr()
        matrix.eliminate_zeros()
        self.highs.addRows(count, np.asarray(lower, float), np.asarray(upper, float),
                           matrix.nnz, matrix.indptr.astype(np.int32),
                           matrix.indices.astype(np.int32), matrix.data.astype(float))

    def define(self, blocks) -> np.ndarray:
        """New variables equal to ``sum_b M_b x[idx_b]``, bounded by interval propagation."""
        low, high = _widen(*_interval(blocks, self.lower, self.upper))
        index = self.variables(low, high)
        count = len(index)
        self.rows([(np.eye(count), index)] + [(-m, i) for m, i in blocks],
                  np.zeros(count), np.zeros(count))
        return index

    def tighten(self, index, deadline: float) -> int:
        """Bounds of the variables ``index`` by LPs over the current (relaxed) model; stops at
        the deadline, keeping the interval bounds of the rest. Returns the LPs solved."""
        highs, solved = self.highs, 0
        highs.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.01))
        for i in index:
            highs.changeColCost(int(i), 1.0)
            for sense in (highspy.ObjSense.kMinimize, highspy.ObjSense.kMaximize):
                if time.perf_counter() > deadline:
                    highs.changeColCost(int(i), 0.0)
                    return solved
                highs.changeObjectiveSense(sense)
                highs.run()
                if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
                    continue
                value = highs.getInfo().objective_function_value
                low, high = _widen(np.array([value]), np.array([value]))
                if sense == highspy.ObjSense.kMinimize:
                    self.set_bounds([i], max(self.lower[i], low[0]), self.upper[i])
                else:
                    self.set_bounds([i], self.lower[i], min(self.upper[i], high[0]))
                solved += 1
            highs.changeColCost(int(i), 0.0)
        return solved


@dataclass
class _Encoding:
    """Where the parts of the MIP live (variable indices)."""

    model: _Model
    x: np.ndarray
    t: np.ndarray
    s: np.ndarray
    patterns: list[np.ndarray]  # the gate binaries of each hidden layer
    selectors: np.ndarray  # output row (inf) or output signs (1); empty for a scalar
    objective: int
    lps: int = 0
    faces: np.ndarray | None = None  # the face of the homogenized box (global domain)


def _needs_faces(layers) -> bool:
    """Whether the homogenized domain must avoid the origin: not when there is one hidden
    layer whose gates ``G W_0`` have full row rank (every pattern is then realized by an open
    set of inputs, so allowing them all at the origin changes nothing)."""
    if len(layers) != 1:
        return bool(layers)
    gates = layers[0].gate @ layers[0].weight
    return bool(np.linalg.matrix_rank(gates) < gates.shape[0])


MAX_VERTICES = 4096  # tangent vertices (half of the l-inf ball's) enumerated for the bounds


def tangent_vertices(n: int, norm: str) -> np.ndarray | None:
    """Half of the vertices of the unit ``p``-ball in ``R^n`` (one of each pair ``+-s``), as
    columns; ``None`` when there are more than :data:`MAX_VERTICES`."""
    if norm == "1":
        return np.eye(n)
    if n - 1 > math.log2(MAX_VERTICES):
        return None
    signs = (np.arange(2 ** max(n - 1, 0))[None, :] >> np.arange(n - 1)[:, None]) & 1
    return np.vstack([np.ones((1, signs.shape[1])), 1.0 - 2.0 * signs]) if n else None


def _vertex_interval(matrix: np.ndarray, low: np.ndarray, high: np.ndarray):
    """Per-vertex intervals of ``matrix @ u`` from those of ``u`` (columns: vertices)."""
    positive, negative = np.clip(matrix, 0, None), np.clip(matrix, None, 0)
    return positive @ low + negative @ high, positive @ high + negative @ low


class TangentBounds:
    """Bounds on the tangent of every pattern by interval propagation from each vertex of the
    unit ball: for a fixed pattern the tangent is linear in ``s``, so its extremes over the
    ball are at vertices, and from a vertex the first layer is exact (interval propagation
    starts from a point); ``-s`` gives the negated values, so half the vertices suffice.
    ``low, high``: (width, vertices) per-vertex intervals of the current layer's tangent."""

    def __init__(self, vertices: np.ndarray):
        self.low, self.high = vertices, vertices
        self.last = None

    def bounds(self, matrix: np.ndarray):
        """``(lower, upper)`` of ``matrix @ tangent`` over every vertex and pattern."""
        low, high = _vertex_interval(matrix, self.low, self.high)
        return _widen(np.minimum(low.min(axis=1), -high.max(axis=1)),
                      np.maximum(high.max(axis=1), -low.min(axis=1)))

    def step(self, layer: PiecewiseLayer, fixed: np.ndarray) -> None:
        """Through the layer ``v -> P v + Q (z * G v)``, ``v = W tangent`` (``fixed``: the
        gates' values, nan for free ones: ``z * e`` is then between 0 and ``e``)."""
        v_low, v_high = _vertex_interval(layer.weight, self.low, self.high)
        e_low, e_high = _vertex_interval(layer.gate, v_low, v_high)
        on, free = (fixed == 1.0)[:, None], np.isnan(fixed)[:, None]
        w_low = np.where(on, e_low, np.where(free, np.minimum(e_low, 0.0), 0.0))
        w_high = np.where(on, e_high, np.where(free, np.maximum(e_high, 0.0), 0.0))
        keep_low, keep_high = _vertex_interval(layer.keep, v_low, v_high)
        relu_low, relu_high = _vertex_interval(layer.relu, w_low, w_high)
        self.last = (layer, fixed, self.low, self.high)
        self.low, self.high = keep_low + relu_low, keep_high + relu_high

    def output_bounds(self, weight: np.ndarray):
        """``(lower, upper)`` of ``weight @ tangent`` after the last :meth:`step`, the last
        layer relaxed linearly instead of by intervals: per vertex, a free ``z * e`` lies
        between the chords of ``min(0, e)`` and ``max(0, e)`` over ``[le, ue]``, so the output
        is bounded by a linear function of the layer's input, maximized over its box."""
        layer, fixed, low, high = self.last
        v_low, v_high = _vertex_interval(layer.weight, low, high)
        le, ue = _vertex_interval(layer.gate, v_low, v_high)  # (gates, vertices)
        straddle = (le < 0) & (ue > 0)
        span = np.where(straddle, ue - le, 1.0)
        free = np.isnan(fixed)[:, None]
        on = (fixed == 1.0)[:, None] | (free & (le >= 0))  # z e <= e, and >= 0 for free
        # upper: z e <= up_slope e + up_shift; lower: z e >= low_slope e + low_shift
        up_slope = np.where(on, 1.0, np.where(free & straddle, ue / span, 0.0))
        up_shift = np.where(free & straddle, -ue * le / span, 0.0)
        off = (fixed == 0.0)[:, None] | (free & (le >= 0))
        low_slope = np.where(off, 0.0, np.where(free & straddle, -le / span, 1.0))
        low_shift = np.where(free & straddle, le * ue / span, 0.0)
        direct, through = weight @ layer.keep, weight @ layer.relu  # (m, n), (m, gates)
        bounds = []
        for sign in (1.0, -1.0):  # the largest of sign * output, per vertex
            coefficient = sign * through[:, :, None]  # (m, gates, vertices)
            slope = np.where(coefficient > 0, up_slope, low_slope)
            shift = np.where(coefficient > 0, up_shift, low_shift)
            linear = sign * direct[:, None, :] + np.einsum(
                "mgv,gn->mvn", coefficient * slope, layer.gate)  # on v: (m, vertices, n)
            linear = linear @ layer.weight  # on the layer's input
            bounds.append((np.clip(linear, 0, None) * high.T[None]).sum(axis=2)
                          + (np.clip(linear, None, 0) * low.T[None]).sum(axis=2)
                          + (coefficient * shift).sum(axis=1))
        top, bottom = bounds  # max y and max -y per vertex; -s mirrors them
        return _widen(-np.maximum(bottom.max(axis=1), top.max(axis=1)),
                      np.maximum(top.max(axis=1), bottom.max(axis=1)))


def _gate_fix(low, high) -> np.ndarray:
    return np.where(low >= 0, 1.0, np.where(high <= 0, 0.0, np.nan))


def _encode(layers, output, norm: str, box, homogeneous: bool, tighten: bool,
            deadline: float, threads: int, seed: int, vertex_bounds: bool = True,
            known=None) -> _Encoding:
    """The MIP; ``known``: per layer, proven bounds on the gates' inputs over the box
    (the engine's, :func:`gate_bounds`) that the propagated ones are intersected with."""
    model, lps = _Model(threads, seed), 0
    lower, upper = box
    n = len(lower)
    x = model.variables(lower, upper)
    t = model.variables([0.0 if homogeneous else 1.0], [1.0])
    faces = np.zeros(0, np.int32)
    if homogeneous and _needs_faces(layers):
        # (x, t) on a face of the box away from the origin (where every gate is 0 and any
        # pattern would do): t = 1, or x_j = 1, or x_j = -1, for one face
        faces = model.binaries(np.full(2 * n + 1, np.nan))
        model.rows([(np.ones((1, 2 * n + 1)), faces)], [1.0], [1.0])
        model.rows([(np.ones((1, 1)), t), (-np.ones((1, 1)), faces[:1])], [0.0], [np.inf])
        model.rows([(np.eye(n), x), (-2 * np.eye(n), faces[1 : n + 1])], -np.ones(n),
                   np.full(n, np.inf))
        model.rows([(np.eye(n), x), (2 * np.eye(n), faces[n + 1 :])], np.full(n, -np.inf),
                   np.ones(n))
    s = model.variables(-np.ones(n), np.ones(n))
    if norm == "1":  # s in the unit l1 ball: |s| <= q, sum q <= 1
        q = model.variables(np.zeros(n), np.ones(n))
        model.rows([(np.eye(n), q), (-np.eye(n), s)], np.zeros(n), np.full(n, np.inf))
        model.rows([(np.eye(n), q), (np.eye(n), s)], np.zeros(n), np.full(n, np.inf))
        model.rows([(np.ones((1, n)), q)], [-np.inf], [1.0])
    # the layer input as blocks: primal h (with the bias column t) and tangent u
    primal, tangent = [(np.eye(n), x)], [(np.eye(n), s)]
    patterns = []
    # one hidden layer with full-rank gates: every pattern is realized, the input plays no
    # part (its constraints would only slow the solver down)
    free = homogeneous and not _needs_faces(layers)
    vertices = tangent_vertices(n, norm) if vertex_bounds else None
    by_vertex = TangentBounds(vertices) if vertices is not None else None
    for depth, layer in enumerate(layers):
        v = model.define([(layer.weight @ m, i) for m, i in tangent])
        if by_vertex is not None:
            model.intersect(v, *by_vertex.bounds(layer.weight))
        if depth == 0 and norm == "1":  # over the l1 ball, W s ranges over +-max_j |W_ij|
            model.set_bounds(v, *_widen(-np.abs(layer.weight).max(axis=1, initial=0.0),
                                        np.abs(layer.weight).max(axis=1, initial=0.0)))
        gates = layer.gate.shape[0]
        identity = gates == v.size and np.array_equal(layer.gate, np.eye(v.size))
        e = v if identity else model.define([(layer.gate, v)])
        if by_vertex is not None and not identity:
            model.intersect(e, *by_vertex.bounds(layer.gate @ layer.weight))
        # the first layer's interval bounds are exact over a box (not through a gate G)
        exact = depth == 0 and identity
        eye, inf = np.eye(gates), np.full(gates, np.inf)
        if free:
            fixed = np.full(gates, np.nan)
        else:
            a = model.define([(layer.weight @ m, i) for m, i in primal]
                             + [(layer.bias[:, None], t)])
            d = a if identity else model.define([(layer.gate, a)])
            if known is not None:
                model.intersect(d, *_widen(*known[depth]))
            if tighten and not exact:
                lps += model.tighten(d, deadline)
            fixed = _gate_fix(model.lower[d], model.upper[d])
        if tighten and not exact:
            lps += model.tighten(e[np.isnan(fixed)], deadline)
        z = model.binaries(fixed)
        if by_vertex is not None:
            by_vertex.step(layer, fixed)
        patterns.append(z)
        if not free:
            ld, ud = model.lower[d], model.upper[d]
            # r = relu(d), exact for binary z: r >= 0, r >= d, r <= d - ld (1 - z), r <= ud z
            r = model.variables(np.zeros(gates), np.maximum(ud, 0.0))
            model.rows([(eye, r), (-eye, d)], np.zeros(gates), inf)
            model.rows([(eye, r), (-eye, d), (-np.diag(ld), z)], -inf, -ld)
            model.rows([(eye, r), (-np.diag(ud), z)], -inf, np.zeros(gates))
            primal = [(layer.keep, a), (layer.relu, r)]
        # w = z * e (McCormick, exact for binary z)
        le, ue = model.lower[e], model.upper[e]
        w = model.variables(np.minimum(le, 0.0), np.maximum(ue, 0.0))
        model.rows([(eye, w), (-np.diag(le), z)], np.zeros(gates), inf)
        model.rows([(eye, w), (-np.diag(ue), z)], -inf, np.zeros(gates))
        model.rows([(eye, w), (-eye, e), (-np.diag(ue), z)], -ue, inf)
        model.rows([(eye, w), (-eye, e), (-np.diag(le), z)], -inf, -le)
        tangent = [(layer.keep, v), (layer.relu, w)]
    weight = output[0]
    y = model.define([(weight @ m, i) for m, i in tangent])
    if by_vertex is not None:
        model.intersect(y, *by_vertex.bounds(weight))
        if layers:
            model.intersect(y, *by_vertex.output_bounds(weight))
    m = y.size
    if m > 1 and tighten:
        lps += model.tighten(y, deadline)
    ly, uy = model.lower[y], model.upper[y]
    if m == 1:
        return _Encoding(model, x, t, s, patterns, np.zeros(0, np.int32), int(y[0]), lps, faces)
    if norm == "inf":  # tau <= y_i + (max uy - ly_i)(1 - sigma_i), one sigma_i = 1
        top = float(uy.max())
        tau = model.variables([float(ly.min())], [top])
        sigma = model.binaries(np.full(m, np.nan))
        big = top - ly
        model.rows([(np.ones((m, 1)), tau), (-np.eye(m), y), (np.diag(big), sigma)],
                   np.full(m, -np.inf), big)
        model.rows([(np.ones((1, m)), sigma)], [1.0], [1.0])
        return _Encoding(model, x, t, s, patterns, sigma, int(tau[0]), lps, faces)
    # l1: a_i <= y_i + (-2 ly_i)(1 - b_i), a_i <= -y_i + 2 uy_i b_i, objective sum a_i
    size = np.maximum(np.abs(ly), np.abs(uy))
    absolute = model.variables(np.zeros(m), size)
    signs = model.binaries(np.where(ly >= 0, 1.0, np.where(uy <= 0, 0.0, np.nan)))
    eye = np.eye(m)
    model.rows([(eye, absolute), (-eye, y), (np.diag(-2 * ly), signs)],
               np.full(m, -np.inf), -2 * ly)
    model.rows([(eye, absolute), (eye, y), (np.diag(-2 * uy), signs)],
               np.full(m, -np.inf), np.zeros(m))
    total = model.define([(np.ones((1, m)), absolute)])
    return _Encoding(model, x, t, s, patterns, signs, int(total[0]), lps, faces)


# --------------------------------------------------------------------------------------
# patterns, witnesses


def pattern_at(layers, point: np.ndarray, t: float = 1.0) -> list[np.ndarray]:
    """The activation pattern (gate signs, 1 where ``G a > 0``) at an input point; with
    ``t``, at ``(point, t)`` of the homogenized domain (biases times ``t``): the pattern at
    ``point / t`` for ``t > 0``, and for ``t = 0`` the one ``s * point`` has for every large
    enough ``s`` (the chain is positively homogeneous in ``(x, t)``)."""
    h, pattern = point, []
    for layer in layers:
        a = layer.weight @ h + layer.bias * t
        d = layer.gate @ a
        pattern.append((d > 0).astype(float))
        h = layer.keep @ a + layer.relu @ np.maximum(d, 0.0)
    return pattern


def pattern_jacobian(layers, output, pattern) -> np.ndarray:
    """``J_z = W_L S_{L-1} W_{L-1} ... S_0 W_0`` for the pattern ``z``."""
    jac = None
    for layer, z in zip(layers, pattern, strict=True):
        jac = layer.slope(z) @ (layer.weight if jac is None else layer.weight @ jac)
    return output[0] if jac is None else output[0] @ jac


def _operator_norm(jac: np.ndarray, norm: str) -> float:
    return float(rounding.induced_norms(jac[None], norm)[0]) if jac.size else 0.0


@dataclass
class Witness:
    """A verified pattern: an input point inside its region and the Jacobian's norm there."""

    point: np.ndarray
    pattern: list[np.ndarray]
    value: float
    margin: float


def _interior_point(layers, pattern, box, homogeneous: bool, last: np.ndarray | None = None):
    """The point ``(x, t)`` deepest inside the pattern's region (a margin LP); ``None`` when
    the region has no interior in the domain. ``last``: a mask of the last layer's gates to
    constrain (default all)."""
    lower, upper = box
    n = len(lower)
    rows, constants = [], []
    affine, offset = np.eye(n), np.zeros(n)  # h = affine x + offset t
    for layer, z in zip(layers, pattern, strict=True):
        a_affine, a_offset = layer.weight @ affine, layer.weight @ offset + layer.bias
        sign = 2.0 * z - 1.0
        rows.append(sign[:, None] * (layer.gate @ a_affine))
        constants.append(sign * (layer.gate @ a_offset))
        slope = layer.slope(z)
        affine, offset = slope @ a_affine, slope @ a_offset
    if last is not None and rows:
        rows[-1], constants[-1] = rows[-1][last], constants[-1][last]
    rows = np.concatenate(rows) if rows else np.zeros((0, n))
    constants = np.concatenate(constants) if constants else np.zeros(0)
    scale = np.sqrt((rows**2).sum(axis=1) + constants**2)
    keep = scale > 0
    rows, constants, scale = rows[keep], constants[keep], scale[keep]
    highs = new_highs()
    # variables (x, t, margin): sign (G a) - margin * scale >= 0
    highs.addVars(n + 2, np.concatenate([lower, [0.0 if homogeneous else 1.0, 0.0]]),
                  np.concatenate([upper, [1.0, 1.0]]))
    matrix = scipy.sparse.csr_matrix(np.hstack([rows, constants[:, None], -scale[:, None]]))
    if homogeneous:  # t >= margin
        extra = np.zeros((1, n + 2))
        extra[0, n], extra[0, n + 1] = 1.0, -1.0
        matrix = scipy.sparse.vstack([matrix, scipy.sparse.csr_matrix(extra)]).tocsr()
    else:  # inside the box by the margin too
        extra = np.hstack([np.eye(n), np.zeros((n, 1)), -np.ones((n, 1))])
        matrix = scipy.sparse.vstack([matrix, extra, np.hstack(
            [-np.eye(n), np.zeros((n, 1)), -np.ones((n, 1))])]).tocsr()
    count = matrix.shape[0]
    row_lower = np.zeros(count)
    if not homogeneous:
        row_lower[len(rows):len(rows) + n] = lower
        row_lower[len(rows) + n:] = -upper
    highs.addRows(count, row_lower, np.full(count, np.inf), matrix.nnz,
                  matrix.indptr.astype(np.int32), matrix.indices.astype(np.int32),
                  matrix.data.astype(float))
    highs.changeColCost(n + 1, 1.0)
    highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
    highs.run()
    if not feasible(highs, "interior-point LP"):
        return None
    solution = np.asarray(highs.getSolution().col_value)
    margin = float(solution[n + 1])
    if margin <= _MARGIN:
        return None
    x, t = solution[:n], solution[n]
    return x / t, margin


def verify(network: Network, layers, output, pattern, box, homogeneous: bool, norm: str,
           row: int | None, method: str = "exact-mip", exponent: int = 0) -> Witness | None:
    """The pattern's witness, checked by autograd; ``None`` when its region is empty. The
    layers may be the network's chain scaled by ``2^exponent`` (:func:`rescaled_chain`):
    the witness's value is then in the scaled chain's units.

    Raises LipkitError when the Jacobian by autograd at the interior point differs from the
    pattern's product (the encoding and the network would disagree: a bug, never a bound).
    """
    found = _interior_point(layers, pattern, box, homogeneous)
    if found is None:
        return None
    point, margin = found
    expected = pattern_jacobian(layers, output, pattern)
    observed = jacobians(network, torch.from_numpy(point).reshape(1, *network.input_shape))
    observed = np.ldexp(observed[0].numpy(), exponent)
    if row is not None:  # the layers' output is already that one row
        observed = observed[row : row + 1]
    scale = 1.0 + np.abs(expected).max(initial=0.0)
    if not np.allclose(observed, expected, rtol=1e-7, atol=1e-9 * scale):
        raise LipkitError(
            f"{method}: the Jacobian by autograd at the witness differs from the activation "
            f"pattern's (largest difference {np.abs(observed - expected).max():.3g})")
    return Witness(point, pattern, _operator_norm(expected, norm), margin)


def _search_pattern(network, layers, box, homogeneous: bool, norm: str, row, seed: int,
                    data, count: int = 256):
    """The best pattern among random points (and data) in the domain, by Jacobian norm."""
    lower, upper = box
    if homogeneous:
        points = random_points(network, count, seed).reshape(count, -1)
        # regions far out (seen from the origin, cones of the network without biases)
        points = torch.cat([points, 100 * points, 10_000 * points])
    else:
        generator = torch.Generator().manual_seed(seed)
        unit = torch.rand(count, len(lower), generator=generator, dtype=torch.float64)
        points = torch.from_numpy(lower) + unit * torch.from_numpy(upper - lower)
    if data is not None and homogeneous:
        points = torch.cat([torch.as_tensor(data).double().reshape(-1, points.shape[1])[:count],
                            points])
    jac = jacobians(network, points.reshape(-1, *network.input_shape))
    if row is not None:
        jac = jac[:, row : row + 1]
    values, _ = induced_norms(jac, norm)
    best = points[int(values.argmax())].numpy()
    return pattern_at(layers, best), best


def _alternating_pattern(layers, output, norm: str, seed: int, restarts: int = 32):
    """For one hidden layer whose patterns are all realized: alternate between the best
    pattern for a fixed (output row, input direction) — ``z_g = [coefficient_g > 0]``, the
    objective being linear in ``z`` — and the best row and direction for a fixed pattern,
    from random patterns; returns the best pattern found (a local maximum)."""
    (layer,) = layers
    rng = np.random.default_rng(seed)
    first, last = layer.gate @ layer.weight, output[0] @ layer.relu
    best, best_value = None, -1.0
    for _ in range(restarts):
        z, value = (rng.random(layer.gate.shape[0]) < 0.5).astype(float), -1.0
        for _ in range(50):
            jac = pattern_jacobian(layers, output, [z])
            current = _operator_norm(jac, norm)
            if current <= value * (1 + 1e-12):
                break
            value = current
            if norm == "inf":
                row = int(np.abs(jac).sum(axis=1).argmax())
                covector, direction = np.eye(jac.shape[0])[row], np.sign(jac[row])
            else:
                column = int(np.abs(jac).sum(axis=0).argmax())
                covector, direction = np.sign(jac[:, column]), np.eye(jac.shape[1])[column]
            z = ((covector @ last) * (first @ direction) > 0).astype(float)
        if value > best_value:
            best, best_value = [z], value
    return best


def _initial_solution(encoding: _Encoding, layers, output, pattern, point, homogeneous,
                      norm: str):
    """A partial MIP solution (x, t, s, z, selectors) for the pattern at ``point``."""
    jac = pattern_jacobian(layers, output, pattern)
    scale = max(1.0, float(np.abs(point).max())) if homogeneous else 1.0
    if norm == "inf":
        best = int(np.abs(jac).sum(axis=1).argmax())
        tangent = np.sign(jac[best])
        tangent[tangent == 0] = 1.0
    else:
        best = int(np.abs(jac).sum(axis=0).argmax())
        tangent = np.zeros(jac.shape[1])
        tangent[best] = 1.0
    index = [encoding.x, encoding.t, encoding.s, *encoding.patterns]
    values = [point / scale, [1.0 / scale], tangent, *pattern]
    if encoding.faces is not None and encoding.faces.size:
        n, face = len(point), np.zeros(encoding.faces.size)
        if scale == 1.0:
            face[0] = 1.0
        else:
            j = int(np.abs(point).argmax())
            face[1 + j if point[j] > 0 else 1 + n + j] = 1.0
        index.append(encoding.faces)
        values.append(face)
    if encoding.selectors.size and norm == "inf":
        index.append(encoding.selectors)
        values.append(np.eye(jac.shape[0])[best])
    elif encoding.selectors.size:
        index.append(encoding.selectors)
        values.append((jac @ tangent >= 0).astype(float))
    encoding.model.highs.setSolution(len(np.concatenate(index)),
                                     np.concatenate(index).astype(np.int32),
                                     np.concatenate(values).astype(float))


# --------------------------------------------------------------------------------------
# the method


def _empty_core(layers, pattern, binaries, box, homogeneous: bool):
    """A part of a pattern whose region is already empty: the shortest prefix of layers with
    no interior, its last layer's gates pruned one by one while the region stays empty.
    Returns the binaries and their values for a no-good cut."""
    depth = next(k for k in range(1, len(layers) + 1)
                 if _interior_point(layers[:k], pattern[:k], box, homogeneous) is None)
    mask = np.ones(pattern[depth - 1].size, dtype=bool)
    for gate in range(mask.size):
        mask[gate] = False
        if _interior_point(layers[:depth], pattern[:depth], box, homogeneous, mask) is not None:
            mask[gate] = True
    index = np.concatenate([*binaries[: depth - 1], binaries[depth - 1][mask]])
    values = np.concatenate([*pattern[: depth - 1], pattern[depth - 1][mask]])
    return index, values


def _better(best: Witness | None, witness: Witness | None) -> Witness | None:
    if witness is None or (best is not None and best.value >= witness.value):
        return best
    return witness


def piecewise_linear_fits(network: Network) -> str | None:
    """Whether the network is a chain of piecewise-linear activations with at most
    :data:`MAX_GATES` gates (counted without materializing the layers)."""
    if not network.is_chain():
        return "the network has residual joins (not a chain)"
    gates, width = 0, network.in_features
    for node in network.nodes:
        if isinstance(node.op, Affine):
            width = node.op.operator.out_features
        elif isinstance(node.op, Activation):
            try:
                gates += gate_count(node.op, width, node.name)
            except NotApplicableError as error:
                return str(error)
    if gates > MAX_GATES:
        return f"{gates} activation gates (more than {MAX_GATES} binaries)"
    return None


@dataclass(frozen=True)
class MipOptions(MethodOptions):
    """Options of ``exact-mip``."""

    #: seconds at most, the tightening included (None: the run's share, else 60 s)
    time_limit: float | None = None
    #: one output's constant, by its index (None: the induced norm of the whole Jacobian)
    output: int | None = field(default=None, metadata={"minimum": 0})
    #: the big-M constants: tightened by LPs, or interval propagation only
    tighten: Literal["lp", "interval"] = "lp"
    #: the tangent's bounds from the vertices of the unit ball (False: intervals only)
    vertex_bounds: bool = True
    #: HiGHS's branch-and-bound nodes at most, then the bracket (None: no limit)
    node_limit: int | None = field(default=None, metadata={"minimum": 0})
    #: HiGHS's threads
    threads: int = 1


@register_method("exact-mip", kind="exact", norms=("1", "inf"), fits=piecewise_linear_fits,
                 local=True, options=MipOptions)
def exact_mip(network: Network, options: Options) -> Bound | list[Bound]:
    """Exact l1 / l-inf constant of a piecewise-linear network by MIP (LipMIP, HiGHS)."""
    started = time.perf_counter()
    norm, own = norm_name(options.norm), options.own(MipOptions)
    if norm not in ("1", "inf"):
        raise NotApplicableError("the MIP objective is linear for the l1 and l-inf norms only")
    time_limit = options.limit(own.time_limit, DEFAULT_TIME_LIMIT)
    deadline = started + float(time_limit)
    layers, output = piecewise_linear_chain(network)
    layers, output, exponent = scaled_for_the_solver(layers, output)
    row = own.output
    if row is not None:
        if not row < output[0].shape[0]:
            raise InvalidArgumentError(
                f"exact-mip: output {row} out of range (the network has {output[0].shape[0]})")
        output = (output[0][row : row + 1], output[1][row : row + 1])
    box, homogeneous, description = solver_box(network, options, "exact-mip")
    try:
        bounds = _solve(network, options, own, started, deadline, layers, output, row, box,
                        homogeneous, description, time_limit, exponent)
    finally:
        restore_threads()
    return unscaled(bounds, exponent)


def unscaled(bounds: Bound | list[Bound], exponent: int) -> Bound | list[Bound]:
    """The bounds of a chain scaled by ``2^exponent`` (:func:`rescaled_chain`), in the
    network's units (exact: a power of two)."""
    if exponent == 0:
        return bounds
    for bound in bounds if isinstance(bounds, list) else [bounds]:
        bound.value = float(np.ldexp(bound.value, -exponent))
        if "upper" in bound.details and bound.details.get("scaled_by") is None:
            bound.details["upper"] = float(np.ldexp(bound.details["upper"], -exponent))
            bound.details["scaled_by"] = f"2^{exponent} (the solver ran on the rescaled chain)"
    return bounds


def gate_bounds(network, layers, box, homogeneous: bool, exponent: int = 0):
    """Per hidden layer, proven ``(low, high)`` of its gates' inputs over the solver's
    domain: the engine's :func:`~lipkit.estimate.engine.gate_bounds` over the box in
    ``(x, t)`` (``t`` in ``[0, 1]`` for the homogenized domain), with the dense chain's
    bounds over a box of ``f`` itself when the chain is not rescaled."""
    lower, upper = box
    low = np.concatenate([lower, [0.0 if homogeneous else 1.0]])[None]
    high = np.concatenate([upper, [1.0]])[None]
    aligned = len(layers) == sum(isinstance(node.op, Activation) for node in network.nodes)
    dense = network if exponent == 0 and not homogeneous and aligned else None
    return [(bottom[0], top[0]) for bottom, top in engine_gate_bounds(dense, layers, low, high)]


def _solve(network, options, own: MipOptions, started, deadline, layers, output, row, box,
           homogeneous, description, time_limit, exponent=0):
    norm, tighten = norm_name(options.norm), own.tighten
    known = gate_bounds(network, layers, box, homogeneous, exponent)
    encoding = _encode(layers, output, norm, box, homogeneous, tighten == "lp",
                       started + 0.3 * float(time_limit), own.threads,
                       options.seed, own.vertex_bounds, known)
    seconds_model = time.perf_counter() - started
    search_pattern, search_point = _search_pattern(network, layers, box, homogeneous, norm,
                                                   row, options.seed, options.data)
    candidates = [search_pattern]
    if homogeneous and not _needs_faces(layers) and layers:
        alternating = _alternating_pattern(layers, output, norm, options.seed)
        candidates.append(alternating)
        found = _interior_point(layers, alternating, box, homogeneous)
        if found is not None and (
                _operator_norm(pattern_jacobian(layers, output, alternating), norm)
                > _operator_norm(pattern_jacobian(layers, output, search_pattern), norm)):
            search_pattern, search_point = alternating, found[0]
    highs = encoding.model.highs
    for index in encoding.model.binary:
        highs.changeColsIntegrality(len(index), index, np.ones(len(index), np.uint8))
    highs.changeColsCost(encoding.model.size, np.arange(encoding.model.size, dtype=np.int32),
                         np.zeros(encoding.model.size))
    highs.changeColCost(encoding.objective, 1.0)
    highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
    highs.setOptionValue("mip_rel_gap", _RELATIVE_GAP)
    highs.setOptionValue("mip_abs_gap", 1e-9)
    highs.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.01))
    if own.node_limit is not None:
        highs.setOptionValue("mip_max_nodes", own.node_limit)
    best = None
    for pattern in candidates:
        best = _better(best, verify(network, layers, output, pattern, box, homogeneous, norm,
                                    row, exponent=exponent))
    cuts = nodes = 0
    while True:
        if best is not None:
            _initial_solution(encoding, layers, output, best.pattern, best.point, homogeneous,
                              norm)
        else:
            _initial_solution(encoding, layers, output, search_pattern, search_point,
                              homogeneous, norm)
        highs.setOptionValue("time_limit", max(deadline - time.perf_counter(), 0.01))
        highs.run()
        mip_status_usable(highs, "MIP")  # raises on a status whose bound is not proven
        status, info = highs.getModelStatus(), highs.getInfo()
        nodes += int(info.mip_node_count)
        # the objective variable's propagated bound is proven too (before the root LP ends)
        upper = min(float(info.mip_dual_bound),
                    float(encoding.model.upper[encoding.objective]))
        if status == highspy.HighsModelStatus.kOptimal:
            upper = max(upper, float(info.objective_function_value))
        if info.primal_solution_status != 2:  # no incumbent
            break
        solution = np.asarray(highs.getSolution().col_value)
        pattern = [np.round(solution[z]) for z in encoding.patterns]
        witness = verify(network, layers, output, pattern, box, homogeneous, norm, row,
                         exponent=exponent)
        best = _better(best, witness)
        if (witness is not None or status != highspy.HighsModelStatus.kOptimal
                or cuts >= _MAX_CUTS or time.perf_counter() > deadline):
            break
        # the optimum's pattern has no interior point: cut off its empty core (every pattern
        # that contains it is empty too) and solve again; the bound stays valid for every
        # pattern realized by an open set
        index, values = _empty_core(layers, pattern, encoding.patterns, box, homogeneous)
        encoding.model.rows([(np.where(values > 0.5, -1.0, 1.0)[None, :], index)],
                            [1.0 - float(values.sum())], [np.inf])
        cuts += 1
    seconds = time.perf_counter() - started
    details = {
        "domain": description,
        "mip_status": highs.modelStatusToString(status),
        "upper": upper,
        "nodes": nodes,
        "cuts": cuts,
        "binaries": int(sum(np.sum(encoding.model.upper[z] > encoding.model.lower[z])
                            for z in encoding.patterns)),
        "gates": int(sum(z.size for z in encoding.patterns)),
        "tighten": tighten,
        "tightening_lps": encoding.lps,
        "seconds_model": seconds_model,
        "output": row,
    }
    lower_value = best.value if best is not None else 0.0
    if best is not None:
        details["witness"] = {"x": torch.from_numpy(best.point).reshape(network.input_shape),
                              "pattern": [p.astype(int).tolist() for p in best.pattern],
                              "margin": best.margin}
    tolerance = _RELATIVE_GAP * max(lower_value, 1e-12) + 1e-9
    if best is not None and upper < lower_value - 10 * tolerance:
        raise LipkitError(f"exact-mip: the MIP bound {upper:.9g} is below its own witness "
                          f"{lower_value:.9g}")
    gap = (upper - lower_value) / lower_value if lower_value > 0 else math.inf
    details["gap"] = gap
    if (status == highspy.HighsModelStatus.kOptimal and best is not None
            and upper - lower_value <= 10 * tolerance):
        return Bound(lower_value, "exact", norm, "exact-mip", seconds, details=details)
    if status == highspy.HighsModelStatus.kOptimal:
        reason = "optimal, but the optimal pattern's region has no interior (no witness)"
    else:
        reason = details["mip_status"].lower()
    status_text = f"ok: {reason}, gap {gap:.3g}" if math.isfinite(gap) else f"ok: {reason}"
    bounds = [Bound(upper, "upper", norm, "exact-mip", seconds, status_text, details)]
    if best is not None:
        bounds.append(Bound(lower_value, "lower", norm, "exact-mip", seconds, status_text,
                            details))
    return bounds
