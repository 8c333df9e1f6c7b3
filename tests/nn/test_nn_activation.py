"""lipkit.nn.activation: GroupSort, MaxMin and FullSort permute, hence are 1-Lipschitz and
norm (and gradient norm) preserving."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.errors import InvalidArgumentError
from lipkit.nn import FullSort, GroupSort, MaxMin, lipschitz_bound

SEEDS = st.integers(0, 2**31 - 1)


@st.composite
def _activations(draw):
    """An activation, the dim it sorts along and an input shape it accepts."""
    kind = draw(st.sampled_from(["groupsort", "maxmin", "fullsort"]))
    group = {"groupsort": draw(st.integers(1, 4)), "maxmin": 2}.get(kind)
    groups = draw(st.integers(1, 4))
    features = groups * group if group else draw(st.integers(1, 8))
    if draw(st.booleans()):  # (batch, features)
        shape, dim = (draw(st.integers(1, 4)), features), draw(st.sampled_from([1, -1]))
    else:  # (batch, channels, height, width), sorted along the channels
        shape, dim = (draw(st.integers(1, 3)), features, 2, 3), 1
    module = {"groupsort": lambda: GroupSort(group, dim), "maxmin": lambda: MaxMin(dim),
              "fullsort": lambda: FullSort(dim)}[kind]()
    return module, group or features, shape, dim


def _random(shape, seed, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@settings(max_examples=50)
@given(case=_activations(), seed=SEEDS)
def test_output_is_a_sorted_permutation_of_each_group(case, seed):
    module, group, shape, dim = case
    x = _random(shape, seed)
    y = module(x)
    assert y.shape == x.shape
    grouped_x = x.movedim(dim, -1).unflatten(-1, (-1, group))
    grouped_y = y.movedim(dim, -1).unflatten(-1, (-1, group))
    # same multiset in every group, and each output group in descending order
    torch.testing.assert_close(grouped_y, grouped_x.sort(dim=-1, descending=True).values,
                               rtol=0, atol=0)
    assert (grouped_y[..., :-1] >= grouped_y[..., 1:]).all()


@settings(max_examples=50)
@given(case=_activations(), seed=SEEDS, dtype=st.sampled_from([torch.float32, torch.float64]))
def test_one_lipschitz_and_norm_preserving(case, seed, dtype, oracle):
    module, _, shape, _ = case
    x, y = _random(shape, seed, dtype), _random(shape, seed + 1, dtype)
    near = x + 1e-3 * _random(shape, seed + 2, dtype)  # pairs inside and across regions
    for other in (y, near):
        ratios = oracle.lipschitz_ratios(module, x, other)
        assert (ratios <= 1 + 1e-5).all(), f"ratios {ratios}"
    torch.testing.assert_close(module(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1),
                               rtol=1e-6, atol=0)


@settings(max_examples=30)
@given(case=_activations(), seed=SEEDS)
def test_jacobian_vector_products_preserve_norms(case, seed):
    module, _, shape, _ = case
    x, v = _random(shape, seed), _random(shape, seed + 1)
    _, tangent = torch.func.jvp(module, (x,), (v,))
    torch.testing.assert_close(tangent.norm(), v.norm(), rtol=1e-12, atol=0)
    # and backward: the gradient w.r.t. the input has the norm of the upstream gradient
    x = x.clone().requires_grad_(True)
    module(x).backward(v)
    torch.testing.assert_close(x.grad.norm(), v.norm(), rtol=1e-12, atol=0)


def test_maxmin_and_group_sort_examples():
    x = torch.tensor([[1.0, 3.0, -2.0, -5.0, 0.5, 4.0]])
    assert torch.equal(MaxMin()(x), torch.tensor([[3.0, 1.0, -2.0, -5.0, 4.0, 0.5]]))
    assert torch.equal(GroupSort(3)(x), torch.tensor([[3.0, 1.0, -2.0, 4.0, 0.5, -5.0]]))
    assert torch.equal(FullSort()(x), torch.tensor([[4.0, 3.0, 1.0, 0.5, -2.0, -5.0]]))
    assert torch.equal(GroupSort(1)(x), x)


def test_runs_on_every_device_and_dtype(device, dtype):
    for module in (MaxMin(), GroupSort(3), FullSort()):
        x = torch.randn(4, 6, 3, 3, device=device, dtype=dtype, requires_grad=True)
        y = module(x)
        assert y.device == x.device and y.dtype == dtype
        # a permutation of the channels at every pixel: the sorted values are the same
        torch.testing.assert_close(y.sort(dim=1).values, x.sort(dim=1).values, rtol=0, atol=0)
        upstream = torch.randn_like(y)
        y.backward(upstream)
        torch.testing.assert_close(x.grad.norm(dim=1), upstream.norm(dim=1))


@pytest.mark.parametrize(("module", "features"), [(GroupSort(3), 4), (MaxMin(), 5),
                                                  (GroupSort(4), 6)])
def test_group_size_must_divide_the_features(module, features):
    size = module.group_size
    with pytest.raises(InvalidArgumentError, match=rf"group size {size}\b.*\b{features} features"):
        module(torch.randn(2, features))


def test_group_size_must_be_positive():
    with pytest.raises(InvalidArgumentError, match="group_size"):
        GroupSort(0)


@pytest.mark.parametrize("module", [GroupSort(4), MaxMin(), FullSort()])
def test_bound_is_one(module):
    assert lipschitz_bound(module) == 1.0
