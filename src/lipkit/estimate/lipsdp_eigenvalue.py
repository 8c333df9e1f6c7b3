"""LipSDP-Layer / LipSDP-Neuron solved in their eigenvalue form, without a conic solver:
quasi-Newton steps on a smoothed largest eigenvalue, warm-started from ECLipsE-Fast's
multipliers, with a feasible point of the SDP's dual as a lower bound on its optimum.

**The eigenvalue form.** For a chain (:class:`lipkit.estimate.lipsdp.Chain`) the LMI
``M(rho, T) <= 0`` is block tridiagonal over the rows ``(x_0, x_1, ..., x_l)``: the input
block ``-rho I - 2 a_1 b_1 W_0^T T_1 W_0``, the couplings ``(a_k + b_k) W_{k-1}^T T_k`` between
consecutive layers and the hidden blocks ``-2 T_k - 2 a_{k+1} b_{k+1} W_k^T T_{k+1} W_k``
(``+ W_l^T W_l`` on the last). Eliminating the hidden blocks from the output backwards
(``S_l = -2 T_l + W_l^T W_l``, ``S_k = -2 T_k - 2 a b W_k^T T_{k+1} W_k + (a + b)^2 W_k^T
T_{k+1} (-S_{k+1})^{-1} T_{k+1} W_k``, each negative definite) leaves the smallest feasible

    rho(T) = lambda_max(A(T)),  A(T) = (a_1 + b_1)^2 W_0^T T_1 (-S_1)^{-1} T_1 W_0
                                       - 2 a_1 b_1 W_0^T T_1 W_0,

and ``v^T A(T) v = max_h z^T M(0, T) z`` over the hidden rows ``h`` of ``z = (v, h)``: a
maximum of functions linear in ``T``, so ``A`` is convex in the Loewner order and
``rho(T)`` is a convex function of the multipliers (the partial minimum of the SDP). With
``W_0 = U S V^T``, ``A``'s nonzero spectrum is that of an ``r x r`` matrix (``r = rank W_0 <=
n_1``): one ``n_k``-row Cholesky factorization per hidden layer and one ``r``-row symmetric
eigendecomposition per evaluation, never the ``(n_0 + n)``-row LMI.

**The descent.** ``lambda_max`` is not differentiable where the top eigenvalue is multiple (as
at the optimum); L-BFGS (scipy's L-BFGS-B) minimizes its smooth upper bound ``mu log sum_i
exp(lambda_i(A) / mu)`` (gradient ``<G, dA/dt>``, ``G = sum_i w_i u_i u_i^T`` with the softmax
weights ``w``, by automatic differentiation of ``A``) over ``log t`` (multipliers on every
scale; positive by construction), in stages of decreasing ``mu`` (:data:`SMOOTHING`,
relative to the current value), each warm-started from the last. The first point is
ECLipsE-Fast's (:func:`lipkit.estimate.compositional.eclipse_fast_multipliers`; that
method's normalization ``X_0 = I`` and halved quadratic constraints map to ``T = rho T_c /
2``). The weights are divided by their spectral norms first (the value is homogeneous in
each, as in :mod:`lipkit.estimate.lipsdp`).

**The dual bound.** Lagrange duality gives: for every positive semidefinite ``Z`` over the
rows of ``M`` with ``tr Z_00 = 1`` whose every neuron ``i`` of every hidden layer ``k``
satisfies ``E[(x_k,i - a v_i)(b v_i - x_k,i)] >= 0`` (``v = W_{k-1} x_{k-1}``, expectations
over ``Z = E[z z^T]``), ``<W_l^T W_l, Z_ll> <=`` the SDP's optimal ``rho``. The smoothed
problem's gradient in ``t`` is exactly this constraint's value (times 2) for ``Z = sum_i w_i
z_i z_i^T``, ``z_i = (u_i, h_i)`` (``h_i`` the maximizing hidden rows), so at its optimum
``Z`` is dual feasible (a zero gradient where ``t > 0``, a non-negative one at ``t = 0``) and
its value is ``sum_i w_i lambda_i``, within ``mu log r`` of the top. At the descent's points
``Z`` is made feasible neuron by neuron, from the input forwards (scaling neuron ``i``'s row
of every ``z_j`` by the largest ``d <= 1`` that satisfies its constraint, or replacing it by
``(a + b) / 2`` times its pre-activation, which satisfies it for every ``z_j``; a row only
enters the constraints of its own and the next layer): the SDP's optimum is at least
``sqrt(<W_l^T W_l, Z_ll>)``. Computed in float64 with a relative margin of 1e-9 on each
constraint, not outward rounded: a measure of the remaining gap (``details["sdp_lower"]``),
not a bound on the network. The descent evaluates it every :data:`DUAL_EVERY` iterations and
at the end of each stage, and stops when its value is within ``tolerance`` of the bound,
at the time limit, or after the last stage. :func:`sdp_lower_bound` computes the same bound
from any multipliers on the caller's (unscaled) chain.

Only the final multipliers leave this module: :func:`lipkit.estimate.lipsdp.certify` proves
them on the full LMI in float64, as it does a conic solver's.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
import torch

from lipkit.estimate.lipsdp import Chain, Multipliers, lmi_matrix

SMOOTHING = (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)  # the stages' mu, relative to the value
ITERATIONS = 200  # L-BFGS iterations per stage at most
DUAL_EVERY = 10  # iterations between two evaluations of the dual bound
DEFAULT_TOLERANCE = 1e-3  # relative distance to the dual bound at which the descent stops
_FEASIBILITY_MARGIN = 1e-9


@dataclass
class EigenvalueSolution:
    """The descent's best multipliers (for the caller's chain) and what it knows of them."""

    multipliers: Multipliers
    value: float  # sqrt(rho(T)) of the best multipliers, unproven
    lower: float  # the dual bound on the SDP's optimal sqrt(rho) (nan if not computed)
    status: str  # "optimal" (within tolerance), "iteration limit", "time limit"
    iterations: int
    stages: int


class _Stop(Exception):  # noqa: N818 - control flow, not an error
    pass


class _Converged(Exception):  # noqa: N818 - control flow, not an error
    pass


@contextlib.contextmanager
def _one_thread():
    """One torch and BLAS thread: the evaluations are a few small dense operations, which a
    thread pool slows on a busy machine (a 784 x 256 SVD: 2 s on two busy threads)."""
    from threadpoolctl import threadpool_limits

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
    finally:
        torch.set_num_threads(previous)


class _ScaledChain:
    """The chain with every weight divided by its spectral norm and ``W_0`` replaced by
    ``U S`` (thin SVD): the values of the caller's chain are ``scale^2`` times these, and
    its multipliers ``T_k = mapping[k] T_k(scaled)``."""

    def __init__(self, chain: Chain):
        norms = [float(np.linalg.norm(w, 2)) for w in chain.weights]
        self.scale = math.prod(norms)
        self.mapping = [math.prod(norms[k + 1:]) ** 2 for k in range(chain.depth)]
        scaled = [w / n for w, n in zip(chain.weights, norms, strict=True)]
        u, s, _ = np.linalg.svd(scaled[0], full_matrices=False)
        keep = s > s[0] * max(scaled[0].shape) * np.finfo(float).eps
        scaled[0] = u[:, keep] * s[keep]
        self.weights = [torch.from_numpy(np.ascontiguousarray(w)) for w in scaled]
        self.slopes = chain.slopes
        self.sizes = [w.shape[0] for w in chain.weights[:-1]]
        self.output_gram = self.weights[-1].T @ self.weights[-1]

    def matrix(self, multipliers: list[torch.Tensor]):
        """``A(T)`` in the ``U S`` coordinates and the Cholesky factors of ``-S_k`` (None: a
        hidden block is not negative definite)."""
        weights, slopes = self.weights, self.slopes
        block = self.output_gram - 2 * torch.diag(multipliers[-1])
        factors = []
        for k in range(len(multipliers) - 1, -1, -1):
            alpha, beta = slopes[k]
            factor, info = torch.linalg.cholesky_ex(-block)
            if int(info) != 0:
                return None
            factors.append(factor)
            weighted = multipliers[k][:, None] * weights[k]  # T W
            solved = torch.linalg.solve_triangular(factor, weighted, upper=False)
            block = (alpha + beta) ** 2 * (solved.T @ solved)
            if alpha * beta != 0:
                block = block - 2 * alpha * beta * (weights[k].T @ weighted)
            if k > 0:
                block = block - 2 * torch.diag(multipliers[k - 1])
        return block, factors[::-1]

    def gradient(self, multipliers, factors, directions: torch.Tensor) -> list[torch.Tensor]:
        """``d/dt sum_j z_j^T M(0, T) z_j`` at the maximizing hidden rows of ``z_j``, whose
        inputs are the columns of ``directions`` (``U S`` coordinates): by the envelope
        theorem, the gradient of ``sum_j`` of their Rayleigh quotients of ``A(T)``.

        The maximizer given ``x_{k-1}`` is ``x_k = (-S_k)^{-1} (a + b) T_k W_{k-1} x_{k-1}``;
        neuron ``i`` of layer ``k`` contributes ``2 (a + b) v_i x_i - 2 x_i^2 - 2 a b v_i^2``
        (``v = W_{k-1} x_{k-1}``) per direction.
        """
        rows, gradients = directions, []
        for k, (t, factor) in enumerate(zip(multipliers, factors, strict=True)):
            alpha, beta = self.slopes[k]
            before = self.weights[k] @ rows
            rows = torch.cholesky_solve((alpha + beta) * t[:, None] * before, factor)
            gradient = (2 * (alpha + beta) * (before * rows) - 2 * rows * rows).sum(dim=1)
            if alpha * beta != 0:
                gradient = gradient - 2 * alpha * beta * (before * before).sum(dim=1)
            gradients.append(gradient)
        return gradients

    def dual_value(self, multipliers, factors, directions: torch.Tensor,
                   formulation: str) -> float:
        """``<W_l^T W_l, Z_ll>`` for ``Z = sum_j z_j z_j^T`` (``z_j`` the maximizing rows of
        the columns of ``directions``, whose squared norms sum to 1), made feasible (module
        docstring): a lower bound on the scaled chain's optimal ``rho``."""
        rows = [directions]
        for k, (t, factor) in enumerate(zip(multipliers, factors, strict=True)):
            alpha, beta = self.slopes[k]
            rows.append(torch.cholesky_solve(
                (alpha + beta) * t[:, None] * (self.weights[k] @ rows[-1]), factor))
        layers = [r.numpy() for r in rows]
        weights = [w.numpy() for w in self.weights]
        return _repaired_value(weights, self.slopes, layers, formulation)

    def split(self, t: torch.Tensor, formulation: str) -> list[torch.Tensor]:
        if formulation == "layer":
            return [t[k].expand(n) for k, n in enumerate(self.sizes)]
        return list(torch.split(t, self.sizes))

    def join(self, gradients: list[torch.Tensor], formulation: str) -> torch.Tensor:
        """The gradient over the variables of ``split`` from the per-neuron gradients."""
        if formulation == "layer":
            return torch.stack([g.sum() for g in gradients])
        return torch.cat(gradients)

    def to_chain(self, multipliers: list[np.ndarray]) -> Multipliers:
        return Multipliers([t * m for t, m in zip(multipliers, self.mapping, strict=True)])


def _start(scaled: _ScaledChain) -> list[np.ndarray]:
    """ECLipsE-Fast's multipliers in LipSDP's normalization, or (when its recursion fails)
    layer constants that keep every hidden block negative definite: with ``||W_k|| = 1``,
    ``t_l = 1`` and ``t_k = (1 + 2 |a b| + (a + b)^2) t_{k+1}`` give ``-S_k >= t_k I``."""
    from lipkit.estimate.compositional import Uncertified, eclipse_fast_multipliers

    weights = [w.clone() for w in scaled.weights]
    try:
        logs, rho = eclipse_fast_multipliers(weights, scaled.slopes, weights[0] @ weights[0].T)
        start = [rho / 2 * log.exp().numpy() for log in logs]
        if scaled.matrix([torch.from_numpy(t) for t in start]) is not None:
            return start
    except (Uncertified, torch.linalg.LinAlgError):
        pass
    return _safe_constants(scaled)


def _safe_constants(scaled: _ScaledChain) -> list[np.ndarray]:
    """Per-layer multipliers that keep every hidden block negative definite (``_start``)."""
    constants = [1.0]
    for alpha, beta in reversed(scaled.slopes[1:]):
        constants.append(constants[-1] * (1 + 2 * abs(alpha * beta) + (alpha + beta) ** 2))
    return [np.full(n, c) for n, c in zip(scaled.sizes, reversed(constants), strict=True)]


def solve(chain: Chain, formulation: str = "neuron", deadline: float | None = None,
          tolerance: float | None = None, start: Multipliers | None = None
          ) -> EigenvalueSolution:
    """Minimize ``rho(T)`` over ``T = diag(t) >= 0`` (module docstring) for ``chain``.

    ``formulation``: ``"neuron"`` (one multiplier per hidden neuron) or ``"layer"`` (one per
    hidden layer); ``deadline``: a ``time.perf_counter()`` value at which to stop with the
    best point so far; ``tolerance``: the relative distance to the dual bound at which to
    stop (default :data:`DEFAULT_TOLERANCE`); ``start``: multipliers to start from (default:
    ECLipsE-Fast's).

    >>> import numpy as np
    >>> from lipkit.estimate.lipsdp import certify
    >>> rng = np.random.default_rng(0)
    >>> chain = Chain([rng.standard_normal((8, 3)), rng.standard_normal((2, 8))], [(0.0, 1.0)])
    >>> solution = solve(chain)
    >>> proven = certify(chain, solution.multipliers).value  # the float64 proof
    >>> bool(solution.lower <= proven <= solution.lower * (1 + 2e-3)), solution.status
    (True, 'optimal')
    """
    tolerance = DEFAULT_TOLERANCE if tolerance is None else float(tolerance)
    with _one_thread():
        scaled = _ScaledChain(chain)
        if start is None:
            initial = _start(scaled)
        else:
            initial = [np.maximum(t, 1e-300) / m
                       for t, m in zip(start.diagonal, scaled.mapping, strict=True)]
        if formulation == "layer":
            initial = [np.array([float(np.exp(np.mean(np.log(t))))]) for t in initial]
            # the geometric mean of a layer's multipliers need not keep it feasible
            for _ in range(20):
                if scaled.matrix(scaled.split(torch.from_numpy(
                        np.concatenate(initial)), "layer")) is not None:
                    break
                initial = [2 * t for t in initial]
            else:
                initial = [t[:1] for t in _safe_constants(scaled)]
        return _descend(chain, scaled, formulation, np.log(np.concatenate(initial)),
                        deadline, tolerance)


def _descend(chain, scaled: _ScaledChain, formulation, x, deadline, tolerance
             ) -> EigenvalueSolution:
    best = {"rho": math.inf, "t": np.exp(x), "lower": 0.0}
    last: dict = {}  # the latest evaluation
    iterations, stages, mu = 0, 0, 1.0

    def evaluate(t: np.ndarray):
        multipliers = scaled.split(torch.from_numpy(t), formulation)
        evaluated = scaled.matrix(multipliers)
        if evaluated is None or not torch.isfinite(evaluated[0]).all():
            return None
        matrix, factors = evaluated
        values, vectors = torch.linalg.eigh(matrix)
        last.update(t=t.copy(), multipliers=multipliers, factors=factors, values=values,
                    vectors=vectors)
        top = float(values[-1])
        if top < best["rho"]:
            best["rho"], best["t"] = top, t.copy()
        weights = torch.exp((values - top) / mu)
        total = float(weights.sum())
        used = weights > 1e-16 * total
        directions = vectors[:, used] * (weights[used] / total).sqrt()
        gradient = scaled.join(scaled.gradient(multipliers, factors, directions), formulation)
        return top + mu * math.log(total), gradient.numpy()

    def outside(point):
        # outside the domain (a hidden block not negative definite: rho = infinity); a
        # large finite value makes the line search step back (infinity breaks it)
        return 1e3 * max(best["rho"], 1e-300) * (1 + float(np.abs(point).max())), \
            np.zeros_like(point)

    def in_logarithms(point: np.ndarray):  # over log t: every scale, t > 0
        t = np.exp(point)
        result = evaluate(t)
        return outside(point) if result is None else (result[0], result[1] * t)

    def callback(point):
        nonlocal iterations
        iterations += 1
        if iterations % DUAL_EVERY == 0 and \
                lower_bound(np.exp(point)) * (1 + tolerance) ** 2 >= best["rho"]:
            raise _Converged
        if deadline is not None and time.perf_counter() > deadline:
            raise _Stop

    def lower_bound(t: np.ndarray) -> float:
        """The dual bound at ``t`` (scaled chain's rho), kept in ``best["lower"]``."""
        if "t" in last and np.array_equal(last["t"], t):  # the accepted point's evaluation
            multipliers, factors = last["multipliers"], last["factors"]
            values, vectors = last["values"], last["vectors"]
        else:
            multipliers = scaled.split(torch.from_numpy(t), formulation)
            evaluated = scaled.matrix(multipliers)
            if evaluated is None:
                return best["lower"]
            factors = evaluated[1]
            values, vectors = torch.linalg.eigh(evaluated[0])
        top = float(values[-1])
        weights = torch.exp((values - top) / mu)
        used = weights > 1e-16 * float(weights.sum())
        directions = vectors[:, used] * (weights[used] / float(weights.sum())).sqrt()
        value = scaled.dual_value(multipliers, factors, directions, formulation)
        best["lower"] = max(best["lower"], value * (1 - 1e-9))
        return best["lower"]

    def minimize(function, start, bounds, iterations):
        with np.errstate(over="ignore", invalid="ignore"):
            return scipy.optimize.minimize(
                function, start, jac=True, method="L-BFGS-B", callback=callback,
                bounds=bounds, options={"maxiter": iterations, "maxcor": 20,
                                        "ftol": 1e-15, "gtol": 1e-12}).x

    status = "iteration limit"
    try:
        if evaluate(best["t"]) is None:
            raise _Stop
        for stage in SMOOTHING:
            mu = stage * best["rho"]
            point = np.exp(minimize(in_logarithms, np.log(best["t"]), None, ITERATIONS))
            stages += 1
            # at the smoothed problem's optimum its gradient's Z is dual feasible
            if lower_bound(point) * (1 + tolerance) ** 2 >= best["rho"]:
                raise _Converged
            if deadline is not None and time.perf_counter() > deadline:
                raise _Stop
    except _Converged:
        status = "optimal"
    except _Stop:
        status = "time limit"
    value = math.sqrt(best["rho"]) * scaled.scale if math.isfinite(best["rho"]) else math.inf
    lower = math.sqrt(best["lower"]) * scaled.scale if best["lower"] > 0 else math.nan
    return EigenvalueSolution(_multipliers(scaled, best["t"], formulation), value, lower,
                              status, iterations, stages)


def _multipliers(scaled: _ScaledChain, t: np.ndarray, formulation: str) -> Multipliers:
    parts = scaled.split(torch.from_numpy(t), formulation)
    return scaled.to_chain([p.numpy().copy() for p in parts])


def _feasible_scaling(cross, square, pre, alpha, beta):
    """Per constraint, the largest ``d <= 1`` with ``(a + b) d cross - d^2 square - a b pre``
    positive (by a relative margin), and where none exists a mask: replace the rows."""
    slack = (alpha + beta) * cross - square - alpha * beta * pre
    scale = np.abs(square) + abs(alpha + beta) * np.abs(cross) + abs(alpha * beta) * np.abs(pre)
    bad = slack <= 2 * _FEASIBILITY_MARGIN * scale
    factors, replace = np.ones_like(cross), np.zeros(cross.shape, bool)
    if not np.any(bad):
        return factors, replace
    a2, b1, c0 = square[bad], (alpha + beta) * cross[bad], alpha * beta * pre[bad]
    discriminant = np.sqrt(np.maximum(b1 * b1 - 4 * a2 * c0, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        upper = (b1 + discriminant) / (2 * a2)
        lower = (b1 - discriminant) / (2 * a2)
    chosen = np.minimum(upper * (1 - 4 * _FEASIBILITY_MARGIN), 1.0)
    usable = (a2 > 0) & np.isfinite(chosen) & (chosen > 0) & (
        chosen >= lower * (1 + 4 * _FEASIBILITY_MARGIN)) & (b1 * b1 >= 4 * a2 * c0)
    factors[bad] = np.where(usable, chosen, 1.0)
    replace[np.flatnonzero(bad)[~usable]] = True
    return factors, replace


def sdp_lower_bound(chain: Chain, multipliers: Multipliers, formulation: str = "neuron",
                    mu_relative: float = 1e-4, vectors: int = 64) -> float:
    """A lower bound on the optimal ``sqrt(rho)`` of LipSDP's SDP (``formulation``: neuron
    or layer) for ``chain``, from the near-optimal ``multipliers``: the module docstring's dual
    point, built from the top eigenvectors of ``A(T)`` (at most ``vectors`` of them, weighted
    by the softmax of their eigenvalues at ``mu = mu_relative * lambda_max``) and made
    feasible neuron by neuron. ``nan`` when ``T`` leaves a hidden block indefinite."""
    if chain.depth == 0:
        return float(np.linalg.norm(chain.weights[0], 2))
    n_input = chain.widths[0]
    base = lmi_matrix(chain, multipliers.projected(), 0.0)
    hidden, coupling = base[n_input:, n_input:], base[n_input:, :n_input]
    try:
        factor = scipy.linalg.cho_factor(-hidden, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return math.nan
    first = chain.weights[0]
    vt = np.linalg.svd(first, full_matrices=False)[2]
    # A in the U S coordinates: P + Q^T (-H)^{-1} Q, Q = coupling V
    inputs = vt.T  # n_0 x r
    q = coupling @ inputs
    matrix = inputs.T @ base[:n_input, :n_input] @ inputs + q.T @ scipy.linalg.cho_solve(
        factor, q, check_finite=False)
    values, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    top = float(values[-1])
    if not top > 0:
        return 0.0
    count = min(vectors, values.size)
    values, eigenvectors = values[-count:], eigenvectors[:, -count:]
    directions = inputs @ eigenvectors  # x_0 of each z_j, unit vectors
    hidden_rows = scipy.linalg.cho_solve(factor, coupling @ directions, check_finite=False)
    offsets = np.concatenate([[0], np.cumsum(chain.widths[1:])])
    layers = [directions] + [hidden_rows[offsets[k]:offsets[k + 1]]
                             for k in range(chain.depth)]
    best = 0.0
    for smoothing in (mu_relative, 10 * mu_relative, 100 * mu_relative):
        weights = np.exp((values - top) / (smoothing * top))
        root = np.sqrt(weights / weights.sum())
        best = max(best, _repaired_value(chain.weights, chain.slopes,
                                         [rows * root for rows in layers], formulation))
    return math.sqrt(best) * (1 - 1e-9)


def _repaired_value(weights: list[np.ndarray], slopes, layers, formulation) -> float:
    """``<W_l^T W_l, Z_ll>`` of ``Z = sum_j z_j z_j^T`` (the columns of ``layers``, their
    inputs' squared norms summing to 1) made feasible neuron by neuron, from the input
    forwards (a row enters only its own layer's and the next one's constraints)."""
    layers = list(layers)
    for k, (alpha, beta) in enumerate(slopes):
        before = weights[k] @ layers[k]  # pre-activations of each z_j
        after = layers[k + 1]
        cross = (before * after).sum(axis=1)
        square = (after * after).sum(axis=1)
        pre = (before * before).sum(axis=1)
        if formulation == "layer":  # one constraint per layer: the sum of its neurons'
            cross, square, pre = (np.array([v.sum()]) for v in (cross, square, pre))
        factors, replace = _feasible_scaling(cross, square, pre, alpha, beta)
        if formulation == "layer":
            factors, replace = np.full(after.shape[0], factors[0]), np.repeat(replace, len(after))
        after = after * factors[:, None]
        after[replace] = (alpha + beta) / 2 * before[replace]
        layers[k + 1] = after
    output = weights[-1] @ layers[-1]
    return max(float((output * output).sum()), 0.0)
