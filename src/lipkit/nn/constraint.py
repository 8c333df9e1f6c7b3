"""What every lipkit weight constraint shares: a torch parametrization that knows its bound.

A constraint is registered with :func:`torch.nn.utils.parametrize.register_parametrization`
on the ``weight`` of an ordinary ``nn.Linear`` or ``nn.Conv1d/2d/3d``; the layer keeps its
torch API (``state_dict``, optimizers, DDP, ``torch.compile``). Each constraint reports:

- :meth:`Constraint.guarantee`: the bound its construction proves: independent of the
  weight's value (weight clipping's ``c * sqrt(m n)``), or the construction's proof checked
  on the weight the layer computes, rounding included (AOL's, SLL's and orthogonal
  convolutions' Gram row sums, :func:`lipkit.nn.operator_norm.gram_bound`: in float32 such
  a weight exceeds its nominal ``lambda`` by ~1e-7), or ``None`` when the construction only
  approaches its target (power iteration, Björck iterations on dense layers, whose
  certified norm is exact anyway);
- :meth:`Constraint.bound`: a sound upper bound for the layer as it is now, the smaller of
  the guarantee and the certified operator norm of the current weight
  (:mod:`lipkit.nn.operator_norm`). This is what :func:`lipkit.nn.lipschitz_bound` uses.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError, check_positive
from lipkit.nn.operator_norm import (
    ConvGeometry,
    conv_operator_norm_upper,
    linear_operator_norm,
)

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
LAYER_TYPES = (nn.Linear, *CONV_TYPES)
#: torch layers whose function lipkit reads from their parameters: a subclass that replaces
#: their ``forward`` computes something else
PLAIN_BASES = (*LAYER_TYPES, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
               nn.modules.batchnorm._BatchNorm)


def replaced_forward(module: nn.Module, bases: tuple[type, ...] = PLAIN_BASES) -> type | None:
    """The class among ``bases`` that ``module`` is an instance of while its own class
    replaces that class's ``forward`` (``class Doubled(nn.Linear)`` returning ``2 *
    super().forward(x)``; deel-torchlip's ``PadConv2d``, which pads by itself), or None.
    Such a module computes something its parameters do not say; reading it as the base
    class would give a false bound. (``nn.SyncBatchNorm`` is a BatchNorm in eval mode.)"""
    for base in bases:
        if isinstance(module, base):
            if type(module).forward is base.forward or isinstance(module, nn.SyncBatchNorm):
                return None
            return base
    return None


def replaced_forward_reason(module: nn.Module, base: type) -> str:
    return (f"its class replaces {base.__name__}.forward, so lipkit cannot see what it "
            f"computes from its weights (export it to plain torch layers first)")


class Constraint(nn.Module):
    """Base class of lipkit's weight parametrizations.

    ``geometry`` is ``None`` for a dense layer and the :class:`ConvGeometry` of a
    convolution, whose ``input_size`` is filled in by the first forward pass when it was not
    given.
    """

    method: str = ""

    def __init__(self, lipschitz: float = 1.0, geometry: ConvGeometry | None = None):
        super().__init__()
        self.lipschitz = check_positive("lipschitz", lipschitz)
        self.geometry = geometry

    def guarantee(self, layer: nn.Module) -> float | None:
        """The bound the construction proves for the current weight, or None. Called with
        the parametrization frozen and without gradients."""
        return None

    def bound(self, layer: nn.Module) -> float:
        """A sound upper bound on the l2 Lipschitz constant of ``layer`` (bias ignored)."""
        # reading the weight must not advance training-mode state (power iteration buffers)
        if self.geometry is not None and isinstance(layer, CONV_TYPES):
            current = ConvGeometry.of(layer, self.geometry.input_size)
            if current != self.geometry:
                raise InvalidArgumentError(
                    f"this {type(layer).__name__}'s stride, padding, dilation, groups or "
                    f"padding mode changed after its {type(self).__name__} constraint was "
                    f"registered (now {current}, registered {self.geometry}): its guarantee "
                    f"is for the registered geometry")
        self._frozen = True
        try:
            with torch.no_grad():
                if not bool(torch.isfinite(layer.weight).all()):
                    raise InvalidArgumentError(
                        f"the weight {type(self).__name__} computes for this "
                        f"{type(layer).__name__} is NaN or infinite (its parameters are "
                        f"finite): its Lipschitz constant is undefined")
                certified = layer_operator_norm(layer, self.geometry)
                guaranteed = self.guarantee(layer)
        finally:
            self._frozen = False
        return certified if guaranteed is None else min(certified, guaranteed)

    def observe_input_size(self, input_size: tuple[int, ...]) -> None:
        """Called before each forward of a convolution with the input's spatial size."""
        if self.geometry.input_size != input_size:
            self.geometry = self.geometry.with_input_size(input_size)

    def extra_repr(self) -> str:
        return f"lipschitz={self.lipschitz:g}"


def layer_operator_norm(layer: nn.Module, geometry: ConvGeometry | None = None) -> float:
    """Certified l2 operator norm of a Linear (exact) or Conv (sound upper bound) layer."""
    if isinstance(layer, nn.Linear):
        return linear_operator_norm(layer.weight)
    if isinstance(layer, CONV_TYPES):
        geometry = geometry if geometry is not None else ConvGeometry.of(layer)
        return conv_operator_norm_upper(layer.weight, geometry)
    raise UnsupportedModuleError("", layer, "expected nn.Linear or nn.Conv1d/2d/3d")


class _InputSizeRecorder:
    """Forward pre-hook telling a convolution's constraint the spatial size of its input."""

    def __init__(self, constraint: Constraint):
        self.constraint = constraint

    def __call__(self, module: nn.Module, args) -> None:
        if args and isinstance(args[0], torch.Tensor):
            x = args[0]
            dims = self.constraint.geometry.dims
            self.constraint.observe_input_size(tuple(x.shape[-dims:]))


def _benign_hooks() -> tuple[type, ...]:
    """Forward pre-hooks that only set a weight from its parameters, as the forward pass
    uses it (lipkit's input-size recorder, torch's old ``spectral_norm`` and
    ``weight_norm``)."""
    from torch.nn.utils.spectral_norm import SpectralNorm as TorchSpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    return (_InputSizeRecorder, TorchSpectralNorm, WeightNorm)


def refresh_hooked_weight(module: nn.Module) -> None:
    """Set the weight of a layer under torch's old ``spectral_norm`` / ``weight_norm`` as
    its next forward pass in eval mode will (their pre-hook recomputes it from
    ``weight_orig`` / ``weight_g, weight_v``; the attribute left by the last forward is stale
    after an optimizer step), without a power-iteration step."""
    from torch.nn.utils.spectral_norm import SpectralNorm as TorchSpectralNorm
    from torch.nn.utils.weight_norm import WeightNorm

    hooks = [h for h in module._forward_pre_hooks.values()
             if isinstance(h, TorchSpectralNorm | WeightNorm)]
    if not hooks:
        return
    training = module.training
    module.training = False
    try:
        with torch.no_grad():
            for hook in hooks:
                hook(module, None)
    finally:
        module.training = training


def forward_hook_reason(module: nn.Module | None) -> str | None:
    """Why ``module``'s forward hooks (or, for None, the global ones) may change what it
    computes, or None. A hook can rescale, replace or perturb the output, and neither
    lipkit's bounds nor its importer see it: a model with one is refused rather than
    bounded as if the hook were not there."""
    from torch.nn.modules import module as torch_module

    if module is None:
        hooks = {"a global forward hook": torch_module._global_forward_hooks,
                 "a global forward pre-hook": torch_module._global_forward_pre_hooks}
    else:
        hooks = {"a forward hook": module._forward_hooks,
                 "a forward pre-hook": module._forward_pre_hooks}
    benign = _benign_hooks()
    for what, registered in hooks.items():
        for hook in registered.values():
            if not isinstance(hook, benign):
                name = getattr(hook, "__qualname__", type(hook).__name__)
                return (f"it has {what} ({name}) that may change its output, which lipkit "
                        f"cannot see; remove the hook to bound the model")
    return None


def register_constraint(
    layer: nn.Module, constraint: Constraint, *, unsafe: bool = False
) -> nn.Module:
    """Register ``constraint`` as the parametrization of ``layer.weight`` and return layer."""
    if parametrize.is_parametrized(layer, "weight"):
        existing = [type(p).__name__ for p in layer.parametrizations.weight]
        raise InvalidArgumentError(
            f"{type(layer).__name__}.weight is already parametrized by {existing}; "
            "remove that first (torch.nn.utils.parametrize.remove_parametrizations)"
        )
    parametrize.register_parametrization(layer, "weight", constraint, unsafe=unsafe)
    if constraint.geometry is not None:
        layer.register_forward_pre_hook(_InputSizeRecorder(constraint))
    return layer


def check_layer(layer: nn.Module, allowed=LAYER_TYPES, method: str = "") -> None:
    """Raise a clear error when ``layer`` is not one of the types a constraint supports."""
    if not isinstance(layer, allowed):
        names = ", ".join(t.__name__ for t in allowed)
        raise UnsupportedModuleError(
            "", layer, f"constraint '{method}' applies to {names}"
        )


def geometry_of(layer: nn.Module, input_size=None) -> ConvGeometry | None:
    """The conv geometry of a layer, or None for a dense layer."""
    if isinstance(layer, CONV_TYPES):
        return ConvGeometry.of(layer, input_size)
    return None


def lipkit_constraint(layer: nn.Module) -> Constraint | None:
    """The lipkit constraint on ``layer.weight`` if it is the last parametrization, else None."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    last = layer.parametrizations.weight[-1]
    return last if isinstance(last, Constraint) else None
