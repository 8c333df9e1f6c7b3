"""An l-infinity upper bound for networks with one hidden layer from Shor's semidefinite
relaxation (the "SHOR" bound of Chen, Lasserre, Magron & Pauwels, "Semialgebraic optimization
for Lipschitz constants of ReLU networks", NeurIPS 2020), proven by an eigenvalue.

For ``f = C phi(W x + b) + c`` with ``phi`` ReLU or LeakyReLU (slope ``alpha`` below zero),
every Jacobian row is ``J_k = (c_k * (alpha + (1 - alpha) z))^T W`` for a pattern ``z`` in
``{0, 1}^m``, so

    ||f||_{inf -> inf} <= max_k max_{s in {-1, 1}^n, z in {0, 1}^m} s^T (a_k + U_k z),

``a_k = alpha W^T c_k``, ``U_k = (1 - alpha) W^T diag(c_k)`` (equality when every pattern is
realized: ``W`` of full row rank). With ``z = (1 + y) / 2`` and a sign ``x_0`` for the linear
term, this is ``max x^T M x`` over ``x = (x_0, s, y)`` in ``{-1, 1}^N`` (``N = 1 + n + m``)
for a symmetric ``M`` with blocks ``M_{0 s} = (a + U 1 / 2) / 2`` and ``M_{s y} = U / 4``. For
every vector ``d``, ``x^T M x = x^T (M - diag d) x + sum d <= N lambda_max(M - diag d) + sum d``
(``||x||^2 = N``): an upper bound whatever ``d`` is; minimizing it over ``d`` (L-BFGS on
a smoothed version of this convex function, see :func:`row_bound`) approaches Shor's
relaxation, the dual of the SDP ``max <M, X>, X >= 0, diag X = 1``. Without any solver's
word: the final ``d``'s bound is recomputed with a dense symmetric eigensolver, and
``lambda_max`` is raised by ``4 N eps ||M - diag d||_F`` (the backward error of a stable
symmetric eigensolver) before use.

Rows are bounded in decreasing order of their interval bound; once one row is converged, the
next ones stop as soon as their bound falls below the largest so far (they cannot change the
maximum). Stopped by the time limit (default :data:`DEFAULT_TIME_LIMIT`), the bound of the
best ``d`` so far is still an upper bound (status ``"ok: time limit reached"``). It beats the
product of induced norms and the LP relaxation (``lp-jacobian``, the MIP's root bound) on the
LipSDP MNIST network (BENCHMARKS.md). One hidden layer only:
deeper networks have products of patterns (a polynomial of higher degree, Chen et al.'s
higher levels), not done. (The products forming ``M`` carry float64 rounding, not added.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import scipy.optimize

from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.engine.gates import piecewise_linear_chain
from lipkit.estimate.network import Activation, Affine, Network, NotApplicableError
from lipkit.estimate.registry import MethodOptions, Options, register_method

DEFAULT_ITERATIONS = 300
DEFAULT_TIME_LIMIT = 120.0  # seconds (Options.time_limit overrides); the bound stays valid
MAX_SIZE = 2000  # N = 1 + inputs + hidden units beyond which the eigenproblems are too slow


def shor_matrix(linear: np.ndarray, bilinear: np.ndarray) -> np.ndarray:
    """``M`` with ``x^T M x = x_0 s^T (a + U 1 / 2) + s^T U y / 2`` for ``x = (x_0, s, y)``:
    ``max x^T M x`` over sign vectors is ``max s^T (a + U z)`` over signs ``s`` and
    ``z in {0, 1}^m``. ``linear``: ``a`` (n,); ``bilinear``: ``U`` (n, m)."""
    n, m = bilinear.shape
    matrix = np.zeros((1 + n + m, 1 + n + m))
    offset = (linear + bilinear.sum(axis=1) / 2) / 2
    matrix[1 : 1 + n, 0] = matrix[0, 1 : 1 + n] = offset
    matrix[1 : 1 + n, 1 + n :] = bilinear / 4
    matrix[1 + n :, 1 : 1 + n] = bilinear.T / 4
    return matrix


def certified_bound(matrix: np.ndarray, shift: np.ndarray) -> float:
    """``N lambda_max(M - diag d) + sum d``, the eigenvalue raised by a bound on the dense
    eigensolver's error (so the result bounds the true one from above)."""
    shifted = matrix - np.diag(shift)
    size = len(shift)
    top = float(np.linalg.eigvalsh(shifted)[-1])
    error = 4 * size * np.finfo(float).eps * float(np.linalg.norm(shifted))
    total = math.fsum(shift)
    return size * (top + error) + total + 4 * size * np.finfo(float).eps * math.fsum(np.abs(shift))


SMOOTHING = (0.3, 0.1, 0.03, 0.01, 0.003)  # stages: the smoothing's bias, relative to scale


def row_bound(matrix: np.ndarray, scale: float, iterations: int,
              stop_below: float = -math.inf, deadline: float = math.inf) -> tuple[float, int]:
    """Minimize ``N lambda_max(M - diag d) + sum d`` over ``d``; returns the certified bound
    at the best ``d`` found and the iterations used.

    ``lambda_max`` is not smooth where the top eigenvalue is multiple, as it is near the
    optimum; L-BFGS-B minimizes instead its smooth upper bound
    ``mu log sum_i exp(lambda_i / mu)`` (exact gradient from the dense eigendecomposition)
    in stages of decreasing ``mu``, each warm-started from the last; the bias
    ``N mu log N`` of a stage is :data:`SMOOTHING` times ``scale`` (the row's interval
    bound). Stops early once a value falls below ``stop_below`` or at the deadline;
    ``iterations`` is split between the stages.
    """
    size = matrix.shape[0]
    shift, used = np.zeros(size), 0

    class _StopSearchError(Exception):
        pass

    for stage in SMOOTHING:
        mu = stage * scale / (size * math.log(size))

        def value(d, mu=mu):
            eigenvalues, vectors = np.linalg.eigh(matrix - np.diag(d))
            top = eigenvalues[-1]
            weights = np.exp((eigenvalues - top) / mu)
            total = weights.sum()
            smooth = size * (top + mu * math.log(total)) + d.sum()
            return smooth, 1.0 - size * ((vectors**2) @ weights) / total

        def callback(d):
            nonlocal shift, used
            shift, used = d.copy(), used + 1
            if value(d)[0] < stop_below or time.perf_counter() > deadline:
                raise _StopSearchError

        try:
            result = scipy.optimize.minimize(
                value, shift, jac=True, method="L-BFGS-B", callback=callback,
                options={"maxiter": max(1, iterations // len(SMOOTHING))})
            shift = result.x
        except _StopSearchError:
            break
    return certified_bound(matrix, shift), used


def _one_hidden_layer(network: Network):
    """``(W, alpha, C)`` of a one-hidden-layer ReLU / LeakyReLU chain, else NotApplicable."""
    if not network.is_chain():
        raise NotApplicableError("the network has residual joins (not a chain)")
    activations = [node.op for node in network.nodes if isinstance(node.op, Activation)]
    if len(activations) != 1 or activations[0].kind not in ("relu", "leaky_relu"):
        raise NotApplicableError("Shor's relaxation is encoded for one hidden ReLU / LeakyReLU "
                                 "layer only (deeper nets need higher-degree relaxations)")
    layers, (output, _) = piecewise_linear_chain(network)
    (layer,) = layers
    alpha = float(layer.keep[0, 0]) if layer.keep.size else 0.0
    return layer.weight, alpha, output


def _fits(network: Network) -> str | None:
    if not network.is_chain():
        return "the network has residual joins (not a chain)"
    activations = [node.op for node in network.nodes if isinstance(node.op, Activation)]
    if len(activations) != 1 or activations[0].kind not in ("relu", "leaky_relu"):
        return "one hidden ReLU / LeakyReLU layer only"
    hidden = next(node.op.operator.out_features for node in network.nodes
                  if isinstance(node.op, Affine))
    size = 1 + network.in_features + hidden
    if size > MAX_SIZE:
        return f"an eigenproblem of size {size} per output (more than {MAX_SIZE})"
    return None


@dataclass(frozen=True)
class ShorOptions(MethodOptions):
    """Options of ``shor``."""

    #: seconds at most (None: the run's share, else 120 s); the bound stays valid
    time_limit: float | None = None
    #: L-BFGS iterations per smoothing stage
    iterations: int = DEFAULT_ITERATIONS


@register_method("shor", kind="upper", norms=("inf",), fits=_fits, options=ShorOptions)
def shor(network: Network, options: Options) -> Bound:
    """l-inf upper bound of a one-hidden-layer ReLU net by Shor's SDP relaxation (Chen et al.
    2020), certified by an eigenvalue."""
    started = time.perf_counter()
    if norm_name(options.norm) != "inf":
        raise NotApplicableError("encoded for the l-infinity norm")
    weight, alpha, output = _one_hidden_layer(network)
    own = options.own(ShorOptions)
    iterations = own.iterations
    limit = options.limit(own.time_limit, DEFAULT_TIME_LIMIT)
    deadline = started + float(limit)
    # interval bound of each row: sum_j max over z of |s_j-th entry|, z per unit independently
    low = weight.T @ (output * alpha).T  # (n, k): z = 0
    positive = np.clip(weight.T[:, :, None] * ((1 - alpha) * output.T)[None, :, :], 0, None)
    negative = np.clip(weight.T[:, :, None] * ((1 - alpha) * output.T)[None, :, :], None, 0)
    interval = np.maximum(np.abs(low + positive.sum(axis=1)),
                          np.abs(low + negative.sum(axis=1))).sum(axis=0)
    order = np.argsort(-interval)
    bounds = np.full(output.shape[0], math.nan)
    steps = []
    largest = -math.inf
    for rank, k in enumerate(order):
        if interval[k] <= largest:  # the interval bound already settles this row
            bounds[k] = interval[k]
            steps.append(0)
            continue
        if options.progress is not None:
            options.progress(f"shor: output {rank + 1}/{len(order)}")
        matrix = shor_matrix(alpha * (weight.T @ output[k]),
                             (1 - alpha) * weight.T * output[k][None, :])
        value, count = row_bound(matrix, float(interval[k]), iterations,
                                 largest if rank else -math.inf, deadline)
        bounds[k] = min(value, interval[k])
        steps.append(count)
        largest = max(largest, bounds[k])
    seconds = time.perf_counter() - started
    details = {"rows": bounds.tolist(), "interval_rows": interval.tolist(),
               "iterations": steps, "timed_out": time.perf_counter() > deadline}
    status = "ok: time limit reached" if details["timed_out"] else "ok"
    return Bound(float(bounds.max()), "upper", "inf", "shor", seconds, status, details)
