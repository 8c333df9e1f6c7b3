"""LipSDP (Fazlyab, Robey, Hassani, Morari & Pappas, NeurIPS 2019): l2 upper bounds on the
Lipschitz constant of a chain of slope-restricted activations, by semidefinite programming.

The chain ``f(x) = W_l phi(W_{l-1} ... phi(W_0 x + b_0) ... + b_{l-1}) + b_l`` has hidden
layers ``x_{k+1} = phi(W_k x_k + b_k)`` (``k < l``, ``n_{k+1}`` neurons) whose activations
are slope-restricted, ``alpha_k <= (phi(a) - phi(b)) / (a - b) <= beta_k``. For the
differences ``dv = W_k dx_k`` of pre-activations and ``dphi = dx_{k+1}`` of activations
between two inputs, every valid multiplier ``T_k`` gives the quadratic constraint

    QC_k:  [dv; dphi]^T [[-2 a b T_k, (a + b) T_k], [(a + b) T_k, -2 T_k]] [dv; dphi] >= 0

(for diagonal ``T_k = diag(lambda) >= 0`` it is ``sum_i 2 lambda_i (dphi_i - a dv_i)
(b dv_i - dphi_i) >= 0``, true neuron by neuron). Theorem 2 of the paper: on the stacked
differences ``z = (dx_0, dx_1, ..., dx_l)``, the symmetric matrix ``M(rho, T)`` of the
quadratic form ``|W_l dx_l|^2 - rho |dx_0|^2 + sum_k QC_k`` satisfies

    M(rho, T) <= 0  (negative semidefinite)  ==>  ||f(x) - f(y)||_2 <= sqrt(rho) ||x - y||_2,

since ``|df|^2 - rho |dx|^2 <= -sum_k QC_k <= 0``. Biases cancel. The formulations differ in
the multipliers ``T = blkdiag(T_1, ..., T_l)``:

- ``lipsdp-layer``: ``T_k = lambda_k I`` (one multiplier per hidden layer);
- ``lipsdp-neuron``: ``T_k = diag(lambda)``, ``lambda >= 0`` (one per hidden neuron);
- ``lipsdp-network``: ``T_k = diag(lambda) + sum_{i<j} zeta_ij (e_i - e_j)(e_i - e_j)^T``,
  ``zeta >= 0``, over every pair of neurons of a layer (the reference code couples pairs
  across layers too);
- ``lipsdp-network-rand``: the same with a seeded random subset of the pairs
  (the option ``couplings`` of them in all, default 5, as in the paper's experiments).

**The couplings of LipSDP-Network are not valid quadratic constraints.** A pair term is
``(db - a da)(b da - db) >= 0`` with ``da = dv_i - dv_j``, ``db = dphi_i - dphi_j``: it
bounds the slope of ``phi`` between two *different* neurons' changes, which slope restriction
does not. Counterexample: ``f(x) = relu(x) - relu(x - 1)`` has ``f(1) - f(0) = 1``; its two
neurons always have ``da = 0``, so the coupling forces ``db = 0`` and LipSDP-Network
"certifies" a constant ``~0``. On random 2-D-input networks lipkit's tests find its value
below the brute-force constant in many cases (later work on quadratic constraints for
repeated ReLU revisits which couplings are valid: Noori, Hu, Dullerud & Seiler, 2024,
arXiv:2407.06888). The two network formulations are therefore solved and shown, but reported
as estimates, never as upper bounds.

**Exact reductions used to solve** (none changes the optimal value):

- *linear activations* (``alpha = beta``, e.g. the identity) are multiplied into their
  neighbours (their constraint pins ``dphi = alpha dv``; the SDP optimum would lie at
  ``lambda -> infinity``); the rounding error of the products is added to the bound;
- *input space*: with ``W_0 = U S V^T`` (thin SVD, rank ``r``), the orthogonal change of
  coordinates ``dx_0 = [V N] (r, s)`` (``N`` spanning the null space of ``W_0``) is a
  congruence of ``M``, and the ``s`` block decouples as ``-rho I`` (``W_0 N = 0``): ``M <= 0``
  iff the LMI with ``W_0`` replaced by ``U S`` (``n_1 x r``) holds. ``r + n`` rows instead of
  ``n_0 + n``, ``r <= n_1``;
- *scaling*: the optimal value is homogeneous in each ``W_k`` (the congruence
  ``dx_k -> s_k dx_k`` maps ``T_k`` to ``s_{k+1}^2 T_k``), so each weight is divided by its
  spectral norm before solving (the solver's conditioning) and the multipliers mapped back;
- *one hidden layer* (layer / neuron): with ``E = T^{-1}`` and ``sigma = 1 / rho``, the Schur
  complements of the input block and of the output term and the congruence ``blkdiag(E, I)``
  turn ``M <= 0`` into ``[[-2E, E F^T], [F E, -I]] + sigma K K^T <= 0``, linear in
  ``(sigma, E)``, with ``F^T F = W_1^T W_1`` (``rank(W_1)`` rows) and
  ``K = [(b - a) W_0; a F W_0]``: ``n_1 + rank(W_1)`` rows, used when smaller than
  ``rank(W_0) + n_1``. For the MNIST 784-50-10 network: a 60-row LMI instead of 834 rows.

The default solver is Clarabel (interior point, exact to 1e-8) for LMIs up to 32 rows and SCS
(first order, tolerance 1e-5) beyond: Clarabel factors a dense matrix of side ``~rows^2 / 2``
at every step (the 60-row MNIST LMI: 3.4 s on two idle cores, to 24.36635), SCS one
eigendecomposition of the LMI per iteration (0.9 s, certified 24.36673). LipSDP-Layer and
LipSDP-Neuron beyond 128 rows (``solver="eigenvalue"`` to ask for it anywhere) are solved
without a conic solver, in their eigenvalue form (:mod:`lipkit.estimate.lipsdp_eigenvalue`:
L-BFGS on a smoothed largest eigenvalue of the eliminated LMI, warm-started from ECLipsE-Fast,
with a dual feasible point's lower bound on the optimum, ``details["sdp_lower"]``): a
784-256-10 network trained on digits in 4 s to within 1e-4 of the SDP's optimum, where SCS
took 418 s for a looser value, 784-256-256-10 in 10 s where SCS stopped at 600 s above
compositional's value (two busy cores: BENCHMARKS.md, "LipSDP-Neuron at MNIST scale"). Every
solver gets the time limit (what is left of it after cvxpy built the problem; the eigenvalue
form 80 % of it, the proof follows); its last point is proven like any other.

**Soundness: the proof is for the original network's LMI.** The reductions only produce
multipliers ``T``; the bound is proven for those ``T`` on the full ``(n_0 + n)``-row
``M(rho, T)`` built from the caller's weights, so the reductions' own rounding never enters
it. lipkit clips ``lambda, zeta >= 0`` (valid multipliers), computes in float64 the smallest
``rho`` for that ``T`` from the Schur complement of the hidden block ``R``
(``R`` negative definite, ``rho = lambda_max(P - Q R^{-1} Q^T)``), inflates it, and proves
``-M(rho, T)`` positive definite by a floating-point Cholesky factorization of
``-M - c I`` whose shift ``c`` covers the rounding errors of forming ``M`` (``gamma_K`` times
the matrix of absolute values) and of the factorization (Rump, "Verification of positive
definiteness", BIT 2006). Solvers stop at a tolerance, so when the proof fails lipkit retries
with the multipliers scaled up slightly (which moves ``R`` below 0) or clipped to within a
factor of their median (better conditioned). Only a value so proven is an ``"upper"`` bound,
whatever the solver's status said; otherwise the bound is an ``"estimate"`` whose status says
what failed. ``details`` records the solver, its status and raw value, the certified value,
the relative inflation, the seconds and the LMI sizes.

**Splitting.** The option ``split=k`` solves sub-networks of ``k`` weight matrices each and
multiplies their constants and the Lipschitz constants of the activations at the cuts (as
the reference implementation does); sub-networks with more hidden neurons than a formulation
solves in reasonable time (:data:`MAX_NEURONS`, or the option ``max_neurons``) are cut
further. :func:`split_chain` and :func:`lipsdp` expose both to other code. The sub-networks
are independent problems: the option ``workers=w`` solves them in ``w`` worker processes at
once (each with ``cpu_count // w`` BLAS threads, so the pool does not oversubscribe the
cores), with the same seeds and hence the same records as one after the other.

**Options** of the registered methods: the run's ``time_limit`` (passed to the solver),
``seed`` (the random pairs of ``lipsdp-network-rand``), ``progress``, and their own
(:class:`LipSDPOptions`; :class:`LipSDPNetworkRandOptions` adds ``couplings``, the number of
random pairs): ``time_limit``, ``split``, ``max_neurons``, ``workers``, ``solver``
(``"auto"``, ``"clarabel"``, ``"scs"``, ``"eigenvalue"``), ``tolerance`` (the solver's; the
eigenvalue form's relative distance to its dual bound).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.estimate.bound import Bound, norm_name
from lipkit.estimate.network import Affine, Layer, Network, NotApplicableError
from lipkit.estimate.registry import MethodOptions, Options, register_method
from lipkit.estimate.rounding import gamma

FORMULATIONS = ("layer", "neuron", "network", "network-rand")
# hidden neurons per sub-network each formulation solves in reasonable time (SCS costs an
# eigendecomposition of the LMI per iteration: 784-400-10 takes ~90 s on two busy cores);
# LipSDP-Network has a variable per pair of neurons
MAX_NEURONS = {"layer": 1000, "neuron": 1000, "network": 64, "network-rand": 1000}
_MAX_ENTRIES = 4_000_000  # a merged dense layer's entries worth materializing
_MAX_INPUT = 10_000  # input features (the proof factorizes the full (n_0 + n)-row LMI)
_CLARABEL_SIZE = 32  # LMI rows up to which the default solver is Clarabel, SCS beyond
_EIGENVALUE_SIZE = 128  # LMI rows beyond which LipSDP-Layer / Neuron use the eigenvalue form
_SCS_TOLERANCE = 1e-5
_UNIT_ROUNDOFF = 2.0**-53
_SMALLEST_SUBNORMAL = 2.0**-1074
_UNPROVEN = ("uncertified: LipSDP-Network's pairwise neuron couplings are not valid "
             "quadratic constraints for slope-restricted activations (see lipkit.estimate."
             "lipsdp); the value is not a proven bound")


class Uncertified(Exception):  # noqa: N818 - a result, not an error of the caller
    """A solver's multipliers could not be turned into a proven bound (the message says why)."""


# --------------------------------------------------------------------------------------
# the chain and its multipliers


@dataclass
class Chain:
    """``f(x) = W_l phi(... phi(W_0 x))`` in float64 NumPy (biases do not matter).

    ``slopes[k]`` is the slope range ``(alpha, beta)`` of the activation after
    ``weights[k]``. ``correction`` bounds how much the Lipschitz constant of the chain the
    caller gave can exceed this one's (rounding errors of merged linear layers).
    """

    weights: list[np.ndarray]
    slopes: list[tuple[float, float]]
    correction: float = 0.0

    @classmethod
    def from_layers(cls, layers: list[Layer]) -> Chain:
        """The chain of ``layers`` (the last one's activation ignored), with every hidden
        layer whose slope range is a single slope ``alpha = beta`` (a linear activation:
        ``phi(a) - phi(b) = alpha (a - b)``) multiplied into its neighbours.

        A merged ``W' = fl(alpha W_{k+1} W_k)`` differs from the exact product by ``E`` with
        ``|E| <= gamma_{n+2} |alpha| |W_{k+1}| |W_k|`` (errors of earlier merges carried
        along); biases do not enter the bound, so ``||f||_L <= ||f'||_L + sum_k L_before
        ||E_k|| L_after`` with naive constants of the other layers: ``correction``.
        """
        weights = [layers[0].weight.detach().cpu().double().numpy()]
        errors = [np.zeros_like(weights[0])]  # elementwise bounds on the merge errors
        slopes: list[tuple[float, float]] = []
        for layer, following in itertools.pairwise(layers):
            alpha, beta = (float(s) for s in layer.activation.slope)
            weight = following.weight.detach().cpu().double().numpy()
            if alpha == beta:
                inner = weights[-1].shape[0]
                errors[-1] = abs(alpha) * (_gamma(inner + 2) * (np.abs(weight) @ np.abs(
                    weights[-1])) + np.abs(weight) @ errors[-1])
                weights[-1] = alpha * (weight @ weights[-1])
            else:
                slopes.append((alpha, beta))
                weights.append(weight)
                errors.append(np.zeros_like(weight))
        chain = cls(weights, slopes)
        norms = [float(np.linalg.norm(w, 2)) for w in weights]
        gains = [max(abs(a), abs(b)) for a, b in slopes] + [1.0]
        for k, error in enumerate(errors):
            if np.any(error):
                others = math.prod(norms[:k] + norms[k + 1:]) * math.prod(gains)
                chain.correction += 2 * float(np.linalg.norm(error)) * others
        return chain

    @property
    def depth(self) -> int:
        """The number of hidden layers ``l``."""
        return len(self.weights) - 1

    @property
    def widths(self) -> list[int]:
        """``[n_0, n_1, ..., n_l]``: the input and hidden widths (the rows of ``M``)."""
        return [w.shape[1] for w in self.weights]


@dataclass
class Multipliers:
    """``T_k = diag(diagonal[k]) + sum_p coupling[k][p] (e_i - e_j)(e_i - e_j)^T``,
    ``(i, j) = pairs[k][p]``, one entry per hidden layer."""

    diagonal: list[np.ndarray]
    pairs: list[np.ndarray] = field(default_factory=list)
    coupling: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self):
        if not self.pairs:
            self.pairs = [np.zeros((0, 2), dtype=np.int64) for _ in self.diagonal]
            self.coupling = [np.zeros(0) for _ in self.diagonal]

    def projected(self) -> Multipliers:
        """The nearest valid multipliers: every ``lambda`` and ``zeta`` clipped at 0."""
        return Multipliers([np.maximum(d, 0.0) for d in self.diagonal], self.pairs,
                           [np.maximum(c, 0.0) for c in self.coupling])

    def scaled(self, factors) -> Multipliers:
        return Multipliers([d * f for d, f in zip(self.diagonal, factors, strict=True)],
                           self.pairs,
                           [c * f for c, f in zip(self.coupling, factors, strict=True)])

    def matrices(self) -> list[np.ndarray]:
        """The dense ``T_k``."""
        blocks = []
        for diagonal, pairs, coupling in zip(self.diagonal, self.pairs, self.coupling,
                                             strict=True):
            block = np.diag(diagonal.astype(np.float64))
            if len(coupling):
                i, j = pairs[:, 0], pairs[:, 1]
                np.add.at(block, (i, i), coupling)
                np.add.at(block, (j, j), coupling)
                np.add.at(block, (i, j), -coupling)
                np.add.at(block, (j, i), -coupling)
            blocks.append(block)
        return blocks


def lmi_matrix(chain: Chain, multipliers: Multipliers, rho: float = 0.0,
               absolute: bool = False) -> np.ndarray:
    """The full LMI matrix ``M(rho, T)`` of Theorem 2 on the rows ``(x_0, x_1, ..., x_l)``.

    ``absolute=True`` forms the same expression from absolute values (``|W|``, ``|T|``,
    ``|a b|``, ``rho``), the elementwise scale of the rounding errors of forming ``M``.
    """
    widths = chain.widths
    offsets = np.concatenate([[0], np.cumsum(widths)])
    size = int(offsets[-1])
    lift = np.abs if absolute else (lambda a: a)
    matrix = np.zeros((size, size))
    matrix[np.arange(widths[0]), np.arange(widths[0])] = rho if absolute else -rho
    for k, (weight, t_block) in enumerate(zip(chain.weights[:-1], multipliers.matrices(),
                                              strict=True)):
        alpha, beta = chain.slopes[k]
        weight, t_block = lift(weight), lift(t_block)
        here = slice(offsets[k], offsets[k + 1])
        after = slice(offsets[k + 1], offsets[k + 2])
        product = t_block @ weight  # T W
        if alpha * beta != 0:
            matrix[here, here] += lift(-2.0 * alpha * beta) * (weight.T @ product)
        matrix[here, after] += lift(alpha + beta) * product.T
        matrix[after, here] += lift(alpha + beta) * product
        matrix[after, after] += 2.0 * t_block if absolute else -2.0 * t_block
    last = lift(chain.weights[-1])
    tail = slice(offsets[-2], offsets[-1])
    matrix[tail, tail] += last.T @ last
    return matrix


# --------------------------------------------------------------------------------------
# certification


@dataclass
class Certificate:
    """``M(rho, T) <= 0`` proven in floating point for the stored multipliers."""

    rho: float
    value: float  # sqrt(rho), rounded up
    schur_rho: float  # the smallest rho for these multipliers, before inflation
    inflation: float  # rho / schur_rho - 1
    multipliers: Multipliers


_gamma = gamma  # rounding.py's one policy


def _rump_shift(diagonal: np.ndarray, error: float) -> float:
    """The diagonal shift whose successful Cholesky proves positive definiteness (below)."""
    size = diagonal.size
    gamma = _gamma(size + 1)
    trace = float(np.sum(diagonal)) * (1 + 4 * size * _UNIT_ROUNDOFF)
    rump = gamma / (1 - 2 * gamma) * trace + \
        4 * size * (2 * (size + 2) + float(diagonal.max())) * _SMALLEST_SUBNORMAL
    return 1.01 * error + 2 * rump + 4 * _UNIT_ROUNDOFF * float(diagonal.max())


def prove_negative_definite(matrix: np.ndarray, error: float) -> bool:
    """Whether ``matrix + E`` is negative definite for every symmetric ``||E||_2 <= error``.

    Rump (BIT 2006, Verification of positive definiteness): for ``A`` symmetric with a
    non-negative diagonal, if the floating-point Cholesky factorization of
    ``A - c I``, ``c = gamma_{n+1} / (1 - 2 gamma_{n+1}) tr(A) + 4 n (2 (n + 2) + max a_ii)
    eta`` (``eta`` the smallest subnormal), runs to completion, then ``A`` is positive
    definite. lipkit applies it to ``A = -matrix`` shifted by ``error`` (and doubles ``c``,
    covering the rounding of the shift).
    """
    size = matrix.shape[0]
    if size == 0:
        return True
    positive = -matrix
    diagonal = np.diag(positive)
    if not np.all(diagonal > 0) or not np.all(np.isfinite(positive)):
        return False
    shifted = positive - _rump_shift(diagonal, error) * np.eye(size)
    try:
        scipy.linalg.cholesky(shifted, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return False
    return True


def certify(chain: Chain, multipliers: Multipliers) -> Certificate:
    """The smallest proven ``rho`` with ``M(rho, T) <= 0`` for ``multipliers`` (projected).

    Raises Uncertified when the hidden block of ``M`` is not negative definite or no
    inflation of the Schur-complement value can be proven.
    """
    multipliers = multipliers.projected()
    n_input = chain.widths[0]
    base = lmi_matrix(chain, multipliers, 0.0)
    base_absolute = lmi_matrix(chain, multipliers, 0.0, absolute=True)
    schur_rho, flatness = _schur_rho(chain, multipliers, base)
    # rounding errors of forming M: |fl(M) - M| <= gamma_K |M|_abs elementwise, K the
    # longest chain of operations (the products T W and W^T (T W), then a few sums)
    depth_of_sums = 2 * max(w.shape[0] + w.shape[1] for w in chain.weights) + 16
    scale = _gamma(depth_of_sums) * (1 + 1e-6)
    inputs = np.arange(n_input)

    def attempt(rho: float) -> bool:
        matrix = base.copy()
        matrix[inputs, inputs] -= rho
        absolute = base_absolute.copy()
        absolute[inputs, inputs] += rho
        error = scale * float(np.linalg.norm(absolute))  # Frobenius >= spectral norm
        return prove_negative_definite(matrix, error)

    # M(schur_rho + d) has its largest eigenvalue near -d * flatness: start from the
    # inflation that clears the proof's shift, and grow it tenfold until the proof succeeds
    absolute = base_absolute.copy()
    absolute[inputs, inputs] += schur_rho
    shift = _rump_shift(np.abs(np.diag(absolute)), scale * float(np.linalg.norm(absolute)))
    floor = max(schur_rho, float(np.abs(base).max()), 1e-300)
    step = max(2 * shift / flatness, 16 * _UNIT_ROUNDOFF * floor)
    for _ in range(12):
        rho = schur_rho + step
        if attempt(rho):
            value = float(np.nextafter(math.sqrt(rho), math.inf))
            inflation = rho / schur_rho - 1 if schur_rho > 0 else math.inf
            return Certificate(rho, value, schur_rho, inflation, multipliers)
        step *= 10
    raise Uncertified(f"M(rho, T) could not be proven negative semidefinite for rho up to "
                      f"{rho:.6g} (Schur value {schur_rho:.6g})")


def _schur_rho(chain: Chain, multipliers: Multipliers, base: np.ndarray
               ) -> tuple[float, float]:
    """``lambda_max(P - Q R^{-1} Q^T)`` for ``M(0, T) = [[P, Q], [Q^T, R]]`` (``P`` the
    input block), and the share ``|v_0|^2 / |v|^2`` of the input block in the null vector
    ``v`` of ``M(rho, T)`` at that value (how fast inflating ``rho`` makes ``M`` definite).

    ``P = W_0^T X W_0`` and ``Q = W_0^T [Y, 0]`` with ``X = -2ab T_1``, ``Y = (a + b) T_1``;
    with ``-R = L L^T``, ``P - Q R^{-1} Q^T = W_0^T G W_0``, ``G = X + Z^T Z``,
    ``Z = L^{-1} [Y; 0]``, whose largest eigenvalue is that of ``(U S)^T G (U S)`` for the
    thin SVD ``W_0 = U S V^T`` (or 0, on the null space of ``W_0``).
    """
    first = chain.weights[0]
    n_input, width = first.shape[1], first.shape[0]
    u, s, vt = np.linalg.svd(first, full_matrices=False)
    if chain.depth == 0:  # M(0) = W^T W: rho = ||W||^2
        return (float(s[0]) ** 2 if s.size else 0.0), 1.0
    hidden = base[n_input:, n_input:]
    try:
        lower = scipy.linalg.cholesky(-hidden, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        raise Uncertified("the hidden-neuron block of the LMI is not negative definite "
                          "for the solver's multipliers") from None
    alpha, beta = chain.slopes[0]
    t_block = multipliers.matrices()[0]
    y_block = np.zeros((hidden.shape[0], width))
    y_block[:width] = (alpha + beta) * t_block
    z = scipy.linalg.solve_triangular(lower, y_block, lower=True, check_finite=False)
    gram = -2 * alpha * beta * t_block + z.T @ z
    factor = u * s
    small = factor.T @ gram @ factor
    values, vectors = np.linalg.eigh((small + small.T) / 2)
    rho = float(values[-1])
    if rho <= 0:  # the null space of W_0 (or a zero Schur complement): rho = 0
        return 0.0, 1.0
    top = vt.T @ vectors[:, -1]  # the top eigenvector of W_0^T G W_0
    # the null vector is (v_0, h), h = -R^{-1} Q^T v_0 = L^{-T} L^{-1} Q^T v_0
    coupled = scipy.linalg.solve_triangular(lower, base[:n_input, n_input:].T @ top,
                                            lower=True, check_finite=False)
    h = scipy.linalg.solve_triangular(lower, coupled, lower=True, trans="T",
                                      check_finite=False)
    return rho, 1.0 / (1.0 + float(h @ h))


# --------------------------------------------------------------------------------------
# solving


@dataclass
class _Solution:
    multipliers: Multipliers | None  # for the original (unscaled) chain
    raw_value: float  # the solver's sqrt(rho), mapped to the original chain
    status: str
    solver: str
    seconds: float
    lmi_size: int  # rows of the LMI handed to the solver (eigenvalue: of A(T))
    formulation: str  # "inverse" (one hidden layer), "reduced" or "eigenvalue"
    lower: float = math.nan  # the eigenvalue solver's dual bound on the optimal sqrt(rho)


def _rank(matrix: np.ndarray) -> int:
    return _rank_factor(matrix).shape[1]


def _rank_factor(matrix: np.ndarray) -> np.ndarray:
    """``U S`` of the thin SVD ``matrix = U S V^T`` restricted to its numerical rank:
    ``(U S)(U S)^T = matrix matrix^T``."""
    u, s, _ = np.linalg.svd(matrix, full_matrices=False)
    keep = s > s[0] * max(matrix.shape) * np.finfo(float).eps if s.size and s[0] > 0 else \
        np.zeros(s.shape, bool)
    return u[:, keep] * s[keep]


def _pairs_for(chain: Chain, formulation: str, couplings: int, seed: int) -> list[np.ndarray]:
    """The coupled neuron pairs of each hidden layer (every pair, or a random subset)."""
    widths = chain.widths[1:]
    every = [np.array(np.triu_indices(n, 1)).T.reshape(-1, 2) for n in widths]
    if formulation == "network":
        return every
    if formulation != "network-rand":
        return [np.zeros((0, 2), dtype=np.int64) for _ in widths]
    total = sum(len(p) for p in every)
    count = min(max(int(couplings), 0), total)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size=count, replace=False))
    layer_of = np.repeat(np.arange(len(widths)), [len(p) for p in every])
    starts = np.concatenate([[0], np.cumsum([len(p) for p in every])])
    return [every[k][chosen[layer_of[chosen] == k] - starts[k]] for k in range(len(widths))]


def _coefficients(chain: Chain, formulation: str, pairs: list[np.ndarray]):
    """``vec(M) = K x + c`` for the reduced, scaled LMI; x = (rho, lambda..., zeta...).

    Returns ``K`` (sparse), ``c``, the LMI size and a function mapping ``x`` to the
    multipliers of the scaled chain.
    """
    weights = list(chain.weights)
    weights[0] = _rank_factor(weights[0])  # n_1 x r: the input-space reduction
    widths = [weights[0].shape[1]] + [w.shape[0] for w in weights[:-1]]
    offsets = np.concatenate([[0], np.cumsum(widths)])
    size = int(offsets[-1])
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def put(row_index, col_index, variable, value):
        row_index, col_index, variable, value = np.broadcast_arrays(
            row_index, col_index, variable, np.asarray(value, dtype=np.float64))
        rows.append((row_index * size + col_index).ravel())
        cols.append(variable.ravel())
        vals.append(value.ravel())

    # rho: -I on the (reduced) input block
    put(np.arange(widths[0]), np.arange(widths[0]), 0, -np.ones(widths[0]))
    variable = 1
    layout = []  # per hidden layer: (first variable, count) of its diagonal multipliers
    for k, weight in enumerate(weights[:-1]):
        alpha, beta = chain.slopes[k]
        here = np.arange(offsets[k], offsets[k + 1])
        after = np.arange(offsets[k + 1], offsets[k + 2])
        n = weight.shape[0]
        if formulation == "layer":  # lambda_k I: the sum of the neuron terms below
            if alpha * beta != 0:
                put(here[:, None], here[None, :], variable,
                    -2 * alpha * beta * (weight.T @ weight))
            put(here[:, None], after[None, :], variable, (alpha + beta) * weight.T)
            put(after[:, None], here[None, :], variable, (alpha + beta) * weight)
            put(after, after, variable, -2 * np.ones(n))
            layout.append((variable, 1))
            variable += 1
        else:
            index = variable + np.arange(n)
            if alpha * beta != 0:  # neuron i: -2ab w_i w_i^T on the input block of layer k
                outer = weight[:, :, None] * weight[:, None, :]
                put(np.broadcast_to(here[None, :, None], outer.shape),
                    np.broadcast_to(here[None, None, :], outer.shape),
                    index[:, None, None], -2 * alpha * beta * outer)
            put(np.broadcast_to(here[None, :], weight.shape),
                np.broadcast_to(after[:, None], weight.shape), index[:, None],
                (alpha + beta) * weight)
            put(np.broadcast_to(after[:, None], weight.shape),
                np.broadcast_to(here[None, :], weight.shape), index[:, None],
                (alpha + beta) * weight)
            put(after, after, index, -2 * np.ones(n))
            layout.append((variable, n))
            variable += n
    coupling_layout = []  # per hidden layer: (first variable, count) of its couplings
    for k, weight in enumerate(weights[:-1]):
        alpha, beta = chain.slopes[k]
        here = np.arange(offsets[k], offsets[k + 1])
        after = np.arange(offsets[k + 1], offsets[k + 2])
        layer_pairs = pairs[k]
        count = len(layer_pairs)
        index = variable + np.arange(count)
        if count:
            i, j = layer_pairs[:, 0], layer_pairs[:, 1]
            difference = weight[i] - weight[j]  # (count, d_k)
            if alpha * beta != 0:
                outer = difference[:, :, None] * difference[:, None, :]
                put(np.broadcast_to(here[None, :, None], outer.shape),
                    np.broadcast_to(here[None, None, :], outer.shape),
                    index[:, None, None], -2 * alpha * beta * outer)
            for neuron, sign in ((i, 1.0), (j, -1.0)):
                block = np.broadcast_to(here[None, :], difference.shape)
                column = np.broadcast_to(after[neuron][:, None], difference.shape)
                put(block, column, index[:, None], sign * (alpha + beta) * difference)
                put(column, block, index[:, None], sign * (alpha + beta) * difference)
            for first, second, value in ((i, i, -2.0), (j, j, -2.0), (i, j, 2.0), (j, i, 2.0)):
                put(after[first], after[second], index, np.full(count, value))
        coupling_layout.append((variable, count))
        variable += count
    matrix = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(size * size, variable))
    constant = np.zeros((size, size))
    tail = slice(offsets[-2], offsets[-1])
    constant[tail, tail] = weights[-1].T @ weights[-1]

    def unpack(x: np.ndarray) -> Multipliers:
        diagonal = []
        for (start, count), width in zip(layout, widths[1:], strict=True):
            values = x[start:start + count]
            diagonal.append(np.full(width, values[0]) if formulation == "layer" else values)
        coupling = [x[start:start + count] for start, count in coupling_layout]
        return Multipliers(diagonal, list(pairs), coupling)

    return matrix, constant.ravel(), size, unpack


def _inverse_problem(chain: Chain, formulation: str):
    """One hidden layer: ``[[-2E, E F^T], [F E, -I]] + sigma K K^T <= 0`` (module docstring).

    Returns the affine map's ``K`` (sparse, over x = (sigma, e...)), ``c``, the size and a
    function mapping ``x`` to the multipliers ``T = E^{-1}`` of the scaled chain.
    """
    first, last = chain.weights
    alpha, beta = chain.slopes[0]
    n = first.shape[0]
    factor = _rank_factor(last.T).T  # F (rank x n) with F^T F = W_1^T W_1
    outputs = factor.shape[0]
    size = n + outputs
    stacked = np.vstack([(beta - alpha) * first, alpha * (factor @ first)])
    gram = stacked @ stacked.T  # K K^T
    out = n + np.arange(outputs)
    # neuron i's column: -2 at (i, i) and the column F[:, i] at (i, out) and (out, i)
    neuron = np.arange(n)
    variable = 1 + (np.zeros(n, dtype=np.int64) if formulation == "layer" else neuron)
    rows = [np.arange(size * size), neuron * size + neuron,
            (neuron[:, None] * size + out[None, :]).ravel(),
            (out[None, :] * size + neuron[:, None]).ravel()]
    cols = [np.zeros(size * size, dtype=np.int64), variable,
            np.repeat(variable, outputs), np.repeat(variable, outputs)]
    vals = [gram.ravel(), np.full(n, -2.0), factor.T.ravel(), factor.T.ravel()]
    matrix = scipy.sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(size * size, 2 if formulation == "layer" else n + 1))
    constant = np.zeros((size, size))
    constant[out, out] = -1.0

    def unpack(x: np.ndarray) -> Multipliers:
        inverse = x[1:] if formulation != "layer" else np.full(n, x[1])
        # e = 0 would be an infinite multiplier: the neuron is then constrained exactly;
        # a finite large one keeps the certificate's matrix finite
        floor = max(float(np.max(inverse, initial=0.0)), 1.0) * 1e-12
        return Multipliers([1.0 / np.maximum(inverse, floor)])

    return matrix, constant.ravel(), size, unpack


def _solve(chain: Chain, formulation: str, pairs: list[np.ndarray], solver: str,
           time_limit: float | None, tolerance: float | None) -> _Solution:
    """Solve the (reduced, scaled) SDP with cvxpy, or in its eigenvalue form, and map its
    multipliers back."""
    started = time.perf_counter()
    if _eigenvalue_solver(chain, formulation, solver):
        from lipkit.estimate import lipsdp_eigenvalue

        # the descent gets 80% of the time: the float64 proof of the full LMI follows
        deadline = None if time_limit is None else started + 0.8 * float(time_limit)
        solution = lipsdp_eigenvalue.solve(chain, formulation, deadline, tolerance)
        return _Solution(solution.multipliers, solution.value, solution.status, "eigenvalue",
                         time.perf_counter() - started, min(chain.widths[0], chain.widths[1]),
                         "eigenvalue", solution.lower)
    import cvxpy as cp  # heavy import: only when an SDP is solved

    norms = [float(np.linalg.norm(w, 2)) for w in chain.weights]
    factors = [1.0 / n if n > 0 else 1.0 for n in norms]
    scaled = Chain([w * f for w, f in zip(chain.weights, factors, strict=True)], chain.slopes)
    # one hidden layer: the inverse form has n_1 + rank(W_1) rows, the reduced form
    # rank(W_0) + n_1; both are exact, take the smaller
    inverse = (chain.depth == 1 and formulation in ("layer", "neuron")
               and _rank(chain.weights[1]) < _rank(chain.weights[0]))
    if inverse:
        matrix, constant, size, unpack = _inverse_problem(scaled, formulation)
    else:
        matrix, constant, size, unpack = _coefficients(scaled, formulation, pairs)
    x = cp.Variable(matrix.shape[1], nonneg=True)
    lmi = cp.reshape(matrix @ x + constant, (size, size), order="C")
    objective = cp.Maximize(x[0]) if inverse else cp.Minimize(x[0])
    problem = cp.Problem(objective, [lmi << 0])
    if solver == "auto":
        # Clarabel (interior point) is exact and fast on small LMIs, but factors a dense
        # matrix of side ~size^2/2 at every step; SCS (first order) scales to larger ones
        names = ["CLARABEL", "SCS"] if size <= _CLARABEL_SIZE else ["SCS", "CLARABEL"]
    else:
        names = [solver.upper()]
    for name in names:
        try:
            with warnings.catch_warnings():  # an inaccurate solution is judged by the proof
                warnings.simplefilter("ignore")
                # compiled first, so that the solver gets what is left of the time limit
                data, solving_chain, inverse_data = problem.get_problem_data(
                    name, solver_opts=_solver_settings(name, time_limit, tolerance))
                remaining = None if time_limit is None else \
                    time_limit - (time.perf_counter() - started)
                if remaining is not None and remaining <= 0:
                    status = "time limit reached while cvxpy built the SDP"
                    break
                settings = _solver_settings(name, remaining, tolerance)
                problem.unpack_results(solving_chain.solve_via_data(
                    problem, data, solver_opts=settings), solving_chain, inverse_data)
            status = str(problem.status)
        except cp.error.SolverError as error:
            status = f"solver error: {str(error).splitlines()[0]}"
        if x.value is not None and np.all(np.isfinite(x.value)):
            break
    seconds = time.perf_counter() - started
    if x.value is None or not np.all(np.isfinite(x.value)):
        return _Solution(None, math.nan, status, name.lower(), seconds, size,
                         "inverse" if inverse else "reduced")
    values = np.asarray(x.value, dtype=np.float64)
    scale = math.prod(factors)  # f_scaled = scale * f
    if inverse:
        raw = 1.0 / math.sqrt(values[0]) / scale if values[0] > 0 else math.inf
    else:
        raw = math.sqrt(max(values[0], 0.0)) / scale
    # T_k(original) = T_k(scaled) / (prod_{i > k} c_i)^2
    mapping = [1.0 / math.prod(factors[k + 1:]) ** 2 for k in range(chain.depth)]
    multipliers = unpack(values).scaled(mapping)
    return _Solution(multipliers, raw, status, name.lower(), seconds, size,
                     "inverse" if inverse else "reduced")


def _cvxpy_rows(chain: Chain) -> int:
    """Rows of the LMI the cvxpy path would solve (the smaller exact form)."""
    reduced = min(chain.widths[0], chain.widths[1]) + sum(chain.widths[1:])
    if chain.depth == 1:
        return min(reduced, chain.widths[1] + min(chain.weights[1].shape))
    return reduced


def _eigenvalue_solver(chain: Chain, formulation: str, solver: str) -> bool:
    """Whether ``solver`` means the eigenvalue form: ``"eigenvalue"``, or ``"auto"`` for
    LipSDP-Layer / Neuron beyond :data:`_EIGENVALUE_SIZE` rows (where a conic solver's
    iterations on the LMI cost seconds to minutes)."""
    if solver == "eigenvalue":
        if formulation not in ("layer", "neuron"):
            raise InvalidArgumentError(f"the eigenvalue solver solves lipsdp-layer and "
                                       f"lipsdp-neuron, not lipsdp-{formulation}")
        return True
    return (solver == "auto" and formulation in ("layer", "neuron")
            and _cvxpy_rows(chain) > _EIGENVALUE_SIZE)


def _solver_settings(name: str, time_limit: float | None, tolerance: float | None) -> dict:
    if name == "CLARABEL":
        settings = {"max_iter": 500}
        if tolerance is not None:
            settings.update(tol_gap_abs=tolerance, tol_gap_rel=tolerance, tol_feas=tolerance)
        if time_limit is not None:
            settings["time_limit"] = float(time_limit)
        return settings
    if name == "SCS":
        tolerance = _SCS_TOLERANCE if tolerance is None else tolerance
        settings = {"eps_abs": tolerance, "eps_rel": tolerance, "max_iters": 100_000}
        if time_limit is not None:
            settings["time_limit_secs"] = float(time_limit)
        return settings
    raise InvalidArgumentError(f"unknown SDP solver '{name.lower()}'; choose from: "
                               "clarabel, scs")


# --------------------------------------------------------------------------------------
# splitting and the public entry points


def split_chain(layers: list[Layer], layers_per_piece: int | None = None,
                max_neurons: int | None = None) -> list[list[Layer]]:
    """Cut a chain into consecutive sub-chains (pieces) for :func:`lipsdp`.

    ``layers_per_piece`` weight matrices per piece (the reference implementation's
    ``split_size``), then any piece with more than ``max_neurons`` hidden neurons is cut
    greedily. Every piece but the last ends with the activation at its cut, whose Lipschitz
    constant multiplies the pieces' constants: ``||f||_L <= prod L_piece * prod L_cut``.
    """
    if layers_per_piece is not None and int(layers_per_piece) < 1:
        raise InvalidArgumentError(f"split must be a positive number of layers, got "
                                   f"{layers_per_piece!r}")
    size = len(layers) if layers_per_piece is None else int(layers_per_piece)
    pieces = [layers[i:i + size] for i in range(0, len(layers), size)]
    if max_neurons is None:
        return pieces
    result = []
    for piece in pieces:
        current, hidden = [piece[0]], 0
        for layer in piece[1:]:
            width = current[-1].weight.shape[0]
            if hidden + width <= max_neurons:
                current.append(layer)
                hidden += width
            else:
                result.append(current)
                current, hidden = [layer], 0
        result.append(current)
    return result


def lipsdp(source: Network | list[Layer], formulation: str = "neuron", *,
           split: int | None = None, solver: str = "auto", time_limit: float | None = None,
           tolerance: float | None = None, couplings: int = 5, seed: int = 0,
           max_neurons: int | None = None, workers: int | None = None,
           progress: Callable[[str], None] | None = None) -> Bound:
    """LipSDP's l2 bound of a chain, certified in float64 (see the module docstring).

    ``source``: a Network (its :meth:`~lipkit.estimate.network.Network.chain`) or the
    layers of a chain; ``formulation``: ``"layer"``, ``"neuron"``, ``"network"`` or
    ``"network-rand"``; ``split``: weight matrices per sub-network (default: the whole
    chain, cut only beyond ``max_neurons`` hidden neurons); ``solver``: ``"auto"``,
    ``"clarabel"``, ``"scs"`` (through cvxpy; ``"auto"`` falls back to the other one when
    the first returns nothing) or ``"eigenvalue"`` (layer / neuron only; ``"auto"`` picks it
    beyond 128 LMI rows); ``tolerance``: the solver's stopping tolerance;
    ``couplings``, ``seed``: the random pairs of ``"network-rand"``; ``workers``: worker
    processes solving the sub-networks side by side (default 1: in this process), each with
    ``cpu_count // workers`` BLAS threads.

    >>> import torch
    >>> from lipkit.estimate.importers import load_network
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(),
    ...                             torch.nn.Linear(8, 1))
    >>> bound = lipsdp(load_network(model), "neuron")
    >>> bound.kind, bound.status, bound.value <= lipsdp(load_network(model), "layer").value
    ('upper', 'ok', True)
    """
    if formulation not in FORMULATIONS:
        raise InvalidArgumentError(f"unknown LipSDP formulation '{formulation}'; choose "
                                   f"from: {', '.join(FORMULATIONS)}")
    started = time.perf_counter()
    method = f"lipsdp-{formulation}"
    layers = source.chain() if isinstance(source, Network) else list(source)
    limit = MAX_NEURONS[formulation] if max_neurons is None else int(max_neurons)
    pieces = split_chain(layers, split, limit)
    deadline = None if time_limit is None else started + float(time_limit)
    value, problems = math.nan, []
    workers = 1 if workers is None else int(check_positive("workers", workers))
    with _one_blas_thread():
        chains = [Chain.from_layers(piece if piece[-1].activation is None else
                                    [*piece[:-1], Layer(piece[-1].weight, None, None, [])])
                  for piece in pieces]
    if workers > 1 and len(chains) > 1:
        records = _pieces_in_parallel(chains, workers, formulation, solver, deadline,
                                      tolerance, couplings, seed, progress, method)
    else:
        records = []
        for number, chain in enumerate(chains):
            if progress is not None:
                progress(f"{method}: sub-network {number + 1}/{len(pieces)} "
                         f"({'-'.join(str(n) for n in chain.widths)}-"
                         f"{chain.weights[-1].shape[0]})")
            remaining = None if deadline is None else max(deadline - time.perf_counter(),
                                                          0.05)
            with _one_blas_thread():
                records.append(_piece(chain, formulation, solver, remaining, tolerance,
                                      couplings, seed + number, progress, method))
    for number, (piece, record) in enumerate(zip(pieces, records, strict=True)):
        if record["status"] != "ok":
            where = f" (sub-network {number + 1} of {len(pieces)})" if len(pieces) > 1 else ""
            problems.append(record["status"] + where)
        # a proven product is rounded upwards; an estimate is left as the solver's number
        round_up = _round_up if not problems else float
        value = record["value"] if number == 0 else round_up(value * record["value"])
        cut = piece[-1].activation
        if cut is not None and cut.lipschitz != 1.0:
            value = round_up(value * cut.lipschitz)
    details = {"pieces": records, "workers": workers} if len(pieces) > 1 else \
        dict(records[0])
    details.pop("status", None)
    seconds = time.perf_counter() - started
    if problems:
        return Bound(value, "estimate", "2", method, seconds, problems[0], details)
    if formulation.startswith("network"):
        return Bound(value, "estimate", "2", method, seconds, _UNPROVEN, details)
    return Bound(value, "upper", "2", method, seconds, "ok", details)


@contextlib.contextmanager
def _one_blas_thread():
    """One BLAS thread for the SVDs, factorizations and solver steps of a piece: they are
    small enough that a second thread gains little on two idle cores (BENCHMARKS.md, serial
    runs), and on a busy machine spinning BLAS threads cost seconds (a 784 x 256 SVD took
    2 s on two threads at load 15, the float64 proof of a 1296-row LMI 29 s)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _worker_threads(threads: int) -> None:
    """A worker's initializer: ``threads`` BLAS / OpenMP threads (no oversubscription)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return
    global _WORKER_LIMITS
    _WORKER_LIMITS = threadpool_limits(limits=threads)


_WORKER_LIMITS = None


def _pieces_in_parallel(chains: list[Chain], workers: int, formulation, solver, deadline,
                        tolerance, couplings, seed, progress, method) -> list[dict]:
    """:func:`_piece` of every chain in ``workers`` processes; the records in chain order.

    The pieces are independent SDPs (their product is the bound), each given the same seed
    as in the serial loop, so the records are the serial ones. Linux forks the workers (no
    re-import); elsewhere they are spawned.
    """
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    count = min(workers, len(chains))
    threads = max(1, (os.cpu_count() or 1) // count)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    remaining = None if deadline is None else max(deadline - time.perf_counter(), 0.05)
    records: list[dict | None] = [None] * len(chains)
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock; the workers only
        # run NumPy / SciPy / cvxpy code (no torch, no OpenMP region of the parent)
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*fork.*")
        with ProcessPoolExecutor(count, mp_context=context, initializer=_worker_threads,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_piece, chain, formulation, solver, remaining, tolerance,
                                   couplings, seed + number, None, method): number
                       for number, chain in enumerate(chains)}
            if progress is not None:
                progress(f"{method}: {len(chains)} sub-networks on {count} worker processes")
            for done, future in enumerate(as_completed(futures), start=1):
                number = futures[future]
                records[number] = future.result()
                if progress is not None:
                    progress(f"{method}: sub-network {number + 1} solved ({done}/{len(chains)})")
    return records


def _round_up(value: float) -> float:
    return float(np.nextafter(value * (1 + 4 * _UNIT_ROUNDOFF), math.inf))


def _piece(chain: Chain, formulation: str, solver: str, time_limit, tolerance, couplings,
           seed, progress, method) -> dict:
    """Solve and certify one sub-network; a dict of details with its value and status."""
    full_size = sum(chain.widths)
    if any(not np.any(w) for w in chain.weights):
        # a zero weight matrix makes its layer's output constant, hence f constant
        return {"value": 0.0, "status": "ok", "certified_value": 0.0,
                "solver": "none (a zero weight matrix: f is constant)", "lmi_size": full_size}
    if chain.depth == 0:
        # a single matrix: the LMI -rho I + W^T W <= 0 has no multiplier
        multipliers = Multipliers([])
        try:
            certificate = certify(chain, multipliers)
        except Uncertified as error:
            return {"value": math.nan, "status": f"uncertified: {error}"}
        value = _round_up(certificate.value + chain.correction)
        return {"value": value, "status": "ok", "certified_value": value,
                "solver": "none (spectral norm)", "lmi_size": full_size}
    pairs = _pairs_for(chain, formulation, couplings, seed)
    if progress is not None:
        progress(f"{method}: solving the SDP ({full_size} LMI rows before reduction)")
    started = time.perf_counter()
    solution = _solve(chain, formulation, pairs, solver, time_limit, tolerance)
    record = {"solver": solution.solver, "solver_status": solution.status,
              "solver_value": solution.raw_value, "solve_seconds": solution.seconds,
              "lmi_size": full_size, "solved_lmi_size": solution.lmi_size,
              "solved_formulation": solution.formulation}
    if not math.isnan(solution.lower):
        record["sdp_lower"] = solution.lower
    if formulation.startswith("network"):
        record["couplings"] = int(sum(len(p) for p in pairs))
    if solution.multipliers is None:
        return {**record, "value": math.nan,
                "status": f"uncertified: the solver returned no solution ({solution.status})"}
    if progress is not None:
        progress(f"{method}: certifying the {full_size}x{full_size} LMI in float64")
    certify_started = time.perf_counter()
    best, failure = None, None
    for number, multipliers in enumerate(_candidates(solution.multipliers)):
        if number and best is None and time_limit is not None and \
                time.perf_counter() > started + 2 * time_limit + 1:
            break  # the retries cost a full proof each: give up twice past the limit
        try:
            certificate = certify(chain, multipliers)
        except Uncertified as error:
            failure = failure or str(error)
            continue
        if best is None or certificate.value < best.value:
            best = certificate
        if best.inflation <= 1e-6:
            break
        if time_limit is not None and time.perf_counter() > started + time_limit:
            break  # past the time limit: the best proven value so far
    if best is None:
        return {**record, "value": solution.raw_value, "status": f"uncertified: {failure}"}
    value = _round_up(best.value + chain.correction)
    record.update(value=value, status="ok", certified_value=value,
                  relative_inflation=value / solution.raw_value - 1,
                  rho_inflation=best.inflation,
                  certify_seconds=time.perf_counter() - certify_started)
    return record


def _candidates(multipliers: Multipliers):
    """The solver's multipliers, then variants of them that are easier to certify.

    - Scaled up slightly: a solver's point is feasible only to its tolerance, so the hidden
      block ``R(T)`` may have an eigenvalue a little above 0; ``R(c T) = c R(T) - (c - 1)
      E`` (``E = W_l^T W_l`` on the last block, positive semidefinite) moves it below for
      ``c > 1`` and changes ``rho`` by about a factor ``c``.
    - Clipped to within a factor of each layer's median: when the optimum lies at infinity
      or at zero the multipliers span many orders of magnitude, and the float64 proof needs
      a large inflation (its rounding margin scales with ``||M||``) or fails.
    """
    yield multipliers
    for factor in (1 + 1e-6, 1 + 1e-4, 1 + 1e-2):
        yield multipliers.scaled([factor] * len(multipliers.diagonal))
    for spread in (1e6, 1e3):
        diagonal = []
        for values in multipliers.diagonal:
            positive = values[values > 0]
            middle = float(np.median(positive)) if positive.size else 1.0
            diagonal.append(np.clip(values, middle / spread, middle * spread))
        yield Multipliers(diagonal, multipliers.pairs, multipliers.coupling)


# --------------------------------------------------------------------------------------
# registration


def _fits(formulation: str):
    limit = MAX_NEURONS[formulation]

    def fits(network: Network) -> str | None:
        for node in network.nodes:
            if isinstance(node.op, Affine):
                operator = node.op.operator
                if operator.in_features * operator.out_features > _MAX_ENTRIES:
                    return (f"layer '{node.name}' has more than {_MAX_ENTRIES:,} entries as "
                            "a dense matrix")
        if network.in_features > _MAX_INPUT:
            return f"more than {_MAX_INPUT:,} input features"
        try:
            layers = network.chain()
        except NotApplicableError as error:
            return str(error)
        for layer in layers[:-1]:
            if layer.weight.shape[0] > limit:
                return (f"a hidden layer has {layer.weight.shape[0]} neurons, more than the "
                        f"{limit} lipsdp-{formulation} solves")
        return None

    return fits


@dataclass(frozen=True)
class LipSDPOptions(MethodOptions):
    """Options of ``lipsdp-layer``, ``lipsdp-neuron`` and ``lipsdp-network``."""

    #: the solver's seconds at most (None: the run's share, else no limit)
    time_limit: float | None = None
    #: weight matrices per sub-network (None: the whole chain, cut beyond max_neurons)
    split: int | None = None
    #: hidden neurons per sub-network at most (None: the formulation's MAX_NEURONS)
    max_neurons: int | None = None
    #: worker processes solving the sub-networks side by side (None: this process)
    workers: int | None = None
    #: the SDP solver: Clarabel or SCS through cvxpy, the eigenvalue form (layer / neuron),
    #: or "auto" (by the LMI's size)
    solver: Literal["auto", "clarabel", "scs", "eigenvalue"] = "auto"
    #: the solver's stopping tolerance (None: its default)
    tolerance: float | None = None


@dataclass(frozen=True)
class LipSDPNetworkRandOptions(LipSDPOptions):
    """Options of ``lipsdp-network-rand``."""

    #: random neuron pairs coupled, in all
    couplings: int = 5


def _options_call(network: Network, formulation: str, options: Options | None) -> Bound:
    options = options or Options()
    own = options.own(LipSDPNetworkRandOptions if formulation == "network-rand"
                      else LipSDPOptions)
    started = time.perf_counter()
    kind = "estimate" if formulation.startswith("network") else "upper"
    if norm_name(options.norm) != "2":
        return Bound.not_applicable(f"lipsdp-{formulation}", kind, options.norm,
                                    "LipSDP bounds the l2 norm only")
    reason = _fits(formulation)(network)
    if reason is not None:
        return Bound.not_applicable(f"lipsdp-{formulation}", kind, "2", reason)
    bound = lipsdp(network, formulation, split=own.split, solver=own.solver,
                   time_limit=options.limit(own.time_limit), tolerance=own.tolerance,
                   couplings=getattr(own, "couplings", 5), seed=options.seed,
                   max_neurons=own.max_neurons, workers=own.workers,
                   progress=options.progress)
    bound.seconds = time.perf_counter() - started
    return bound


@register_method("lipsdp-layer", kind="upper", norms=("2",), fits=_fits("layer"),
                 options=LipSDPOptions)
def lipsdp_layer(network: Network, options: Options | None = None) -> Bound:
    """LipSDP-Layer: one multiplier per hidden layer, certified in float64."""
    return _options_call(network, "layer", options)


@register_method("lipsdp-neuron", kind="upper", norms=("2",), fits=_fits("neuron"),
                 options=LipSDPOptions)
def lipsdp_neuron(network: Network, options: Options | None = None) -> Bound:
    """LipSDP-Neuron: one multiplier per hidden neuron, certified in float64."""
    return _options_call(network, "neuron", options)


@register_method("lipsdp-network", kind="estimate", norms=("2",), fits=_fits("network"),
                 options=LipSDPOptions)
def lipsdp_network(network: Network, options: Options | None = None) -> Bound:
    """LipSDP-Network: all neuron couplings of a layer (unproven couplings: an estimate)."""
    return _options_call(network, "network", options)


@register_method("lipsdp-network-rand", kind="estimate", norms=("2",),
                 fits=_fits("network-rand"), options=LipSDPNetworkRandOptions)
def lipsdp_network_rand(network: Network, options: Options | None = None) -> Bound:
    """LipSDP-Network-rand: random neuron couplings (unproven couplings: an estimate)."""
    return _options_call(network, "network-rand", options)
