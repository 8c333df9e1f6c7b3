"""Exact Lipschitz constants of piecewise-linear networks with few inputs by branch and bound
over the input space (in the spirit of LipBaB: Bhowmick, D'Souza & Raghavan, 2021), for the
l1, l2 and l-infinity norms.

As in :mod:`lipkit.estimate.mip`, ``||f||_L`` is the largest induced norm of the Jacobian
``J_z`` over the activation patterns ``z`` realized by an open set of the domain. Here the
domain is cut into boxes:

- **bound** of a box: linear (symbolic) bound propagation through the layers (each gate's
  input between two affine functions of the input, a ReLU relaxed by its chord above and
  ``0`` or the identity below, as in CROWN / Neurify) gives every gate's sign range over the
  box; the gates that can take both signs are *unstable*. Every Jacobian in the box is
  ``J_z`` with ``z`` fixed on the stable gates, so an interval product of the layers' slopes
  (unstable gates in ``[0, 1]``) bounds them entrywise, and ``||J|| <= || max(|lo|, |hi|) ||``
  (true for the l1, l-inf and l2 induced norms: each is monotone in the absolute values of
  the entries). With at most :data:`ENUMERATE` unstable gates the bound is instead the
  largest ``||J_z||`` over their ``2^k`` patterns: exact for the patterns, since ``J_z`` is
  multi-affine in the gates and the norm convex, this is the largest value over the whole
  slope box too.
- **witness**: the box's centre; when no gate is within ``1e-9`` of zero there, the point is
  inside an open region and the norm of its pattern's Jacobian is attained (a lower bound).
- **branch**: best first (the box with the largest bound), bisecting its widest side; a box
  whose bound is at most the best witness (``1 + 1e-9`` relative) is closed.

The search ends when every box is closed: the best witness is then the exact constant (one
``"exact"`` Bound; the witness is checked by autograd as the MIP's is). Stopped by the time
limit or the option ``max_branches`` (boxes examined), it returns the bracket: the
``"upper"`` bound (the largest open box's bound) and the ``"lower"`` witness. Boxes split in
every input direction, so this is for networks with few inputs (at most
:data:`MAX_INPUTS`): the critic of a 2-D GAN, an RL transition model, a small local box. It
needs no MIP solver and no activation-pattern binaries: its cost grows with the number of
regions near the maximum, not with the width.

**Domain** (``Options.domain``, as for ``exact-mip``): a box (``estimate``'s ``box``, or
``center`` and ``radius``) for the local constant, else all of ``R^n`` through the
homogenized network ``t f(x / t)`` on the faces of ``[-1, 1]^n x [0, 1]`` away from the
origin (``t = 1``, ``x_j = 1``, ``x_j = -1``), which meet every activation region of ``f``
(see :mod:`lipkit.estimate.mip`); boxes touching ``t = 0`` hold the limits at infinity,
whose patterns the bounds include, so the bound stays an upper bound.

"Proven" means in float64 with every gate bound widened by ``1e-10`` of its magnitude, not
a rounding-error certificate.

The options (:class:`BabOptions`): ``time_limit``, ``max_branches``, ``output``.
"""

from __future__ import annotations

import functools
import itertools
import math
import time
from dataclasses import dataclass, field

import highspy
import numpy as np
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.domain import solver_box
from lipkit.estimate.engine import gate_bounds
from lipkit.estimate.engine.gates import piecewise_linear_chain
from lipkit.estimate.mip import (
    pattern_at,
    piecewise_linear_fits,
    scaled_for_the_solver,
    unscaled,
    verify,
)
from lipkit.estimate.network import Activation, Network
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.rounding import induced_norms
from lipkit.estimate.solvers import feasible, new_highs

MAX_INPUTS = 8
ENUMERATE = 10  # unstable gates up to which a box's bound enumerates their patterns
PROGRAMS = 1000  # LPs (partial patterns checked) up to which a box is resolved exactly
CANDIDATES = 4  # a box's largest patterns checked for an interior point before the search
SMALL = 1e-3  # boxes narrower than this (relative to the domain) are resolved exactly
_FINEST = 1e-12  # boxes narrower than this (relative) are not split further
DEFAULT_TIME_LIMIT = 60.0
DEFAULT_MAX_BRANCHES = 2_000_000
_TOLERANCE = 1e-9  # relative: a box bounded by the best witness times 1 + this is closed
_MARGIN = 1e-9  # a centre this close (relative) to a gate's hyperplane is not a witness
_BATCH = 256  # boxes branched at once


@functools.cache
def _choices(count: int) -> np.ndarray:
    """Every 0/1 vector of ``count`` entries, one per row."""
    return np.array(list(itertools.product((0.0, 1.0), repeat=count)),
                    dtype=float).reshape(2**count, count)


def _jacobians(layers, output, patterns) -> np.ndarray:
    """``J_z`` for a batch of patterns (one array per layer, ``(batch, gates)``)."""
    batch = patterns[0].shape[0] if patterns else 1
    g = np.broadcast_to(output, (batch, *output.shape))
    for layer, z in zip(reversed(layers), reversed(patterns), strict=True):
        g = g @ layer.keep + ((g @ layer.relu) * z[:, None, :]) @ layer.gate
        g = g @ layer.weight
    return np.asarray(g)


def _interval_jacobian(layers, output, z_low, z_high, boxes: int):
    """Entrywise bound ``max(|lo|, |hi|)`` of every Jacobian with gates in ``[z_low, z_high]``
    (``boxes`` of them)."""
    centre = np.broadcast_to(output, (boxes, *output.shape))
    radius = np.zeros_like(centre)
    for layer, lo, hi in zip(reversed(layers), reversed(z_low), reversed(z_high), strict=True):
        keep_c, keep_r = centre @ layer.keep, radius @ np.abs(layer.keep)
        q_c, q_r = centre @ layer.relu, radius @ np.abs(layer.relu)
        q_lo, q_hi = q_c - q_r, q_c + q_r
        corners = np.stack([q_lo * lo[:, None], q_lo * hi[:, None],
                            q_hi * lo[:, None], q_hi * hi[:, None]])
        m_lo, m_hi = corners.min(axis=0), corners.max(axis=0)
        m_c, m_r = (m_lo + m_hi) / 2, (m_hi - m_lo) / 2
        centre = (keep_c + m_c @ layer.gate) @ layer.weight
        radius = ((keep_r + m_r @ np.abs(layer.gate)) @ np.abs(layer.weight))
    return np.abs(centre) + radius


def operator_norms(matrices: np.ndarray, norm: str) -> np.ndarray:
    """Induced norms of a batch of matrices (:func:`lipkit.estimate.rounding.induced_norms`)."""
    return induced_norms(matrices, norm)


def region_rows(layers, pattern) -> np.ndarray:
    """The gates' inputs for a pattern as affine forms of ``(x, t)``: rows ``(gates, n + 1)``
    with ``sign(z) * row . (x, t) > 0`` exactly inside the pattern's region."""
    n = layers[0].weight.shape[1]
    affine = np.hstack([np.eye(n), np.zeros((n, 1))])  # the layer input as forms of (x, t)
    rows = []
    for layer, z in zip(layers, pattern, strict=True):
        a = layer.weight @ affine
        a[:, n] += layer.bias
        rows.append(layer.gate @ a)
        affine = layer.slope(z) @ a
    return np.concatenate(rows)


class _RegionProgram:
    """The point of a box deepest inside a growing set of gate half-spaces
    ``sign * row . u > 0`` (a margin LP in HiGHS, rows pushed and popped depth-first, each
    solve warm-started from the last)."""

    def __init__(self, low, high, homogeneous: bool):
        self.dims = len(low)
        self.highs = new_highs()
        # variables (u, margin); maximize the margin (at most 1)
        self.highs.addVars(self.dims + 1, np.append(low, -np.inf), np.append(high, 1.0))
        self.highs.changeColCost(self.dims, 1.0)
        self.highs.changeObjectiveSense(highspy.ObjSense.kMaximize)
        self.base = 0
        if homogeneous:  # t >= margin
            self._add(np.array([self.dims - 1, self.dims]), np.array([-1.0, 1.0]))
            self.base = 1
        self.count = self.base

    def _add(self, index, values):
        self.highs.addRow(-np.inf, 0.0, len(index), index.astype(np.int32),
                          values.astype(float))

    def push(self, row: np.ndarray, sign: float) -> None:
        """Add the half-space ``sign * row . u >= margin * ||row||``."""
        scale = float(np.linalg.norm(row))
        index = np.arange(self.dims + 1)
        # a gate whose row is zero is identically 0 on the region (e.g. MaxMin of two equal
        # units): both of its patterns give the same Jacobian, so neither prunes the region
        values = (np.append(-sign * row / scale, 1.0) if scale > 0
                  else np.zeros(self.dims + 1))
        self._add(index, values)
        self.count += 1

    def pop(self) -> None:
        self.count -= 1
        self.highs.deleteRows(1, np.array([self.count], dtype=np.int32))

    def solve(self):
        """``(u, margin)`` of the deepest point, or ``None`` when the margin is not
        positive."""
        self.highs.run()
        if not feasible(self.highs, "interior-point LP"):
            return None
        solution = np.asarray(self.highs.getSolution().col_value)
        if solution[-1] <= _MARGIN:
            return None
        return solution[:-1], float(solution[-1])


class _Bounder:
    """Bounds and witnesses of batches of boxes for one network and norm."""

    def __init__(self, layers, output, norm: str, homogeneous: bool,
                 deadline: float = math.inf, network: Network | None = None):
        self.layers, self.output, self.norm = layers, output, norm
        self.homogeneous = homogeneous
        self.deadline = deadline  # past it, boxes keep their interval bounds (still sound)
        self.network = network  # set for a local box of a chain the engine reads
        self.enumerated = self.programs = self.resolved = 0
        self.found: tuple[float, np.ndarray] | None = None  # (value, (x, t)) from an LP

    def bound(self, low, high, threshold: float, small: np.ndarray) -> np.ndarray:
        """Upper bounds of ``||J||`` over each box (exact where resolved). ``small``: boxes
        narrow enough to be resolved whatever their number of unstable gates."""
        ranges = gate_bounds(self.network, self.layers, low, high)
        z_low = [(bottom >= 0).astype(float) for bottom, _ in ranges]
        z_high = [(top > 0).astype(float) for _, top in ranges]
        unstable = np.zeros(low.shape[0], dtype=int)
        for lo, hi in zip(z_low, z_high, strict=True):
            unstable += ((hi - lo) > 0).sum(axis=1)
        bounds = operator_norms(_interval_jacobian(self.layers, self.output, z_low, z_high,
                                                   low.shape[0]), self.norm)
        for box in np.flatnonzero(((unstable <= ENUMERATE) | small) & (bounds > threshold)):
            if time.perf_counter() > self.deadline:
                break
            box_low, box_high = [lo[box] for lo in z_low], [hi[box] for hi in z_high]
            limit = max(threshold, self.best(threshold))
            resolved = None
            if unstable[box] <= ENUMERATE:
                value, resolved = self._enumerate(box_low, box_high, low[box], high[box], limit)
                bounds[box] = min(bounds[box], value)
                if bounds[box] <= limit:
                    continue
            if resolved is None:
                resolved = self._resolve(box_low, box_high, low[box], high[box], limit)
            if resolved is not None:
                bounds[box] = min(bounds[box], resolved)
        return bounds

    def best(self, threshold: float) -> float:
        return self.found[0] * (1 + _TOLERANCE) if self.found is not None else threshold

    def _enumerate(self, z_low, z_high, low, high, threshold: float):
        """The largest ``||J_z||`` over the patterns of one box's unstable gates (every
        pattern, realized in the box or not), and the box's exact maximum when one of its
        :data:`CANDIDATES` largest patterns above ``threshold`` has an interior point in the
        box and the ones before it do not (else ``None``)."""
        self.enumerated += 1
        free = [np.flatnonzero(hi > lo) for lo, hi in zip(z_low, z_high, strict=True)]
        count = sum(len(f) for f in free)
        choices = _choices(count)
        patterns, start = [], 0
        for lo, index in zip(z_low, free, strict=True):
            z = np.repeat(lo[None, :], choices.shape[0], axis=0)
            z[:, index] = choices[:, start : start + len(index)]
            start += len(index)
            patterns.append(z)
        values = operator_norms(_jacobians(self.layers, self.output, patterns), self.norm)
        order = np.argsort(-values)[:CANDIDATES]
        program = None
        for index in order[values[order] > threshold]:
            program = program or _RegionProgram(low, high, self.homogeneous)
            pattern = [z[index] for z in patterns]
            signs = 2.0 * np.concatenate(pattern) - 1.0
            rows = region_rows(self.layers, pattern)
            unstable = np.concatenate([hi > lo for lo, hi in zip(z_low, z_high, strict=True)])
            for row, sign in zip(rows[unstable], signs[unstable], strict=True):
                program.push(row, sign)
            self.programs += 1
            found = program.solve()
            if found is not None:
                self.resolved += 1
                value = float(values[index])
                if self.found is None or value > self.found[0]:
                    self.found = (value, found[0])
                return float(values.max()), value
            for _ in range(int(unstable.sum())):
                program.pop()
        return float(values.max()), None

    def _resolve(self, z_low, z_high, low, high, threshold: float) -> float | None:
        """The box's exact maximum when it exceeds ``threshold`` (else a bound at most
        ``threshold``), by depth-first search over its unstable gates in layer order: each
        partial pattern's region checked for an interior point in the box (an LP), pruned by
        the interval bound with the remaining gates free. ``None`` beyond
        :data:`PROGRAMS` LPs."""
        self.enumerated += 1
        free = [(k, g) for k, (lo, hi) in enumerate(zip(z_low, z_high, strict=True))
                for g in np.flatnonzero(hi > lo)]
        current_low = [lo.copy() for lo in z_low]
        current_high = [hi.copy() for hi in z_high]
        program = _RegionProgram(low, high, self.homogeneous)
        best, best_point = -np.inf, None
        budget = [PROGRAMS]

        def bound() -> float:
            matrix = _interval_jacobian(self.layers, self.output,
                                        [lo[None] for lo in current_low],
                                        [hi[None] for hi in current_high], 1)
            return float(operator_norms(matrix, self.norm)[0])

        def visit(position: int, point: np.ndarray) -> bool:  # False when out of LPs
            nonlocal best, best_point
            if bound() <= max(threshold, best):
                return True
            if position == len(free):
                value = float(operator_norms(_jacobians(
                    self.layers, self.output, [lo[None] for lo in current_low]),
                    self.norm)[0])
                if value > best:
                    best, best_point = value, point
                return True
            layer, gate = free[position]
            pattern = [lo for lo in current_low[: layer + 1]]
            row = region_rows(self.layers[: layer + 1], pattern)[
                sum(z.size for z in current_low[:layer]) + gate]
            for value in (1.0, 0.0):
                if budget[0] <= 0 or time.perf_counter() > self.deadline:
                    return False
                budget[0] -= 1
                self.programs += 1
                program.push(row, 2.0 * value - 1.0)
                found = program.solve()
                if found is not None:
                    current_low[layer][gate] = current_high[layer][gate] = value
                    complete = visit(position + 1, found[0])
                    current_low[layer][gate] = z_low[layer][gate]
                    current_high[layer][gate] = z_high[layer][gate]
                    if not complete:
                        program.pop()
                        return False
                program.pop()
            return True

        if not visit(0, (low + high) / 2):
            return None
        self.resolved += 1
        if best > threshold:
            if self.found is None or best > self.found[0]:
                self.found = (best, best_point)
            return best
        return threshold

    def witnesses(self, low, high):
        """Norms of the patterns at the boxes' centres (``-inf`` where a centre is within the
        margin of a gate's hyperplane)."""
        centre = (low + high) / 2
        inside = centre[:, -1] > 0
        points = centre[:, :-1] / np.where(inside, centre[:, -1], 1.0)[:, None]
        patterns = []
        h = points
        for layer in self.layers:
            a = h @ layer.weight.T + layer.bias
            d = a @ layer.gate.T
            scale = np.abs(a) @ np.abs(layer.gate.T) + 1e-300
            inside &= (np.abs(d) > _MARGIN * scale).all(axis=1)
            patterns.append((d > 0).astype(float))
            h = a @ layer.keep.T + np.maximum(d, 0.0) @ layer.relu.T
        values = operator_norms(_jacobians(self.layers, self.output, patterns), self.norm)
        return np.where(inside, values, -np.inf)


def _roots(box, homogeneous: bool):
    """The starting boxes in ``(x, t)``."""
    lower, upper = box
    n = len(lower)
    if not homogeneous:
        return (np.concatenate([lower, [1.0]])[None, :],
                np.concatenate([upper, [1.0]])[None, :])
    low = [np.concatenate([-np.ones(n), [1.0]])]
    high = [np.ones(n + 1)]
    for j in range(n):
        for side in (-1.0, 1.0):
            lo, hi = np.concatenate([-np.ones(n), [0.0]]), np.ones(n + 1)
            lo[j] = hi[j] = side
            low.append(lo)
            high.append(hi)
    return np.array(low), np.array(high)


def _fits(network: Network) -> str | None:
    reason = piecewise_linear_fits(network)
    if reason is not None:
        return reason
    if network.in_features > MAX_INPUTS:
        return (f"{network.in_features} inputs: boxes are split in every input direction "
                f"(at most {MAX_INPUTS} inputs)")
    return None


@dataclass(frozen=True)
class BabOptions(MethodOptions):
    """Options of ``exact-bab``."""

    #: seconds at most (None: the run's share, else 60 s)
    time_limit: float | None = None
    #: boxes examined at most, then the bracket
    max_branches: int = DEFAULT_MAX_BRANCHES
    #: one output's constant, by its index (None: the induced norm of the whole Jacobian)
    output: int | None = field(default=None, metadata={"minimum": 0})


@register_method("exact-bab", kind="exact", norms=("1", "2", "inf"), fits=_fits, local=True,
                 options=BabOptions)
def exact_bab(network: Network, options: Options) -> Bound | list[Bound]:
    """Exact l1 / l2 / l-inf constant of a piecewise-linear network with few inputs, by
    branch and bound over input boxes (LipBaB-style)."""
    started = time.perf_counter()
    norm, own = norm_name(options.norm), options.own(BabOptions)
    time_limit = options.limit(own.time_limit, DEFAULT_TIME_LIMIT)
    deadline = started + float(time_limit)
    layers, (weight, _) = piecewise_linear_chain(network)
    layers, (weight, _), exponent = scaled_for_the_solver(layers, (weight, None))
    row = own.output
    if row is not None:
        if not row < weight.shape[0]:
            raise InvalidArgumentError(
                f"exact-bab: output {row} out of range (the network has {weight.shape[0]})")
        weight = weight[row : row + 1]
    box, homogeneous, description = solver_box(network, options, "exact-bab")
    aligned = len(layers) == sum(isinstance(node.op, Activation) for node in network.nodes)
    bounder = _Bounder(layers, weight, norm, homogeneous, deadline,
                       None if homogeneous or not aligned or exponent else network)
    low, high = _roots(box, homogeneous)
    best_value, best_point = -np.inf, None  # the best witness and its point (x, t)

    def update(low, high):
        nonlocal best_value, best_point
        values = bounder.witnesses(low, high)
        if len(values) and values.max() > best_value:
            index = int(values.argmax())
            best_value, best_point = float(values[index]), (low[index] + high[index]) / 2
        if bounder.found is not None and bounder.found[0] > best_value:
            best_value, best_point = bounder.found

    def threshold():
        return max(best_value, 0.0) * (1 + _TOLERANCE)

    width = float((high - low).max())

    def small(low, high):
        return (high - low).max(axis=1) < SMALL * width

    update(low, high)
    bounds = bounder.bound(low, high, threshold(), small(low, high))
    update(low[:0], high[:0])
    boxes = len(low)
    while True:
        open_ = bounds > threshold()
        low, high, bounds = low[open_], high[open_], bounds[open_]
        if not len(bounds) or boxes >= own.max_branches or time.perf_counter() > deadline:
            break
        if options.progress is not None and boxes % (_BATCH * 64) < 2 * _BATCH:
            options.progress(f"exact-bab: {boxes} boxes, [{best_value:.6g}, "
                             f"{bounds.max():.6g}]")
        splittable = (high - low).max(axis=1) > _FINEST * width
        if not splittable.any():
            break
        take = np.argsort(-np.where(splittable, bounds, -np.inf))[:_BATCH]
        take = take[splittable[take]]
        rest = np.ones(len(bounds), dtype=bool)
        rest[take] = False
        pick_low, pick_high, pick_bound = low[take], high[take], bounds[take]
        low, high, bounds = low[rest], high[rest], bounds[rest]
        update(pick_low, pick_high)
        side = np.argmax(pick_high - pick_low, axis=1)
        rows = np.arange(len(take))
        middle = (pick_low[rows, side] + pick_high[rows, side]) / 2
        left_high, right_low = pick_high.copy(), pick_low.copy()
        left_high[rows, side] = middle
        right_low[rows, side] = middle
        child_low = np.concatenate([pick_low, right_low])
        child_high = np.concatenate([left_high, pick_high])
        child_bounds = np.minimum(bounder.bound(child_low, child_high, threshold(),
                                                small(child_low, child_high)),
                                  np.tile(pick_bound, 2))
        update(child_low[:0], child_high[:0])
        low, high = np.concatenate([low, child_low]), np.concatenate([high, child_high])
        bounds = np.concatenate([bounds, child_bounds])
        boxes += len(child_low)
    # closed boxes are bounded by the best witness times 1 + _TOLERANCE, not by the witness
    upper = max(float(bounds.max()) if len(bounds) else -np.inf, threshold())
    seconds = time.perf_counter() - started
    witness = None
    if best_point is not None:
        # a point (x, t) of the homogenized domain, t = 0 included (a direction whose far
        # points share one pattern): verify finds the finite point deepest in its region
        pattern = pattern_at(layers, best_point[:-1], float(best_point[-1]))
        witness = verify(network, layers, (weight, None), pattern, box, homogeneous, norm,
                         row, "exact-bab", exponent)
    details = {"domain": description, "boxes": boxes, "open_boxes": len(bounds),
               "enumerated": bounder.enumerated, "programs": bounder.programs,
               "resolved": bounder.resolved, "upper": upper, "output": row}
    lower_value = witness.value if witness is not None else 0.0
    if witness is not None:
        details["witness"] = {"x": torch.from_numpy(witness.point).reshape(network.input_shape),
                              "pattern": [p.astype(int).tolist() for p in witness.pattern],
                              "margin": witness.margin}
    gap = (upper - lower_value) / lower_value if lower_value > 0 else math.inf
    details["gap"] = gap
    if witness is not None and not len(bounds) and upper <= lower_value * (1 + 1e-6) + 1e-12:
        return unscaled(Bound(lower_value, "exact", norm, "exact-bab", seconds,
                              details=details), exponent)
    reason = ("time limit reached" if time.perf_counter() > deadline
              else f"box limit {own.max_branches} reached" if len(bounds) else "no witness")
    status = f"ok: {reason}, gap {gap:.3g}" if math.isfinite(gap) else f"ok: {reason}"
    result = [Bound(upper, "upper", norm, "exact-bab", seconds, status, details)]
    if witness is not None:
        result.append(Bound(lower_value, "lower", norm, "exact-bab", seconds, status, details))
    return unscaled(result, exponent)
