"""The local LP bound over a box: above the local constant (exact-mip's, sampled Jacobians),
below the global bound, ||J(x0)|| when every neuron is stable; rows pruned by interval bound."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.estimate import METHODS, estimate, load_network, options_for
from lipkit.estimate import lp_jacobian as lp
from lipkit.estimate.engine import relaxation_of
from lipkit.estimate.witness import jacobians

from .conftest import random_mlp
from .test_estimate_lp_jacobian import induced


def run(network, norm, **keywords):
    return METHODS["lp-jacobian"].function(network, options_for("lp-jacobian", network,
                                                                norm=norm, **keywords))


def box_points(center, radius, count=4000, seed=0):
    """Random points of the l-inf ball and its vertices (up to 2^10 of them)."""
    generator = torch.Generator().manual_seed(seed)
    n = center.numel()
    inside = center + radius * (2 * torch.rand(count, n, generator=generator,
                                               dtype=torch.float64) - 1)
    signs = torch.tensor(np.array(np.meshgrid(*[[-1.0, 1.0]] * min(n, 10))).reshape(
        min(n, 10), -1).T, dtype=torch.float64)
    vertices = center + radius * torch.cat(
        [signs, torch.ones(len(signs), n - signs.shape[1], dtype=torch.float64)], dim=1)
    return torch.cat([inside, vertices])


def sampled_constant(network, norm, center, radius):
    """The largest Jacobian norm at points of the box: a lower bound on its local constant."""
    return float(induced(jacobians(network, box_points(center, radius)), norm).max())


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 4),
       widths=st.lists(st.integers(2, 8), min_size=1, max_size=3),
       norm=st.sampled_from(["inf", "1"]), radius=st.sampled_from([0.05, 0.3, 1.5]))
def test_between_the_exact_local_constant_and_the_global_bound(seed, n, widths, norm, radius):
    network = load_network(random_mlp([n, *widths, 3], seed=seed))
    center = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    local = run(network, norm, center=center, radius=radius)
    assert local.kind == "upper" and local.status == "ok", local.status
    assert "radius" in local.details["domain"]
    sampled = sampled_constant(network, norm, center, radius)
    assert local.value >= sampled * (1 - 1e-9), (local.value, sampled)
    result = METHODS["exact-mip"].function(network, options_for(
        "exact-mip", network, norm=norm, time_limit=30, center=center, radius=radius))
    witnessed = max(b.value for b in (result if isinstance(result, list) else [result])
                    if b.kind in ("exact", "lower"))
    assert local.value >= witnessed * (1 - 1e-9), (local.value, witnessed)
    assert local.value <= run(network, norm).value * (1 + 1e-6)


@pytest.mark.parametrize("norm", ["inf", "1"])
@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.2),
                                        lambda: nn.LeakyReLU(3.0)])
def test_a_tiny_box_gives_the_jacobian_norm_at_its_center(norm, activation):
    model = random_mlp([5, 16, 16, 3], activation=activation, seed=4)
    network = load_network(model)
    center = torch.randn(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = center[None]
    with torch.no_grad():
        for module in model:  # no neuron at 0: a small enough box makes every one stable
            x = module(x)
            if isinstance(module, nn.Linear) and x.shape[1] == 16:
                assert float(x.abs().min()) > 1e-4
    exact = float(induced(jacobians(network, center[None]), norm)[0])
    local = run(network, norm, center=center, radius=1e-7)
    assert local.details["stable_neurons"] == "32/32"
    assert exact <= local.value <= exact * (1 + 1e-9), (local.value, exact)
    assert local.value < run(network, norm).value


def test_a_linear_network_gives_its_norm_on_any_box():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(1.0), nn.Linear(6, 3)).double()
    matrix = (model[2].weight @ model[0].weight).detach()
    box = (-torch.ones(4), torch.full((4,), 2.0))
    for norm in ("inf", "1"):
        exact = float(induced(matrix[None], norm)[0])
        value = run(load_network(model), norm, box=box).value
        assert exact <= value <= exact * (1 + 1e-9), (norm, value, exact)


@pytest.mark.parametrize("activation", [lambda: nn.LeakyReLU(0.2), lambda: nn.LeakyReLU(3.0),
                                        nn.Tanh, nn.GELU])
def test_above_the_secant_slopes_on_an_interval_of_a_1d_input_net(activation):
    network = load_network(random_mlp([1, 8, 8, 2], activation=activation, seed=3))
    center, radius = 0.4, 0.6
    x = torch.linspace(center - radius, center + radius, 100_001,
                       dtype=torch.float64).reshape(-1, 1)
    with torch.no_grad():
        y = network(x)
    slopes = (y[1:] - y[:-1]) / (x[1:] - x[:-1])
    for norm, along in (("inf", slopes.abs().amax(dim=1)), ("1", slopes.abs().sum(dim=1))):
        local = run(network, norm, center=torch.tensor([center]), radius=radius)
        assert local.value >= float(along.max()) * (1 - 1e-9), norm
        assert local.value <= run(network, norm).value * (1 + 1e-6), norm


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Sigmoid, nn.SiLU])
def test_pre_activation_bounds_contain_every_sampled_pre_activation(activation):
    model = random_mlp([3, 10, 10, 2], activation=activation, seed=5)
    network = load_network(model)
    center, radius = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), 0.7
    bounds = lp.pre_activation_bounds(network.chain(), (center - radius).numpy(),
                                      (center + radius).numpy())
    x = box_points(center, radius)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for linear, nonlinear, (low, high) in zip(linears, model[1::2], bounds, strict=False):
            x = linear(x)
            assert np.all(x.numpy() >= low) and np.all(x.numpy() <= high)
            assert np.all(high - low < 20 * (x.amax(0) - x.amin(0)).numpy() + 1e-9)
            x = nonlinear(x)


def test_linear_bounds_stop_at_a_large_layer(monkeypatch):
    model = random_mlp([3, 6, 12, 6, 2], seed=9)
    network = load_network(model)
    center, radius = torch.tensor([0.2, 0.1, -0.3], dtype=torch.float64), 0.5
    box = ((center - radius).numpy(), (center + radius).numpy())
    monkeypatch.setattr(lp, "_MAX_ENTRIES", 0)  # interval propagation only
    intervals = lp.pre_activation_bounds(network.chain(), *box)
    monkeypatch.setattr(lp, "_MAX_ENTRIES", 20)  # the 12-wide layer (36 entries) and on
    mixed = lp.pre_activation_bounds(network.chain(), *box)
    x = box_points(center, radius)
    with torch.no_grad():
        for index, (part, loose) in enumerate(zip(mixed, intervals, strict=True)):
            x = model[2 * index](x)
            assert np.all(x.numpy() >= part[0]) and np.all(x.numpy() <= part[1]), index
            assert np.all(part[0] >= loose[0] - 1e-12) and np.all(part[1] <= loose[1] + 1e-12)
            x = model[2 * index + 1](x)
    value = run(network, "inf", box=box).value
    assert value >= sampled_constant(network, "inf", center, radius) * (1 - 1e-9)


@pytest.mark.parametrize("activation", [nn.SiLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.ELU,
                                        nn.Softplus, lambda: nn.LeakyReLU(3.0)])
def test_activation_bounds_contain_the_activation_over_each_interval(activation):
    kind = load_network(nn.Sequential(nn.Linear(1, 1), activation(), nn.Linear(1, 1)))
    layer = kind.chain()[0].activation
    ends = torch.tensor([[-4.0, -0.5], [-2.0, 0.3], [-1.3, -1.2], [-0.2, 3.0], [1.0, 2.0]],
                        dtype=torch.float64)
    low, high = (v.numpy() for v in relaxation_of(layer).interval(ends[:, 0], ends[:, 1]))
    t = torch.linspace(0, 1, 10_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        values = activation()(ends[:, 0] + t * (ends[:, 1] - ends[:, 0])).numpy()
    assert np.all(values >= low) and np.all(values <= high), (values.min(0), low)
    assert np.all(high - low <= 3 * (values.max(0) - values.min(0)) + 1e-9)


def test_rows_pruned_by_interval_bound_give_the_value_of_all_lps(monkeypatch):
    network = load_network(random_mlp([3, 12, 12, 12], seed=6))
    weights, slopes = lp._chain(network, "inf")
    every = max(lp.row_bound(weights, slopes, row)[0] for row in range(12))
    intervals = lp.interval_bounds(weights, slopes, chunk=5)  # in blocks: as one row each
    for row in range(12):
        single = lp._row_program(weights, slopes, row)[-1]
        assert abs(intervals[row] - single) <= 1e-12 * single
    bound = run(network, "inf")
    assert bound.value == every and bound.status == "ok"
    assert bound.details["programs"] < 12
    capped = run(network, "inf", max_programs=1)  # beyond it: the interval bounds, said so
    assert capped.status.startswith("ok: 1 LPs reached") and "interval" in capped.status
    assert every <= capped.value <= bound.details["interval_bound"]


def test_a_local_bound_through_estimate_is_above_the_exact_local_constant():
    model = random_mlp([2, 10, 10, 2], seed=8)
    center = torch.tensor([0.3, -0.2], dtype=torch.float64)
    report = estimate(model, methods=["lp-jacobian", "exact-mip"], norm="inf", center=center,
                      radius=0.25)
    bounds = {b.method: b for b in report.bounds}
    assert bounds["exact-mip"].kind == "exact" and report.consistent
    assert bounds["lp-jacobian"].details["domain"] == bounds["exact-mip"].details["domain"]
    assert bounds["lp-jacobian"].value >= bounds["exact-mip"].value * (1 - 1e-9)


def test_bad_domains_are_refused_naming_what():
    network = load_network(random_mlp([2, 4, 2], seed=0))
    with pytest.raises(InvalidArgumentError, match="radius"):
        run(network, "inf", center=torch.zeros(2), radius=0.0)
    with pytest.raises(InvalidArgumentError, match="box"):
        run(network, "inf", box=(np.zeros(3), np.ones(3)))
    with pytest.raises(InvalidArgumentError, match="box"):
        run(network, "inf", box=(np.ones(2), np.zeros(2)))
    with pytest.raises(InvalidArgumentError, match="center"):
        run(network, "inf", center="middle", radius=0.1)
    assert run(network, "inf", center=None).details["domain"].startswith("R^n")


def test_local_slopes_fix_only_relu_like_activations():
    """Pre-activations in [-3, -2]: a ReLU's slope there is 0, a LeakyReLU's its slope; a
    Hardtanh(-5, 5)'s is 1 and an ELU's between e^-3 and e^-2, so both keep their range."""
    def slopes(activation):
        model = nn.Sequential(nn.Linear(1, 1), activation, nn.Linear(1, 1))
        with torch.no_grad():
            model[0].weight.fill_(1.0)
            model[0].bias.fill_(0.0)
        layers = load_network(model).chain()
        ((alpha, beta),) = lp.local_slopes(layers, np.array([-3.0]), np.array([-2.0]))
        return float(alpha[0]), float(beta[0])

    assert slopes(nn.ReLU()) == (0.0, 0.0)
    assert slopes(nn.LeakyReLU(-0.5)) == (-0.5, -0.5)
    assert slopes(nn.Hardtanh(-5.0, 5.0)) == (0.0, 1.0)
    assert slopes(nn.ELU(3.0)) == (0.0, 3.0)
