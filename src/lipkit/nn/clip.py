"""Weight clipping (Arjovsky, Chintala & Bottou, ICML 2017).

Every entry of the weight is clamped to ``[-c, c]``. The parameters then lie in a compact
set, so the network is Lipschitz; the constant this implies for one layer is the largest
operator norm over all weights in the box:

- dense ``(m, n)``: ``||W||_2 <= ||W||_F <= c * sqrt(m * n)``, attained by the all-``c``
  matrix, so the bound is exact;
- convolution with ``T`` kernel taps, ``groups`` g: each tap matrix has norm at most
  ``c * sqrt(m n) / g`` and the operator is a sum of ``T`` shifted taps, so
  ``||A||_2 <= T * c * sqrt(m * n_in) / g`` (attained by the all-``c`` kernel at the DC
  frequency of a large enough input, up to border effects), times the norm of a tap's view
  of the padding when it is not 1: reflect and replicate padding repeat border samples, and
  a circular padding that wraps around repeats whole outputs.

Give either the clip value ``c`` or a target ``lipschitz`` (then ``c`` is chosen so the
implied bound equals it).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, check_positive
from lipkit.nn.constraint import (
    CONV_TYPES,
    LAYER_TYPES,
    Constraint,
    check_layer,
    geometry_of,
    register_constraint,
)
from lipkit.nn.operator_norm import ConvGeometry, _padding_norm_unknown_size


def clip_implied_bound(layer: nn.Module, clip_value: float) -> float:
    """The l2 Lipschitz bound implied by ``|w_ij| <= clip_value`` for this layer's shape.

    The clamp runs in the weight's dtype, where ``clip_value`` rounds to the nearest float32
    (0.1 becomes 0.10000000149): the bound uses that value when it is the larger."""
    weight_shape = _weight_shape(layer)
    dtype = _weight_dtype(layer)
    if dtype is not None and dtype.is_floating_point:
        clip_value = max(clip_value, float(torch.tensor(clip_value, dtype=dtype)))
    out_features, in_per_group = weight_shape[:2]
    if isinstance(layer, CONV_TYPES):
        groups = layer.groups
        taps = math.prod(weight_shape[2:])
        # the operator is sum_t S_t P (x) K_t: ||S_t P|| is 1 only for zero padding and a
        # circular padding that does not wrap around
        padding = _padding_norm_unknown_size(ConvGeometry.of(layer), weight_shape[2:])
        return (
            clip_value * taps * math.sqrt(out_features * in_per_group * groups) / groups * padding
        )
    return clip_value * math.sqrt(out_features * in_per_group)


def _weight_dtype(layer: nn.Module) -> torch.dtype | None:
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(layer, "weight"):
        return layer.parametrizations.weight.original.dtype
    weight = getattr(layer, "weight", None)
    return None if weight is None else weight.dtype


def _weight_shape(layer: nn.Module) -> tuple[int, ...]:
    from torch.nn.utils import parametrize

    if parametrize.is_parametrized(layer, "weight"):
        return tuple(layer.parametrizations.weight.original.shape)
    return tuple(layer.weight.shape)


class WeightClip(Constraint):
    """Parametrization ``W -> clamp(W, -c, c)``."""

    method = "clip"

    def __init__(self, clip_value: float, implied_bound: float, geometry=None):
        super().__init__(implied_bound, geometry)
        self.clip_value = check_positive("clip_value", clip_value)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.clamp(-self.clip_value, self.clip_value)

    def guarantee(self, layer: nn.Module) -> float:
        return clip_implied_bound(layer, self.clip_value)

    def extra_repr(self) -> str:
        return f"clip_value={self.clip_value:g}, implied_bound={self.lipschitz:g}"


def weight_clip(
    module: nn.Module, clip_value: float | None = None, lipschitz: float | None = None
) -> nn.Module:
    """Constrain ``module.weight`` to ``[-c, c]`` entrywise; returns ``module``.

    Args:
        module: an ``nn.Linear`` or ``nn.Conv1d/2d/3d``.
        clip_value: ``c``. Exactly one of ``clip_value`` and ``lipschitz`` is given.
        lipschitz: a target constant; ``c`` is set so that the implied bound equals it.

    Example:
        >>> import torch
        >>> from lipkit.nn import weight_clip, lipschitz_bound
        >>> layer = weight_clip(torch.nn.Linear(4, 9), clip_value=0.01)
        >>> lipschitz_bound(layer) <= 0.01 * (4 * 9) ** 0.5
        True
    """
    check_layer(module, LAYER_TYPES, "clip")
    if (clip_value is None) == (lipschitz is None):
        raise InvalidArgumentError("weight_clip needs exactly one of clip_value and lipschitz")
    if lipschitz is not None:
        per_unit = clip_implied_bound(module, 1.0)
        clip_value = check_positive("lipschitz", lipschitz) / per_unit
    clip_value = check_positive("clip_value", clip_value)
    constraint = WeightClip(clip_value, clip_implied_bound(module, clip_value), geometry_of(module))
    return register_constraint(module, constraint)
