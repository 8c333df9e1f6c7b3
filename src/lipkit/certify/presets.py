"""1-Lipschitz classifier presets made of lipkit.nn pieces: MLPs and ConvNets.

Every hidden layer is constrained by a :data:`lipkit.nn.METHODS` method (``bjorck``,
``orthogonal``, ``aol``, ``spectral``, ...) to constant 1 and followed by MaxMin (gradient
norm preserving, Anil et al. 2019). The last layer decides the certificate form:

- ``"orthonormal"``: orthonormal rows (Björck): ``||W||_2 = 1`` and
  ``||w_i - w_j|| = sqrt(2)``: the global and pairwise radii coincide;
- ``"unit-rows"``: each row scaled to norm 1 (:class:`UnitRows`): every logit is
  1-Lipschitz, the pairwise constants ``||w_i - w_j||`` may be smaller than ``sqrt(2)``,
  and ``||W||_2`` may exceed 1 (so the global form is the loosest).

ConvNet sizes follow the small / medium / large ConvNets of Prach et al. (CVPR 2024,
"1-Lipschitz Layers Compared") in spirit: stages of convolutions + MaxMin, downsampling by
1-Lipschitz scaled average pooling, then a dense head.
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.nn import METHODS, MaxMin, ScaledAvgPool2d, bjorck, make_lipschitz
from lipkit.nn.constraint import Constraint, check_layer, register_constraint

LAST_LAYERS = ("orthonormal", "unit-rows")
# (channels of each stage, convolutions per stage, width of the dense layer)
CONVNET_SIZES = {"small": ((16, 32), 1, 128), "medium": ((32, 64), 2, 256),
                 "large": ((64, 128), 3, 512)}
MLP_SIZES = {"small": (128,), "medium": (256, 256), "large": (512, 512, 512)}


class UnitRows(Constraint):
    """Each row of a dense weight divided by its l2 norm: every output is 1-Lipschitz."""

    method = "unit-rows"

    def __init__(self, eps: float = 1e-12):
        super().__init__(1.0)
        self.eps = eps

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / weight.norm(dim=1, keepdim=True).clamp_min(self.eps)


def unit_rows(layer: nn.Linear) -> nn.Linear:
    """Constrain ``layer`` to rows of unit l2 norm (in place); returns it."""
    check_layer(layer, (nn.Linear,), "unit-rows")
    return register_constraint(layer, UnitRows())


def _last_layer(in_features: int, classes: int, last: str) -> nn.Linear:
    layer = nn.Linear(in_features, classes)
    if last == "orthonormal":
        return bjorck(layer, 1.0)
    if last == "unit-rows":
        return unit_rows(layer)
    raise UnknownMethodError("last layer", last, LAST_LAYERS)


def _check_layer_method(layer: str) -> None:
    if layer not in METHODS:
        raise UnknownMethodError("layer method", layer, METHODS)


def lipschitz_mlp(in_features: int, classes: int, hidden=(256, 256), layer: str = "bjorck",
                  last: str = "orthonormal") -> nn.Sequential:
    """A 1-Lipschitz MLP: ``hidden`` dense layers (method ``layer``) + MaxMin, then ``last``.

    ``hidden`` is a tuple of widths or a size name (``"small"``, ``"medium"``, ``"large"``).

    Example:
        >>> from lipkit.nn import lipschitz_bound
        >>> model = lipschitz_mlp(64, 10, hidden=(32,), layer="bjorck").eval()
        >>> lipschitz_bound(model) <= 1 + 1e-4
        True
    """
    _check_layer_method(layer)
    if isinstance(hidden, str):
        if hidden not in MLP_SIZES:
            raise UnknownMethodError("MLP size", hidden, MLP_SIZES)
        hidden = MLP_SIZES[hidden]
    if any(width % 2 for width in hidden):
        raise InvalidArgumentError(f"hidden widths must be even (MaxMin pairs), got {hidden}")
    modules: list[nn.Module] = []
    width = in_features
    for size in hidden:
        modules += [nn.Linear(width, size), MaxMin()]
        width = size
    body = nn.Sequential(*modules)
    make_lipschitz(body, method=_dense_method(layer), lipschitz=1.0)
    return nn.Sequential(*body, _last_layer(width, classes, last))


def _dense_method(layer: str) -> str:
    return "orthogonal" if layer == "bcop" else layer


def lipschitz_convnet(in_channels: int, image_size: int, classes: int, size: str = "small",
                      layer: str = "orthogonal", last: str = "orthonormal") -> nn.Sequential:
    """A 1-Lipschitz ConvNet: stages of 3x3 convolutions + MaxMin, each ending in a 2x2
    scaled average pooling (1-Lipschitz), then a dense layer + MaxMin and ``last``.

    ``layer`` constrains convolutions and dense layers alike (``orthogonal``: BCOP for the
    convolutions and Björck for the dense layer; ``bjorck`` is taken as ``orthogonal``).
    """
    if size not in CONVNET_SIZES:
        raise UnknownMethodError("ConvNet size", size, CONVNET_SIZES)
    layer = "orthogonal" if layer == "bjorck" else layer
    _check_layer_method(layer)
    channels, depth, dense = CONVNET_SIZES[size]
    modules: list[nn.Module] = []
    current, spatial = in_channels, image_size
    for width in channels:
        for index in range(depth):
            modules += [nn.Conv2d(current if index == 0 else width, width, 3, padding=1),
                        MaxMin()]
        current = width
        if spatial >= 2:
            modules.append(ScaledAvgPool2d(2))
            spatial //= 2
    modules += [nn.Flatten(), nn.Linear(current * spatial * spatial, dense), MaxMin()]
    body = nn.Sequential(*modules)
    make_lipschitz(body, method=layer, lipschitz=1.0)
    return nn.Sequential(*body, _last_layer(dense, classes, last))
