"""Block convolution orthogonal parametrization, BCOP (Li et al., NeurIPS 2019).

An exactly orthogonal ``k x k`` convolution built from small orthogonal matrices. A 1-D
"block convolution" with the two taps ``[P, I - P]``, ``P`` a symmetric projector, has the
frequency response ``P + (I - P) z``, which is unitary for every ``|z| = 1``; a product of
``k - 1`` such factors along each spatial axis, times an orthogonal matrix ``H``, is a
``k x k`` kernel whose response is unitary at every frequency (a paraunitary filter bank).
The convolution is therefore orthogonal as an operator with circular padding and stride 1
when ``in_channels == out_channels``; with zero padding it is 1-Lipschitz (a crop of the
circular operator on a larger torus) and orthogonal away from the borders. With unequal
channel counts the kernel is the top-left block of a ``max(in, out)``-channel orthogonal
kernel, so its operator has orthonormal rows or columns.

The trainable parameter is a stack of ``c x c`` matrices (``c = max(in, out)``): ``H`` and
one matrix per projector, whose first ``c // 2`` columns are orthonormalized by Björck
iterations into ``Q`` with ``P = Q Q^T``. Registering BCOP re-initializes the kernel (a
given kernel has no BCOP preimage in general).
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn.bjorck import bjorck_orthonormalize
from lipkit.nn.constraint import Constraint, check_layer, geometry_of, register_constraint


def _orthonormalize(matrices: torch.Tensor, tol: float, max_iterations: int) -> torch.Tensor:
    if matrices.numel() == 0:
        return matrices
    scale = torch.linalg.matrix_norm(matrices.detach(), ord=2).clamp_min(1e-12)
    q, _, _ = bjorck_orthonormalize(
        matrices / scale[:, None, None], tol=tol, max_iterations=max_iterations
    )
    return q


def bcop_kernel(
    parameters: torch.Tensor, kernel_size: tuple[int, ...], tol: float = 1e-6,
    max_iterations: int = 30,
) -> torch.Tensor:
    """The orthogonal ``(c, c, *kernel_size)`` kernel from the stacked ``(n, c, c)`` parameters."""
    channels = parameters.shape[-1]
    rank = channels // 2
    orthogonal = _orthonormalize(parameters[:1], tol, max_iterations)[0]
    bases = _orthonormalize(parameters[1:, :, :rank], tol, max_iterations)
    eye = torch.eye(channels, dtype=parameters.dtype, device=parameters.device)
    kernel = orthogonal.reshape(channels, channels, *([1] * len(kernel_size)))
    index = 0
    for axis, size in enumerate(kernel_size):
        for _ in range(size - 1):
            basis = bases[index]
            projector = basis @ basis.mT
            index += 1
            first = torch.einsum("om...,mn->on...", kernel, projector)
            second = torch.einsum("om...,mn->on...", kernel, eye - projector)
            pad_shape = list(kernel.shape)
            pad_shape[2 + axis] = 1
            zeros = kernel.new_zeros(pad_shape)
            kernel = torch.cat([first, zeros], dim=2 + axis) + torch.cat(
                [zeros, second], dim=2 + axis
            )
    return kernel


class BlockOrthogonalConv(Constraint):
    """Parametrization: stacked matrices -> ``lambda`` times an orthogonal conv kernel."""

    method = "bcop"

    def __init__(self, layer: nn.Module, lipschitz: float = 1.0, tol: float = 1e-6,
                 max_iterations: int = 30):
        super().__init__(lipschitz, geometry_of(layer))
        if layer.groups != 1:
            raise InvalidArgumentError("bcop supports groups=1 only")
        self.out_channels, self.in_channels = layer.out_channels, layer.in_channels
        self.kernel_size = tuple(layer.kernel_size)
        self.tol, self.max_iterations = float(tol), int(max_iterations)

    def forward(self, parameters: torch.Tensor) -> torch.Tensor:
        kernel = bcop_kernel(parameters, self.kernel_size, self.tol, self.max_iterations)
        return self.lipschitz * kernel[: self.out_channels, : self.in_channels]

    @torch.no_grad()
    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        channels = max(self.out_channels, self.in_channels)
        count = 1 + sum(k - 1 for k in self.kernel_size)
        random = torch.randn(count, channels, channels, dtype=weight.dtype, device=weight.device)
        q, _ = torch.linalg.qr(random)
        return q

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}, kernel_size={self.kernel_size}"


def bcop(module: nn.Module, lipschitz: float = 1.0, tol: float = 1e-6,
         max_iterations: int = 30) -> nn.Module:
    """Make ``module`` (``nn.Conv1d`` / ``nn.Conv2d``) an orthogonal convolution; returns it.

    Use ``padding="same"`` (odd kernels) and ``padding_mode="circular"`` for an exactly
    orthogonal operator; with zero padding the layer is ``lambda``-Lipschitz.

    Example:
        >>> import torch
        >>> from lipkit.nn import bcop, lipschitz_bound
        >>> conv = bcop(torch.nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"))
        >>> abs(lipschitz_bound(conv, example_input=torch.randn(1, 4, 8, 8)) - 1.0) < 1e-4
        True
    """
    check_layer(module, (nn.Conv1d, nn.Conv2d), "bcop")
    constraint = BlockOrthogonalConv(module, lipschitz, tol, max_iterations)
    return register_constraint(module, constraint)
