"""lipkit.nn.clip: weight clipping and the Lipschitz bound the box ``[-c, c]`` implies."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn import lipschitz_bound, weight_clip
from lipkit.nn.clip import clip_implied_bound

SEEDS = st.integers(0, 2**31 - 1)
CLIPS = st.floats(1e-3, 10.0)


def _saturate(layer: nn.Module, seed: int, scale: float = 100.0) -> None:
    """Give the unconstrained parameter large random entries, most of them clipped."""
    original = layer.parametrizations.weight.original
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        original.copy_(scale * torch.randn(original.shape, generator=generator))


@settings(max_examples=30)
@given(rows=st.integers(1, 10), columns=st.integers(1, 10), clip=CLIPS, seed=SEEDS)
def test_entries_stay_in_the_box_and_the_norm_below_the_bound(rows, columns, clip, seed,
                                                              oracle):
    layer = weight_clip(nn.Linear(columns, rows), clip_value=clip)
    _saturate(layer, seed, scale=10 * clip)
    weight = layer.weight.detach()
    assert weight.abs().max() <= clip * (1 + 1e-6), "an entry left [-c, c]"
    implied = clip * math.sqrt(rows * columns)
    # the clip value as float32 rounds it (up to 6e-8 above)
    assert implied <= clip_implied_bound(layer, clip) <= implied * (1 + 1e-7)
    assert oracle.operator_norm(layer) <= implied * (1 + 1e-6)
    assert lipschitz_bound(layer) <= implied * (1 + 1e-6)
    assert lipschitz_bound(layer) >= oracle.operator_norm(layer) * (1 - 1e-6)


@settings(max_examples=20)
@given(rows=st.integers(1, 10), columns=st.integers(1, 10), clip=CLIPS)
def test_the_all_c_matrix_attains_the_dense_bound(rows, columns, clip, oracle):
    layer = weight_clip(nn.Linear(columns, rows).double(), clip_value=clip)
    with torch.no_grad():
        layer.parametrizations.weight.original.fill_(3 * clip)
    # c * ones(m, n) = c * sqrt(m n) * (unit vector)(unit vector)^T
    assert oracle.operator_norm(layer) == pytest.approx(clip * math.sqrt(rows * columns),
                                                        rel=1e-12)


@settings(max_examples=40)
@given(data=st.data(), clip=CLIPS, seed=SEEDS)
def test_conv_norm_stays_below_the_implied_bound(data, clip, seed, conv_layers, oracle):
    conv, shape = data.draw(conv_layers())
    weight_clip(conv, clip_value=clip)
    _saturate(conv, seed, scale=10 * clip)
    assert conv.weight.detach().abs().max() <= clip * (1 + 1e-12)
    exact = oracle.operator_norm(conv, shape)
    implied = clip_implied_bound(conv, clip)
    assert exact <= implied * (1 + 1e-9), f"exact {exact} > implied {implied} for {conv}"
    assert lipschitz_bound(conv) >= exact * (1 - 1e-9)
    example = torch.zeros(1, *shape, dtype=torch.float64)
    assert lipschitz_bound(conv, example_input=example) >= exact * (1 - 1e-9)


@pytest.mark.parametrize("groups", [1, 2])
def test_the_all_c_kernel_attains_the_conv_bound(groups, oracle):
    # circular padding, stride 1, same size: the operator at the DC frequency is
    # sum_t K_t = T * c * ones, block diagonal over groups, of norm T c sqrt(m n) / g
    conv = nn.Conv2d(4, 6, 3, padding=1, padding_mode="circular", groups=groups,
                     dtype=torch.float64)
    weight_clip(conv, clip_value=0.25)
    with torch.no_grad():
        conv.parametrizations.weight.original.fill_(1.0)
    expected = 9 * 0.25 * math.sqrt(6 * 4) / groups
    assert clip_implied_bound(conv, 0.25) == pytest.approx(expected, rel=1e-12)
    assert oracle.operator_norm(conv, (4, 5, 6)) == pytest.approx(expected, rel=1e-9)


@settings(max_examples=30)
@given(data=st.data(), target=st.floats(1e-2, 1e2), seed=SEEDS)
def test_a_lipschitz_target_sets_the_implied_bound(data, target, seed, conv_layers, oracle):
    if data.draw(st.booleans()):
        layer, shape = nn.Linear(5, 3), None
    else:
        layer, shape = data.draw(conv_layers())
    weight_clip(layer, lipschitz=target)
    constraint = layer.parametrizations.weight[0]
    # the target, up to the clip value's rounding to float32 (at most 6e-8 relative)
    assert target * (1 - 1e-12) <= constraint.guarantee(layer) <= target * (1 + 1e-7)
    assert clip_implied_bound(layer, constraint.clip_value) == constraint.guarantee(layer)
    _saturate(layer, seed)
    assert oracle.operator_norm(layer, shape) <= constraint.guarantee(layer) * (1 + 1e-12)
    assert lipschitz_bound(layer) <= target * (1 + 1e-7)


def test_clip_runs_on_every_device_and_dtype(device, dtype):
    layer = weight_clip(nn.Linear(6, 4).to(device, dtype), clip_value=0.01)
    weight = layer.weight
    assert weight.device.type == device.type and weight.dtype == dtype
    assert weight.abs().max() <= 0.01
    layer(torch.randn(3, 6, device=device, dtype=dtype)).sum().backward()
    grad = layer.parametrizations.weight.original.grad
    # clamp passes the gradient through exactly where the entry is inside the box
    inside = layer.parametrizations.weight.original.abs() < 0.01
    assert torch.all((grad != 0) <= inside), "a gradient reached a clipped entry"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one"),
        ({"clip_value": 0.1, "lipschitz": 1.0}, "exactly one"),
        ({"lipschitz": 0.0}, "lipschitz"),
        ({"lipschitz": -1.0}, "lipschitz"),
        ({"lipschitz": float("nan")}, "lipschitz"),
        ({"clip_value": 0.0}, "clip_value"),
        ({"clip_value": -0.5}, "clip_value"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    layer = nn.Linear(3, 2)
    with pytest.raises(InvalidArgumentError, match=message):
        weight_clip(layer, **kwargs)
    assert not hasattr(layer, "parametrizations"), "a failed call modified the layer"


def test_unsupported_layer_raises():
    with pytest.raises(UnsupportedModuleError, match="LayerNorm"):
        weight_clip(nn.LayerNorm(3), clip_value=0.1)
