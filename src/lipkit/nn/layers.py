"""Constrained layers as classes: thin conveniences over the parametrizations.

Each class is the torch layer it extends, with its constraint registered in ``__init__``;
``export()`` turns it back into that torch layer.
"""

from __future__ import annotations

from torch import nn

from lipkit.nn.aoc import aoc
from lipkit.nn.aol import aol
from lipkit.nn.bcop import bcop
from lipkit.nn.bjorck import bjorck
from lipkit.nn.spectral import spectral_norm


class SpectralLinear(nn.Linear):
    """``nn.Linear`` with spectral normalization to ``lipschitz`` (see ``spectral_norm``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 lipschitz: float = 1.0, n_power_iterations: int = 1, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        spectral_norm(self, lipschitz, n_power_iterations)


class BjorckLinear(nn.Linear):
    """``nn.Linear`` with orthonormal rows/columns times ``lipschitz`` (see ``bjorck``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 lipschitz: float = 1.0, order: int = 1, tol: float = 1e-5,
                 backward: str = "projected", device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        bjorck(self, lipschitz, order=order, tol=tol, backward=backward)


class AOLLinear(nn.Linear):
    """``nn.Linear`` with AOL rescaling to ``lipschitz`` (see ``aol``)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 lipschitz: float = 1.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device, dtype)
        aol(self, lipschitz)


class SpectralConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose convolution *operator* is normalized to ``lipschitz``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, lipschitz: float = 1.0, n_power_iterations: int = 1, input_size=None,
                 device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        spectral_norm(self, lipschitz, n_power_iterations, input_size=input_size)


class AOLConv2d(nn.Conv2d):
    """``nn.Conv2d`` with AOL rescaling to ``lipschitz`` (see ``aol``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, lipschitz: float = 1.0, device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, device, dtype)
        aol(self, lipschitz)


class BCOPConv2d(nn.Conv2d):
    """An orthogonal ``nn.Conv2d`` (BCOP) times ``lipschitz``; ``padding`` defaults to same."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1,
                 padding="same", bias: bool = True, padding_mode: str = "zeros", *,
                 lipschitz: float = 1.0, device=None, dtype=None):
        if padding == "same" and stride != 1:
            padding = (kernel_size - 1) // 2 if isinstance(kernel_size, int) else tuple(
                (k - 1) // 2 for k in kernel_size)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 1, 1, bias,
                         padding_mode, device, dtype)
        bcop(self, lipschitz)


class AOCConv2d(nn.Conv2d):
    """An orthogonal ``nn.Conv2d`` with any stride <= kernel and groups (see ``aoc``);
    ``padding`` defaults to ``(k - s) // 2``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding=None, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 *, lipschitz: float = 1.0, device=None, dtype=None):
        padding = (kernel_size - stride) // 2 if padding is None else padding
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 1, groups,
                         bias, padding_mode, device, dtype)
        aoc(self, lipschitz)
