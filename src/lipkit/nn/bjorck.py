"""Björck orthonormalization (Björck & Bowie, 1971), as used by Anil, Lucas & Grosse (ICML 2019).

Gradient norm preserving dense layers: the weight is replaced by the closest matrix with
orthonormal rows or columns (its polar factor), found by the iteration

    Q_0 = W / s,   Q_{k+1} = Q_k (I + 1/2 R_k + 3/8 R_k^2 + ...),   R_k = I - Q_k^T Q_k

(the series of ``(I - R)^(-1/2)`` truncated after ``order`` terms; rows instead of columns
for a wide matrix). The iteration converges when every singular value of ``Q_0`` lies in
``(0, sqrt(3))`` for order 1, so ``W`` is pre-scaled by its largest singular value ``s``,
estimated by a warm-started power iteration. It converges quadratically near the manifold:
the residual ``R_{k+1} = 3/4 R_k^2 + 1/4 R_k^3`` for order 1.

lipkit stops as soon as ``||R||_F <= tol`` (or when rounding stalls it), which near an
orthogonal weight takes one or two iterations, and by default differentiates the result
with the derivative of the polar factor at an orthogonal point (``backward="projected"``):
``dL/dW = (G - Q sym(Q^T G)) / s_rms``, the projection of the gradient ``G`` on the tangent
space of the Stiefel manifold; two matrix products instead of back-propagating through
every iteration. ``backward="autograd"`` back-propagates through the iterations instead.
The parameter is initialized at the polar factor of the layer's weight (``right_inverse``),
so training starts on the manifold, and (``reproject=True``) every training forward pass
writes the polar factor it computed back into the parameter. The network's function depends
on ``polar(W)`` only, so this changes nothing it computes; without it the optimizer (Adam's
per-coordinate steps are not tangent to the manifold) lets ``W`` drift off the manifold,
singular values spreading over ``[0.85, 2.0]`` within 100 steps of the demo's training, and
every forward pass needs more iterations. ``reproject=False`` leaves the parameter alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn.constraint import Constraint, check_layer, register_constraint

# coefficients of the series (1 - x)^(-1/2) = 1 + x/2 + 3x^2/8 + 5x^3/16 + ...
_SERIES = (1.0, 0.5, 0.375, 0.3125)
_BACKWARDS = ("projected", "autograd")


def _gram(q: torch.Tensor, wide: bool) -> torch.Tensor:
    return q @ q.mT if wide else q.mT @ q


def bjorck_orthonormalize(
    weight: torch.Tensor,
    order: int = 1,
    tol: float = 1e-5,
    max_iterations: int = 30,
    n_iterations: int | None = None,
) -> tuple[torch.Tensor, int, float]:
    """Björck iterations on ``weight`` (a matrix or a batch of matrices), already pre-scaled.

    Runs ``n_iterations`` iterations when given; otherwise iterates until the Frobenius
    norm of the residual ``R`` is at most ``max(tol, 4 * eps * size)`` (the second term is
    the rounding floor of the Gram matrix in the weight's dtype), stops decreasing, or
    ``max_iterations`` is reached. Differentiable by autograd. Returns ``(Q, iterations,
    residual)``, the residual being ``||R||_F`` at the last check (or the predicted one when
    the loop stopped right after an update).
    """
    if not 1 <= order <= len(_SERIES) - 1:
        raise InvalidArgumentError(f"order must be in 1..{len(_SERIES) - 1}, got {order}")
    wide = weight.shape[-2] < weight.shape[-1]
    size = min(weight.shape[-2:])
    eye = torch.eye(size, dtype=weight.dtype, device=weight.device)
    threshold = max(tol, 4 * torch.finfo(weight.dtype).eps * size)
    q = weight
    previous = math.inf
    iterations = 0
    residual_norm = math.inf
    limit = max_iterations if n_iterations is None else n_iterations
    # an orthonormal input is returned as it is, but the derivative of the polar factor there
    # is the tangent-space projection, not the identity: when autograd records, iterate at
    # least once so that the graph differentiates an iteration (whose derivative at an
    # orthonormal point is that projection)
    needs_graph = torch.is_grad_enabled() and weight.requires_grad
    forced = False  # converged at the start, iterated only for the graph
    fused = q.dim() == 2 and order == 1  # addmm: one pass for I - Q^T Q and Q + Q R / 2
    while iterations < limit:
        if fused:
            residual = torch.addmm(eye, q, q.mT, alpha=-1) if wide else torch.addmm(
                eye, q.mT, q, alpha=-1)
        else:
            residual = eye - _gram(q, wide)
        residual_norm = float(torch.linalg.matrix_norm(residual.detach()).max())
        converged = residual_norm <= threshold and not (needs_graph and iterations == 0)
        forced = forced or (n_iterations is None and iterations == 0 and needs_graph
                            and residual_norm <= threshold)
        if n_iterations is None and (converged or residual_norm >= previous):
            break
        if fused:
            q = torch.addmm(q, residual, q, alpha=0.5) if wide else torch.addmm(
                q, q, residual, alpha=0.5)
        else:
            polynomial = _SERIES[order] * residual
            for coefficient in reversed(_SERIES[1:order]):
                polynomial = (polynomial + coefficient * eye) @ residual
            polynomial = polynomial + eye
            q = polynomial @ q if wide else q @ polynomial
        iterations += 1
        previous = residual_norm
        # predicted residual after this update (order 1: 3/4 e^2 + 1/4 e^3)
        predicted = 0.75 * previous**2 + 0.25 * previous**3 if order == 1 else 2 * previous ** (
            order + 1
        )
        if n_iterations is None and predicted <= threshold:
            residual_norm = predicted
            break
    if forced:
        # the value without a graph is the input itself: return exactly that value (the
        # layer must compute the same function with and without autograd, or a certificate
        # computed without it would not be about the function an attack differentiates),
        # with the iteration's derivative
        q = weight.detach() + (q - q.detach())
    return q, iterations, residual_norm


class _ProjectedPolar(torch.autograd.Function):
    """Björck iterations without a graph; backward by the tangent-space projection."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight, scale, order, tol, max_iterations):
        with torch.no_grad():
            q, _, _ = bjorck_orthonormalize(weight / scale, order, tol, max_iterations)
        return q

    @staticmethod
    def setup_context(ctx, inputs, output):
        weight = inputs[0]
        rms_singular_value = weight.detach().norm() / math.sqrt(min(weight.shape[-2:]))
        ctx.save_for_backward(output, rms_singular_value)
        ctx.wide = weight.shape[-2] < weight.shape[-1]

    @staticmethod
    def backward(ctx, grad):
        q, rms_singular_value = ctx.saved_tensors
        if ctx.wide:
            inner = grad @ q.mT
            projected = grad - 0.5 * (inner + inner.mT) @ q
        else:
            inner = q.mT @ grad
            projected = grad - q @ (0.5 * (inner + inner.mT))
        return projected / rms_singular_value.clamp_min(1e-12), None, None, None, None


class BjorckOrthogonal(Constraint):
    """Parametrization ``W -> lambda * polar(W)`` by Björck iterations (module docstring)."""

    method = "bjorck"

    def __init__(
        self,
        weight: torch.Tensor,
        lipschitz: float = 1.0,
        order: int = 1,
        tol: float = 1e-5,
        max_iterations: int = 30,
        backward: str = "projected",
        n_power_iterations: int = 1,
        reproject: bool = True,
        train_tol: float = 1e-3,
    ):
        super().__init__(lipschitz)
        self.train_tol = float(train_tol)
        self.reproject = bool(reproject)
        if backward not in _BACKWARDS:
            raise InvalidArgumentError(
                f"unknown backward '{backward}'; choose from: {', '.join(_BACKWARDS)}"
            )
        if not 1 <= int(order) <= len(_SERIES) - 1:
            raise InvalidArgumentError(f"order must be in 1..{len(_SERIES) - 1}, got {order}")
        self.order, self.tol, self.max_iterations = int(order), float(tol), int(max_iterations)
        self.backward, self.n_power_iterations = backward, int(n_power_iterations)
        self.register_buffer("_u", F.normalize(torch.randn(weight.shape[0], dtype=weight.dtype,
                                                           device=weight.device), dim=0))

    @torch.no_grad()
    def _largest_singular_value(self, weight: torch.Tensor, n_iterations: int) -> torch.Tensor:
        u = self._u
        for _ in range(n_iterations):
            v = F.normalize(weight.t().mv(u), dim=0)
            u = F.normalize(weight.mv(v), dim=0)
        if self.training or n_iterations > self.n_power_iterations:
            self._u.copy_(u)
        return torch.linalg.vector_norm(weight.t().mv(u))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # ||W^T u|| <= sigma_1 (u is stored in training mode only)
        scale = self._largest_singular_value(weight.detach(), self.n_power_iterations)
        scale = torch.maximum(scale, weight.detach().norm() / math.sqrt(min(weight.shape)))
        training = self.training and torch.is_grad_enabled()
        # a training step stops at the looser train_tol: one residual and one update per step
        # once the weight is on the manifold (the re-projection keeps it there), instead of a
        # third product that only confirms convergence to float precision
        tol = max(self.tol, self.train_tol) if training else self.tol
        if self.backward == "projected":
            q = _ProjectedPolar.apply(weight, scale, self.order, tol, self.max_iterations)
        else:
            q, _, _ = bjorck_orthonormalize(weight / scale, self.order, tol, self.max_iterations)
        if self.reproject and training:
            # the function depends on polar(W) only: moving the stored parameter back onto
            # the manifold changes nothing the network computes, and keeps the next
            # optimizer step's starting point one step away from it (1-2 iterations)
            with torch.no_grad():
                weight.copy_(q)
        return self.lipschitz * q

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # start on the manifold: the polar factor U V^T of the given weight
        u, _, vh = torch.linalg.svd(weight / self.lipschitz, full_matrices=False)
        polar = u @ vh
        self._largest_singular_value(polar, 10)
        return polar

    def extra_repr(self) -> str:
        return (
            f"lipschitz={self.lipschitz:g}, order={self.order}, tol={self.tol:g}, "
            f"train_tol={self.train_tol:g}, backward={self.backward}, "
            f"reproject={self.reproject}"
        )


def bjorck(
    module: nn.Linear,
    lipschitz: float = 1.0,
    order: int = 1,
    tol: float = 1e-5,
    max_iterations: int = 30,
    backward: str = "projected",
    reproject: bool = True,
    train_tol: float = 1e-3,
) -> nn.Linear:
    """Constrain ``module.weight`` to ``lambda`` times a matrix with orthonormal rows/columns.

    All singular values equal ``lambda`` (to ``tol``): the layer is ``lambda``-Lipschitz and,
    with GroupSort activations, gradient norm preserving (Anil et al., 2019). Returns
    ``module``. For convolutions use :func:`lipkit.nn.bcop` (orthogonal convolution).
    ``tol`` is the residual ``||I - Q^T Q||_F`` reached in evaluation mode (and by
    :func:`lipkit.nn.lipschitz_bound`, :func:`lipkit.nn.export`); a training forward pass stops
    at ``max(tol, train_tol)``, singular values within about ``train_tol / 2`` of ``lambda``.

    Example:
        >>> import torch
        >>> from lipkit.nn import bjorck
        >>> layer = bjorck(torch.nn.Linear(16, 16))
        >>> s = torch.linalg.svdvals(layer.weight)
        >>> bool(torch.allclose(s, torch.ones(16), atol=1e-4))
        True
    """
    check_layer(module, (nn.Linear,), "bjorck")
    constraint = BjorckOrthogonal(module.weight.detach(), lipschitz, order, tol, max_iterations,
                                  backward, reproject=reproject, train_tol=train_tol)
    return register_constraint(module, constraint)
