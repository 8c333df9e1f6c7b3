"""``export(model)``: a plain-torch copy with the constrained weights baked in.

Each parametrized tensor is evaluated once and stored as an ordinary parameter (what
``torch.nn.utils.parametrize.remove_parametrizations(..., leave_parametrized=True)`` does;
done by hand here because that function edits the parametrized class, which a deep copy
shares with the original model). lipkit's input-size hooks are dropped, lipkit's layer
classes (``SpectralLinear``, ...) become their torch base class, and blocks with a
``plain()`` method (CPL / SLL, SOC, Cayley convolutions) are replaced by their plain form.
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
    sources = dict(model.named_modules())
    with torch.no_grad():
        for path, module in exported.named_modules():
            if parametrize.is_parametrized(module):
                _bake(module, sources[path])
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, _InputSizeRecorder):
                    del module._forward_pre_hooks[key]
            if type(module).__module__.startswith("lipkit.nn.layers"):
                module.__class__ = next(
                    kind for kind in type(module).__mro__
                    if kind.__module__.startswith("torch.nn")
                )
        exported = _plain_forms(exported)
    return exported


def _plain_forms(module: nn.Module) -> nn.Module:
    """Replace, bottom up, every lipkit block that defines ``plain()`` (a form without
    parametrizations or training-time machinery: SOC's series, Cayley's per-frequency
    matrices) by what it returns."""
    for name, child in list(module.named_children()):
        replacement = _plain_forms(child)
        if replacement is not child:
            module._modules[name] = replacement
    plain = getattr(module, "plain", None)
    return plain().eval() if callable(plain) else module


def _bake(module: nn.Module, source: nn.Module) -> None:
    """Replace every parametrized tensor of ``module`` by a plain parameter of its value.

    The value is read from ``source``, the original module, in inference mode: what the
    model computes in eval mode. Evaluating the copy could differ: a deep-copied parameter
    has a fresh version counter, which a ``SpectralNorm`` copy takes for a changed weight
    (its eval refresh then moves the copied vectors). Each baked parameter keeps the
    ``requires_grad`` of the parameter it replaces.
    """
    parametrizations = list(source.parametrizations.modules())
    modes = [m.training for m in parametrizations]
    source.parametrizations.eval()
    try:
        values = {name: getattr(source, name).detach().clone()
                  for name in source.parametrizations}
    finally:
        for m, mode in zip(parametrizations, modes, strict=True):
            m.training = mode
    requires_grad = {
        name: any(p.requires_grad for p in source.parametrizations[name].parameters(False))
        for name in values
    }
    # the class parametrize created for this module; its only base is the original class
    module.__class__ = type(module).__bases__[0]
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value, requires_grad=requires_grad[name]))
