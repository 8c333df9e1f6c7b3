"""SDP-based Lipschitz layers, SLL (Araujo et al., ICLR 2023, Theorem 3).

The SLL residual layer is ``y = x - 2 W T^{-1} relu(W^T x + b)`` with the diagonal

    T_ii = sum_j |W^T W|_ij q_j / q_i,   q > 0 learned,

and is 1-Lipschitz for every ``W`` and ``q``: ``T - W^T W`` is positive semi-definite (for any
symmetric ``M`` and ``q > 0``, ``x^T M x <= sum_ij |M_ij| |x_i| |x_j| <= sum_i x_i^2 sum_j
|M_ij| q_j / q_i`` by ``2 |x_i x_j| <= x_i^2 q_j / q_i + x_j^2 q_i / q_j``). With ``P = W^T``
and ReLU positively homogeneous, the layer is ``x - V^T relu(V x + b')`` with
``V = sqrt(2) T^{-1/2} P``, ``||V||_2 <= sqrt(2)``: a :class:`~lipkit.nn.cpl.ConvexPotentialBlock`
whose layer is constrained by :class:`SDPScaling`, the row rescaling
``P -> lambda T^{-1/2} P`` (``lambda = sqrt(2)`` in a block). Unlike CPL's power iteration,
this is a proof for every weight value: the block's guarantee is 1.

For a convolution ``P`` (``hidden x channels``, kernel ``k``), ``|W^T W|_ij`` becomes the sum
over all shifts of the absolute autocorrelation of the kernel's output channels ``i, j``
(the rows of the block-Toeplitz Gram operator ``P P^T``); the rescaled convolution on the
infinite grid has norm at most ``lambda``, and zero padding only crops it.
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.nn.aol import _CONV_FUNCTIONS, AlmostOrthogonal
from lipkit.nn.constraint import (
    CONV_TYPES,
    LAYER_TYPES,
    Constraint,
    check_layer,
    geometry_of,
    register_constraint,
)
from lipkit.nn.cpl import SQRT2, ConvexPotentialBlock, check_same_size_conv


def row_gram_abs(weight: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """``sum over shifts |P P^T|``: the absolute Gram matrix of the rows (output channels),
    block diagonal over groups for a grouped convolution; ``(out, out)``."""
    if weight.ndim == 2:
        return (weight @ weight.mT).abs()
    dims = weight.ndim - 2
    out_channels = weight.shape[0]
    shifts = [k - 1 for k in weight.shape[2:]]
    per_group = out_channels // groups
    gram = weight.new_zeros(out_channels, out_channels)
    for g in range(groups):
        block = weight[g * per_group:(g + 1) * per_group]  # (out_g, in_g, *k)
        # correlation of every output channel's kernel with every other's, all shifts
        correlation = _CONV_FUNCTIONS[dims](block, block, padding=shifts)
        rows = slice(g * per_group, (g + 1) * per_group)
        gram[rows, rows] = correlation.abs().flatten(2).sum(dim=2)
    return gram


class SDPScaling(Constraint):
    """Parametrization ``P -> lambda T^{-1/2} P`` with ``T_ii = sum_j |P P^T|_ij q_j / q_i``.

    ``q = exp(log_q)`` is a parameter of the parametrization (one per output), trained with
    the layer.
    """

    method = "sll"

    def __init__(self, out_features: int, lipschitz: float = 1.0, geometry=None,
                 eps: float = 1e-12):
        super().__init__(lipschitz, geometry)
        self.log_q = nn.Parameter(torch.zeros(out_features))
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        groups = 1 if self.geometry is None else self.geometry.groups
        gram = row_gram_abs(weight, groups)
        # T is invariant to scaling q: shift log q so that its largest entry is 0 (exp of a
        # trained log q of 100 overflows float32 and would make the weight NaN), and floor it
        # where its smallest would underflow (0 / 0)
        log_q = self.log_q.to(weight.dtype)
        q = (log_q - log_q.max().detach()).clamp_min(-60.0).exp()
        t = (gram @ q) / q
        scale = t.clamp_min(self.eps).rsqrt()
        return self.lipschitz * weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))

    # the same form of proof as AOL's rescaling (Gershgorin with weights), checked alike, on
    # the rows' Gram matrices, which SLL normalizes
    guarantee = AlmostOrthogonal.guarantee
    gram_side = "output"


def sdp_scaling(module: nn.Module, lipschitz: float = 1.0) -> nn.Module:
    """Constrain ``module`` (Linear or Conv) by SLL's rescaling of its rows; returns it.

    Example:
        >>> import torch
        >>> from lipkit.nn import sdp_scaling
        >>> layer = sdp_scaling(torch.nn.Linear(10, 20), lipschitz=2.0)
        >>> float(torch.linalg.matrix_norm(layer.weight.detach(), ord=2)) <= 2 + 1e-5
        True
    """
    check_layer(module, LAYER_TYPES, "sll")
    out_features = module.out_features if isinstance(module, nn.Linear) else module.out_channels
    geometry = geometry_of(module) if isinstance(module, CONV_TYPES) else None
    return register_constraint(module, SDPScaling(out_features, lipschitz, geometry))


def sll(layer: nn.Module) -> ConvexPotentialBlock:
    """An SLL block around ``layer`` (its weight is ``P = W^T``: input -> hidden).

    Example:
        >>> import torch
        >>> from lipkit.nn import sll, lipschitz_bound
        >>> block = sll(torch.nn.Conv2d(4, 8, 3, padding=1))
        >>> lipschitz_bound(block) <= 1 + 1e-6
        True
    """
    check_same_size_conv(layer, "sll")
    return ConvexPotentialBlock(sdp_scaling(layer, SQRT2))


class SLLLinear(ConvexPotentialBlock):
    """A dense SLL block on ``features`` inputs with ``hidden`` hidden units."""

    def __init__(self, features: int, hidden: int | None = None, *, device=None, dtype=None):
        super().__init__(sdp_scaling(nn.Linear(features, hidden or features, device=device,
                                               dtype=dtype), SQRT2))


class SLLConv2d(ConvexPotentialBlock):
    """A convolutional SLL block: ``channels -> hidden`` ``k x k`` convolution and back."""

    def __init__(self, channels: int, hidden: int | None = None, kernel_size: int = 3, *,
                 device=None, dtype=None):
        layer = nn.Conv2d(channels, hidden or channels, kernel_size, padding=kernel_size // 2,
                          device=device, dtype=dtype)
        super().__init__(sdp_scaling(layer, SQRT2))

