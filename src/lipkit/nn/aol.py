"""Almost-orthogonal Lipschitz layers, AOL (Prach & Lampert, ECCV 2022).

A cheap rescaling with a proof instead of an iteration: for a dense weight ``W`` let
``T = W^T W`` and ``d_i = (sum_j |T_ij|)^(-1/2)``; then ``W diag(d)`` has operator norm at
most 1 (Prach & Lampert, Theorem 1: ``diag(sum_j |T_ij|) - T`` is diagonally dominant,
hence positive semi-definite). For a convolution ``T`` is the kernel's autocorrelation
``T_ij[s] = sum_o sum_t K_oi[t] K_oj[t + s]`` over all shifts ``s`` (the Gram matrix of the
operator, block-Toeplitz), and the same rescaling of the input channels bounds the
convolution operator on every input size, with zero or circular padding, any stride.

The constraint's guarantee is ``lambda`` (times the padding map's norm for reflect and
replicate padding, and for a circular padding that wraps around, ``before + after >
d (k - 1)``, which repeats outputs), whatever the weight: no iteration has to converge.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.nn.constraint import (
    CONV_TYPES,
    LAYER_TYPES,
    Constraint,
    check_layer,
    geometry_of,
    register_constraint,
)
from lipkit.nn.operator_norm import gram_bound

_CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def aol_scale(weight: torch.Tensor, groups: int = 1, eps: float = 1e-12) -> torch.Tensor:
    """The AOL input rescaling ``d`` (one factor per input column / input channel)."""
    if weight.ndim == 2:
        gram = weight.mT @ weight
        return gram.abs().sum(dim=1).clamp_min(eps).rsqrt()
    dims = weight.ndim - 2
    out_channels, in_per_group = weight.shape[:2]
    kernel = weight.shape[2:]
    scales = []
    for block in weight.reshape(groups, out_channels // groups, in_per_group, *kernel):
        # autocorrelation over every shift: input (in, out, *k) correlated with (in, out, *k)
        channels_first = block.transpose(0, 1)
        shifts = [k - 1 for k in kernel]
        gram = _CONV_FUNCTIONS[dims](channels_first, channels_first, padding=shifts)
        scales.append(gram.abs().flatten(1).sum(dim=1).clamp_min(eps).rsqrt())
    return torch.cat(scales)


class AlmostOrthogonal(Constraint):
    """Parametrization ``W -> lambda * W diag(d)`` with the AOL scale ``d``."""

    method = "aol"
    #: the Gram matrices the rescaling normalizes: AOL's columns (input channels)
    gram_side = "input"

    def __init__(self, lipschitz: float = 1.0, geometry=None, eps: float = 1e-12):
        super().__init__(lipschitz, geometry)
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        groups = 1 if self.geometry is None else self.geometry.groups
        scale = aol_scale(weight, groups, self.eps)
        shape = (1, -1) + (1,) * (weight.ndim - 2)
        if weight.ndim == 2:
            return self.lipschitz * weight * scale.reshape(1, -1)
        # input channel i of group g sits at column i - g * in_per_group of the kernel
        in_per_group = weight.shape[1]
        scale = scale.reshape(groups, in_per_group)
        out_per_group = weight.shape[0] // groups
        per_output = scale.repeat_interleave(out_per_group, dim=0)  # (out, in_per_group)
        return self.lipschitz * weight * per_output.reshape(weight.shape[0], in_per_group,
                                                             *shape[2:])

    def guarantee(self, layer: nn.Module) -> float | None:
        """The rescaling's proof (Gershgorin's bound on the Gram matrices, ``<= lambda`` in
        exact arithmetic, times the padding map's norm) checked on the weight as computed,
        for every input size. Dense layers: ``None``, their certified norm is exact."""
        if self.geometry is None:
            return None
        return gram_bound(layer.weight, self.geometry, side=self.gram_side)


def aol(module: nn.Module, lipschitz: float = 1.0) -> nn.Module:
    """Constrain ``module`` (Linear or Conv) by AOL rescaling; returns ``module``.

    Example:
        >>> import torch
        >>> from lipkit.nn import aol
        >>> layer = aol(torch.nn.Linear(10, 20))
        >>> float(torch.linalg.matrix_norm(layer.weight, ord=2)) <= 1 + 1e-6
        True
    """
    check_layer(module, LAYER_TYPES, "aol")
    constraint = AlmostOrthogonal(lipschitz, geometry_of(module) if isinstance(
        module, CONV_TYPES) else None)
    return register_constraint(module, constraint)
