"""Cayley convolutions (Trockman & Kolter, ICLR 2021): an orthogonal circular convolution
computed in the Fourier domain.

A circular convolution on an ``n_1 x n_2`` torus is block-diagonalised by the 2-D DFT: at each
frequency ``omega`` it multiplies the input's spectrum by the ``c x c`` matrix
``K_hat(omega)``. With ``A(omega) = K_hat(omega) - K_hat(omega)^H`` (skew-Hermitian), the
Cayley transform

    Q(omega) = (I + A(omega))^{-1} (I - A(omega))

is unitary, so the layer ``y = IDFT(Q(omega) DFT(x)) + b`` is orthogonal: all singular values
of its operator are 1 (in exact arithmetic; ``I + A`` is always invertible since ``A`` has an
imaginary spectrum). ``K`` real gives ``Q(-omega) = conj(Q(omega))``, so real inputs have
real outputs, and the real FFT computes half the frequencies.

The layer is a *circular* convolution by definition, with a full ``n_1 x n_2`` kernel (the
inverse DFT of ``Q``): there is no zero-padded version with the same matrices (cropping a
zero-padded input's output keeps it 1-Lipschitz but not orthogonal). Channels in = out.
The certified bound (``lipschitz_bound``) is the exact operator norm, ``max_omega
sigma_1(Q(omega))`` by an SVD in float64 at the input size of the last forward pass, of the
``Q`` the forward pass uses (computed in the layer's own dtype, where rounding leaves it
unitary only to ~1e-7 in float32, more when ``I + A`` is ill-conditioned) and of the
kernel's transform in float64, the larger. :func:`lipkit.nn.export` turns the layer into a
:class:`FourierConv2d` holding the forward's ``Q``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError


def cayley_transfer(kernel: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``Q(omega)`` for the real-FFT frequencies of an ``size`` torus: ``(n_1, n_2 // 2 + 1,
    c, c)``."""
    channels = kernel.shape[0]
    spectrum = torch.fft.rfft2(kernel, s=size).permute(2, 3, 0, 1)  # (n1, m, c, c)
    skew = spectrum - spectrum.mH
    eye = torch.eye(channels, dtype=skew.dtype, device=skew.device)
    return torch.linalg.solve(eye + skew, eye - skew)


def apply_transfer(transfer: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``IDFT(Q(omega) DFT(x))`` with the real FFT over the last two dimensions."""
    size = tuple(x.shape[-2:])
    spectrum = torch.fft.rfft2(x)  # (b, c, n1, m)
    mixed = torch.einsum("hwoi,bihw->bohw", transfer, spectrum)
    return torch.fft.irfft2(mixed, s=size)


def transfer_norm(transfer: torch.Tensor) -> float:
    """``max_omega sigma_1(Q(omega))``: the exact operator norm of the circular layer."""
    transfer = transfer.detach().to(torch.complex128)
    if not bool(torch.isfinite(transfer).all()):
        raise InvalidArgumentError("a Cayley / Fourier convolution's per-frequency matrices "
                                   "are not finite (its kernel overflows the Cayley "
                                   "transform): its Lipschitz constant is undefined")
    return float(torch.linalg.matrix_norm(transfer, ord=2).max())


class CayleyConv2d(nn.Module):
    """An orthogonal ``channels -> channels`` circular convolution (see module docstring).

    Example:
        >>> import torch
        >>> from lipkit.nn import CayleyConv2d, lipschitz_bound
        >>> layer = CayleyConv2d(4, 3, bias=False)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> torch.allclose(layer(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-4)
        True
        >>> abs(lipschitz_bound(layer) - 1) < 1e-6
        True
    """

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True, *,
                 device=None, dtype=None):
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        bound = 1.0 / math.sqrt(channels * kernel_size * kernel_size)
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size,
                                               **factory).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(channels, **factory)) if bias else None
        self.input_size: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_size = tuple(x.shape[-2:])
        y = apply_transfer(cayley_transfer(self.weight, self.input_size), x)
        return y if self.bias is None else y + self.bias.reshape(-1, 1, 1)

    def bound(self) -> float:
        """The exact operator norm (an SVD in float64) at the last input size, of the
        transfer matrices the forward pass computes (in the weight's dtype) and of the
        kernel's transform in float64, the larger."""
        if self.input_size is None:
            raise InvalidArgumentError("a Cayley convolution's operator depends on the input "
                                       "size: run a forward pass or pass example_input=")
        with torch.no_grad():
            computed = transfer_norm(cayley_transfer(self.weight.detach(), self.input_size))
            if self.weight.dtype == torch.float64:
                return computed
            # and the kernel's own Cayley transform, in float64: the layer's function read
            # from its stored kernel; the larger of the two holds for both readings
            exact = transfer_norm(cayley_transfer(self.weight.detach().double(),
                                                  self.input_size))
        return max(computed, exact)

    def plain(self) -> nn.Module:
        """The exported form: :class:`FourierConv2d` with ``Q`` at the last input size."""
        if self.input_size is None:
            raise InvalidArgumentError("export a Cayley convolution after a forward pass (its "
                                       "matrices depend on the input size)")
        with torch.no_grad():
            transfer = cayley_transfer(self.weight.detach(), self.input_size)
            bias = None if self.bias is None else self.bias.detach().clone()
        return FourierConv2d(transfer, self.input_size, bias)


class FourierConv2d(nn.Module):
    """A circular convolution given by its per-frequency matrices (real-FFT half):
    ``y = IDFT(Q(omega) DFT(x)) + b`` on inputs of exactly ``input_size``."""

    def __init__(self, transfer: torch.Tensor, input_size: tuple[int, int],
                 bias: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("transfer", transfer)
        self.input_size = tuple(input_size)
        self.bias = None if bias is None else nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise InvalidArgumentError(f"FourierConv2d was exported for inputs of size "
                                       f"{self.input_size}, got {tuple(x.shape[-2:])}")
        y = apply_transfer(self.transfer, x)
        return y if self.bias is None else y + self.bias.reshape(-1, 1, 1)

    def bound(self) -> float:
        """The exact operator norm, ``max_omega sigma_1(Q(omega))`` (float64)."""
        return transfer_norm(self.transfer)
