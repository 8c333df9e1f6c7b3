"""exact-bab: the input-space branch and bound against exact-mip (l1 / l-inf), breakpoint
enumeration on 1-D inputs, dense grids (every norm, l2 included), the upper bounds of other
methods, its own witness, and its bracket when stopped early."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.estimate import METHODS, Options, estimate, load_network, options_for
from lipkit.estimate.engine.gates import gate_ranges, piecewise_linear_chain
from lipkit.estimate.report import run_method
from lipkit.estimate.witness import jacobians
from lipkit.nn import GroupSort, MaxMin

from .conftest import random_mlp

ACTIVATIONS = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2), "maxmin": MaxMin}


def bab(network, norm, time_limit=60, **keywords):
    result = METHODS["exact-bab"].function(network, options_for(
        "exact-bab", network, norm=norm, time_limit=time_limit, **keywords))
    return result if isinstance(result, list) else [result]


def exact(method, network, norm, **keywords):
    result = METHODS[method].function(network, options_for(method, network, norm=norm,
                                                           time_limit=60, **keywords))
    bounds = result if isinstance(result, list) else [result]
    assert [b.kind for b in bounds] == ["exact"], [(b.kind, b.status) for b in bounds]
    return bounds[0]


def induced(jac, norm):
    """Induced norms of a batch of Jacobians ``(batch, m, n)``."""
    if norm == "2":
        return torch.linalg.matrix_norm(jac, ord=2)
    return jac.abs().sum(dim=2 if norm == "inf" else 1).amax(dim=1)


def check_witness(network, bound, norm):
    point = bound.details["witness"]["x"].reshape(1, *network.input_shape)
    value = float(induced(jacobians(network, point), norm)[0])
    assert math.isclose(value, bound.value, rel_tol=1e-9), (value, bound.value)


def grid_max(network, norm, scales=(1, 10, 1000)):
    """The largest Jacobian norm over 2-D grids at several scales (a lower oracle)."""
    axis = torch.linspace(-1, 1, 81, dtype=torch.float64)
    grid = torch.cat([scale * torch.cartesian_prod(axis, axis) for scale in scales])
    return float(induced(jacobians(network, grid), norm).max())


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 6), min_size=1, max_size=2),
       outputs=st.integers(1, 3), norm=st.sampled_from(["inf", "1"]),
       activation=st.sampled_from(sorted(ACTIVATIONS)))
def test_equals_exact_mip_on_random_small_networks(seed, widths, outputs, norm, activation):
    if activation == "maxmin":
        widths = [2 * w for w in widths]
    network = load_network(random_mlp([2, *widths, outputs], ACTIVATIONS[activation], seed))
    value = exact("exact-bab", network, norm)
    check_witness(network, value, norm)
    assert math.isclose(value.value, exact("exact-mip", network, norm).value, rel_tol=1e-6)
    assert grid_max(network, norm) <= value.value * (1 + 1e-9)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_l2_between_every_lower_and_every_upper(activation):
    for seed in range(3):
        network = load_network(random_mlp([2, 6, 6, 2], ACTIVATIONS[activation], seed))
        value = exact("exact-bab", network, "2")
        check_witness(network, value, "2")
        assert grid_max(network, "2") <= value.value * (1 + 1e-9)
        for name in ("naive", "autolip", "seqlip", "lipsdp-neuron", "compositional"):
            bound = run_method(name, network, Options(norm="2"))
            if bound.kind == "upper" and bound.usable:  # (MaxMin: naive and autolip only)
                assert value.value <= bound.value * (1 + 1e-7), (name, bound.value)


@pytest.mark.parametrize("norm", ["inf", "1", "2"])
def test_one_dimensional_input_equals_breakpoint_enumeration(norm):
    for seed in range(3):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
                              nn.Linear(8, 3)).double()
        network = load_network(model)
        # every region of a 1-D input is an interval: the first layer's breakpoints, then,
        # between two of them (where the second layer's inputs are affine), the second's
        w, b = model[0].weight.detach()[:, 0], model[0].bias.detach()
        edges = sorted([-1e6, 1e6, *(float(-bj / wj) for wj, bj in zip(w, b, strict=True))])
        second = []
        for left, right in itertools.pairwise(edges):
            ends = torch.tensor([[left], [right]], dtype=torch.float64)
            pre = model[2](model[1](model[0](ends))).detach()  # affine on [left, right]
            slope = (pre[1] - pre[0]) / (right - left)
            zeros = left - pre[0] / torch.where(slope == 0, torch.inf, slope)
            second += [float(z) for z in zeros if left < z < right]
        edges = np.array(sorted(edges + second))
        middles = torch.from_numpy((edges[1:] + edges[:-1]) / 2).reshape(-1, 1)
        expected = float(induced(jacobians(network, middles), norm).max())
        value = exact("exact-bab", network, norm).value
        assert math.isclose(value, expected, rel_tol=1e-9), (seed, value, expected)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_local_box_and_global(norm):
    network = load_network(random_mlp([3, 8, 8, 1], seed=4))
    center, radius = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64), 0.3
    local = exact("exact-bab", network, norm, center=center, radius=radius)
    point = local.details["witness"]["x"]
    assert float((point - center).abs().max()) <= radius
    whole = exact("exact-bab", network, norm)
    assert local.value <= whole.value * (1 + 1e-9)
    axis = torch.linspace(-radius, radius, 21, dtype=torch.float64)
    cube = center + torch.cartesian_prod(axis, axis, axis)
    assert float(induced(jacobians(network, cube), norm).max()) <= local.value * (1 + 1e-9)
    if norm == "inf":
        assert math.isclose(local.value, exact("exact-mip", network, norm, center=center,
                                               radius=radius).value, rel_tol=1e-6)


def test_box_limit_gives_a_bracket_containing_the_exact_value():
    network = load_network(random_mlp([2, 12, 12, 1], seed=7))
    value = exact("exact-bab", network, "inf").value
    bracketed = 0
    for limit in (1, 30, 200):
        bounds = bab(network, "inf", max_branches=limit)
        if [b.kind for b in bounds] == ["exact"]:
            continue
        bracketed += 1
        assert [b.kind for b in bounds] == ["upper", "lower"]
        upper, lower = bounds
        assert lower.value <= value * (1 + 1e-9) <= upper.value * (1 + 2e-9)
        assert upper.usable and upper.status.startswith("ok: box limit")
        check_witness(network, lower, "inf")
    assert bracketed


@pytest.mark.parametrize(("seed", "norm"), [(3, "2"), (3, "inf"), (5, "1")])
def test_a_maximum_found_at_t_zero_gives_a_far_witness(seed, norm):
    """Tiny weights and ordinary biases put every gate's switch about 1e6 from the origin:
    the best box centre of the homogenized domain has t = 0 (a direction). Its pattern is
    the one of the direction's far points, so the run ends exact with a witness whose
    Jacobian norm by autograd is the value (it was "no witness", lower 0, before)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.weight.mul_(1e-6)
            layer.bias.uniform_(-1, 1)
    network = load_network(model)
    (found,) = bab(network, norm)
    assert found.kind == "exact", found.status
    point = found.details["witness"]["x"].reshape(1, 3).double()
    jacobian = jacobians(network, point)[0]
    p = {"2": 2, "1": 1, "inf": math.inf}[norm]
    attained = float(torch.linalg.matrix_norm(jacobian, ord=p))
    assert attained == pytest.approx(found.value, rel=1e-9)
    # the far point's own Jacobian equals the pattern at its direction: no finite point of
    # 1000 random ones in the 1e6-ball has a larger norm
    points = torch.randn(1000, 3, dtype=torch.float64,
                         generator=torch.Generator().manual_seed(seed)) * 1e6
    norms = torch.linalg.matrix_norm(jacobians(network, points), ord=p)
    assert float(norms.max()) <= found.value * (1 + 1e-9)


def test_gate_ranges_contain_sampled_gate_inputs():
    network = load_network(random_mlp([3, 8, 6, 2], MaxMin, seed=2))
    layers, _ = piecewise_linear_chain(network)
    rng = np.random.default_rng(0)
    low = np.append(rng.uniform(-1, 0, 3), 0.2)[None, :]
    high = np.append(rng.uniform(0, 1, 3), 1.0)[None, :]
    ranges = gate_ranges(layers, low, high)
    u = low + rng.random((2000, 4)) * (high - low)
    h, t = u[:, :3], u[:, 3:]
    for layer, (bottom, top) in zip(layers, ranges, strict=True):
        a = h @ layer.weight.T + t * layer.bias
        d = a @ layer.gate.T
        assert (d >= bottom - 1e-12).all() and (d <= top + 1e-12).all()
        h = a @ layer.keep.T + np.maximum(d, 0) @ layer.relu.T


def test_linear_network_and_refusals():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)).double()
    weight = (model[1].weight @ model[0].weight).detach()
    for norm in ("inf", "1", "2"):
        value = exact("exact-bab", load_network(model), norm).value
        assert math.isclose(value, float(induced(weight[None], norm)[0]), rel_tol=1e-9)
    many = load_network(random_mlp([9, 4, 1], seed=0))
    assert "9 inputs" in METHODS["exact-bab"].fits(many)
    tanh = load_network(random_mlp([2, 4, 1], activation=nn.Tanh, seed=0))
    assert "not piecewise linear" in METHODS["exact-bab"].fits(tanh)
    network = load_network(random_mlp([2, 4, 1], seed=0))
    with pytest.raises(InvalidArgumentError, match="output 2 out of range"):
        bab(network, "inf", output=2)
    with pytest.raises(InvalidArgumentError, match=r"exact-bab: .*'max_branches' must be an "
                                                   r"integer >= 1, got 0"):
        bab(network, "inf", max_branches=0)
    with pytest.raises(InvalidArgumentError, match="radius must be"):
        bab(network, "inf", center=torch.zeros(2), radius=-1.0)
    report = estimate(network, norm="2")  # runs by default on a 2-input net, exact in l2
    (bound,) = [b for b in report.bounds if b.method == "exact-bab"]
    # (other methods meet it to rounding: a one-hidden-layer net's l2 bounds are tight)
    assert bound.kind == "exact" and report.consistent
    assert all(math.isclose(end, bound.value, rel_tol=1e-12) for end in report.interval)


def test_cli_local_constant_by_three_methods(tmp_path):
    import json

    from typer.testing import CliRunner

    from lipkit.cli import app

    model = random_mlp([2, 8, 8, 1], seed=6).float().eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(1, 2),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    np.save(tmp_path / "center.npy", np.array([0.1, -0.2]))
    runner = CliRunner()
    values = []
    for center in ("0.1,-0.2", str(tmp_path / "center.npy")):
        result = runner.invoke(app, ["estimate", str(path), "-m", "exact-bab", "-m", "exact-mip",
                                     "-m", "lp-jacobian", "--norm", "inf", "--center", center,
                                     "--radius", "0.3", "--json"])
        assert result.exit_code == 0, result.output
        bounds = {b["method"]: b for b in json.loads(result.stdout)["bounds"]}
        assert bounds["exact-bab"]["kind"] == bounds["exact-mip"]["kind"] == "exact"
        assert math.isclose(bounds["exact-bab"]["value"], bounds["exact-mip"]["value"],
                            rel_tol=1e-6)
        assert bounds["lp-jacobian"]["value"] >= bounds["exact-bab"]["value"] * (1 - 1e-9)
        values.append(bounds["exact-bab"]["value"])
    assert values[0] == values[1]
    whole = exact("exact-bab", load_network(path), "inf").value
    assert values[0] <= whole * (1 + 1e-9)
    result = runner.invoke(app, ["estimate", str(path), "--radius", "0.3"])
    assert result.exit_code == 2 and "--radius needs --center" in result.output
    result = runner.invoke(app, ["estimate", str(path), "--center", "a,b"])
    assert result.exit_code == 2 and "--center must be numbers" in result.output


@pytest.mark.parametrize("size", [3, 4])
def test_groupsort_of_larger_groups_by_its_sorting_network(size):
    # GroupSort(3) / (4) becomes rounds of MaxMin compare-exchanges: the pattern's Jacobian
    # must equal autograd's through torch's sort at the witness (checked in both methods),
    # and the two exact methods must agree
    for seed in range(2):
        torch.manual_seed(seed)
        deep = [nn.Linear(2 * size, size), GroupSort(size)] if size == 3 else []
        model = nn.Sequential(nn.Linear(2, 2 * size), GroupSort(size), *deep,
                              nn.Linear(size if deep else 2 * size, 2)).double()
        network = load_network(model)
        layers, _ = piecewise_linear_chain(network)
        assert len(layers) == size * (2 if deep else 1)  # size rounds per GroupSort
        for norm in ("inf", "1"):
            value = exact("exact-bab", network, norm)
            check_witness(network, value, norm)
            assert math.isclose(value.value, exact("exact-mip", network, norm).value,
                                rel_tol=1e-6)
            assert grid_max(network, norm) <= value.value * (1 + 1e-9)
        # 1-Lipschitz activations: never above the product of the layers' induced norms
        naive = METHODS["naive"].function(network, Options(norm="inf")).value
        assert exact("exact-bab", network, "inf").value <= naive * (1 + 1e-12)
