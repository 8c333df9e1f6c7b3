"""Pooling layers with the right Lipschitz factor.

Average pooling over non-overlapping ``k x k`` windows has l2 constant ``1/k``, not 1: the
mean of ``n`` values moves by at most ``||x|| / sqrt(n)``. In general, with ``T`` taps per
window and each input in at most ``m = prod(ceil(k_i / s_i))`` windows, the pooling matrix
has row sums 1 and column sums at most ``m / T``, so ``||A||_2 <= sqrt(||A||_1 ||A||_inf)
= sqrt(m / T)``.

- :class:`ScaledAvgPool2d` multiplies average pooling by ``sqrt(T)``: 1-Lipschitz (and norm
  preserving on constant windows) for non-overlapping windows, ``sqrt(m)`` in general.
- :class:`L2NormPool2d` outputs the l2 norm of each window, ``sqrt(sum x^2 + eps)``, a
  1-Lipschitz map of each window, so ``sqrt(m)``-Lipschitz overall (Anil et al. 2019 use
  such norm pooling in Lipschitz convnets).

:func:`pooling_bound` gives the factor for these and for torch's ``AvgPool``/``MaxPool``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _overlap(kernel_size, stride) -> int:
    return math.prod(math.ceil(k / s) for k, s in zip(kernel_size, stride, strict=True))


class ScaledAvgPool2d(nn.AvgPool2d):
    """``sqrt(kh * kw) * AvgPool2d``: 1-Lipschitz when windows do not overlap."""

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__(kernel_size, stride, padding, ceil_mode=False, count_include_pad=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = math.prod(_pair(self.kernel_size))
        return super().forward(x) * math.sqrt(taps)


class L2NormPool2d(nn.Module):
    """The l2 norm of each window, ``sqrt(sum_window x^2 + eps)``."""

    def __init__(self, kernel_size, stride=None, padding=0, eps: float = 1e-12):
        super().__init__()
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride if stride is not None else kernel_size)
        self.padding = _pair(padding)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        taps = math.prod(self.kernel_size)
        mean_square = F.avg_pool2d(x * x, self.kernel_size, self.stride, self.padding,
                                   count_include_pad=True)
        return torch.sqrt(mean_square * taps + self.eps)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


_POOL_DIMS = {
    nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3,
    nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3,
}


def pooling_bound(module: nn.Module) -> float | None:
    """The l2 Lipschitz constant bound of a pooling layer, or None if not a known pooling."""
    if isinstance(module, L2NormPool2d):
        return math.sqrt(_overlap(module.kernel_size, module.stride))
    dims = next((d for kind, d in _POOL_DIMS.items() if isinstance(module, kind)), None)
    if dims is None:
        return None
    kernel = _expand(module.kernel_size, dims)
    stride = _expand(module.stride if module.stride is not None else module.kernel_size, dims)
    if isinstance(module, nn.MaxPool1d | nn.MaxPool2d | nn.MaxPool3d):
        # the max of a window is 1-Lipschitz in the window's l2 norm; an input lies in at
        # most min(k, ceil(span / s)) windows per axis, span = (k - 1) d + 1
        dilation = _expand(module.dilation, dims)
        windows = math.prod(
            min(k, math.ceil(((k - 1) * d + 1) / s))
            for k, s, d in zip(kernel, stride, dilation, strict=True)
        )
        return math.sqrt(windows)
    if isinstance(module, ScaledAvgPool2d):
        # entries 1 / sqrt(T), row sums sqrt(T), column sums <= overlap / sqrt(T): sqrt(overlap),
        # in closed form (the product of the general formula with sqrt(T) rounds below 1)
        return math.sqrt(_overlap(kernel, stride))
    taps = math.prod(kernel)
    divisor = taps
    padding = _expand(module.padding, dims)
    if getattr(module, "divisor_override", None):
        divisor = abs(module.divisor_override)  # torch accepts a negative one: -mean
    elif (any(padding) and not module.count_include_pad) or module.ceil_mode:
        divisor = 1  # border windows may average fewer samples: stay conservative
    # ||A||_2 <= sqrt(||A||_1 ||A||_inf): column sums <= overlap / divisor, row sums taps / divisor
    return math.sqrt(_overlap(kernel, stride) * taps) / divisor


def _expand(value, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(value)
