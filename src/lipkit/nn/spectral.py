"""Spectral normalization (Miyato et al., ICLR 2018), for dense layers and convolutions.

``W_bar = lambda * W / sigma_1(W)``, with ``sigma_1`` estimated by power iteration

    v <- A^T u / ||A^T u||,   u <- A v / ||A v||,   sigma_1 ~= u^T A v

warm-started from persistent ``u, v`` buffers (part of the ``state_dict``) and advanced
``n_power_iterations`` times per forward pass in training mode. In eval mode the buffers
stay fixed, except once after the weight changed behind them (the optimizer step that
follows the last training forward, a ``load_state_dict``): then they are recomputed (by
an SVD for dense matrices up to 2048 wide, else 100 iterations), so an evaluated model is
normalized by a converged estimate rather than one
that lags a step behind (``torch.nn.utils.spectral_norm`` keeps the lagging one; after a
training run with Adam the difference can be several percent per layer). The gradient flows
through ``sigma = u^T A(W) v`` with ``u, v`` held fixed, as in the paper.

For a convolution ``A`` is the convolution *operator* on inputs of the layer's size, applied
with ``conv`` and its adjoint ``conv_transpose`` at the layer's stride, padding and dilation.
Normalizing the kernel reshaped to a ``(out, in * k * k)`` matrix, as
``torch.nn.utils.spectral_norm`` does, does not bound the convolution's Lipschitz constant
(the operator's norm can exceed the reshaped kernel's by up to ``sqrt(k * k)``); it is
available as ``operator=False`` with a warning.

Power iteration approaches ``sigma_1`` from below, so the normalized weight can have a norm
slightly above ``lambda`` until it has converged: :meth:`SpectralNorm.bound` reports the
certified operator norm, never the estimate.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError, LipkitWarning
from lipkit.nn.constraint import (
    CONV_TYPES,
    LAYER_TYPES,
    Constraint,
    check_layer,
    geometry_of,
    register_constraint,
)
from lipkit.nn.operator_norm import conv_power_iteration

_WARM_UP_ITERATIONS = 50
_EXACT_START_MAX_SIZE = 2048
_REFRESH_ITERATIONS = 100


class SpectralNorm(Constraint):
    """Parametrization ``W -> lambda * W / sigma_1(A(W))`` (see the module docstring)."""

    method = "spectral"

    def __init__(
        self,
        weight: torch.Tensor,
        lipschitz: float = 1.0,
        n_power_iterations: int = 1,
        geometry=None,
        eps: float = 1e-12,
        operator: bool = True,
    ):
        super().__init__(lipschitz, geometry)
        # operator=False: normalize the reshaped kernel (dense path) even for a convolution
        self.operator = operator and geometry is not None
        if int(n_power_iterations) < 1:
            raise InvalidArgumentError(
                f"n_power_iterations must be >= 1, got {n_power_iterations}"
            )
        self.n_power_iterations = int(n_power_iterations)
        self.eps = eps
        factory = {"dtype": weight.dtype, "device": weight.device}
        if not self.operator:
            matrix = weight.reshape(weight.shape[0], -1)
            self.register_buffer("_u", F.normalize(torch.randn(matrix.shape[0], **factory), dim=0))
            self.register_buffer("_v", F.normalize(torch.randn(matrix.shape[1], **factory), dim=0))
            self._warm_start(matrix)
        else:
            # sized by the input, known at the first forward pass (or from input_size)
            self.register_buffer("_u", torch.empty(0, **factory))
            self.register_buffer("_v", torch.empty(0, **factory))
            if self.geometry.input_size is not None:
                self._reset_conv_vectors(weight)
        self._register_load_state_dict_pre_hook(self._resize_on_load)

    # -- dense -----------------------------------------------------------------------------
    @torch.no_grad()
    def _warm_start(self, matrix: torch.Tensor) -> None:
        """Start from the exact top singular pair (an SVD) when the matrix is not huge."""
        if min(matrix.shape) <= _EXACT_START_MAX_SIZE:
            u, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
            self._u.copy_(u[:, 0])
            self._v.copy_(vh[0])
        else:
            self._power_iteration(matrix, 10 * _WARM_UP_ITERATIONS)

    @torch.no_grad()
    def _power_iteration(self, matrix: torch.Tensor, n_iterations: int) -> None:
        u, v = self._u, self._v
        for _ in range(n_iterations):
            v = F.normalize(matrix.t().mv(u), dim=0, eps=self.eps)
            u = F.normalize(matrix.mv(v), dim=0, eps=self.eps)
        self._u.copy_(u)
        self._v.copy_(v)

    # -- convolution -----------------------------------------------------------------------
    def _reset_conv_vectors(self, weight: torch.Tensor) -> None:
        in_channels = weight.shape[1] * self.geometry.groups
        u = torch.randn(1, in_channels, *self.geometry.input_size, dtype=weight.dtype,
                        device=weight.device)
        u = u / u.norm()
        u, v = conv_power_iteration(weight, self.geometry, u, _WARM_UP_ITERATIONS, self.eps)
        self._u = u
        self._v = v

    def observe_input_size(self, input_size) -> None:
        if not self.operator:
            super().observe_input_size(input_size)
            return
        if self.geometry.input_size != tuple(input_size):
            known = self.geometry.input_size is not None
            super().observe_input_size(input_size)
            if known:
                warnings.warn(
                    f"SpectralNorm: input size changed to {tuple(input_size)}; the "
                    "convolution is renormalized for the new size",
                    LipkitWarning,
                    stacklevel=3,
                )
            self._u = torch.empty(0, dtype=self._u.dtype, device=self._u.device)

    def _iterations(self, weight: torch.Tensor) -> int:
        """Power-iteration steps for this forward: n_power_iterations in training mode; in
        eval mode none, unless the weight changed since the vectors were last updated (an
        optimizer step after the last training forward, a load): then iterate to
        convergence once, so that an evaluated model is normalized by a converged estimate
        and not by one that lags a step behind."""
        try:
            version = weight._version
        except (AttributeError, RuntimeError):  # functorch / compiled tensors
            version = None
        if self.training and getattr(self, "_frozen", False):
            return 0  # Constraint.bound reads the weight: no training step happened
        if self.training:
            self._synced_version = version
            return self.n_power_iterations
        if version is None or version == getattr(self, "_synced_version", None):
            return 0
        self._synced_version = version
        return _REFRESH_ITERATIONS

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        n_iterations = self._iterations(weight)
        if not self.operator:
            matrix = weight.reshape(weight.shape[0], -1)
            if n_iterations == _REFRESH_ITERATIONS and not self.training:
                self._warm_start(matrix.detach())  # exact top pair when not huge
            elif n_iterations:
                self._power_iteration(matrix.detach(), n_iterations)
            # clones, as torch's spectral_norm: autograd saves u and v, and a second training
            # forward before backward (a critic on real, then fake samples) updates them in place
            sigma = torch.dot(self._u.clone(), matrix.mv(self._v.clone()))
        else:
            if self.geometry.input_size is None:
                raise InvalidArgumentError(
                    "spectral normalization of a convolution needs its input size: pass "
                    "input_size=... or run a forward pass before reading .weight"
                )
            if self._u.numel() == 0:
                self._reset_conv_vectors(weight.detach())
            elif n_iterations:
                u, v = conv_power_iteration(
                    weight, self.geometry, self._u, n_iterations, self.eps
                )
                self._u.copy_(u)
                self._v.copy_(v)
            sigma = torch.sum(self._v.clone() * self.geometry.apply(self._u.clone(), weight))
        return weight * (self.lipschitz / sigma.clamp_min(self.eps))

    def _resize_on_load(self, state_dict, prefix, *args, **kwargs) -> None:
        for name in ("_u", "_v"):
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key]))
        key = prefix + "_u"
        if self.operator and key in state_dict and state_dict[key].numel():
            self.geometry = self.geometry.with_input_size(
                tuple(state_dict[key].shape[2:])
            )

    def extra_repr(self) -> str:
        size = "" if not self.operator else f", input_size={self.geometry.input_size}"
        return f"lipschitz={self.lipschitz:g}, n_power_iterations={self.n_power_iterations}{size}"


def spectral_norm(
    module: nn.Module,
    lipschitz: float = 1.0,
    n_power_iterations: int = 1,
    input_size=None,
    operator: bool = True,
    eps: float = 1e-12,
) -> nn.Module:
    """Constrain ``module.weight`` by spectral normalization; returns ``module``.

    Args:
        module: an ``nn.Linear`` or ``nn.Conv1d/2d/3d``.
        lipschitz: the target constant ``lambda``.
        n_power_iterations: power-iteration steps per training forward pass.
        input_size: a convolution's spatial input size; by default taken from the first
            forward pass.
        operator: for convolutions, normalize the convolution operator (default). ``False``
            normalizes the reshaped kernel like ``torch.nn.utils.spectral_norm``, which does
            not bound the layer's Lipschitz constant, and warns.

    Example:
        >>> import torch
        >>> from lipkit.nn import spectral_norm, lipschitz_bound
        >>> layer = spectral_norm(torch.nn.Linear(20, 30), lipschitz=2.0)
        >>> round(lipschitz_bound(layer), 3)
        2.0
    """
    check_layer(module, LAYER_TYPES, "spectral")
    geometry = geometry_of(module, input_size)
    weight = module.weight.detach()
    if isinstance(module, CONV_TYPES) and not operator:
        warnings.warn(
            "spectral_norm(operator=False) normalizes the reshaped kernel, which does not "
            "bound the convolution's Lipschitz constant (it can be exceeded by up to "
            "sqrt(kernel taps)); lipschitz_bound() reports the true operator bound",
            LipkitWarning,
            stacklevel=2,
        )
    constraint = SpectralNorm(weight, lipschitz, n_power_iterations, geometry, eps, operator)
    # a convolution whose input size is not known yet cannot be evaluated at registration
    lazy = constraint.operator and constraint.geometry.input_size is None
    return register_constraint(module, constraint, unsafe=lazy)
