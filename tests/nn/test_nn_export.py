"""lipkit.nn.export: a plain-torch copy with the constrained weights baked in.

The copy must compute the constrained model's inference function, contain no
parametrization, load into a plain torch model of the same architecture, and leave the
original model working.
"""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.nn import (
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    BjorckLinear,
    GroupSort,
    MaxMin,
    ScaledAvgPool2d,
    SpectralConv2d,
    SpectralLinear,
    export,
    lipschitz_bound,
    make_lipschitz,
)


def _convnet():
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode="circular"), MaxMin(), ScaledAvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3),
    )


def _mlp():
    return nn.Sequential(nn.Linear(6, 8), GroupSort(2), nn.Linear(8, 8), nn.ReLU(),
                         nn.Linear(8, 3))


def _conv_only():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


CASES = [
    ("spectral", _mlp, (6,)), ("bjorck", _mlp, (6,)), ("aol", _mlp, (6,)),
    ("clip", _mlp, (6,)), ("spectral", _convnet, (2, 6, 6)), ("aol", _convnet, (2, 6, 6)),
    ("orthogonal", _convnet, (2, 6, 6)), ("clip", _convnet, (2, 6, 6)),
    ("bcop", _conv_only, (2, 6, 6)),
]


def _train(model, shape, steps=5):
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x = torch.randn(16, *shape)
    for _ in range(steps):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    return x


@pytest.mark.parametrize(("method", "build", "shape"), CASES,
                         ids=[f"{m}-{b.__name__}" for m, b, _ in CASES])
def test_export_computes_the_same_function_without_parametrizations(method, build, shape):
    torch.manual_seed(0)
    model = make_lipschitz(build(), method)
    x = _train(model, shape)
    exported = export(model)
    model.eval()
    expected = model(x)
    assert not any(parametrize.is_parametrized(m) for m in exported.modules())
    assert not exported.training
    torch.testing.assert_close(exported(x), expected, rtol=1e-6, atol=1e-6)
    # a plain model of the same architecture loads the exported state, strictly
    plain = build()
    plain.load_state_dict(exported.state_dict(), strict=True)
    torch.testing.assert_close(plain.eval()(x), expected, rtol=1e-6, atol=1e-6)
    # and the exported model is as Lipschitz as the constrained one (same weights)
    assert lipschitz_bound(exported, example_input=x[:1]) == pytest.approx(
        lipschitz_bound(model, example_input=x[:1]), rel=1e-5)


@pytest.mark.parametrize(("method", "build", "shape"), CASES,
                         ids=[f"{m}-{b.__name__}" for m, b, _ in CASES])
def test_the_original_model_keeps_working_after_export(method, build, shape):
    # regression: torch's remove_parametrizations edits the parametrized class, which a deep
    # copy shares with the original
    torch.manual_seed(1)
    model = make_lipschitz(build(), method)
    x = _train(model, shape, steps=2)
    export(model)
    export(model)  # twice: nothing of the first export leaks into the original
    assert all(parametrize.is_parametrized(m) for m in model.modules()
               if isinstance(m, nn.Linear | nn.Conv2d))
    model.train()
    x = _train(model, shape, steps=3)  # forward, backward and steps still work
    model.eval()
    again = export(model)
    torch.testing.assert_close(again(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("layer", "kind", "shape"),
    [
        (SpectralLinear(5, 4), nn.Linear, (5,)),
        (BjorckLinear(5, 4), nn.Linear, (5,)),
        (AOLLinear(5, 4), nn.Linear, (5,)),
        (SpectralConv2d(2, 3, 3, padding=1), nn.Conv2d, (2, 6, 6)),
        (AOLConv2d(2, 3, 3, stride=2), nn.Conv2d, (2, 6, 6)),
        (BCOPConv2d(3, 3, 3, padding_mode="circular"), nn.Conv2d, (3, 6, 6)),
    ],
    ids=lambda value: getattr(value, "__name__", type(value).__name__),
)
def test_lipkit_layer_classes_become_torch_classes(layer, kind, shape):
    x = torch.randn(4, *shape)
    layer(x)  # records a convolution's input size
    layer.eval()
    plain = export(layer)
    assert type(plain) is kind
    assert not plain._forward_pre_hooks, "lipkit's input-size hook was kept"
    # float32: the parametrized layer recomputes its weight (BCOP: ~1e-6 rounding apart)
    torch.testing.assert_close(plain(x), layer(x), rtol=1e-5, atol=1e-5)
    assert type(layer) is not kind and parametrize.is_parametrized(layer)


def test_exported_convolution_accepts_other_input_sizes_silently():
    torch.manual_seed(2)
    conv = SpectralConv2d(2, 2, 3, padding=1)
    conv(torch.randn(1, 2, 6, 6))
    plain = export(conv)
    with pytest.warns(UserWarning, match="input size changed"):
        conv(torch.randn(1, 2, 9, 9))  # the constrained layer renormalizes for a new size
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plain(torch.randn(1, 2, 9, 9))  # the exported one is a plain convolution
    assert out.shape == (1, 2, 9, 9)


def test_export_copies_and_keeps_frozen_parameters_frozen():
    torch.manual_seed(3)
    model = make_lipschitz(_mlp(), "spectral")
    model[0].bias.requires_grad_(False)
    model[2].parametrizations.weight.original.requires_grad_(False)
    exported = export(model)
    assert not exported[0].bias.requires_grad, "a frozen bias became trainable"
    assert not exported[2].weight.requires_grad, "a frozen weight became trainable"
    assert exported[4].weight.requires_grad and exported[4].bias.requires_grad
    with torch.no_grad():
        exported[4].weight.zero_()
    assert model[4].weight.abs().sum() > 0, "the export shares storage with the original"
    assert model.training, "export changed the original's mode"
