"""The per-op translations the torch and ONNX importers share.

Each importer reads an op's parameters where its format keeps them (a module's attributes,
a function's arguments, a node's attributes and constant inputs) and calls the one function
here that turns them into a :class:`~lipkit.estimate.network.Network` op, with one set of
checks and error texts: an activation with every parameter (:func:`activation` and the
ops that are another op under some parameters: PReLU, RReLU, Threshold, Shrink, ...),
BatchNorm's inference form, average pooling. ``label`` (the layer's path or node name) and
``op`` (``"ELU"``, ``"ONNX Elu"``) name the op in every error.
"""

from __future__ import annotations

import math

import torch

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.estimate.activations import DISCONTINUOUS
from lipkit.estimate.network import DTYPE, Activation, Affine, Convolution, Diagonal
from lipkit.nn.operator_norm import ConvGeometry


def weight(what: str, tensor) -> torch.Tensor:
    """``tensor`` as float64 after checking it holds real, finite numbers; ``what`` names
    it (``"layer 'fc1': bias"``, ``"initializer 'fc1.bias'"``)."""
    tensor = torch.as_tensor(tensor)
    if not tensor.is_floating_point():
        raise InvalidArgumentError(f"{what} has type {str(tensor.dtype).removeprefix('torch.')}"
                                   "; lipkit needs float weights")
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise InvalidArgumentError(f"{what} has {bad} non-finite entries (NaN or inf)")
    return tensor.detach().to(DTYPE)


# -- activations ---------------------------------------------------------------------------
def activation(label: str, op: str, kind: str, **params) -> Activation:
    """The Activation ``kind`` with ``params``; UnsupportedModuleError naming ``label`` and
    ``op`` (and why) when lipkit cannot import it exactly."""
    try:
        return Activation(kind, params=params)
    except InvalidArgumentError as error:
        raise UnsupportedModuleError(label, op, str(error)) from None


def prelu(label: str, op: str, slopes, shape: tuple[int, ...]) -> Activation:
    """PReLU with learned ``slopes`` broadcast to the features ``shape`` (torch: one per
    channel, dimension 0 of ``shape``; ONNX: broadcast from the right): one slope is a
    LeakyReLU, several a per-entry PReLU."""
    slopes = weight(f"{op} '{label}': slope", slopes)
    if slopes.numel() == 1:
        return activation(label, op, "leaky_relu", negative_slope=float(slopes.reshape(())))
    try:
        full = torch.broadcast_to(slopes, shape)
    except RuntimeError:
        raise UnsupportedModuleError(label, op, f"{slopes.numel()} slopes of shape "
                                                f"{tuple(slopes.shape)} do not fit features "
                                                f"of shape {shape}") from None
    return activation(label, op, "prelu", negative_slope=full.reshape(-1).clone())


def torch_prelu_slopes(slopes: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """torch's PReLU weight (one value, or one per channel: dimension 0 of the features)
    shaped to broadcast over ``shape``."""
    if slopes.numel() == 1 or not shape:
        return slopes
    return slopes.reshape(-1, *([1] * (len(shape) - 1)))


def rrelu(label: str, op: str, lower: float, upper: float, training: bool) -> Activation:
    """RReLU at inference: a LeakyReLU of slope ``(lower + upper) / 2``."""
    if training:
        raise UnsupportedModuleError(label, op, "RReLU in training mode draws random slopes")
    return activation(label, op, "leaky_relu", negative_slope=(lower + upper) / 2)


def threshold(label: str, op: str, threshold_: float, value: float) -> Activation:
    """torch's Threshold, ``x`` above ``threshold``, ``value`` at or below: continuous only
    when ``value == threshold`` (``max(x, threshold)``, a one-sided clamp)."""
    if value == threshold_:
        return activation(label, op, "hardtanh", min_val=threshold_, max_val=math.inf)
    raise UnsupportedModuleError(label, op, DISCONTINUOUS["threshold"]
                                 + f" (threshold={threshold_}, value={value})")


def hardshrink(label: str, op: str, lambd: float) -> Activation:
    """Hardshrink: ``x`` where ``|x| > lambd``, 0 elsewhere (the identity for ``lambd=0``)."""
    if lambd == 0:
        return activation(label, op, "identity")
    raise UnsupportedModuleError(label, op, DISCONTINUOUS["hardshrink"] + f" (lambd={lambd})")


def shrink(label: str, op: str, bias: float, lambd: float) -> Activation:
    """ONNX Shrink: ``x + bias`` below ``-lambd``, ``x - bias`` above ``lambd``, 0 between;
    it jumps by ``lambd - bias`` at ``+-lambd``, so only ``bias == lambd`` (Softshrink) is
    continuous."""
    if lambd < 0:
        raise UnsupportedModuleError(label, op, f"lambd={lambd} < 0 (overlapping pieces)")
    if bias != lambd:
        raise UnsupportedModuleError(
            label, op, f"bias={bias}, lambd={lambd} jumps by lambd - bias at +-lambd "
                       "(discontinuous, not Lipschitz; bias == lambd is Softshrink)")
    return activation(label, op, "softshrink", lambd=lambd)


def thresholded_relu(label: str, op: str, alpha: float) -> Activation:
    """ONNX ThresholdedRelu: ``x`` above ``alpha``, 0 elsewhere (ReLU for ``alpha = 0``)."""
    if alpha == 0:
        return activation(label, op, "relu")
    raise UnsupportedModuleError(label, op, DISCONTINUOUS["thresholded_relu"]
                                 + f" (alpha={alpha})")


# -- per-channel affine maps and pooling -------------------------------------------------
def batch_norm(label: str, op: str, shape: tuple[int, ...], mean, variance, epsilon: float,
               scale=None, shift=None) -> Affine:
    """BatchNorm at inference, ``scale (x - mean) / sqrt(variance + epsilon) + shift`` per
    channel (dimension 0 of the features ``shape``): a diagonal affine map."""
    names = ("running mean", "running variance", "scale", "shift")
    values = [None if v is None else weight(f"{op} '{label}': {name}", v).reshape(-1)
              for name, v in zip(names, (mean, variance, scale, shift), strict=True)]
    if not shape:
        raise UnsupportedModuleError(label, op, "BatchNorm of features without a channel "
                                                "dimension")
    if any(v is not None and v.shape != (shape[0],) for v in values):
        raise InvalidArgumentError(f"{op} '{label}': parameters do not match {shape[0]} "
                                   f"channels")
    mean, variance, scale, shift = values
    denominator = variance + float(epsilon)
    if not bool(torch.all(denominator > 0)):
        raise InvalidArgumentError(f"{op} '{label}': variance + epsilon must be positive")
    factor = denominator.rsqrt()
    offset = -mean * factor
    if scale is not None:
        factor, offset = factor * scale, offset * scale
    if shift is not None:
        offset = offset + shift
    per_channel = (-1, *([1] * (len(shape) - 1)))
    return Affine(Diagonal(factor.reshape(per_channel), shape), offset.reshape(per_channel))


def average_pool(label: str, op: str, shape: tuple[int, ...], kernel: tuple[int, ...],
                 geometry: ConvGeometry, ceil_mode: bool, count_include_pad: bool,
                 divisor_override=None, factor: float = 1.0) -> Affine:
    """Average pooling as a depthwise convolution of weight ``factor / prod(kernel)`` on
    ``geometry`` (its padding included). ``ceil_mode`` is the floor mode when no partial
    last window exists; a divisor that varies at the border (``count_include_pad=False``
    with padding, a partial window) or a ``divisor_override`` is refused."""
    if divisor_override:
        raise UnsupportedModuleError(label, op, f"divisor_override={divisor_override}")
    if not count_include_pad and any(any(pair) for pair in geometry.padding):
        raise UnsupportedModuleError(label, op, "count_include_pad=False with padding (the "
                                                "divisor varies near the border)")
    if ceil_mode:
        for n, k, s, d in zip(geometry.padded_size(), kernel, geometry.stride,
                              geometry.dilation, strict=True):
            if (n - d * (k - 1) - 1) % s:
                raise UnsupportedModuleError(label, op, "ceil_mode with a partial last window "
                                                        "(its divisor differs)")
    weight_ = torch.full((shape[0], 1, *kernel), factor / math.prod(kernel), dtype=DTYPE)
    if min(geometry.output_size(kernel)) < 1:
        raise InvalidArgumentError(f"{op} '{label}': the kernel {kernel} does not fit the "
                                   f"padded input {geometry.padded_size()}")
    return Affine(Convolution(weight_, geometry, shape))


#: why a softmax is refused by both importers, with the way out
SOFTMAX_REFUSAL = ("a softmax couples its outputs (not an elementwise activation) and has no "
                   "translation; bounds and certificates are of the logits: export the model "
                   "without its final softmax")
