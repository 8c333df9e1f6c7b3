"""Elementwise activations: each one's exact function and its sound slope range.

An :class:`Elementwise` is a function ``phi`` applied to every entry, with the slope range
``[alpha, beta]`` that contains every difference quotient ``(phi(a) - phi(b)) / (a - b)``
(LipSDP's slope restriction; ``max(|alpha|, |beta|)`` is its Lipschitz constant). For a
function that is continuous and piecewise continuously differentiable, the quotient is the
mean of ``phi'`` over ``[b, a]``, so the range is ``[inf phi', sup phi']`` over the pieces;
where that infimum or supremum is only approached (ELU's ``alpha e^x`` as ``x -> -inf``) the
range is still the smallest closed one. The function is the formula PyTorch and ONNX compute,
parameters included, so that a network of these computes what the user's model computes.

:func:`elementwise` builds one from its kind and parameters and refuses, with the reason,
parameters under which the function is not Lipschitz (a jump, an exponential slope).
Ranges that are closed forms in the parameters are exact or rounded outwards; the four
smooth gates whose extreme slopes are roots of transcendental equations (SiLU, GELU, its
tanh form, Mish) carry constants derived below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lipkit.errors import InvalidArgumentError

# torch's SELU constants (torch/nn/modules/activation.py; Klambauer et al. 2017)
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946

# Extreme slopes (and minima) of the smooth gates ``x g(x)``, rounded outwards in the 10th
# decimal. For SiLU and both GELUs ``phi(x) - phi(-x) = x``, so ``phi'(x) + phi'(-x) = 1``
# and the smallest slope is one minus the largest. The largest is ``phi'`` at the root of
# ``phi''``: SiLU ``phi'' = s(1 - s)(2 - x tanh(x / 2))`` (``s`` the sigmoid) vanishes only
# at ``|x| = 2.39935728...`` (``x tanh(x/2)`` is even and increasing in ``|x|``); GELU
# ``phi'' = pdf(x)(2 - x^2)`` at ``|x| = sqrt 2``, ``phi' = Phi(sqrt 2) + sqrt 2 pdf(sqrt 2)``;
# GELU-tanh at ``|x| = 1.41850400...`` and Mish at ``x = -2.25637640...`` (smallest) and
# ``x = 1.49057118...`` (largest), the only sign changes of ``phi''`` on [-8, 8] on a grid of
# step 1/50 (beyond, ``phi'`` tends monotonically to 0 and 1). The roots and values were
# computed with 40-digit arithmetic (mpmath); a root's error of ``e`` moves ``phi'`` by
# ``O(e^2)``. tests/estimate/test_estimate_activations.py samples the quotients densely and
# checks every one lies inside and the extremes come within 1e-6.
_GATES = {  # kind -> (smallest slope, largest slope, global minimum of phi)
    "silu": (-0.0998393202, 1.0998393202, -0.2784645428),
    "gelu": (-0.1289041452, 1.1289041452, -0.1699712075),
    "gelu_tanh": (-0.1289930687, 1.1289930687, -0.1700407506),
    "mish": (-0.1125261224, 1.0884981613, -0.3088434131),
}
# Softplus: torch replaces log1p(exp(beta x)) / beta by x where beta x > threshold, a drop
# of log1p(exp(-threshold)) / beta there (see _softplus); refused above this fraction of 1 / beta
_SOFTPLUS_MAX_JUMP = 1e-6
# where F.softplus's own switch to x is below float64 resolution: log1p(exp(-40)) = 4.2e-18
# is under half an ulp of 40 (3.6e-15), so F.softplus(x, beta, 40) is the continuous softplus
_SOFTPLUS_EXACT_THRESHOLD = 40.0


@dataclass(frozen=True, eq=False)
class Elementwise:
    """``phi`` applied to every entry; ``(phi(a) - phi(b)) / (a - b)`` lies in ``slope``.

    ``minimum``: for a ``phi`` that decreases then increases, a lower bound on its global
    minimum (a bound propagation's floor); None otherwise.
    """

    function: Callable[[torch.Tensor], torch.Tensor]
    slope: tuple[float, float]
    minimum: float | None = None


def _up(value: float) -> float:
    return math.nextafter(value, math.inf)


def _down(value: float) -> float:
    return math.nextafter(value, -math.inf)


def _number(kind: str, name: str, value) -> float:
    """A finite real parameter (a bool or a tensor of several values is refused)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InvalidArgumentError(f"{kind}: {name} must be one number, got a tensor of "
                                       f"shape {tuple(value.shape)}")
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{kind}: {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidArgumentError(f"{kind}: {name} must be finite, got {value!r}")
    return float(value)


def _fixed(function, slope, minimum=None):
    def build() -> Elementwise:
        return Elementwise(function, slope, minimum)
    return build


def _leaky_relu(negative_slope=0.01) -> Elementwise:
    """``x`` for ``x >= 0``, ``negative_slope x`` below (any sign): slopes ``{s, 1}``."""
    s = _number("leaky_relu", "negative_slope", negative_slope)
    return Elementwise(lambda x: F.leaky_relu(x, s), (min(s, 1.0), max(s, 1.0)))


def _prelu(negative_slope) -> Elementwise:
    """PReLU with one learned slope per entry (``negative_slope``: a tensor of the feature
    shape, flattened): ``x`` for ``x > 0``, ``s_i x`` below; slopes ``[min(s, 1), max(s, 1)]``."""
    if not isinstance(negative_slope, torch.Tensor) or not negative_slope.is_floating_point():
        raise InvalidArgumentError(f"prelu: negative_slope must be a float tensor, got "
                                   f"{type(negative_slope).__name__}")
    slopes = negative_slope.detach().to(torch.float64).reshape(-1)
    bad = int((~torch.isfinite(slopes)).sum())
    if bad:
        raise InvalidArgumentError(f"prelu: negative_slope has {bad} non-finite entries")
    width = slopes.numel()

    def function(x):
        flat = x.reshape(-1, width)
        return torch.where(flat > 0, flat, flat * slopes).reshape(x.shape)

    low, high = float(slopes.min()), float(slopes.max())
    return Elementwise(function, (min(low, 1.0), max(high, 1.0)))


def _elu_range(alpha: float) -> tuple[float, float]:
    """ELU's slopes: 1 above 0, ``alpha e^x`` below (between 0 and ``alpha``)."""
    return (min(0.0, alpha), max(1.0, alpha))


def _elu(alpha=1.0) -> Elementwise:
    """``x`` for ``x > 0``, ``alpha (e^x - 1)`` below (torch allows any real ``alpha``)."""
    a = _number("elu", "alpha", alpha)
    return Elementwise(lambda x: F.elu(x, a), _elu_range(a))


def _celu(alpha=1.0) -> Elementwise:
    """``max(0, x) + min(0, alpha (e^(x / alpha) - 1))``: slopes ``e^(x / alpha)`` in (0, 1]
    below 0 for ``alpha > 0``; for ``alpha < 0`` they grow without bound as ``x -> -inf``."""
    a = _number("celu", "alpha", alpha)
    if a <= 0:
        raise InvalidArgumentError(f"celu with alpha={a} is not Lipschitz (alpha <= 0: its "
                                   "slope e^(x / alpha) is unbounded as x -> -inf)")
    return Elementwise(lambda x: F.celu(x, a), (0.0, 1.0))


def _selu(alpha=SELU_ALPHA, scale=SELU_SCALE) -> Elementwise:
    """``scale * elu(x, alpha)`` (ONNX Selu's ``gamma`` is ``scale``)."""
    a, g = _number("selu", "alpha", alpha), _number("selu", "scale", scale)
    if a == SELU_ALPHA and g == SELU_SCALE:
        function = torch.selu
    else:
        def function(x):
            return g * F.elu(x, a)
    low, high = _elu_range(a)
    ends = (g * low, g * high)
    return Elementwise(function, (_down(min(ends)), _up(max(ends))))


def _softplus(beta=1.0, threshold=math.inf) -> Elementwise:
    """``log(1 + e^(beta x)) / beta``, slopes ``sigmoid(beta x)`` in (0, 1).

    PyTorch computes ``x`` instead where ``beta x > threshold``: the function then drops by
    ``log1p(exp(-threshold)) / beta`` there (2.1e-9 at the default threshold 20, beta 1), a
    jump, so strictly its Lipschitz constant is infinite. lipkit imports the continuous
    softplus (its function here is that softplus to float64 rounding), whose bounds are the
    ones users mean; the module's output differs from it by at most that drop, and
    thresholds whose drop exceeds 1e-6 / beta are refused. ONNX's Softplus has no threshold.
    """
    b = _number("softplus", "beta", beta)
    if b <= 0:
        raise InvalidArgumentError(f"softplus with beta={b} (lipkit imports beta > 0)")
    if threshold != math.inf:
        t = _number("softplus", "threshold", threshold)
        jump = math.log1p(math.exp(-t)) if t > -700 else math.inf
        if jump > _SOFTPLUS_MAX_JUMP:
            raise InvalidArgumentError(
                f"softplus with threshold={t} jumps by log1p(exp(-threshold)) / beta = "
                f"{jump / b:.3g} where beta x crosses the threshold (a discontinuity; lipkit "
                f"imports thresholds whose jump is at most {_SOFTPLUS_MAX_JUMP:g} / beta)")
    return Elementwise(lambda x: F.softplus(x, b, _SOFTPLUS_EXACT_THRESHOLD), (0.0, 1.0))


def _hardtanh(min_val=-1.0, max_val=1.0) -> Elementwise:
    """``min(max(x, min_val), max_val)`` (``torch.clamp``; either end may be infinite, for
    a one-sided clamp): slopes {0, 1}, or 0 when ``min_val >= max_val`` (a constant)."""
    low = _number_or_infinite("hardtanh", "min_val", min_val, -math.inf)
    high = _number_or_infinite("hardtanh", "max_val", max_val, math.inf)
    return Elementwise(lambda x: torch.clamp(x, low, high),
                       (0.0, 1.0) if low < high else (0.0, 0.0))


def _number_or_infinite(kind: str, name: str, value, infinity: float) -> float:
    if value is None:
        return infinity
    if isinstance(value, float) and value == infinity:
        return value
    return _number(kind, name, value)


def _hardsigmoid(scale=1.0 / 6.0, offset=0.5) -> Elementwise:
    """``min(max(scale x + offset, 0), 1)`` (ONNX HardSigmoid's ``alpha``, ``beta``; torch's
    is ``scale = 1/6``, ``offset = 1/2``): slopes between 0 and ``scale``."""
    a = _number("hardsigmoid", "scale", scale)
    b = _number("hardsigmoid", "offset", offset)
    if a == 1.0 / 6.0 and b == 0.5:
        def function(x):  # F.hardsigmoid's own arithmetic, bit for bit, but with a double
            return torch.clamp(x + 3.0, 0.0, 6.0) / 6.0  # backward (gradient searches)
    else:
        def function(x):
            return torch.clamp(a * x + b, 0.0, 1.0)
    return Elementwise(function, (min(a, 0.0), max(a, 0.0)))


def _gelu(approximate="none") -> Elementwise:
    """``x Phi(x)``, or with ``approximate='tanh'``
    ``x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))) / 2`` (torch's and ONNX Gelu's)."""
    if approximate not in ("none", "tanh"):
        raise InvalidArgumentError(f"gelu: approximate={approximate!r}; choose from 'none', "
                                   "'tanh'")
    low, high, minimum = _GATES["gelu" if approximate == "none" else "gelu_tanh"]
    return Elementwise(lambda x: F.gelu(x, approximate=approximate), (low, high), minimum)


def _softshrink(lambd=0.5) -> Elementwise:
    """``x - lambd`` above ``lambd``, ``x + lambd`` below ``-lambd``, 0 between: slopes {0, 1}."""
    value = _number("softshrink", "lambd", lambd)
    if value < 0:
        raise InvalidArgumentError(f"softshrink with lambd={value} (torch needs lambd >= 0)")
    return Elementwise(lambda x: F.softshrink(x, value), (0.0, 1.0))


def _gate(kind: str, function):
    low, high, minimum = _GATES[kind]
    return _fixed(function, (low, high), minimum)


# kind -> builder taking the kind's parameters (keywords) and returning its Elementwise
ELEMENTWISE: dict[str, Callable[..., Elementwise]] = {
    "identity": _fixed(lambda x: x, (1.0, 1.0)),
    "relu": _fixed(F.relu, (0.0, 1.0)),
    "leaky_relu": _leaky_relu,
    "prelu": _prelu,
    "elu": _elu,
    "celu": _celu,
    "selu": _selu,
    "softplus": _softplus,
    "hardtanh": _hardtanh,
    "tanh": _fixed(torch.tanh, (0.0, 1.0)),
    "sigmoid": _fixed(torch.sigmoid, (0.0, 0.25)),  # s' = s (1 - s) <= 1/4
    "hardsigmoid": _hardsigmoid,
    # x relu6(x + 3) / 6: slope 0 below -3, (2x + 3) / 6 on [-3, 3], 1 above; minimum -3/8
    "hardswish": _fixed(F.hardswish, (-0.5, 1.5), -0.375),
    "silu": _gate("silu", F.silu),
    "mish": _gate("mish", F.mish),
    "gelu": _gelu,
    "softsign": _fixed(F.softsign, (0.0, 1.0)),  # 1 / (1 + |x|)^2
    "logsigmoid": _fixed(F.logsigmoid, (0.0, 1.0)),  # sigmoid(-x)
    "tanhshrink": _fixed(F.tanhshrink, (0.0, 1.0)),  # tanh(x)^2
    "softshrink": _softshrink,
}

# discontinuous functions: their Lipschitz constant is infinite
DISCONTINUOUS = {
    "hardshrink": "Hardshrink jumps by lambd at +-lambd (discontinuous, not Lipschitz)",
    "threshold": "Threshold jumps from value to the threshold (discontinuous, not Lipschitz)",
    "thresholded_relu": "ThresholdedRelu jumps by alpha at alpha (discontinuous, not "
                        "Lipschitz)",
}


def elementwise(kind: str, params: dict | None = None) -> Elementwise:
    """The Elementwise of ``kind`` with ``params``; InvalidArgumentError naming what is
    wrong for an unknown kind or parameter, or parameters that make it not Lipschitz."""
    if kind in DISCONTINUOUS:
        raise InvalidArgumentError(DISCONTINUOUS[kind])
    if kind not in ELEMENTWISE:
        raise InvalidArgumentError(f"unknown activation kind '{kind}'; choose from: "
                                   + ", ".join(sorted([*ELEMENTWISE, "groupsort"])))
    try:
        return ELEMENTWISE[kind](**(params or {}))
    except TypeError:  # an unknown keyword
        raise InvalidArgumentError(f"{kind}: unknown parameters {sorted(params)}") from None
