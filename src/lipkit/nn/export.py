"""``export(model)``: a plain-torch copy with the constrained weights baked in.

Each parametrized tensor is evaluated once and stored as an ordinary parameter (what
``torch.nn.utils.parametrize.remove_parametrizations(..., leave_parametrized=True)`` does;
done by hand here because that function edits the parametrized class, which a deep copy
shares with the original model). lipkit's input-size hooks are dropped, and lipkit's layer
classes (``SpectralLinear``, ...) become their torch base class.
The copy computes the same function (in inference mode) at the cost of the plain layers:
nothing is recomputed at inference.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.nn.constraint import _InputSizeRecorder


def export(model: nn.Module) -> nn.Module:
    """Return a copy of ``model`` without parametrizations, in eval mode.

    Example:
        >>> import torch
        >>> from lipkit.nn import SpectralLinear, export
        >>> layer = SpectralLinear(4, 3).eval()
        >>> plain = export(layer)
        >>> type(plain).__name__, torch.equal(plain.weight, layer.weight)
        ('Linear', True)
    """
    exported = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in exported.modules():
            if parametrize.is_parametrized(module):
                _bake(module)
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, _InputSizeRecorder):
                    del module._forward_pre_hooks[key]
            if type(module).__module__.startswith("lipkit.nn.layers"):
                module.__class__ = next(
                    kind for kind in type(module).__mro__
                    if kind.__module__.startswith("torch.nn")
                )
    for parameter in exported.parameters():
        parameter.requires_grad_(True)
    return exported


def _bake(module: nn.Module) -> None:
    """Replace every parametrized tensor of ``module`` by a plain parameter of its value."""
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations}
    # the class parametrize created for this module; its only base is the original class
    module.__class__ = type(module).__bases__[0]
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value))
