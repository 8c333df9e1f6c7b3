"""Convex potential layers, CPL (Meunier et al., ICML 2022), and the residual form they share
with SLL (:mod:`lipkit.nn.sll`).

A CPL block is one explicit Euler step on the gradient flow of a convex potential:

    y = x - 2 / ||W||_2^2 W^T relu(W x + b).

For the positively homogeneous ReLU this is ``y = x - V^T relu(V x + b')`` with
``V = sqrt(2) W / ||W||_2`` and ``b' = sqrt(2) b / ||W||_2`` (a re-parametrized bias), which is
how :class:`ConvexPotentialBlock` computes it: ``V`` is the weight of an ordinary
``nn.Linear`` / ``nn.Conv*d`` and ``V^T`` its exact adjoint (the transposed matrix, or the
transposed convolution with the same padding). Its Jacobian ``I - V^T D V`` (``D`` diagonal,
entries in [0, 1]: ReLU's slopes) is symmetric with eigenvalues in ``[1 - ||V||^2, 1]``, so

    ||block||_L <= max(1, ||V||_2^2 - 1),

which is 1 whenever ``||V||_2 <= sqrt(2)``. CPL normalizes ``V`` by spectral normalization to
``sqrt(2)`` (:func:`lipkit.nn.spectral_norm`, the power iteration a training step can afford);
the power iteration approaches ``||V||`` from below, so the certified bound of a block uses
the *proven* norm of its layer (an SVD for a dense weight, the DFT bound of
:mod:`lipkit.nn.operator_norm` for a convolution, or the materialized operator's norm on a
small feature map) and can exceed 1 slightly: it is reported
as it is. :func:`lipkit.nn.export` keeps the block (its layer baked into a plain torch layer):
its plain form is this formula with fixed weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn.constraint import CONV_TYPES
from lipkit.nn.spectral import spectral_norm

_TRANSPOSED = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
SQRT2 = math.sqrt(2.0)


def check_same_size_conv(conv: nn.Module, what: str) -> None:
    """A convolution whose output has its input's size and whose adjoint is a transposed
    convolution with the same padding: stride 1, zero padding ``d (k - 1) / 2``, odd k."""
    if not isinstance(conv, CONV_TYPES):
        return
    kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
    same = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation, strict=True))
    padding = conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)
    if (any(s != 1 for s in conv.stride) or conv.groups != 1 or conv.padding_mode != "zeros"
            or any(k % 2 == 0 for k in kernel) or padding not in ("same", same)):
        raise InvalidArgumentError(
            f"{what} needs a convolution with odd kernel, stride 1, groups 1 and zero "
            f"padding {same} (output size = input size), got {conv}")


class ConvexPotentialBlock(nn.Module):
    """``y = x - V^T relu(V x + b)`` with ``V`` the weight of ``layer`` (see module docstring).

    ``layer`` maps the input to the hidden features: an ``nn.Linear(features, hidden)`` or an
    ``nn.Conv*d(channels, hidden, k)`` with stride 1 and zero padding ``(k - 1) / 2``.
    """

    def __init__(self, layer: nn.Module):
        super().__init__()
        if not isinstance(layer, (nn.Linear, *CONV_TYPES)):
            raise UnsupportedModuleError("", layer, "expected nn.Linear or nn.Conv1d/2d/3d")
        check_same_size_conv(layer, type(self).__name__)
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # one evaluation of a parametrized weight serves V and V^T (and advances a power
        # iteration once per step)
        with parametrize.cached():
            hidden = torch.relu(self.layer(x))
            weight = self.layer.weight
            if isinstance(self.layer, nn.Linear):
                return x - hidden @ weight
            return x - _TRANSPOSED[weight.ndim - 2](hidden, weight, None, 1, self._padding, 0,
                                                    1, self.layer.dilation)

    @property
    def _padding(self) -> tuple[int, ...]:
        return tuple(d * (k - 1) // 2 for k, d in zip(self.layer.kernel_size,
                                                      self.layer.dilation, strict=True))

    def plain(self) -> nn.Module:
        """The exported form: the same formula, as this base class (``export`` bakes the
        layer's weight first)."""
        self.__class__ = ConvexPotentialBlock
        return self

    @staticmethod
    def combine_bound(layer_bound: float) -> float:
        """``max(1, s^2 - 1)`` for a proven ``||V||_2 <= s``."""
        return max(1.0, layer_bound * layer_bound - 1.0)


def cpl(layer: nn.Module, n_power_iterations: int = 1, input_size=None) -> ConvexPotentialBlock:
    """A CPL block around ``layer`` (``V`` spectrally normalized to ``sqrt(2)``).

    Example:
        >>> import torch
        >>> from lipkit.nn import cpl, lipschitz_bound
        >>> block = cpl(torch.nn.Linear(8, 16))
        >>> y = block(torch.randn(4, 8))
        >>> round(lipschitz_bound(block.eval()), 6)
        1.0
    """
    check_same_size_conv(layer, "cpl")
    return ConvexPotentialBlock(spectral_norm(layer, SQRT2, n_power_iterations, input_size))


class CPLLinear(ConvexPotentialBlock):
    """A dense CPL block on ``features`` inputs with ``hidden`` hidden units."""

    def __init__(self, features: int, hidden: int | None = None, *, n_power_iterations: int = 1,
                 device=None, dtype=None):
        layer = nn.Linear(features, hidden or features, device=device, dtype=dtype)
        super().__init__(spectral_norm(layer, SQRT2, n_power_iterations))


class CPLConv2d(ConvexPotentialBlock):
    """A convolutional CPL block: ``channels -> hidden`` ``k x k`` convolution and back."""

    def __init__(self, channels: int, hidden: int | None = None, kernel_size: int = 3, *,
                 n_power_iterations: int = 1, input_size=None, device=None, dtype=None):
        layer = nn.Conv2d(channels, hidden or channels, kernel_size, padding=kernel_size // 2,
                          device=device, dtype=dtype)
        super().__init__(spectral_norm(layer, SQRT2, n_power_iterations, input_size))
