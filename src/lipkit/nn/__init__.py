"""Enforce ``||f||_L <= lambda`` by construction.

Weight constraints are ``torch.nn.utils.parametrize`` parametrizations on ordinary
``nn.Linear`` / ``nn.Conv*d`` layers (``weight_clip``, ``spectral_norm``, ``bjorck``,
``aol``, ``bcop``, ``aoc``, ``sdp_scaling``); activations (``GroupSort``, ``MaxMin``,
``FullSort``) and blocks (``ScaledAvgPool2d``, ``L2NormPool2d``, ``Residual``, the CPL / SLL
residual blocks, SOC and Cayley convolutions) with known constants;
``lipschitz_bound`` composes the guarantee of a model, ``make_lipschitz`` constrains an
existing model, and ``export`` bakes the constrained weights into a plain torch copy.
"""

from lipkit.nn.activation import FullSort, GroupSort, MaxMin
from lipkit.nn.aoc import AdaptiveOrthogonal, aoc
from lipkit.nn.aol import AlmostOrthogonal, aol
from lipkit.nn.bcop import BlockOrthogonalConv, bcop
from lipkit.nn.bjorck import BjorckOrthogonal, bjorck, bjorck_orthonormalize
from lipkit.nn.bound import lipschitz_bound, register_bound_rule
from lipkit.nn.cayley import CayleyConv2d, FourierConv2d
from lipkit.nn.clip import WeightClip, weight_clip
from lipkit.nn.constraint import Constraint
from lipkit.nn.cpl import ConvexPotentialBlock, CPLConv2d, CPLLinear, cpl
from lipkit.nn.export import export
from lipkit.nn.layers import (
    AOCConv2d,
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    SpectralConv2d,
    SpectralLinear,
)
from lipkit.nn.make import METHODS, make_lipschitz
from lipkit.nn.operator_norm import (
    ConvGeometry,
    conv_matrix,
    conv_operator_norm_upper,
    conv_power_iteration,
    gram_bound,
    linear_operator_norm,
    materialize_up_to,
)
from lipkit.nn.pooling import L2NormPool2d, ScaledAvgPool2d
from lipkit.nn.residual import Residual
from lipkit.nn.sll import SDPScaling, SLLConv2d, SLLLinear, sdp_scaling, sll
from lipkit.nn.soc import SkewOrthogonalConv2d, SkewSymmetric
from lipkit.nn.spectral import SpectralNorm, spectral_norm

__all__ = [
    "METHODS",
    "AOCConv2d",
    "AOLConv2d",
    "AOLLinear",
    "AdaptiveOrthogonal",
    "AlmostOrthogonal",
    "BCOPConv2d",
    "BjorckLinear",
    "BjorckOrthogonal",
    "BlockOrthogonalConv",
    "CPLConv2d",
    "CPLLinear",
    "CayleyConv2d",
    "Constraint",
    "ConvGeometry",
    "ConvexPotentialBlock",
    "FourierConv2d",
    "FullSort",
    "GroupSort",
    "L2NormPool2d",
    "MaxMin",
    "Residual",
    "SDPScaling",
    "SLLConv2d",
    "SLLLinear",
    "ScaledAvgPool2d",
    "SkewOrthogonalConv2d",
    "SkewSymmetric",
    "SpectralConv2d",
    "SpectralLinear",
    "SpectralNorm",
    "WeightClip",
    "aoc",
    "aol",
    "bcop",
    "bjorck",
    "bjorck_orthonormalize",
    "conv_matrix",
    "conv_operator_norm_upper",
    "conv_power_iteration",
    "cpl",
    "export",
    "gram_bound",
    "linear_operator_norm",
    "lipschitz_bound",
    "make_lipschitz",
    "materialize_up_to",
    "register_bound_rule",
    "sdp_scaling",
    "sll",
    "spectral_norm",
    "weight_clip",
]
