"""Adaptive orthogonal convolutions, AOC-style (after Boissin et al. 2025): exact orthogonal
convolutions with a stride and groups, as one ordinary kernel.

A stride-``s`` convolution is built as the composition of two exact pieces, per group:

1. a stride-1 BCOP convolution (:mod:`lipkit.nn.bcop`) ``c -> c`` with kernel ``k - s + 1``,
   orthogonal as a circular operator and orthogonal on the infinite grid (paraunitary);
2. a "patch" convolution with kernel ``s`` and stride ``s`` (non-overlapping patches: a
   reshaped ``out x (c s^2)`` matrix applied to every patch), whose matrix has orthonormal
   rows or columns (Björck iterations), so the patch operator has orthonormal rows
   (``out <= c s^2``) or columns.

Their composition is *one* convolution with kernel ``k``, stride ``s``, the first piece's
padding: ``K[o, i, t] = sum_{m, a + u = t} P[o, m, a] B[m, i, u]`` (the full convolution of
the kernels), computed once per step, so the layer costs one ordinary convolution. The
operator has orthonormal rows or columns, exactly (in exact arithmetic), with circular
padding ``(k - s) / 2`` on each side and input sizes divisible by ``s``; with zero padding it
is a restriction of the infinite-grid operator, hence ``lambda``-Lipschitz (orthogonal away
from the borders). Stride 1 is BCOP itself (``max(in, out)`` channels, sliced). Groups make the
operator block diagonal: each group is built alike. Dilation is not supported.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn.bcop import _orthonormalize, bcop_kernel
from lipkit.nn.constraint import Constraint, check_layer, geometry_of, register_constraint
from lipkit.nn.operator_norm import gram_bound

_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d}


def compose_kernels(patch: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """The kernel of ``patch o block``: ``K[o, i, t] = sum_{m, a + u = t} P[o, m, a]
    B[m, i, u]`` for ``patch`` ``(out, m, *s)`` and ``block`` ``(m, in, *k_B)``."""
    dims = block.ndim - 2
    # a transposed convolution is the full convolution: batch = input channels of the block
    full = _TRANSPOSED[dims](block.transpose(0, 1), patch.transpose(0, 1))
    return full.transpose(0, 1)


class AdaptiveOrthogonal(Constraint):
    """Parametrization: (BCOP matrices, patch matrix) -> an orthogonal strided kernel."""

    method = "aoc"

    def __init__(self, layer: nn.Module, lipschitz: float = 1.0, tol: float = 1e-6,
                 max_iterations: int = 30):
        super().__init__(lipschitz, geometry_of(layer))
        if any(d != 1 for d in layer.dilation):
            raise InvalidArgumentError(f"aoc supports dilation 1 only, got {layer.dilation}")
        self.kernel_size = tuple(layer.kernel_size)
        self.stride = tuple(layer.stride)
        if any(k < s for k, s in zip(self.kernel_size, self.stride, strict=True)):
            raise InvalidArgumentError(f"aoc needs kernel_size >= stride, got kernel "
                                       f"{self.kernel_size} and stride {self.stride}")
        self.groups = layer.groups
        self.in_per_group = layer.in_channels // layer.groups
        self.out_per_group = layer.out_channels // layer.groups
        self.strided = any(s > 1 for s in self.stride)
        self.block_size = tuple(k - s + 1 for k, s in zip(self.kernel_size, self.stride,
                                                          strict=True))
        self.tol, self.max_iterations = float(tol), int(max_iterations)

    @property
    def _block_channels(self) -> int:
        return self.in_per_group if self.strided else max(self.in_per_group,
                                                          self.out_per_group)

    def forward(self, block_parameters: torch.Tensor,
                patch_parameters: torch.Tensor) -> torch.Tensor:
        kernels = []
        for g in range(self.groups):
            block = bcop_kernel(block_parameters[g], self.block_size, self.tol,
                                self.max_iterations)
            if not self.strided:
                kernels.append(block[: self.out_per_group, : self.in_per_group])
                continue
            matrix = _orthonormalize(patch_parameters[g:g + 1], self.tol,
                                     self.max_iterations)[0]
            patch = matrix.reshape(self.out_per_group, self.in_per_group, *self.stride)
            kernels.append(compose_kernels(patch, block))
        return self.lipschitz * torch.cat(kernels)

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        factory = {"dtype": weight.dtype, "device": weight.device}
        channels = self._block_channels
        count = 1 + sum(k - 1 for k in self.block_size)
        block = torch.linalg.qr(torch.randn(self.groups, count, channels, channels,
                                            **factory))[0]
        columns = self.in_per_group * math.prod(self.stride) if self.strided else 0
        patch = torch.randn(self.groups, self.out_per_group, columns, **factory)
        if self.strided:
            patch = patch / math.sqrt(max(self.out_per_group, columns))
        return block, patch

    def guarantee(self, layer: nn.Module) -> float | None:
        """Orthogonality on the infinite grid (``lambda`` in exact arithmetic), checked on
        the kernel as computed by its Gram row sums (the polyphase form with a stride), for
        every input size: zero padding restricts the infinite-grid operator."""
        # the side whose Gram is the identity: the rows when they are the fewer
        rows = self.out_per_group <= self.in_per_group * math.prod(self.stride)
        return gram_bound(layer.weight, self.geometry, side="output" if rows else "input")

    def extra_repr(self) -> str:
        return (f"lipschitz={self.lipschitz:g}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, groups={self.groups}")


def aoc(module: nn.Module, lipschitz: float = 1.0, tol: float = 1e-6,
        max_iterations: int = 30) -> nn.Module:
    """Make ``module`` (``nn.Conv1d`` / ``nn.Conv2d``, any stride <= kernel, any groups) an
    orthogonal convolution times ``lipschitz``; returns it. Re-initializes the kernel.

    Exactly orthogonal (orthonormal rows or columns) with ``padding_mode="circular"``,
    padding ``(k - s) / 2`` and input sizes divisible by the stride; ``lambda``-Lipschitz
    with zero padding.

    Example:
        >>> import torch
        >>> from lipkit.nn import aoc, lipschitz_bound
        >>> conv = aoc(torch.nn.Conv2d(4, 16, 4, stride=2, padding=1, bias=False,
        ...                            padding_mode="circular"))
        >>> x = torch.randn(3, 4, 8, 8)  # 16 = 4 * 2 * 2 outputs per patch: an isometry
        >>> torch.allclose(conv(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-4)
        True
    """
    check_layer(module, (nn.Conv1d, nn.Conv2d), "aoc")
    return register_constraint(module, AdaptiveOrthogonal(module, lipschitz, tol,
                                                           max_iterations))
