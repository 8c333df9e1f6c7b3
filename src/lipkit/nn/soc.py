"""Skew orthogonal convolutions, SOC (Singla & Feizi, ICML 2021), with a proven bound for the
truncated series.

A convolution ``C`` (``c -> c`` channels, odd kernel, stride 1, zero or circular "same"
padding) has as adjoint ``C^T`` the convolution with the kernel flipped in space and
transposed in channels, ``K'[o, i, t] = K[i, o, -t]``, and the same padding. So the kernel
``L = K - K'`` defines a skew-symmetric operator ``A = C - C^T`` (exactly: ``A^T = -A``), and
``exp(A)`` is orthogonal. SOC applies the exponential as its Taylor series truncated after
``n`` terms, ``exp_n(A) x = sum_{i <= n} A^i x / i!`` (``n`` convolutions with ``L``), which is
*not* orthogonal: its singular values are ``|sum_{i<=n} (j theta)^i / i!|`` for the
eigenvalues ``j theta`` of ``A``, above 1 for small ``n`` (Prach et al. 2024 report SOC models
whose measured constant exceeds 1). lipkit certifies, with ``a >= ||A||_2`` proven (the DFT
bound of :func:`lipkit.nn.conv_operator_norm_upper` on the layer's input size),

    ||exp_n(A)||_2 <= ||exp(A)||_2 + ||exp(A) - exp_n(A)||_2 <= 1 + sum_{i > n} a^i / i!.

Training normalizes ``L`` so that a power-iteration estimate of ``||A||`` is ``max_norm``
(1 by default), keeping ``a`` near 1 and the tail small: ``n = 6`` terms in training
(tail ``2.3e-4`` at ``a = 1``), ``eval_terms = 12`` in inference and export (``5e-10``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.errors import InvalidArgumentError, check_positive, check_positive_integer
from lipkit.nn.constraint import Constraint, geometry_of, register_constraint
from lipkit.nn.operator_norm import conv_power_iteration

_WARM_UP_ITERATIONS = 50


def skew_kernel(kernel: torch.Tensor) -> torch.Tensor:
    """``K - K'`` with ``K'[o, i, t] = K[i, o, -t]``: the kernel of ``C - C^T``."""
    dims = tuple(range(2, kernel.ndim))
    return kernel - kernel.transpose(0, 1).flip(dims)


def exponential_tail(a: float, terms: int) -> float:
    """``sum_{i > terms} a^i / i!`` for ``a >= 0``, rounded up.

    Summed term by term up to ``terms + 200``; the rest is at most ``a^(N+1) / (N+1)! e^a``
    (Lagrange's remainder).
    """
    if a == 0:
        return 0.0
    total, term = 0.0, 1.0
    for i in range(1, terms + 201):
        term *= a / i
        if i > terms:
            total += term
    remainder = term * a / (terms + 201) * math.exp(a)
    return (total + remainder) * (1 + 1e-12)


class SkewSymmetric(Constraint):
    """Parametrization ``K -> L = (K - K') * max_norm / sigma``, ``sigma`` the power-iteration
    estimate of ``||C_{K - K'}||``: the skew-symmetric generator of a SOC layer."""

    method = "soc"

    def __init__(self, max_norm: float = 1.0, geometry=None, eps: float = 1e-12):
        super().__init__(max_norm, geometry)
        self.eps = eps
        self.register_buffer("_u", torch.empty(0))

    def forward(self, kernel: torch.Tensor) -> torch.Tensor:
        skew = skew_kernel(kernel)
        if self.geometry.input_size is None:
            raise InvalidArgumentError("a SOC layer needs its input size: run a forward pass "
                                       "first")
        if self._u.numel() == 0 or self._u.shape[2:] != self.geometry.input_size:
            u = torch.randn(1, kernel.shape[1], *self.geometry.input_size, dtype=kernel.dtype,
                            device=kernel.device)
            self._u = conv_power_iteration(skew, self.geometry, u / u.norm(),
                                           _WARM_UP_ITERATIONS, self.eps)[0]
        elif self.training and not getattr(self, "_frozen", False):
            self._u.copy_(conv_power_iteration(skew, self.geometry, self._u, 1, self.eps)[0])
        u = self._u.clone()
        sigma = self.geometry.apply(u, skew).norm()
        return skew * (self.lipschitz / sigma.clamp_min(self.eps))


class SkewOrthogonalConv2d(nn.Module):
    """``y = exp_n(A) x + b`` with ``A`` the skew-symmetric convolution of ``self.conv``.

    ``terms`` Taylor terms in training, ``eval_terms`` in eval mode; the certified bound
    (``lipschitz_bound``) is ``1 + sum_{i > eval_terms} a^i / i!`` for the proven ``a``.
    ``padding_mode``: ``"zeros"`` or ``"circular"`` (both make ``A`` exactly skew).

    Example:
        >>> import torch
        >>> from lipkit.nn import SkewOrthogonalConv2d, lipschitz_bound
        >>> layer = SkewOrthogonalConv2d(4).eval()
        >>> x = torch.randn(2, 4, 8, 8)
        >>> torch.allclose(layer(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1), atol=1e-4)
        True
        >>> lipschitz_bound(layer) < 1 + 1e-8
        True
    """

    def __init__(self, channels: int, kernel_size: int = 3, bias: bool = True, *,
                 terms: int = 6, eval_terms: int = 12, max_norm: float = 1.0,
                 padding_mode: str = "zeros", input_size=None, device=None, dtype=None):
        super().__init__()
        if kernel_size % 2 == 0:
            raise InvalidArgumentError(f"SOC needs an odd kernel size, got {kernel_size}")
        if padding_mode not in ("zeros", "circular"):
            raise InvalidArgumentError(f"SOC padding_mode must be 'zeros' or 'circular' (the "
                                       f"adjoint is then a convolution), got {padding_mode!r}")
        self.terms = check_positive_integer("terms", terms)
        self.eval_terms = check_positive_integer("eval_terms", eval_terms)
        check_positive("max_norm", max_norm)
        self.conv = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2,
                              bias=False, padding_mode=padding_mode, device=device, dtype=dtype)
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype)) if bias \
            else None
        register_constraint(self.conv, SkewSymmetric(max_norm, geometry_of(self.conv,
                                                                           input_size)),
                            unsafe=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        terms = self.terms if self.training else self.eval_terms
        with parametrize.cached():
            term = self.conv(x)  # (its pre-hook records the input size)
            kernel = self.conv.weight
            # the factor 1/i goes into the (small) kernel, not onto the activations; the sum
            # is accumulated in place (an addition's backward keeps none of its inputs)
            y = x + term if self.bias is None else torch.add(
                x, self.bias.reshape(-1, 1, 1)).add_(term)
            for i in range(2, terms + 1):
                # the layer's own convolution (its padding mode) with another kernel
                term = self.conv._conv_forward(term, kernel / i, None)
                y.add_(term)
        return y

    def combine_bound(self, generator_bound: float) -> float:
        """``1 + sum_{i > eval_terms} a^i / i!`` for ``||A|| <= a``."""
        return 1.0 + exponential_tail(generator_bound, self.eval_terms)

    def plain(self) -> nn.Module:
        """The exported form: this module with its generator baked into a plain conv."""
        return self

    def extra_repr(self) -> str:
        return f"terms={self.terms}, eval_terms={self.eval_terms}"
