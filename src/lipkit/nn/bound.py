"""``lipschitz_bound(model)``: the l2 Lipschitz constant a model's construction guarantees.

Composed over the module tree: ``||f_2 o f_1||_L <= ||f_1||_L ||f_2||_L`` for
``nn.Sequential``, the convex-combination rule for :class:`~lipkit.nn.Residual`, each
constrained layer's own bound (:meth:`~lipkit.nn.constraint.Constraint.bound`: its
guarantee, or its certified operator norm), the exact operator norm of an unconstrained
``nn.Linear`` and a sound upper bound for an unconstrained convolution (transposed ones too,
valid for every input size), and the known
constants of activations, pooling, the residual blocks CPL / SLL (``max(1, ||V||^2 - 1)``),
SOC (``1 +`` the series' tail), Cayley convolutions (exact per-frequency norms), flattening,
dropout (inference), BatchNorm (inference, ``max |gamma| / sqrt(var + eps)``), padding
modules (the padding map's norm), nearest-neighbour upsampling and pixel / channel
shuffles. A module with no known rule (including a custom ``forward`` that combines its
children in ways lipkit cannot see) is an error that names its path and type;
:func:`register_bound_rule` teaches lipkit a new type.

Convolution bounds depend on the input size: lipkit uses the size a constrained layer saw in
its last forward pass, the sizes recorded while running ``example_input`` through the model,
or else a bound valid for every input size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn.activation import GroupSort
from lipkit.nn.cayley import CayleyConv2d, FourierConv2d
from lipkit.nn.constraint import (
    CONV_TYPES,
    LAYER_TYPES,
    forward_hook_reason,
    layer_operator_norm,
    lipkit_constraint,
    refresh_hooked_weight,
    replaced_forward,
    replaced_forward_reason,
)
from lipkit.nn.cpl import ConvexPotentialBlock, check_same_size_conv
from lipkit.nn.operator_norm import ConvGeometry, conv_operator_norm_upper, materialize_up_to
from lipkit.nn.pooling import L2NormPool2d, ScaledAvgPool2d, pooling_bound
from lipkit.nn.residual import Residual
from lipkit.nn.soc import SkewOrthogonalConv2d

ChildBound = Callable[[nn.Module, str], float]
BoundRule = Callable[[nn.Module, ChildBound, tuple[int, ...] | None], float]

_RULES: dict[type, BoundRule] = {}


def register_bound_rule(module_type: type) -> Callable[[BoundRule], BoundRule]:
    """Decorator registering ``rule(module, child_bound, input_size) -> float`` for a type.

    ``child_bound(child, name)`` returns the bound of a child module; ``input_size`` is the
    spatial size of the module's input when known (from ``example_input``), else None.
    """

    def decorate(rule: BoundRule) -> BoundRule:
        _RULES[module_type] = rule
        return rule

    return decorate


def _constant(value: float) -> BoundRule:
    return lambda module, child_bound, input_size: value


# ReLU-like and saturating activations: the sup of |derivative|. Not nn.Hardshrink: it jumps
# by lambda at +-lambda, so it is not Lipschitz at all
for _kind in (nn.ReLU, nn.ReLU6, nn.Tanh, nn.Hardtanh, nn.Softsign, nn.Identity,
              nn.Flatten, nn.Unflatten, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
              nn.Tanhshrink, nn.Softshrink, GroupSort):
    register_bound_rule(_kind)(_constant(1.0))
register_bound_rule(nn.Sigmoid)(_constant(0.25))
register_bound_rule(nn.Hardsigmoid)(_constant(1.0 / 6.0))
register_bound_rule(nn.Hardswish)(_constant(1.5))
# sup of the derivatives of GELU and SiLU, attained at x ~ 1.4 and x ~ 2.4 (rounded up)
register_bound_rule(nn.GELU)(_constant(1.1290))
register_bound_rule(nn.SiLU)(_constant(1.0999))
register_bound_rule(nn.Mish)(_constant(1.0889))


#: as lipkit.estimate's importer: a Softplus whose switch to ``x`` drops by more is refused
_SOFTPLUS_MAX_JUMP = 1e-6


@register_bound_rule(nn.Softplus)
def _softplus(module, child_bound, input_size):
    """Slopes ``sigmoid(beta x)`` in (0, 1); but torch returns ``x`` where ``beta x >
    threshold``, a drop of ``log1p(exp(-threshold)) / beta`` there: a discontinuity, no
    Lipschitz constant at all. The default threshold's drop (2e-9) is ignored as the
    importer ignores it; a larger one is refused."""
    threshold = float(module.threshold)
    jump = math.log1p(math.exp(-threshold)) if threshold > -700 else math.inf
    if jump > _SOFTPLUS_MAX_JUMP:
        raise UnsupportedModuleError(
            "", module, f"Softplus with threshold={threshold:g} jumps by log1p(exp(-threshold))"
            f" / beta = {jump / abs(float(module.beta)):.3g} where beta x crosses it (a "
            f"discontinuity; at most {_SOFTPLUS_MAX_JUMP:g} / beta is ignored)")
    return 1.0


@register_bound_rule(nn.LeakyReLU)
def _leaky_relu(module, child_bound, input_size):
    return max(1.0, abs(module.negative_slope))


@register_bound_rule(nn.PReLU)
def _prelu(module, child_bound, input_size):
    return max(1.0, float(module.weight.detach().abs().max()))


@register_bound_rule(nn.ELU)
def _elu(module, child_bound, input_size):
    # slopes 1 above 0 and alpha e^x below: torch takes any real alpha, a negative one too
    return max(1.0, abs(float(module.alpha)))


@register_bound_rule(nn.CELU)
def _celu(module, child_bound, input_size):
    # slopes e^(x / alpha) below 0: in (0, 1] for alpha > 0, unbounded for alpha < 0
    if float(module.alpha) <= 0:
        raise UnsupportedModuleError("", module, f"CELU with alpha={module.alpha} is not "
                                     "Lipschitz (its slope e^(x / alpha) is unbounded as "
                                     "x -> -inf)")
    return 1.0


@register_bound_rule(nn.SELU)
def _selu(module, child_bound, input_size):
    return 1.0507009873554805 * 1.6732632423543772


@register_bound_rule(nn.Sequential)
def _sequential(module, child_bound, input_size):
    return math.prod(child_bound(child, name) for name, child in module.named_children())


@register_bound_rule(Residual)
def _residual(module, child_bound, input_size):
    return module.combine_bound(child_bound(module.branch, "branch"))


@register_bound_rule(ConvexPotentialBlock)
def _convex_potential(module, child_bound, input_size):
    """CPL / SLL: ``max(1, s^2 - 1)`` with ``s`` the proven norm of the block's layer (the
    layer checked again: its transposed convolution is its adjoint only with zero padding and
    stride 1, which an attribute changed after construction could undo)."""
    check_same_size_conv(module.layer, type(module).__name__)
    return module.combine_bound(child_bound(module.layer, "layer"))


@register_bound_rule(SkewOrthogonalConv2d)
def _skew_orthogonal(module, child_bound, input_size):
    """SOC: ``1 + sum_{i > n} a^i / i!`` with ``a`` the proven norm of the generator."""
    return module.combine_bound(child_bound(module.conv, "conv"))


@register_bound_rule(CayleyConv2d)
@register_bound_rule(FourierConv2d)
def _fourier(module, child_bound, input_size):
    """Cayley convolutions: the exact operator norm, per-frequency SVDs."""
    return module.bound()


@register_bound_rule(nn.modules.batchnorm._BatchNorm)
@register_bound_rule(nn.SyncBatchNorm)  # its own forward; in inference it is a BatchNorm
def _batch_norm(module, child_bound, input_size):
    if module.running_var is None:
        raise UnsupportedModuleError(
            "", module, "BatchNorm without running statistics depends on the batch"
        )
    # in float64: the function is that of the stored statistics in exact arithmetic (float32
    # would round var + eps and the root by ~1e-7, under the constant)
    scale = (module.running_var.detach().double() + module.eps).rsqrt()
    if module.weight is not None:
        scale = scale * module.weight.detach().double().abs()
    return float(scale.max()) * (1 + 2.0**-50)


for _kind in (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d,
              nn.MaxPool3d, L2NormPool2d, ScaledAvgPool2d):
    register_bound_rule(_kind)(lambda module, child_bound, input_size: pooling_bound(module))


@register_bound_rule(nn.ConvTranspose1d)
@register_bound_rule(nn.ConvTranspose2d)
@register_bound_rule(nn.ConvTranspose3d)
def _conv_transpose(module, child_bound, input_size):
    """A transposed convolution is a crop or zero-pad (norm <= 1) of the adjoint of the
    convolution with the same weight, stride, dilation and groups and no padding:
    ``||T|| <= ||C||``, bounded for every input size (the size-free bound)."""
    if module.padding_mode != "zeros":
        raise UnsupportedModuleError("", module, f"padding_mode '{module.padding_mode}'")
    dims = len(module.kernel_size)
    geometry = ConvGeometry(dims, tuple(module.stride), ((0, 0),) * dims,
                            tuple(module.dilation), module.groups, "zeros", None)
    return conv_operator_norm_upper(module.weight, geometry)


# rearrangements and constant padding: isometries (or crops, for negative padding)
for _kind in (nn.PixelShuffle, nn.PixelUnshuffle, nn.ChannelShuffle,
              nn.modules.padding._ConstantPadNd):
    register_bound_rule(_kind)(_constant(1.0))


def _pairs(padding) -> list[tuple[int, int]]:
    """torch's padding tuple (last dimension first) as per-dimension (before, after)."""
    flat = [max(0, int(p)) for p in padding]
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


@register_bound_rule(nn.modules.padding._ReflectionPadNd)
@register_bound_rule(nn.modules.padding._CircularPadNd)
@register_bound_rule(nn.modules.padding._ReplicationPadNd)
def _padding(module, child_bound, input_size):
    """The padding map copies samples: ``||P|| = sqrt(max copies of a sample)``, per dimension
    ``1 + [before > 0] + [after > 0]`` for reflect and circular (torch pads by less than
    the size, at most once per side), ``1 + before + after`` for replicate (a one-sample
    dimension); the largest over every input size."""
    copies = 1
    replicate = isinstance(module, nn.modules.padding._ReplicationPadNd)
    for before, after in _pairs(module.padding):
        copies *= 1 + before + after if replicate else 1 + (before > 0) + (after > 0)
    return math.sqrt(copies)


@register_bound_rule(nn.Upsample)
def _upsample(module, child_bound, input_size):
    """Nearest-neighbour upsampling by ``scale_factor`` copies a sample at most ``ceil(s)``
    times per dimension: ``sqrt(prod ceil(s))``. Other modes mix samples, and a target
    ``size`` hides the factor: refused."""
    if module.mode not in ("nearest", "nearest-exact"):
        raise UnsupportedModuleError("", module, f"Upsample mode '{module.mode}' (lipkit bounds "
                                     "nearest-neighbour upsampling)")
    if module.scale_factor is None:
        raise UnsupportedModuleError("", module, "Upsample with a target size (give "
                                     "scale_factor)")
    factors = module.scale_factor
    if not isinstance(factors, tuple | list):
        # a scalar applies to every spatial dimension: 1 to 3, or as recorded
        factors = (factors,) * (len(input_size) if input_size else 3)
    return math.sqrt(math.prod(max(1, math.ceil(float(f))) for f in factors))


@register_bound_rule(nn.AdaptiveAvgPool1d)
@register_bound_rule(nn.AdaptiveAvgPool2d)
@register_bound_rule(nn.AdaptiveAvgPool3d)
def _adaptive_average(module, child_bound, input_size):
    if input_size is None:
        raise UnsupportedModuleError(
            "", module, "its constant depends on the input size: pass example_input="
        )
    output = module.output_size
    if isinstance(output, int) or output is None:
        output = (output,) * len(input_size)
    bound = 1.0
    # separable: the pooling matrix is a Kronecker product of 1-D averaging matrices
    for size, out in zip(input_size, output, strict=True):
        out = size if out is None else out
        matrix = torch.zeros(out, size, dtype=torch.float64)
        for i in range(out):
            start, end = (i * size) // out, -((-(i + 1) * size) // out)
            matrix[i, start:end] = 1.0 / (end - start)
        bound *= float(torch.linalg.matrix_norm(matrix, ord=2))
    return bound


def lipschitz_bound(
    module: nn.Module,
    example_input: torch.Tensor | None = None,
    layers: dict[str, float] | None = None,
    *,
    exact_entries: int | None = None,
) -> float:
    """A sound upper bound on the l2 Lipschitz constant of ``module`` (inference mode).

    Args:
        module: the model; containers must be ``nn.Sequential`` or have a registered rule.
        example_input: optional batch run through the model (in eval mode, no gradient) to
            record the input size of every convolution and adaptive pooling.
        layers: if given, filled with the bound of every leaf module, by path.
        exact_entries: zero-padded convolutions on small maps whose operator matrix has at
            most this many entries are also bounded by that matrix's proven norm (default
            :data:`lipkit.nn.operator_norm.EXACT_ENTRIES`, 2^22; 0: the DFT bound only).
            2^24 takes the 8x8 maps of 64-channel layers (~5 s each on one core), where
            the DFT bound on the padded torus exceeds the norm by up to ~15 %.

    Raises:
        UnsupportedModuleError: a module with no known rule (named by path and type).
        InvalidArgumentError: a layer with a NaN or infinite weight (named by path).

    Example:
        >>> import torch
        >>> from lipkit.nn import lipschitz_bound, spectral_norm, MaxMin
        >>> model = torch.nn.Sequential(spectral_norm(torch.nn.Linear(4, 8)), MaxMin(),
        ...                             spectral_norm(torch.nn.Linear(8, 2), lipschitz=3.0))
        >>> round(lipschitz_bound(model), 4)
        3.0
    """
    if not isinstance(module, nn.Module):
        raise InvalidArgumentError(f"lipschitz_bound expects a torch.nn.Module, got "
                                   f"{type(module).__name__}")
    if example_input is not None and not isinstance(example_input, torch.Tensor):
        raise InvalidArgumentError(f"example_input must be a tensor (a batch of inputs), got "
                                   f"{type(example_input).__name__}")
    if exact_entries is not None and (isinstance(exact_entries, bool)
                                      or not isinstance(exact_entries, int)):
        raise InvalidArgumentError(f"exact_entries must be an int >= 0, got {exact_entries!r}")
    hooked = forward_hook_reason(None)
    if hooked is not None:
        raise UnsupportedModuleError("", module, hooked)
    sizes = _record_input_sizes(module, example_input) if example_input is not None else {}
    # in eval mode: the function bounded is inference's, and reading a weight through a
    # parametrization in training mode (torch's spectral_norm) would advance its state
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        if exact_entries is None:
            return _bound(module, "", sizes, layers)
        with materialize_up_to(exact_entries):
            return _bound(module, "", sizes, layers)
    finally:
        for m, mode in modes.items():
            m.training = mode


def _rule_for(module: nn.Module) -> BoundRule | None:
    """The rule of the nearest registered class in the module's MRO, unless the module's
    class overrides ``forward``: then it computes another function than the registered class
    (``class Skip(nn.Sequential)`` returning ``x + super().forward(x)``), and the base's rule
    would be a silent guess."""
    kind = next((kind for kind in type(module).__mro__ if kind in _RULES), None)
    if kind is None or type(module).forward is not kind.forward:
        return None
    return _RULES[kind]


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _check_finite_weights(module: nn.Module, path: str) -> None:
    """A NaN or infinite weight has no operator norm: name the layer instead of returning nan
    (or failing inside an SVD)."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.detach()).all()):
            raise InvalidArgumentError(f"layer '{path or '<root>'}' of type "
                                       f"{type(module).__name__} has a NaN or infinite "
                                       f"{name}: its Lipschitz constant is undefined")


def _bound(module: nn.Module, path: str, sizes: dict, layers: dict | None) -> float:
    hooked = forward_hook_reason(module)
    if hooked is not None:
        raise UnsupportedModuleError(path, module, hooked)
    refresh_hooked_weight(module)
    base = replaced_forward(module, LAYER_TYPES)
    if base is not None:
        raise UnsupportedModuleError(path, module, replaced_forward_reason(module, base) +
                                     " or register a rule with lipkit.nn.register_bound_rule")
    if isinstance(module, LAYER_TYPES) or not any(True for _ in module.children()):
        _check_finite_weights(module, path)
    if isinstance(module, LAYER_TYPES):
        constraint = lipkit_constraint(module)
        if constraint is not None:
            try:
                value = constraint.bound(module)
            except InvalidArgumentError as error:
                raise InvalidArgumentError(f"layer '{path or '<root>'}': {error}") from None
        else:
            geometry = None
            if isinstance(module, CONV_TYPES):
                geometry = ConvGeometry.of(module, sizes.get(path))
            with torch.no_grad():
                value = layer_operator_norm(module, geometry)
    else:
        rule = _rule_for(module)
        if rule is None:
            reason = (
                "no Lipschitz bound is known for this type; put its children in an "
                "nn.Sequential or register a rule with lipkit.nn.register_bound_rule"
            )
            raise UnsupportedModuleError(path, module, reason)

        def child_bound(child: nn.Module, name: str) -> float:
            return _bound(child, _join(path, name), sizes, layers)

        try:
            value = rule(module, child_bound, sizes.get(path))
        except UnsupportedModuleError as error:
            if error.path != "<root>":
                raise
            raise UnsupportedModuleError(path, module, str(error).split(": ", 1)[-1]) from None
        if any(True for _ in module.children()):
            return value  # a container: its children are recorded
    if layers is not None:
        layers[path or type(module).__name__] = value
    return value


def _record_input_sizes(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple]:
    sizes: dict[str, tuple] = {}
    handles = []
    for path, module in model.named_modules():
        if isinstance(module, (*CONV_TYPES, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d,
                               nn.AdaptiveAvgPool3d, nn.Upsample)):
            dims = (
                len(module.kernel_size) if isinstance(module, CONV_TYPES)
                else None if isinstance(module, nn.Upsample)  # every dimension after channels
                else {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2}.get(type(module), 3)
            )

            def record(mod, args, path=path, dims=dims):
                shape = args[0].shape
                sizes[path] = tuple(shape[2:] if dims is None else shape[-dims:])

            handles.append(module.register_forward_pre_hook(record))
    modes = {name: m.training for name, m in model.named_modules()}
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidArgumentError(f"example_input of shape {tuple(example_input.shape)} does "
                                   f"not run through the model: {first}") from None
    finally:
        for handle in handles:
            handle.remove()
        for name, m in model.named_modules():
            m.training = modes[name]
    return sizes
