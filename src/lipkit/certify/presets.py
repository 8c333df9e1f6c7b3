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

:func:`comparison_convnet` is the family of Prach et al.'s comparison itself, one network per
layer type (AOC, AOL, BCOP, Cayley, SOC, SLL, CPL), and :func:`liresnet` a LiResNet-style
residual network (Hu et al., 2023 / 2024) of SLL or CPL blocks with a Lipschitz-normalized
head (``last="unit-rows"``: each logit 1-Lipschitz, the pairwise certificate).
"""

from __future__ import annotations

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.nn import (
    METHODS,
    CayleyConv2d,
    CPLConv2d,
    MaxMin,
    ScaledAvgPool2d,
    SkewOrthogonalConv2d,
    SLLConv2d,
    aoc,
    aol,
    bcop,
    bjorck,
    make_lipschitz,
)
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


# Prach et al. (CVPR 2024), "1-Lipschitz Layers Compared": a stem convolution, stages of
# 3x3 layers at constant width, each stage closed by a 2x2 stride-2 convolution doubling the
# channels, then a dense layer and the head. (base width, layers per stage, dense width)
COMPARISON_SIZES = {"small": (16, 1, 256), "medium": (32, 2, 512)}
COMPARISON_LAYERS = ("aoc", "aol", "bcop", "cayley", "soc", "sll", "cpl")


def _conv_layer(kind: str, channels: int) -> list[nn.Module]:
    """One 3x3 ``channels -> channels`` layer of kind ``kind`` with its activation."""
    if kind in ("sll", "cpl"):  # residual blocks: ReLU inside, no activation after
        return [{"sll": SLLConv2d, "cpl": CPLConv2d}[kind](channels, channels)]
    if kind == "cayley":
        return [CayleyConv2d(channels, 3), MaxMin()]
    if kind == "soc":
        return [SkewOrthogonalConv2d(channels, 3), MaxMin()]
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    return [{"aoc": aoc, "aol": aol, "bcop": bcop}[kind](conv), MaxMin()]


def comparison_convnet(in_channels: int, image_size: int, classes: int, size: str = "small",
                       layer: str = "aoc", last: str = "orthonormal") -> nn.Sequential:
    """A network of Prach et al.'s comparison, built from one layer type.

    Stem: an orthogonal (AOC) 3x3 convolution to the base width; each stage: layers of kind
    ``layer`` (``"aoc"``, ``"aol"``, ``"bcop"``, ``"cayley"``, ``"soc"``, ``"sll"``,
    ``"cpl"``), then an exactly orthogonal 2x2 stride-2 AOC convolution doubling the width
    (``4 c -> 2 c`` per patch: orthonormal rows) and MaxMin, down to a 1 to 3 pixel map; then
    a Björck dense layer + MaxMin and ``last``. Cayley layers are circular convolutions.

    Example:
        >>> import torch
        >>> from lipkit.nn import lipschitz_bound
        >>> model = comparison_convnet(1, 8, 10, layer="sll").eval()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
        >>> lipschitz_bound(model) <= 1 + 1e-5
        True
    """
    if size not in COMPARISON_SIZES:
        raise UnknownMethodError("comparison size", size, COMPARISON_SIZES)
    if layer not in COMPARISON_LAYERS:
        raise UnknownMethodError("comparison layer", layer, COMPARISON_LAYERS)
    base, depth, dense = COMPARISON_SIZES[size]
    width, spatial = base, image_size
    modules: list[nn.Module] = [aoc(nn.Conv2d(in_channels, width, 3, padding=1)), MaxMin()]
    while spatial >= 4:
        for _ in range(depth):
            modules += _conv_layer(layer, width)
        modules += [aoc(nn.Conv2d(width, 2 * width, 2, stride=2)), MaxMin()]
        width, spatial = 2 * width, spatial // 2
    modules += [nn.Flatten(), bjorck(nn.Linear(width * spatial * spatial, dense)), MaxMin(),
                _last_layer(dense, classes, last)]
    return nn.Sequential(*modules)


LIRESNET_SIZES = {"small": (32, 4, 256), "medium": (64, 8, 512)}  # (width, blocks, dense)


def liresnet(in_channels: int, image_size: int, classes: int, size: str = "small",
             block: str = "sll", last: str = "unit-rows") -> nn.Sequential:
    """A LiResNet-style network: an AOC stem, ``blocks`` 1-Lipschitz residual blocks (SLL or
    CPL) at constant width, an exactly orthogonal ``4 x 4`` stride-4 AOC "neck", a Björck
    dense layer and a Lipschitz-normalized head (``"unit-rows"``, LiResNet's choice).

    Example:
        >>> import torch
        >>> from lipkit.nn import lipschitz_bound
        >>> model = liresnet(1, 8, 10).eval()
        >>> model(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 10])
        >>> lipschitz_bound(model[:-1]) <= 1 + 1e-5
        True
    """
    if size not in LIRESNET_SIZES:
        raise UnknownMethodError("LiResNet size", size, LIRESNET_SIZES)
    if block not in ("sll", "cpl"):
        raise UnknownMethodError("LiResNet block", block, ("sll", "cpl"))
    width, blocks, dense = LIRESNET_SIZES[size]
    kind = {"sll": SLLConv2d, "cpl": CPLConv2d}[block]
    if image_size % 4:
        raise InvalidArgumentError(f"liresnet needs an image size divisible by 4, got "
                                   f"{image_size}")
    spatial = image_size // 4
    modules: list[nn.Module] = [aoc(nn.Conv2d(in_channels, width, 3, padding=1)), MaxMin()]
    modules += [kind(width, width) for _ in range(blocks)]
    modules += [aoc(nn.Conv2d(width, 2 * width, 4, stride=4)), MaxMin(), nn.Flatten(),
                bjorck(nn.Linear(2 * width * spatial * spatial, dense)), MaxMin(),
                _last_layer(dense, classes, last)]
    return nn.Sequential(*modules)
