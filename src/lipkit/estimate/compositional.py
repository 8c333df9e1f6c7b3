"""A fast compositional l2 upper bound: LipSDP-Neuron's LMI eliminated layer by layer, with
per-neuron multipliers tuned by gradient steps (in the spirit of ECLipsE-Fast, Xu &
Sivaranjani, NeurIPS 2024, which fixes one multiplier per layer in closed form).

For a chain ``f = W_l phi(W_{l-1} ... phi(W_0 x))`` with activation slopes in
``[alpha_k, beta_k]`` and differences ``dx_k`` of the hidden layers' outputs between two
inputs (``dx_0`` the input's, ``dv = W_k dx_k``, ``dphi = dx_{k+1}``), every neuron satisfies
``(dphi_i - alpha dv_i)(beta dv_i - dphi_i) >= 0``, so for ``T_k = diag(t) >= 0``

    QC_k = -alpha beta dv^T T dv + (alpha + beta) dphi^T T dv - dphi^T T dphi >= 0.

**Theorem (the induction).** Let ``X_0 = I`` and, for each hidden layer, ``X_{k+1}`` be any
symmetric matrix with

    G_k = [[X_k + alpha beta W_k^T T W_k,  -c W_k^T T],
           [-c T W_k,                        T - X_{k+1}]]  >= 0,   c = (alpha + beta) / 2.

Then ``[dx; dphi]^T G_k [dx; dphi] = dx^T X_k dx - dphi^T X_{k+1} dphi - QC_k >= 0``, so
``dx_k^T X_k dx_k >= dx_{k+1}^T X_{k+1} dx_{k+1}`` and by induction
``|dx_0|^2 >= dx_{l}^T X_l dx_l``. If finally ``rho X_l - W_l^T W_l >= 0`` then
``|f(x) - f(y)|^2 = |W_l dx_l|^2 <= rho dx_l^T X_l dx_l <= rho |x - y|^2``: ``||f||_L <=
sqrt(rho)``. (Biases cancel in the differences.) The Schur complement of ``G_k`` gives the
largest admissible ``X_{k+1} = T - c^2 T W_k X'^{-1} W_k^T T``, ``X' = X_k + alpha beta W_k^T
T W_k``, and the smallest ``rho = lambda_max(W_l X_l^{-1} W_l^T)``: one Cholesky
factorization per layer, never the whole ``(n_0 + n)``-row LMI.

**The multipliers.** ECLipsE-Fast takes ``T_k = lambda_k I`` with ``lambda_k = 1 / (2 c^2
lambda_max(W_k X_k^{-1} W_k^T))``, the scalar that maximizes ``lambda_min(X_{k+1})``; lipkit
starts from exactly those multipliers (so it starts from ECLipsE-Fast's value for ReLU
networks, ``alpha beta = 0``), then takes Adam steps on the per-neuron
log-multipliers ``log t`` to minimize ``log rho`` (differentiating through the Cholesky
factorizations; a step that leaves some ``X_k`` indefinite is undone and the step size
halved), and keeps the best. ``{T : rho(T) <= r}`` is convex (an LMI), so ``rho`` is
quasi-convex in ``T`` and the descent heads for LipSDP-Neuron's value; every ``T`` gives a
valid bound, so stopping early is sound.

**Soundness in floating point.** The final multipliers are replayed in float64: each stored
``X_{k+1}`` is the computed Schur complement lowered by ``delta I`` (``delta`` a 1e-8 relative
margin, grown tenfold when needed), and ``G_k`` — formed from the stored matrices — is proven
positive definite by a floating-point Cholesky factorization with Rump's shift covering the
rounding of forming ``G_k`` (:func:`lipkit.estimate.lipsdp.prove_negative_definite`); ``rho``
is inflated until ``rho X_l - W_l^T W_l`` is proven the same way. Only then is the value an
``"upper"`` bound; otherwise the record is an ``"estimate"`` saying which layer failed.
A linear activation (``alpha = beta``, ``nn.Identity``) is treated like any other: the
bound approaches the linear map's as its multipliers grow, but is not exact (e.g. 0.523 for
a true 0.480 after 20 steps). The layers come from :meth:`Network.chain`, whose products of
consecutive affine maps carry float64 rounding (relative ~1e-15) that is not added.

Options (:class:`CompositionalOptions`): ``steps`` (default 30), ``learning_rate`` (default
0.2), ``tuning_time_ratio`` (default 1: the tuning may take as long as the ECLipsE-Fast pass
that starts it; with the proof, the whole method then takes about as long as eclipse-nn's
ECLipsE-Fast, which spends its time in a general eigendecomposition: BENCHMARKS.md),
``least_steps`` (default 2).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg
import torch

from lipkit.estimate.bound import Bound
from lipkit.estimate.engine.chain import few_threads
from lipkit.estimate.lipsdp import prove_negative_definite
from lipkit.estimate.network import DTYPE, Network, dense_chain
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.rounding import gamma as _gamma

_MAX_ENTRIES = 16_000_000  # a layer's dense entries worth materializing
_MAX_WIDTH = 4096  # hidden neurons: X_k is a dense (n_k x n_k) matrix
_MARGIN = 1e-8  # relative lowering of each X_{k+1} before its proof


class Uncertified(Exception):  # noqa: N818 - a result, not an error of the caller
    """The multipliers could not be turned into a proven bound (the message says why)."""


def _fits(network: Network) -> str | None:
    layers, reason = dense_chain(network, _MAX_ENTRIES)
    if reason is not None:
        return reason
    for index, layer in enumerate(layers[:-1]):
        if layer.weight.shape[0] > _MAX_WIDTH:
            return (f"hidden layer {index + 1} has {layer.weight.shape[0]} neurons: the "
                    f"recursion keeps a dense matrix per hidden layer (at most {_MAX_WIDTH})")
    return None


def _chain(network: Network) -> tuple[list[torch.Tensor], list[tuple[float, float]]]:
    layers = network.chain()
    return ([layer.weight.to(DTYPE) for layer in layers],
            [tuple(layer.activation.slope) for layer in layers[:-1]])


def _next_x(x: torch.Tensor | None, weight: torch.Tensor, t: torch.Tensor, slope,
            gram: torch.Tensor | None = None) -> torch.Tensor | None:
    """``T - c^2 T W X'^{-1} W^T T`` (None when ``X'`` is not positive definite); ``x=None``
    stands for the identity, with ``gram = W W^T`` given."""
    alpha, beta = slope
    c = (alpha + beta) / 2
    if x is None and alpha * beta == 0:
        return torch.diag(t) - c * c * (t[:, None] * gram * t[None, :])
    if x is None:
        x = torch.eye(weight.shape[1], dtype=weight.dtype)
    if alpha * beta != 0:
        x = x + alpha * beta * (weight.T * t) @ weight
    factor, info = torch.linalg.cholesky_ex(x)
    if int(info) != 0:
        return None
    solved = torch.linalg.solve_triangular(factor, weight.T * t, upper=False)
    return torch.diag(t) - c * c * (solved.T @ solved)


def _final_rho(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor | None:
    factor, info = torch.linalg.cholesky_ex(x)
    if int(info) != 0:
        return None
    solved = torch.linalg.solve_triangular(factor, weight.T, upper=False)
    gram = solved.T @ solved if solved.shape[1] <= solved.shape[0] else solved @ solved.T
    return torch.linalg.eigvalsh(gram)[-1]


def _rho(weights, slopes, log_t, gram) -> torch.Tensor | None:
    """``rho`` of the recursion for multipliers ``exp(log_t)`` (None: some X_k indefinite);
    ``gram = W_0 W_0^T``."""
    if not log_t:
        return torch.linalg.eigvalsh(gram)[-1]
    x = None
    for weight, slope, log in zip(weights[:-1], slopes, log_t, strict=True):
        x = _next_x(x, weight, log.exp(), slope, gram)
        if x is None:
            return None
    return _final_rho(x, weights[-1])


def eclipse_fast_multipliers(weights, slopes, gram) -> tuple[list[torch.Tensor], float]:
    """ECLipsE-Fast's log-multipliers ``log lambda_k``, ``lambda_k = 1 / (2 c^2
    lambda_max(W_k X_k^{-1} W_k^T))`` (halved until ``X'`` stays positive definite when
    ``alpha beta != 0``), and their (unproven) ``rho``."""
    x = None
    multipliers = []
    for weight, (alpha, beta) in zip(weights[:-1], slopes, strict=True):
        c = (alpha + beta) / 2
        if x is None:
            coupling = gram
        else:
            solved = torch.linalg.solve_triangular(torch.linalg.cholesky(x), weight.T,
                                                   upper=False)
            coupling = solved.T @ solved  # W X^{-1} W^T
        largest = float(torch.linalg.eigvalsh(coupling)[-1])
        scale = 1.0 / (2 * c * c * largest) if largest > 0 and c != 0 else 1.0
        for _ in range(60):
            t = torch.full((weight.shape[0],), scale, dtype=weight.dtype)
            if alpha * beta == 0:  # lambda_min(X_{k+1}) = lambda / 2 > 0
                following = torch.diag(t) - c * c * scale * scale * coupling
                break
            following = _next_x(x, weight, t, (alpha, beta), gram)
            if following is not None and int(torch.linalg.cholesky_ex(following)[1]) == 0:
                break
            scale /= 2
        else:
            raise Uncertified("no multiplier keeps the recursion positive definite")
        multipliers.append(t.log())
        x = following
    if x is None:
        return multipliers, float(torch.linalg.eigvalsh(gram)[-1])
    rho = _final_rho(x, weights[-1])
    if rho is None:
        raise Uncertified("ECLipsE-Fast's last X is not positive definite")
    return multipliers, float(rho)


def tune_multipliers(weights, slopes, gram, log_t, start: float, steps: int,
                     learning_rate: float, deadline: float | None = None, least_steps: int = 0):
    """Adam steps on the log-multipliers minimizing ``log rho`` (in float32: only the final
    multipliers matter, and :func:`certify` proves them in float64); returns the best found,
    its ``rho`` and the number of steps taken (``start``: the ``rho`` of ``log_t``). Stops
    after ``steps`` steps, or at ``deadline`` once ``least_steps`` were taken."""
    weights = [w.float() for w in weights]
    gram = gram.float()
    best_value, best = start, [log.detach().clone() for log in log_t]
    log_t = [log.float().clone().requires_grad_(True) for log in log_t]
    if not log_t or steps == 0:
        return best, best_value, 0
    # Adam (Kingma & Ba, 2015) written out: torch.optim's first step imports torch._dynamo,
    # seconds of start-up for a method meant to take milliseconds
    first = [torch.zeros_like(log) for log in log_t]
    second = [torch.zeros_like(log) for log in log_t]
    rate, taken = learning_rate, 0
    for _ in range(steps):
        if deadline is not None and taken >= least_steps and time.perf_counter() > deadline:
            break
        rho = _rho(weights, slopes, log_t, gram)
        taken += 1
        if rho is None or not torch.isfinite(rho):
            with torch.no_grad():  # undo: back to the best point, smaller steps
                for log, kept in zip(log_t, best, strict=True):
                    log.copy_(kept)
            rate /= 2
            continue
        if float(rho.detach()) < best_value:
            best_value, best = float(rho.detach()), [log.detach().double() for log in log_t]
        gradients = torch.autograd.grad(rho.log(), log_t)
        with torch.no_grad():
            for log, gradient, m, v in zip(log_t, gradients, first, second, strict=True):
                m.mul_(0.9).add_(gradient, alpha=0.1)
                v.mul_(0.999).addcmul_(gradient, gradient, value=0.001)
                corrected = (m / (1 - 0.9**taken)) / ((v / (1 - 0.999**taken)).sqrt() + 1e-8)
                log.sub_(rate * corrected)
    with torch.no_grad():  # the last step's point is evaluated too
        rho = _rho(weights, slopes, log_t, gram)
    if rho is not None and torch.isfinite(rho) and float(rho) < best_value:
        best_value, best = float(rho), [log.detach().double() for log in log_t]
    return best, best_value, taken


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    """The matrix with its lower triangle replaced by the upper one's mirror (exactly
    symmetric: the proofs are about the matrix stored)."""
    upper = np.triu(matrix)
    upper += np.triu(matrix, 1).T
    return upper


def _prove_positive(matrix: np.ndarray, absolute: np.ndarray, depth: int) -> bool:
    """Whether the exact matrix of which ``matrix`` is the floating-point value (each entry
    within ``gamma_depth`` times ``absolute``) is positive definite."""
    error = _gamma(depth) * (1 + 1e-6) * float(np.linalg.norm(absolute))
    return prove_negative_definite(-matrix, error)


def _prove_step(x, weight, t, slope, schur) -> np.ndarray:
    """A stored ``X_{k+1}`` (``schur`` lowered) with ``G_k`` proven positive semidefinite;
    ``x=None`` stands for the identity (then ``G_k >= 0`` iff its exact Schur complement is,
    which is proven instead: ``n_{k+1}`` rows instead of ``n_k + n_{k+1}``)."""
    alpha, beta = slope
    c = (alpha + beta) / 2
    n_out = weight.shape[0]
    scaled = weight.T * t  # W^T T
    identity = x is None and alpha * beta == 0
    if not identity:
        x = np.eye(weight.shape[1]) if x is None else x
        top = _symmetric(x + alpha * beta * (scaled @ weight)) if alpha * beta != 0 else x
        top_absolute = np.abs(x) + abs(alpha * beta) * (np.abs(scaled) @ np.abs(weight))
    else:  # S = T - X_{k+1} - c^2 (T W)(T W)^T, each entry within gamma_{n_k + 4}
        outer = scaled.T @ scaled
        outer_absolute = np.abs(scaled).T @ np.abs(scaled)
    margin = _MARGIN * max(float(np.abs(np.diag(schur)).max()), float(t.max()))
    for _ in range(8):
        candidate = schur.copy()
        candidate[np.diag_indices(n_out)] -= margin
        if identity:
            lowered = np.diag(t) - candidate
            proven = _prove_positive(lowered - c * c * outer,
                                     np.abs(lowered) + c * c * outer_absolute,
                                     weight.shape[1] + 8)
        else:
            n_in = weight.shape[1]
            block = np.empty((n_in + n_out, n_in + n_out))
            block[:n_in, :n_in] = top
            block[:n_in, n_in:] = -c * scaled
            block[n_in:, :n_in] = -c * scaled.T
            block[n_in:, n_in:] = np.diag(t) - candidate
            absolute = np.abs(block)
            absolute[:n_in, :n_in] = top_absolute
            proven = _prove_positive(block, absolute, n_in + 8)
        if proven:
            return candidate
        margin *= 10
    raise Uncertified("the step's LMI could not be proven")


def certify(weights, slopes, log_t) -> tuple[float, float]:
    """Replay the recursion in float64 with proofs (module docstring); returns the proven
    ``rho`` and the unproven one it inflates. Raises Uncertified."""
    weights = [w.detach().numpy() for w in weights]
    x = None
    for index, (weight, (alpha, beta), log) in enumerate(
            zip(weights[:-1], slopes, log_t, strict=True)):
        t = np.exp(log.detach().numpy())
        c = (alpha + beta) / 2
        scaled = weight.T * t
        if x is None and alpha * beta == 0:
            solved = c * scaled
        else:
            top = np.eye(weight.shape[1]) if x is None else x
            if alpha * beta != 0:
                top = _symmetric(top + alpha * beta * (scaled @ weight))
            solved = scipy.linalg.solve_triangular(np.linalg.cholesky(top), c * scaled,
                                                   lower=True)
        schur = _symmetric(np.diag(t) - solved.T @ solved)
        try:
            x = _prove_step(x, weight, t, (alpha, beta), schur)
        except Uncertified as error:
            raise Uncertified(f"hidden layer {index + 1}: {error}") from None
    last = weights[-1]
    if x is None:
        x = np.eye(last.shape[1])
    gram = last.T @ last
    solved = scipy.linalg.solve_triangular(np.linalg.cholesky(x), last.T, lower=True)
    small = solved.T @ solved if solved.shape[1] <= solved.shape[0] else solved @ solved.T
    rho = float(np.linalg.eigvalsh(small)[-1])
    absolute_gram = np.abs(last).T @ np.abs(last)
    step = 1e-10 * rho + 1e-300
    for _ in range(30):
        candidate = rho + step
        if _prove_positive(candidate * x - gram, candidate * np.abs(x) + absolute_gram,
                           last.shape[0] + 8):
            return candidate, rho
        step *= 10
    raise Uncertified("rho X - W^T W could not be proven positive definite")


def compositional_bound(network: Network, steps: int = 30, learning_rate: float = 0.2,
                        tuning_time_ratio: float = 1.0, least_steps: int = 2,
                        time_limit: float | None = None) -> Bound:
    """The proven bound of the module docstring for ``network`` (a chain).

    The tuning stops after ``steps`` Adam steps, or once ``least_steps`` were taken and it
    has run ``tuning_time_ratio`` times as long as the ECLipsE-Fast pass that starts it (or
    past ``time_limit`` seconds in all).
    """
    started = time.perf_counter()
    weights, slopes = _chain(network)
    details = {"layers": len(weights)}
    try:
        with few_threads(max(w.shape[0] for w in weights)):
            rho, raw, start_rho, taken = _tuned(weights, slopes, started, tuning_time_ratio,
                                                steps, learning_rate, least_steps, time_limit)
    except (Uncertified, np.linalg.LinAlgError, torch.linalg.LinAlgError) as error:
        return Bound(math.nan, "upper", "2", "compositional", time.perf_counter() - started,
                     f"uncertified: {error}", details)
    details.update(eclipse_fast=math.sqrt(float(start_rho)), steps=taken,
                   unproven=math.sqrt(raw), inflation=rho / raw - 1 if raw > 0 else 0.0)
    value = float(np.nextafter(math.sqrt(rho), math.inf))
    return Bound(value, "upper", "2", "compositional", time.perf_counter() - started,
                 details=details)


def _tuned(weights, slopes, started, tuning_time_ratio, steps, learning_rate, least_steps,
           time_limit):
    """ECLipsE-Fast's start, the tuning, the proof: ``(rho, unproven rho, start rho, steps)``."""
    gram = weights[0] @ weights[0].T
    start, start_rho = eclipse_fast_multipliers(weights, slopes, gram)
    deadline = time.perf_counter() + tuning_time_ratio * (time.perf_counter() - started)
    if time_limit is not None:
        deadline = min(deadline, started + time_limit)
    best, _, taken = tune_multipliers(weights, slopes, gram, start, start_rho, steps,
                                      learning_rate, deadline, least_steps)
    rho, raw = certify(weights, slopes, best)
    return rho, raw, start_rho, taken


@dataclass(frozen=True)
class CompositionalOptions(MethodOptions):
    """Options of ``compositional``."""

    #: Adam steps on the log-multipliers at most
    steps: int = field(default=30, metadata={"minimum": 0})
    #: Adam's step size on the log-multipliers
    learning_rate: float = 0.2
    #: the tuning's time as a multiple of the ECLipsE-Fast pass that starts it (inf: only
    #: ``steps`` and the time limit stop it)
    tuning_time_ratio: float = field(default=1.0, metadata={"minimum": 0.0, "infinite": True})
    #: steps taken before the time ratio may stop the tuning
    least_steps: int = field(default=2, metadata={"minimum": 0})


@register_method("compositional", kind="upper", norms=("2",), fits=_fits, cost="cheap",
                 options=CompositionalOptions)
def compositional(network: Network, options: Options | None = None) -> Bound:
    """Layer-by-layer LipSDP-Neuron with tuned per-neuron multipliers (beats ECLipsE-Fast)."""
    options = options or Options()
    own = options.own(CompositionalOptions)
    return compositional_bound(network, own.steps, own.learning_rate, own.tuning_time_ratio,
                               own.least_steps, options.time_limit)
