"""The bound-propagation engine: every bound holds at sampled points, CROWN is inside the
interval bounds, alpha-CROWN improves CROWN and stays below the exact MIP minimum, the
gradient bounds hold and are the gradient's norm on a tiny box."""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.estimate import load_network
from lipkit.estimate.engine import DenseChain, GradientBounds, layer_bounds, spec_lower
from lipkit.estimate.engine.margin_mip import minimize

from .conftest import random_mlp

ACTIVATIONS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2),
               "concave": lambda: nn.LeakyReLU(3.0), "tanh": nn.Tanh}


def boxes(n, count, radius, seed):
    generator = torch.Generator().manual_seed(seed)
    centre = torch.randn(count, n, generator=generator, dtype=torch.float64)
    return centre - radius, centre + radius


def sample(lower, upper, count=3000, seed=0):
    generator = torch.Generator().manual_seed(seed)
    unit = torch.rand(lower.shape[0], count, lower.shape[1], generator=generator,
                      dtype=torch.float64)
    corners = (torch.rand(lower.shape[0], 64, lower.shape[1], generator=generator) < 0.5)
    points = lower[:, None] + (upper - lower)[:, None] * torch.cat([unit, corners.double()], 1)
    return points


def row_gradients(chain, points, spec):
    """The gradients of the rows of ``spec @ f`` at ``points`` (``(boxes, count, n)``):
    ``(boxes, count, rows, n)``, by autograd."""
    boxes, count, n = points.shape
    with torch.enable_grad():
        x = points.reshape(-1, n).clone().requires_grad_(True)
        rows = chain.forward(x) @ spec.T
        grads = torch.stack([torch.autograd.grad(rows[:, r].sum(), x, retain_graph=True)[0]
                             for r in range(spec.shape[0])], 1)
    return grads.reshape(boxes, count, spec.shape[0], n)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), activation=st.sampled_from(sorted(ACTIVATIONS)),
       radius=st.sampled_from([0.01, 0.2, 1.0]))
def test_bounds_hold_at_sampled_points(seed, activation, radius):
    model = random_mlp([6, 20, 20, 3], activation=ACTIVATIONS[activation], seed=seed)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(6, 3, radius, seed)
    crown = layer_bounds(chain, lower, upper)
    interval = layer_bounds(chain, lower, upper, linear=False)
    points = sample(lower, upper, seed=seed)
    out, pre = chain.forward(points.reshape(-1, 6), pre_activations=True)
    for k, z in enumerate(pre):
        z = z.reshape(3, -1, z.shape[-1])
        assert (z >= crown.lower[k][:, None]).all() and (z <= crown.upper[k][:, None]).all()
        assert (crown.lower[k] >= interval.lower[k]).all()
        assert (crown.upper[k] <= interval.upper[k]).all()
    spec = torch.tensor([[1.0, -1, 0], [0, 1, -1]], dtype=torch.float64).expand(3, -1, -1)
    values = torch.einsum("brk,bnk->bnr", spec, out.reshape(3, -1, 3)).min(1).values
    plain = spec_lower(chain, spec, crown)
    optimized = spec_lower(chain, spec, crown, steps=10)
    assert (plain <= values).all(), (plain, values)
    assert (optimized <= values).all() and (optimized >= plain).all()
    assert (spec_lower(chain, spec, interval) <= values).all()
    gradient = GradientBounds(chain, spec, crown)
    grads = row_gradients(chain, points, spec[0])
    for norm, p in (("inf", 1), ("1", float("inf")), ("2", 2)):
        sampled = grads.norm(p=p, dim=-1).max(1).values
        assert (gradient.norm_upper(norm) >= sampled).all(), (norm,)


def test_alpha_crown_is_below_the_exact_minimum_and_the_mip_attains_it():
    model = random_mlp([8, 24, 24, 3], seed=3)
    chain = DenseChain.of(load_network(model))
    centre = torch.randn(8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bounds = layer_bounds(chain, (centre - 0.2)[None], (centre + 0.2)[None])
    row = np.array([1.0, -1.0, 0.0])
    exact = minimize(chain, row, bounds, time_limit=30, stop_below=None)
    assert exact.optimal
    proven = float(spec_lower(chain, torch.tensor(row)[None, None], bounds, steps=20))
    assert proven <= exact.lower + 1e-7
    point = torch.from_numpy(exact.point)
    assert ((point >= centre - 0.2 - 1e-9) & (point <= centre + 0.2 + 1e-9)).all()
    attained = float(model(point[None]).detach() @ torch.tensor(row))
    assert abs(attained - exact.value) < 1e-6
    points = sample((centre - 0.2)[None], (centre + 0.2)[None])[0]
    assert float((model(points) @ torch.tensor(row)).min()) >= exact.lower - 1e-7


@pytest.mark.parametrize("activation", ["relu", "leaky", "concave"])
def test_a_tiny_box_gives_the_gradient_norm(activation):
    model = random_mlp([5, 16, 16, 2], activation=ACTIVATIONS[activation], seed=4)
    chain = DenseChain.of(load_network(model))
    centre = torch.randn(1, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    bounds = layer_bounds(chain, centre - 1e-9, centre + 1e-9)
    assert not any(u.any() for u in bounds.unstable())
    spec = torch.eye(2, dtype=torch.float64)[None]
    gradient = chain.pattern_gradient(centre, spec)[0]
    for norm, p in (("inf", 1), ("1", float("inf")), ("2", 2)):
        exact = gradient.norm(p=p, dim=-1)
        value = GradientBounds(chain, spec, bounds).norm_upper(norm)[0]
        # the float64 gradient itself carries rounding: equal to 1e-12 relative
        assert (value >= exact * (1 - 1e-12)).all(), (norm, value, exact)
        assert (value <= exact * (1 + 1e-9)).all(), (norm, value, exact)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_a_passed_deadline_falls_back_to_interval_bounds_that_still_hold(activation):
    """Out of time, the gradient bounds come from interval arithmetic: never tighter than
    the linear passes', equal to GradientBounds(linear=False), and above every sampled
    gradient."""
    model = random_mlp([6, 30, 30, 30, 3], activation=ACTIVATIONS[activation], seed=5)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(6, 2, 0.3, 5)
    bounds = layer_bounds(chain, lower, upper)
    spec = torch.tensor([[1.0, -1, 0], [0, 1, -1]], dtype=torch.float64).expand(2, -1, -1)
    on_time = GradientBounds(chain, spec, bounds)
    late = GradientBounds(chain, spec, bounds, deadline=0.0)
    interval = GradientBounds(chain, spec, bounds, linear=False)
    points = sample(lower, upper, seed=5)
    grads = row_gradients(chain, points, spec[0])
    for norm, p in (("inf", 1), ("1", float("inf")), ("2", 2)):
        sampled = grads.norm(p=p, dim=-1).max(1).values
        fast, slow = late.norm_upper(norm), on_time.norm_upper(norm)
        assert (fast >= sampled).all() and (slow >= sampled).all(), norm
        assert (fast >= slow).all(), norm
        if norm != "inf":  # l-inf: the late one also skips the objective's chord pass
            assert torch.equal(fast, interval.norm_upper(norm)), norm
    assert (late.norm_upper("inf") > on_time.norm_upper("inf")).any()


def test_a_split_restricts_the_branch_and_contradictions_are_empty():
    model = random_mlp([4, 10, 10, 1], seed=0)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(4, 1, 0.5, 0)
    bounds = layer_bounds(chain, lower, upper)
    unstable = bounds.unstable()[0][0].nonzero().flatten()
    assert len(unstable) > 0
    neuron = int(unstable[0])
    splits = [torch.zeros(2, 10, dtype=torch.int8), torch.zeros(2, 10, dtype=torch.int8)]
    splits[0][0, neuron], splits[0][1, neuron] = 1, -1
    branches = layer_bounds(chain, lower.expand(2, -1), upper.expand(2, -1), splits)
    assert branches.lower[0][0, neuron] >= 0 and branches.upper[0][1, neuron] <= 0
    assert branches.feasible.all()
    stable = int((bounds.lower[0][0] > 0).nonzero().flatten()[0]) if (
        bounds.lower[0][0] > 0).any() else None
    if stable is not None:  # a neuron proven positive split to <= 0: an empty branch
        contradiction = [torch.zeros(1, 10, dtype=torch.int8) for _ in range(2)]
        contradiction[0][0, stable] = -1
        assert not layer_bounds(chain, lower, upper, contradiction).feasible[0]


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), activation=st.sampled_from(["relu", "leaky"]),
       radius=st.sampled_from([0.1, 0.5]))
def test_split_bounds_hold_on_the_points_of_their_branch(seed, activation, radius):
    # the splits' constraints narrow the region: every bound must hold at every sampled point
    # that satisfies the splits, and a branch found empty must have no such point
    model = random_mlp([4, 12, 12, 12, 1], activation=ACTIVATIONS[activation], seed=seed)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(4, 1, radius, seed)
    root = layer_bounds(chain, lower, upper)
    generator = torch.Generator().manual_seed(seed)
    count = 24
    splits = []
    for k in range(3):
        unstable = root.unstable()[k][0]
        sides = torch.randint(0, 3, (count, 12), generator=generator).to(torch.int8) - 1
        chosen = torch.rand(count, 12, generator=generator) < (0.5 if k == 0 else 0.3)
        splits.append(torch.where(chosen & unstable, sides, torch.zeros_like(sides)))
    branches = layer_bounds(chain, lower.expand(count, -1), upper.expand(count, -1), splits)
    points = sample(lower, upper, count=20_000, seed=seed)[0]
    _, pre = chain.forward(points, pre_activations=True)
    for b in range(count):
        inside = torch.ones(len(points), dtype=torch.bool)
        for k in range(3):
            side = splits[k][b].to(torch.float64)
            inside &= ((pre[k] * side) >= 0).all(dim=1)
        if not branches.feasible[b]:
            assert not inside.any(), (b, int(inside.sum()))
            continue
        for k in range(3):
            z = pre[k][inside]
            assert (z >= branches.lower[k][b]).all() and (z <= branches.upper[k][b]).all(), (
                b, k)


@pytest.mark.parametrize(("seed", "activation"), [(0, "relu"), (1, "relu"), (2, "relu"),
                                                  (3, "leaky"), (4, "concave")])
def test_branching_closes_most_of_the_gap_to_the_exact_minimum_and_stays_below(seed,
                                                                            activation):
    """Branch and bound on the neurons (``engine.branching``): its bound of each margin is
    below the exact minimum (HiGHS on the MIP rows) and at least the root's alpha-CROWN,
    with at least half of the root's gap closed; a target just below the exact minimum of
    the rows is proven (the search completes) whenever it is."""
    from lipkit.estimate.engine.branching import lower_by_branching

    model = random_mlp([8, 30, 30, 3], activation=ACTIVATIONS[activation], seed=seed)
    chain = DenseChain.of(load_network(model))
    centre = torch.randn(8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    low, high = centre - 0.3, centre + 0.3
    spec = torch.tensor([[1.0, -1, 0], [1.0, 0, -1]], dtype=torch.float64)
    bounds = layer_bounds(chain, low[None], high[None])
    root = spec_lower(chain, spec[None], bounds, steps=20)[0]
    exact = np.array([minimize(chain, spec[j].numpy(), bounds, time_limit=30,
                               stop_below=None).lower for j in range(2)])
    found = lower_by_branching(chain, spec, low, high, target=math.inf, root=(bounds, root),
                               deadline=time.perf_counter() + 20)
    assert np.all(found.lower <= exact + 1e-9), (found.lower, exact)
    assert np.all(found.lower >= root.numpy()), (found.lower, root)
    assert np.all(exact - found.lower <= 0.5 * (exact - root.numpy()) + 1e-9)
    target = float(exact.min()) - 0.05
    proven = lower_by_branching(chain, spec, low, high, target=target, root=(bounds, root),
                                deadline=time.perf_counter() + 20)
    assert proven.complete and np.all(proven.lower > target), proven
    points = sample(low[None], high[None], seed=seed)[0]
    attained = (model(points) @ spec.T).min(0).values.detach().numpy()
    assert np.all(proven.lower <= attained) and np.all(found.lower <= attained)


def test_slope_steps_stop_at_the_deadline():
    """A passed deadline leaves alpha-CROWN at CROWN's bound (no step taken); a distant one
    lets the steps improve on it."""
    model = random_mlp([6, 20, 20, 3], seed=7)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(6, 2, 0.5, 7)
    bounds = layer_bounds(chain, lower, upper)
    spec = torch.tensor([[1.0, -1, 0], [0, 1, -1]], dtype=torch.float64).expand(2, -1, -1)
    crown = spec_lower(chain, spec, bounds)
    late = spec_lower(chain, spec, bounds, steps=20, deadline=0.0)
    early = spec_lower(chain, spec, bounds, steps=20, deadline=time.perf_counter() + 60)
    assert torch.equal(late, crown)
    assert (early >= crown).all() and (early > crown).any()


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), activation=st.sampled_from(["relu", "leaky", "concave"]),
       radius=st.sampled_from([0.2, 1.0]))
def test_optimized_intermediate_bounds_hold_and_are_never_looser(seed, activation, radius):
    """alpha-CROWN's intermediate bounds (``layer_bounds(slope_steps=)``) contain every
    sampled pre-activation, are inside CROWN's, and are passed on to branches (``within``):
    a branch's bounds hold at its points and stay inside the root's."""
    model = random_mlp([5, 16, 16, 16, 2], activation=ACTIVATIONS[activation], seed=seed)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(5, 2, radius, seed)
    crown = layer_bounds(chain, lower, upper)
    optimized = layer_bounds(chain, lower, upper, slope_steps=10)
    points = sample(lower, upper, seed=seed)
    _, pre = chain.forward(points.reshape(-1, 5), pre_activations=True)
    for k, z in enumerate(pre):
        z = z.reshape(2, -1, z.shape[-1])
        assert (z >= optimized.lower[k][:, None]).all()
        assert (z <= optimized.upper[k][:, None]).all()
        assert (optimized.lower[k] >= crown.lower[k]).all()
        assert (optimized.upper[k] <= crown.upper[k]).all()
    root = layer_bounds(chain, lower[:1], upper[:1], slope_steps=10)
    unstable = root.unstable()[0][0]
    splits = [torch.zeros(2, 16, dtype=torch.int8) for _ in range(3)]
    if unstable.any():
        j = int(torch.nonzero(unstable)[0])
        splits[0][0, j], splits[0][1, j] = 1, -1
    children = layer_bounds(chain, lower[:1].expand(2, -1), upper[:1].expand(2, -1), splits,
                            within=root)
    inside_points = points[0]
    _, pre = chain.forward(inside_points, pre_activations=True)
    for b in range(2):
        side = splits[0][b].to(torch.float64)
        inside = ((pre[0] * side) >= 0).all(dim=1)
        for k in range(3):
            assert (children.lower[k][b] >= root.lower[k][0]).all()
            assert (children.upper[k][b] <= root.upper[k][0]).all()
            if children.feasible[b]:
                z = pre[k][inside]
                assert (z >= children.lower[k][b]).all() and (z <= children.upper[k][b]).all()


def test_optimized_intermediate_bounds_are_tighter_on_a_deep_net():
    model = random_mlp([10, 40, 40, 40, 40, 3], seed=11)
    chain = DenseChain.of(load_network(model))
    lower, upper = boxes(10, 1, 0.3, 11)
    crown = layer_bounds(chain, lower, upper)
    optimized = layer_bounds(chain, lower, upper, slope_steps=20)
    width = sum(float((h - lo).sum()) for lo, h in zip(crown.lower, crown.upper, strict=True))
    tighter = sum(float((h - lo).sum()) for lo, h in zip(optimized.lower, optimized.upper,
                                                         strict=True))
    assert tighter < 0.99 * width, (tighter, width)
