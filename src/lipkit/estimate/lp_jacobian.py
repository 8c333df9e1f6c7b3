"""An l-infinity / l1 upper bound from a linear program over the Jacobian (in the spirit of
LipLP, the LP relaxation of LipMIP: Jordan & Dimakis, NeurIPS 2020), proven by its dual.

For a chain ``f = W_L phi(W_{L-1} ... phi(W_1 x))`` with slopes in ``[alpha_k, beta_k]``,
every Jacobian (Clarke's, globally) is ``J = W_L D_{L-1} W_{L-1} ... D_1 W_1`` with diagonal
``D_k`` in ``[alpha_k, beta_k]``, and ``||f||_{inf -> inf} = max_i max_D ||e_i^T J||_1``.
Row ``i`` is computed backwards: ``g_{L-1} = W_L^T e_i``, then ``h_k = D_k g_k`` neuron by
neuron and ``g_{k-1} = W_k^T h_k``; the row is ``g_0``. lipkit relaxes, per row:

1. interval bounds ``l <= g_k <= u`` by interval arithmetic (centre / radius through
   ``W_k^T``; ``h = d g`` over the box ``[alpha, beta] x [l, u]`` from its four corners);
2. each product ``h = d g`` to the convex hull of its graph over the box: ``alpha g <= h <=
   beta g`` when ``l >= 0`` (reversed when ``u <= 0``), otherwise the two chords through
   ``(l, beta l), (u, alpha u)`` (below) and ``(l, alpha l), (u, beta u)`` (above);
3. each ``|g_0j|`` to ``t_j`` under its concave envelope over ``[l, u]`` (the chord through
   ``(l, |l|)`` and ``(u, |u|)``);

and maximizes ``sum_j t_j`` subject to ``g_{k-1} = W_k^T h_k`` — a linear program (HiGHS,
through ``scipy.optimize.linprog``) whose value bounds row ``i``'s norm: every true
``(D, g, h, |g_0|)`` is feasible. The l1 norm is the l-infinity norm of ``J^T`` (the chain
transposed and reversed: one LP per input instead of per output).

**Soundness.** The LP's value is not trusted: with the solver's dual multipliers ``y``
(clipped to the right sign) and the finite box ``lo <= x <= hi`` of every variable, weak
duality gives, for every feasible ``x``, ``c^T x <= y^T b + sum_j max(r_j lo_j, r_j hi_j)``,
``r = c - A^T y``, whatever ``y`` is; lipkit evaluates it in float64 and adds a bound on its
rounding errors (``gamma_n`` times the same sums of absolute values); every interval end and
inequality of the relaxation is loosened by a relative 1e-12 first (they are computed in
floating point and must contain every true point). The relaxation keeps
the sign structure that the product of induced norms ``prod ||W_k||`` and even the product
of absolute values ``|| |W_L| ... |W_1| ||`` forget; it can never exceed the interval
bound of step 1, which never exceeds either. (The layers come from :meth:`Network.chain`,
whose products of consecutive affine maps carry float64 rounding that is not added.)

**Rows.** Every row's interval bound (step 1) is computed first, and the LPs are solved in
decreasing order of it until the best LP bound so far reaches the next row's interval bound
(no later row can raise the maximum: the same value as solving them all), at most
``max_programs`` of them (:class:`LpJacobianOptions`, default :data:`MAX_PROGRAMS`) and
within its ``time_limit`` (or the run's share); rows left then keep their interval bounds,
and the status says so (``"ok: 256 LPs reached; ..."``).

**Local bounds.** Over a local ``Options.domain`` (``estimate``'s ``center`` and
``radius``, an l-infinity ball of radius 1 by default, or ``box=(lower, upper)``), the
bound is on the local constant over that box, ``sup ||f(x) - f(y)|| / ||x - y||`` over ``x, y``
in it, and ``details["domain"]`` says so (``"R^n ..."`` for the global bound; run it alone
or with exact-mip: the lower-bound methods search everywhere). Every pre-activation is
bounded over the box (:func:`pre_activation_bounds`) by the engine
(:mod:`lipkit.estimate.engine`): the tighter of interval propagation and of CROWN's linear
bounds carried backwards (Zhang et al., NeurIPS 2018), in float64 with every rounding error
moved outwards. A ReLU, LeakyReLU or
identity neuron whose bounds do not straddle 0 is stable: its slope is fixed to its side's
(``0`` or ``1`` for ReLU); the others keep ``[alpha, beta]`` (:func:`local_slopes`;
``details["stable_neurons"]`` counts the fixed ones). The same LP then runs with these
per-neuron boxes. Sound because ``f(x) - f(y) = W_L S_{L-1} ... S_1 W_1 (x - y)`` with ``S_k``
the diagonal of the activations' secant slopes between the two points' pre-activations, which
lie in the narrowed boxes (a neuron with both pre-activations on one side of 0 has its side's
slope). Smooth activations (tanh, sigmoid, GELU, ...) keep their global slope range: their
secant slopes over an interval are not set by its ends (their bounds still pass through, by
their ends when monotone, else by the slope range). With every neuron stable the bound is
``||J(x_0)||`` up to rounding: the exact local constant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse
import torch

from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.domain import domain_of
from lipkit.estimate.engine import DenseChain, layer_bounds, relaxation_of
from lipkit.estimate.network import Network, dense_chain
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.rounding import gamma as _gamma
from lipkit.estimate.rounding import induced_norm_upper

_MAX_ENTRIES = 4_000_000
MAX_PROGRAMS = 256  # LPs per bound at most by default (LpJacobianOptions.max_programs)
_SLACK = 1e-12  # relative loosening of every interval end and inequality: the relaxation
# is built in floating point, and must contain every true point, not merely nearly


def _chain(network: Network, norm: str, box=None):
    """The weights of the chain (transposed and reversed for l1) and, per hidden layer, the
    slope bounds ``(alpha, beta)`` of every neuron: the activation's global range, or over
    ``box = (lower, upper)`` the range narrowed by :func:`local_slopes`."""
    layers = network.chain()
    weights = [layer.weight.detach().numpy() for layer in layers]
    if box is None:
        slopes = [tuple(np.full(layer.weight.shape[0], bound, dtype=np.float64)
                        for bound in layer.activation.slope) for layer in layers[:-1]]
    else:
        slopes = local_slopes(layers, *box)
    if norm == "1":  # ||J||_1 = ||J^T||_inf: the transposed chain, in reverse order
        weights = [w.T for w in weights[::-1]]
        slopes = slopes[::-1]
    return weights, slopes


def pre_activation_bounds(layers, lower, upper) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sound bounds ``(low, high)`` on every hidden layer's pre-activations over the box
    ``lower <= x <= upper``, from the engine (:func:`lipkit.estimate.engine.layer_bounds`:
    interval arithmetic intersected with CROWN's linear bounds, in float64 rounded outwards;
    interval bounds only from the first layer whose pass would hold more than
    ``_MAX_ENTRIES`` coefficients on)."""
    bounds = layer_bounds(DenseChain.from_layers(layers),
                          torch.as_tensor(np.asarray(lower, dtype=np.float64))[None],
                          torch.as_tensor(np.asarray(upper, dtype=np.float64))[None],
                          max_entries=_MAX_ENTRIES)
    return [(low[0].numpy(), high[0].numpy()) for low, high in zip(bounds.lower, bounds.upper,
                                                                   strict=True)]


def local_slopes(layers, lower, upper) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per hidden layer, each neuron's slope bounds over the box: the derivative range of its
    activation's relaxation (:meth:`Relaxation.derivative_range`: for ReLU / LeakyReLU / the
    identity the slope of its side of 0 when the pre-activation's bounds do not straddle 0,
    else the global ``[alpha, beta]``; other activations keep their global range, their slope
    over an interval not being set by its ends)."""
    slopes = []
    for layer, (low, high) in zip(layers[:-1], pre_activation_bounds(layers, lower, upper),
                                  strict=False):
        alpha, beta = relaxation_of(layer.activation).derivative_range(
            torch.from_numpy(low), torch.from_numpy(high))
        slopes.append((alpha.numpy().copy(), beta.numpy().copy()))
    return slopes


def _fits(network: Network) -> str | None:
    return dense_chain(network, _MAX_ENTRIES)[1]


def _product_interval(low, high, alpha, beta):
    corners = np.stack([alpha * low, alpha * high, beta * low, beta * high])
    low, high = corners.min(axis=0), corners.max(axis=0)
    return low - _SLACK * np.abs(low), high + _SLACK * np.abs(high)  # outward rounding


def interval_rows(weights, slopes, row):
    """Interval bounds ``(l, u)`` of ``g_k`` (k = L-1 .. 0) and of ``h_k`` for row ``row``
    (an index, or an array of them: one row of bounds each)."""
    g = weights[-1][row].astype(np.float64)
    g_bounds, h_bounds = [(g, g)], []
    low, high = g, g
    for weight, (alpha, beta) in zip(weights[-2::-1], slopes[::-1], strict=True):
        h_low, h_high = _product_interval(low, high, alpha, beta)
        h_bounds.append((h_low, h_high))
        centre, radius = (h_low + h_high) / 2, (h_high - h_low) / 2
        middle, spread = centre @ weight, radius @ np.abs(weight)
        # outward by the rounding of both products (gamma_n of the absolute sums)
        error = _gamma(weight.shape[0] + 2) * ((np.abs(centre) + radius) @ np.abs(weight))
        low, high = middle - spread - error, middle + spread + error
        g_bounds.append((low, high))
    return g_bounds, h_bounds


def _row_program(weights, slopes, row: int):
    """The LP of the module docstring for one row: (c, A_ub, b_ub, A_eq, b_eq, lo, hi), to
    maximize ``c^T x``, and the interval bound of that row."""
    g_bounds, h_bounds = interval_rows(weights, slopes, row)
    depth = len(slopes)
    # variables: h_{L-1}, g_{L-2}, h_{L-2}, ..., g_0, h_1? -- laid out per hidden layer
    # backwards: [h_k, g_{k-1}] for k = L-1 .. 1, then t (n_0)
    sizes, blocks = [], []
    for step in range(depth):
        sizes += [h_bounds[step][0].size, g_bounds[step + 1][0].size]
        blocks += [("h", step), ("g", step + 1)]
    n_input = g_bounds[-1][0].size
    sizes.append(n_input)
    blocks.append(("t", None))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    total = int(offsets[-1])
    lo, hi = np.empty(total), np.empty(total)
    where = {}
    for index, block in enumerate(blocks):
        start, stop = offsets[index], offsets[index + 1]
        where[block] = (start, stop)
        if block[0] == "h":
            lo[start:stop], hi[start:stop] = h_bounds[block[1]]
        elif block[0] == "g":
            lo[start:stop], hi[start:stop] = g_bounds[block[1]]
    g_low, g_high = g_bounds[-1]
    largest = np.maximum(np.abs(g_low), np.abs(g_high))
    start, stop = where[("t", None)]
    lo[start:stop], hi[start:stop] = 0.0, largest
    interval_value = float(largest.sum())

    upper_rows, upper_rhs = [], []  # sparse rows as (columns, values)
    equal_rows = []
    for step in range(depth):
        alphas, betas = slopes[::-1][step]
        h_start, _ = where[("h", step)]
        g_low_k, g_high_k = g_bounds[step]
        fixed = step == 0  # g_{L-1} is a constant vector
        g_start = None if fixed else where[("g", step)][0]
        for j in range(g_low_k.size):
            low, high = g_low_k[j], g_high_k[j]
            alpha, beta = alphas[j], betas[j]
            h_col = h_start + j
            if fixed:  # h = d g with g known: alpha g <= h <= beta g (sorted)
                a, b = sorted((alpha * low, beta * low))
                lo[h_col], hi[h_col] = max(lo[h_col], a), min(hi[h_col], b)
                continue
            g_col = g_start + j
            if low >= 0:  # alpha g - h <= 0, h - beta g <= 0
                upper_rows += [([g_col, h_col], [alpha, -1.0]), ([g_col, h_col], [-beta, 1.0])]
                upper_rhs += [0.0, 0.0]
            elif high <= 0:
                upper_rows += [([g_col, h_col], [beta, -1.0]), ([g_col, h_col], [-alpha, 1.0])]
                upper_rhs += [0.0, 0.0]
            else:
                width = high - low
                # below the chord (l, beta l) - (u, alpha u): h >= s g + o
                slope = (alpha * high - beta * low) / width
                offset = beta * low - slope * low
                upper_rows.append(([g_col, h_col], [slope, -1.0]))
                upper_rhs.append(-offset)
                # above the chord (l, alpha l) - (u, beta u): h <= s g + o
                slope = (beta * high - alpha * low) / width
                offset = alpha * low - slope * low
                upper_rows.append(([g_col, h_col], [-slope, 1.0]))
                upper_rhs.append(offset)
        # g_{k-1} = W_k^T h_k (the weight between hidden layers k-1 and k)
        weight = weights[::-1][step + 1]  # (n_k, n_{k-1})
        next_block = ("g", step + 1) if step + 1 < depth else ("g", depth)
        g_next_start, _ = where[next_block]
        equal_rows.append((weight, h_start, g_next_start))
    # t_j <= chord of |g| over [l, u]
    t_start, _ = where[("t", None)]
    g0_start, _ = where[("g", depth)]
    for j in range(n_input):
        low, high = g_low[j], g_high[j]
        if low >= 0:
            upper_rows.append(([t_start + j, g0_start + j], [1.0, -1.0]))
            upper_rhs.append(0.0)
        elif high <= 0:
            upper_rows.append(([t_start + j, g0_start + j], [1.0, 1.0]))
            upper_rhs.append(0.0)
        else:
            slope = (high + low) / (high - low)  # through (l, -l) and (u, u)
            upper_rows.append(([t_start + j, g0_start + j], [1.0, -slope]))
            upper_rhs.append(-low - slope * low)
    a_ub = _sparse(upper_rows, total)
    reach = np.maximum(np.abs(lo), np.abs(hi))
    upper_rhs = np.array(upper_rhs)
    upper_rhs += _SLACK * (np.abs(upper_rhs) + abs(a_ub) @ reach) + 1e-300
    # equalities: W^T h - g = 0, one block per hidden layer
    eq_blocks = []
    for weight, h_start, g_start in equal_rows:
        n_prev = weight.shape[1]
        dense = scipy.sparse.coo_matrix(weight.T)
        left = scipy.sparse.coo_matrix((dense.data, (dense.row, dense.col + h_start)),
                                       shape=(n_prev, total))
        right = scipy.sparse.coo_matrix((-np.ones(n_prev), (np.arange(n_prev),
                                                           g_start + np.arange(n_prev))),
                                        shape=(n_prev, total))
        eq_blocks.append((left + right).tocsr())
    a_eq = scipy.sparse.vstack(eq_blocks).tocsr()
    c = np.zeros(total)
    c[t_start:t_start + n_input] = 1.0
    return c, a_ub, upper_rhs, a_eq, np.zeros(a_eq.shape[0]), lo, hi, interval_value


def _sparse(rows, total):
    data, columns, indices = [], [], []
    for index, (cols, values) in enumerate(rows):
        columns += cols
        data += values
        indices += [index] * len(cols)
    return scipy.sparse.csr_matrix((data, (indices, columns)), shape=(len(rows), total))


def dual_bound(c, a_ub, b_ub, a_eq, b_eq, lo, hi, y_ub, y_eq) -> float:
    """Weak duality with a rounding margin: for every ``x`` with ``A_ub x <= b_ub``,
    ``A_eq x = b_eq``, ``lo <= x <= hi``: ``c^T x <=`` the returned value (``y_ub`` is
    clipped to ``>= 0``; ``y_eq`` is free)."""
    y_ub = np.maximum(y_ub, 0.0)
    residual = c - a_ub.T @ y_ub - a_eq.T @ y_eq
    absolute = np.abs(c) + abs(a_ub).T @ y_ub + abs(a_eq).T @ np.abs(y_eq)
    terms = np.maximum(residual * lo, residual * hi)
    reach = np.maximum(np.abs(lo), np.abs(hi))
    value = float(y_ub @ b_ub + y_eq @ b_eq + terms.sum())
    longest = max(a_ub.getnnz(axis=0).max(initial=0) + a_eq.getnnz(axis=0).max(initial=0),
                  1) + 2
    error = _gamma(longest) * float(absolute @ reach) + \
        _gamma(len(terms) + len(b_ub) + len(b_eq) + 2) * (
            float(np.abs(terms).sum()) + float(np.abs(y_ub) @ np.abs(b_ub)) +
            float(np.abs(y_eq) @ np.abs(b_eq)))
    return float(np.nextafter(value + 2 * error, math.inf))


def row_bound(weights, slopes, row: int, time_limit: float | None = None) -> tuple[float, float]:
    """(the proven LP bound, the interval bound) on ``||e_row^T J||_1``."""
    c, a_ub, b_ub, a_eq, b_eq, lo, hi, interval_value = _row_program(weights, slopes, row)
    options = {"presolve": True}
    if time_limit is not None:
        options["time_limit"] = max(float(time_limit), 0.1)
    result = scipy.optimize.linprog(-c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq,
                                    bounds=np.stack([lo, hi], axis=1), method="highs",
                                    options=options)
    if result.status != 0 or result.ineqlin is None:
        return interval_value, interval_value
    # linprog minimizes -c^T x; its marginals are d(-value)/d(b): the multipliers of the
    # maximization are their negatives
    proven = dual_bound(c, a_ub, b_ub, a_eq, b_eq, lo, hi, -result.ineqlin.marginals,
                        -result.eqlin.marginals)
    return min(proven, interval_value), interval_value


def interval_bounds(weights, slopes, chunk: int = 256) -> np.ndarray:
    """The interval bound (step 1) on ``||e_i^T J||_1`` of every row ``i``: the sum of
    ``max(|l|, |u|)`` of ``g_0``, an upper bound on the row's LP (rows in blocks of
    ``chunk``)."""
    rows = weights[-1].shape[0]
    values = []
    for start in range(0, rows, chunk):
        g_low, g_high = interval_rows(weights, slopes, np.arange(start, min(start + chunk,
                                                                            rows)))[0][-1]
        values.append(np.maximum(np.abs(g_low), np.abs(g_high)).sum(axis=1))
    return np.concatenate(values)


@dataclass(frozen=True)
class LpJacobianOptions(MethodOptions):
    """Options of ``lp-jacobian``."""

    #: seconds at most (None: the run's share, else no limit)
    time_limit: float | None = None
    #: linear programs at most (one per row: per output for l-inf, per input for l1); the
    #: rows beyond them keep their interval bounds
    max_programs: int = MAX_PROGRAMS


@register_method("lp-jacobian", kind="upper", norms=("inf", "1"), fits=_fits, local=True,
                 options=LpJacobianOptions)
def lp_jacobian(network: Network, options: Options | None = None) -> Bound:
    """LP relaxation of the Jacobian over the slope box (LipLP-style), proven by its dual.

    Global, or local over ``options.domain`` (see the module docstring).

    Example:
        >>> import torch
        >>> from lipkit.estimate import estimate
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
        ...                             torch.nn.Linear(8, 1)).double()
        >>> whole = estimate(model, methods=["lp-jacobian"], norm="inf").bounds[0]
        >>> near = estimate(model, methods=["lp-jacobian"], norm="inf",
        ...                 center=torch.zeros(2), radius=0.1).bounds[0]
        >>> near.value <= whole.value, near.details["domain"]
        (True, 'l-inf ball of radius 0.1 around the center')
    """
    options = options or Options()
    own = options.own(LpJacobianOptions)
    started = time.perf_counter()
    norm = norm_name(options.norm)
    domain = domain_of(network, options)
    box = None if domain.is_global else (domain.lower, domain.upper)
    if box is None:
        domain_text = "R^n (the global slope box of every activation)"
    else:
        domain_text = domain.description
    weights, slopes = _chain(network, norm, box)
    details = {"domain": domain_text}
    if box is not None:
        fixed = sum(int(np.sum(alpha == beta)) for alpha, beta in slopes)
        details["stable_neurons"] = f"{fixed}/{sum(alpha.size for alpha, _ in slopes)}"
    if not slopes:  # a single matrix: its induced norm, exactly
        value = induced_norm_upper(torch.from_numpy(weights[0]), math.inf)
        return Bound(value, "upper", norm, "lp-jacobian", time.perf_counter() - started,
                     details={**details, "programs": 0, "interval_bound": value})
    rows = weights[-1].shape[0]
    intervals = interval_bounds(weights, slopes)
    # the rows by decreasing interval bound: once the best LP bound so far reaches the next
    # interval bound, no later row can raise the maximum
    order = np.argsort(-intervals, kind="stable")
    time_limit = options.limit(own.time_limit)
    deadline = None if time_limit is None else started + time_limit
    best, programs = 0.0, 0
    for index, row in enumerate(order):
        if intervals[row] <= best:
            break
        remaining = None if deadline is None else deadline - time.perf_counter()
        if programs >= own.max_programs or (remaining is not None and remaining <= 0):
            break  # the rest by their interval bounds
        if options.progress is not None:
            options.progress(f"lp-jacobian: row {index + 1}/{rows} (by interval bound)")
        value, _ = row_bound(weights, slopes, int(row), remaining)
        best, programs = max(best, value), programs + 1
    rest = intervals[order[programs:]]
    value = max(best, float(rest.max(initial=0.0)))
    status = "ok"
    if value > best:
        reason = "time limit" if programs < own.max_programs else f"{own.max_programs} LPs"
        status = (f"ok: {reason} reached; {rest.size} of {rows} rows bounded by interval "
                  "arithmetic only")
    return Bound(value, "upper", norm, "lp-jacobian", time.perf_counter() - started, status,
                 details={**details, "programs": programs,
                          "interval_bound": float(intervals.max())})
