"""``make_lipschitz(model, method=..., lipschitz=...)``: constrain an existing model in place.

Every ``nn.Linear`` and ``nn.Conv*d`` of the model gets the chosen constraint with the
per-layer constant ``lipschitz ** (1 / n_layers)``, so that a model whose other modules are
1-Lipschitz (ReLU, GroupSort, flatten, non-overlapping scaled pooling, ...) is
``lipschitz``-Lipschitz; :func:`lipkit.nn.lipschitz_bound` then reports the composed
guarantee, counting every other module at its own constant.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torch.nn.utils import parametrize

from lipkit.errors import UnknownMethodError, UnsupportedModuleError, check_positive
from lipkit.nn.aoc import aoc
from lipkit.nn.aol import aol
from lipkit.nn.bcop import bcop
from lipkit.nn.bjorck import bjorck
from lipkit.nn.clip import weight_clip
from lipkit.nn.constraint import CONV_TYPES, LAYER_TYPES
from lipkit.nn.residual import Residual
from lipkit.nn.sll import sdp_scaling
from lipkit.nn.spectral import spectral_norm


def _orthogonal(layer: nn.Module, lipschitz: float, **options) -> nn.Module:
    if isinstance(layer, nn.Linear):
        return bjorck(layer, lipschitz, **options)
    return bcop(layer, lipschitz, **options)


def _clip(layer: nn.Module, lipschitz: float, **options) -> nn.Module:
    return weight_clip(layer, lipschitz=lipschitz, **options)


# method name -> (function(layer, lipschitz, **options), layer types it applies to)
METHODS: dict[str, tuple[Callable[..., nn.Module], tuple[type, ...]]] = {
    "clip": (_clip, LAYER_TYPES),
    "spectral": (spectral_norm, LAYER_TYPES),
    "bjorck": (bjorck, (nn.Linear,)),
    "aol": (aol, LAYER_TYPES),
    "bcop": (bcop, (nn.Conv1d, nn.Conv2d)),
    "orthogonal": (_orthogonal, (nn.Linear, nn.Conv1d, nn.Conv2d)),
    "aoc": (aoc, (nn.Conv1d, nn.Conv2d)),
    "sll": (sdp_scaling, LAYER_TYPES),
}

# modules that own parameters and may stay in a constrained model: their constant is counted
_PARAMETRIC_OK = (nn.modules.batchnorm._BatchNorm, nn.PReLU, Residual)
# methods that give convolutions a BCOP parametrization (groups=1 only)
_BCOP_METHODS = ("bcop", "orthogonal")


def make_lipschitz(
    model: nn.Module, method: str = "spectral", lipschitz: float = 1.0, **options
) -> nn.Module:
    """Constrain every dense and convolutional layer of ``model`` in place; returns it.

    Args:
        model: any module tree.
        method: one of ``"clip"``, ``"spectral"``, ``"bjorck"`` (dense layers), ``"aol"``,
            ``"bcop"`` (convolutions), ``"orthogonal"`` (Björck for dense layers, BCOP for
            convolutions), ``"aoc"`` (orthogonal convolutions with stride and groups),
            ``"sll"`` (SLL's rescaling of the rows, a proof like AOL's).
        lipschitz: the target constant of the whole chain of constrained layers.
        options: passed to the constraint (e.g. ``n_power_iterations`` for spectral).

    Raises:
        UnknownMethodError: ``method`` is not a known name (the message lists them).
        UnsupportedModuleError: a module with parameters that the method cannot constrain
            (nothing is modified in that case).

    Example:
        >>> import torch
        >>> from lipkit.nn import make_lipschitz, lipschitz_bound
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(),
        ...                             torch.nn.Linear(16, 1))
        >>> _ = make_lipschitz(model, method="spectral", lipschitz=4.0)
        >>> round(lipschitz_bound(model), 4)
        4.0
    """
    if method not in METHODS:
        raise UnknownMethodError("method", method, METHODS)
    lipschitz = check_positive("lipschitz", lipschitz)
    function, supported = METHODS[method]
    targets = []
    for path, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and not parametrize.is_parametrized(module, "weight"):
            if not isinstance(module, supported):
                names = ", ".join(t.__name__ for t in supported)
                alternative = " (use 'orthogonal' for Björck + BCOP)" if method == "bjorck" else ""
                raise UnsupportedModuleError(
                    path, module, f"method '{method}' applies to {names}{alternative}"
                )
            if method in _BCOP_METHODS and isinstance(module, CONV_TYPES) and module.groups != 1:
                # checked here, not by bcop() halfway through the loop below, so that
                # nothing is modified when a layer is rejected
                raise UnsupportedModuleError(
                    path, module, f"method '{method}' (BCOP) needs groups=1"
                )
            if method == "aoc" and isinstance(module, CONV_TYPES) and (
                    any(d != 1 for d in module.dilation)
                    or any(k < s for k, s in zip(module.kernel_size, module.stride,
                                                 strict=True))):
                raise UnsupportedModuleError(
                    path, module, "method 'aoc' needs dilation 1 and kernel_size >= stride")
            targets.append(module)
        # a ParametrizationList holds the parameter of a layer constrained before: the layer
        # is left as it is, and lipschitz_bound counts its own bound
        elif any(True for _ in module.parameters(recurse=False)) and not isinstance(
            module, (*LAYER_TYPES, *_PARAMETRIC_OK, parametrize.ParametrizationList)
        ):
            if isinstance(module, CONV_TYPES):
                continue
            raise UnsupportedModuleError(
                path, module, f"it has parameters that method '{method}' cannot constrain"
            )
    if not targets:
        return model
    per_layer = lipschitz ** (1.0 / len(targets))
    for layer in targets:
        function(layer, per_layer, **options)
    return model
