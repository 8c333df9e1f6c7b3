"""exact-mip: the MIP's value against independent oracles (breakpoint enumeration, closed
forms), every other method's bounds, its own witness, and its anytime bracket."""

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
from lipkit.estimate.network import NotApplicableError
from lipkit.estimate.witness import jacobians
from lipkit.nn import GroupSort, MaxMin

from .conftest import random_mlp

LOWER = ("lower-jacobian", "lower-adversarial")  # the lower bounds with l1 / l-inf norms
UPPER = ("naive", "autolip", "lp-jacobian")  # the upper bounds with l1 / l-inf norms


def mip(network, norm, time_limit=60, **keywords):
    result = METHODS["exact-mip"].function(network, options_for(
        "exact-mip", network, norm=norm, time_limit=time_limit, **keywords))
    return result if isinstance(result, list) else [result]


def exact_value(network, norm, **keywords):
    bounds = mip(network, norm, **keywords)
    assert [b.kind for b in bounds] == ["exact"], [(b.kind, b.status) for b in bounds]
    return bounds[0]


def induced(jac, norm):
    """||J||_{p->p}: largest row l1 norm (inf), largest column l1 norm (1)."""
    return float(jac.abs().sum(dim=1 if norm == "inf" else 0).max())


def breakpoint_constant(model, norm, interval=None):
    """The exact constant of a one-hidden-layer net on a 1-D input, independently: the
    function is affine between the breakpoints of its activations, so the constant is the
    largest Jacobian norm (by autograd on the torch model) at a point of every piece."""
    first, activation = model[0], model[1]
    w, b = first.weight.detach()[:, 0], first.bias.detach()
    if isinstance(activation, GroupSort):  # pairs cross where their pre-activations agree
        w, b = w[0::2] - w[1::2], b[0::2] - b[1::2]
    kinks = sorted(float(-bj / wj) for wj, bj in zip(w, b, strict=True) if wj != 0)
    low, high = interval if interval else (min(kinks, default=0) - 1, max(kinks, default=0) + 1)
    edges = [low, *(k for k in kinks if low < k < high), high]
    points = torch.tensor([(a + c) / 2 for a, c in itertools.pairwise(edges)
                           if c > a], dtype=torch.float64).reshape(-1, 1)
    with torch.enable_grad():
        jac = torch.stack([torch.autograd.functional.jacobian(model, p.reshape(1, 1))
                           .reshape(-1, 1) for p in points])
    return max(induced(j, norm) for j in jac)


def one_hidden_layer(width, outputs, activation, seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1, width), activation, nn.Linear(width, outputs)).double()


@pytest.mark.parametrize("norm", ["inf", "1"])
@pytest.mark.parametrize("activation", [nn.ReLU(), nn.LeakyReLU(0.2), MaxMin()],
                         ids=["relu", "leaky", "maxmin"])
def test_one_hidden_layer_1d_input_equals_breakpoint_enumeration(norm, activation):
    for seed in range(3):
        model = one_hidden_layer(8, 3, activation, seed)
        network = load_network(model)
        expected = breakpoint_constant(model, norm)
        bound = exact_value(network, norm)
        assert math.isclose(bound.value, expected, rel_tol=1e-7), (seed, bound.value, expected)
        # local: an interval around a point sees only the pieces inside it
        center, radius = 0.3 * seed - 0.2, 0.4
        expected = breakpoint_constant(model, norm, (center - radius, center + radius))
        bound = exact_value(network, norm, center=torch.tensor([center]), radius=radius)
        assert math.isclose(bound.value, expected, rel_tol=1e-7), (seed, bound.value, expected)
        assert abs(float(bound.details["witness"]["x"][0]) - center) <= radius


def _check_witness(network, bound, norm, row=None):
    point = bound.details["witness"]["x"].reshape(1, *network.input_shape)
    jac = jacobians(network, point)[0]
    if row is not None:
        jac = jac[row : row + 1]
    assert math.isclose(induced(jac, norm), bound.value, rel_tol=1e-9), (
        induced(jac, norm), bound.value)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), widths=st.lists(st.integers(2, 6), min_size=1, max_size=2),
       outputs=st.integers(1, 3), norm=st.sampled_from(["inf", "1"]))
def test_every_lower_below_exact_below_every_upper(seed, widths, outputs, norm):
    network = load_network(random_mlp([2, *widths, outputs], seed=seed))
    bound = exact_value(network, norm)
    _check_witness(network, bound, norm)
    # the MIP's proven bound agrees with its witness
    assert bound.details["upper"] <= bound.value * (1 + 1e-5) + 1e-9
    # an independent lower oracle: the Jacobian on a dense grid over [-8, 8]^2
    axis = torch.linspace(-8, 8, 161, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    jac = jacobians(network, grid)
    grid_max = float(jac.abs().sum(dim=2 if norm == "inf" else 1).max())
    assert grid_max <= bound.value * (1 + 1e-9), (grid_max, bound.value)
    for name in UPPER:
        upper = METHODS[name].function(network, Options(norm=norm)).value
        assert bound.value <= upper * (1 + 1e-9), (name, upper, bound.value)
    for name in LOWER:
        keywords = {"steps": 20} if name == "lower-adversarial" else {}
        lower = METHODS[name].function(network, options_for(name, network, norm=norm,
                                                            **keywords)).value
        assert lower <= bound.value * (1 + 1e-7), (name, lower, bound.value)


@pytest.mark.parametrize("norm", ["inf", "1"])
def test_linear_network_equals_the_induced_norm(norm):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.Linear(4, 3)).double()
    weight = model[1].weight @ model[0].weight
    bound = exact_value(load_network(model), norm)
    assert math.isclose(bound.value, induced(weight.detach(), norm), rel_tol=1e-9)


def test_chosen_output_and_deeper_witness():
    network = load_network(random_mlp([3, 7, 5, 3], seed=11))
    whole = exact_value(network, "inf")
    _check_witness(network, whole, "inf")
    rows = [exact_value(network, "inf", output=i) for i in range(3)]
    for i, bound in enumerate(rows):
        _check_witness(network, bound, "inf", row=i)
    # ||J||_inf is the largest row's l1 norm: the maximum over outputs of each row's constant
    assert math.isclose(whole.value, max(b.value for b in rows), rel_tol=1e-6)


def test_anytime_bracket_contains_the_exact_value():
    network = load_network(random_mlp([3, 6, 6, 2], seed=5))
    exact = exact_value(network, "inf").value
    bracketed = 0
    for limit in (0, 1, 5):
        bounds = mip(network, "inf", node_limit=limit, tighten="interval")
        kinds = [b.kind for b in bounds]
        if kinds == ["exact"]:
            assert math.isclose(bounds[0].value, exact, rel_tol=1e-6)
            continue
        bracketed += 1
        assert kinds == ["upper", "lower"], kinds
        upper, lower = bounds
        assert lower.value <= exact * (1 + 1e-9) and exact <= upper.value * (1 + 1e-6), (
            lower.value, exact, upper.value)
        assert upper.usable and lower.usable and upper.status.startswith("ok: ")
        _check_witness(network, lower, "inf")
    assert bracketed, "every node limit solved the MIP: the bracket was never exercised"


def test_report_takes_both_ends_of_a_bracket():
    model = random_mlp([3, 6, 6, 2], seed=5)
    report = estimate(model, methods=["exact-mip", "naive"], norm="inf", node_limit=0,
                      tighten="interval")
    mip_bounds = [b for b in report.bounds if b.method == "exact-mip"]
    assert [b.kind for b in mip_bounds] == ["upper", "lower"]
    low, high = report.interval
    assert low == mip_bounds[1].value
    assert high == min(mip_bounds[0].value, report.bounds[-1].value)
    assert report.consistent


def test_not_applicable_and_bad_arguments():
    network = load_network(random_mlp([2, 4, 1], seed=0))
    report = estimate(network, methods=["exact-mip"], norm=2)
    assert report.bounds[0].status.startswith("not applicable")
    tanh = load_network(random_mlp([2, 4, 1], activation=nn.Tanh, seed=0))
    assert "not piecewise linear" in METHODS["exact-mip"].fits(tanh)
    wide = load_network(nn.Sequential(nn.Linear(2, 2001), nn.ReLU(), nn.Linear(2001, 1)))
    assert "2001 activation gates" in METHODS["exact-mip"].fits(wide)
    with pytest.raises(NotApplicableError):
        mip(tanh, "inf")
    with pytest.raises(InvalidArgumentError, match="output 3 out of range"):
        mip(network, "inf", output=3)
    with pytest.raises(InvalidArgumentError, match="box"):
        mip(network, "inf", box=(np.zeros(3), np.ones(3)))
    with pytest.raises(InvalidArgumentError, match="radius"):
        mip(network, "inf", center=torch.zeros(2), radius=0.0)


def test_cli_estimate_with_exact_mip(tmp_path):
    import json

    from typer.testing import CliRunner

    from lipkit.cli import app

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(),
                          nn.Linear(5, 2)).eval()
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(1, 3),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    runner = CliRunner()
    result = runner.invoke(app, ["estimate", str(path), "--method", "exact-mip", "--norm",
                                 "linf", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but the report on stdout (HiGHS is silent)
    (bound,) = report["bounds"]
    assert bound["kind"] == "exact" and report["interval"]["lower_method"] == "exact-mip"
    expected = exact_value(load_network(model), "inf").value
    assert math.isclose(bound["value"], expected, rel_tol=1e-9)
    assert report["interval"]["lower"] == report["interval"]["upper"] == bound["value"]
    result = runner.invoke(app, ["estimate", str(path), "--method", "exact-mip", "--norm",
                                 "l1"])
    assert result.exit_code == 0 and "exact-mip" in result.output and "exact" in result.output


@pytest.mark.parametrize(("widths", "seed"), [([2, 4, 4, 1], 2), ([2, 3, 3, 3, 1], 0)])
def test_patterns_without_interior_are_cut_and_the_value_stays_exact(widths, seed):
    # deeper nets: the MIP's first optimum sits where whole layers vanish (t = 0 in the
    # homogenized domain); the method cuts those patterns off and still proves the constant
    network = load_network(random_mlp(widths, seed=seed))
    bound = exact_value(network, "inf")
    assert bound.details["cuts"] >= 1
    _check_witness(network, bound, "inf")
    # a lower oracle over grids at several scales: no region's Jacobian exceeds the value
    axis = torch.linspace(-1, 1, 121, dtype=torch.float64)
    grid = torch.cat([scale * torch.cartesian_prod(axis, axis) for scale in (1, 10, 1000)])
    grid_max = float(jacobians(network, grid).abs().sum(dim=2).max())
    assert grid_max <= bound.value * (1 + 1e-9), (grid_max, bound.value)


@pytest.mark.parametrize("norm", ["inf", "1"])
@pytest.mark.parametrize("activation", [nn.ReLU, lambda: nn.LeakyReLU(0.2), MaxMin])
def test_vertex_tangent_bounds_contain_every_patterns_tangent(norm, activation):
    """The tangent bounds from the unit ball's vertices (intervals, and the last layer's
    linear relaxation for the output) hold for random points of the ball and random patterns
    (free gates) or patterns agreeing with the fixed gates."""
    from lipkit.estimate.engine.gates import piecewise_linear_chain
    from lipkit.estimate.mip import TangentBounds, tangent_vertices

    network = load_network(random_mlp([5, 6, 6, 4, 3], activation=activation, seed=1))
    layers, output = piecewise_linear_chain(network)
    vertices = tangent_vertices(5, norm)
    assert vertices.shape == ((5, 16) if norm == "inf" else (5, 5))
    rng = np.random.default_rng(0)
    directions = rng.uniform(-1, 1, (5, 2000))
    if norm == "1":  # points of the l1 ball, some of them on its boundary
        directions /= np.abs(directions).sum(axis=0) * rng.uniform(1, 2, 2000)
    directions[:, :32] = rng.choice([-1.0, 1.0], (5, 32)) if norm == "inf" else \
        directions[:, :32] / np.abs(directions[:, :32]).sum(axis=0)
    for fixing in (False, True):
        bounds, tangent = TangentBounds(vertices), directions
        for layer in layers:
            gates = layer.gate.shape[0]
            fixed = np.where(rng.random(gates) < 0.5, rng.integers(0, 2, gates), np.nan) \
                if fixing else np.full(gates, np.nan)
            low, high = bounds.bounds(layer.weight)
            v = layer.weight @ tangent
            assert np.all(low[:, None] <= v) and np.all(v <= high[:, None])
            low, high = bounds.bounds(layer.gate @ layer.weight)
            e = layer.gate @ v
            assert np.all(low[:, None] <= e) and np.all(e <= high[:, None])
            z = np.where(np.isnan(fixed)[:, None], rng.integers(0, 2, e.shape), fixed[:, None])
            tangent = layer.keep @ v + layer.relu @ (z * e)
            bounds.step(layer, fixed)
        y = output[0] @ tangent
        for low, high in (bounds.bounds(output[0]), bounds.output_bounds(output[0])):
            assert np.all(low[:, None] <= y) and np.all(y <= high[:, None])
        # attained: the first layer's bounds are exact over the ball
        if not fixing:
            exact = np.abs(layers[0].weight).sum(axis=1) if norm == "inf" else \
                np.abs(layers[0].weight).max(axis=1)
            assert np.allclose(TangentBounds(vertices).bounds(layers[0].weight)[1], exact,
                               rtol=1e-5)


@pytest.mark.parametrize("activation", [nn.ReLU6(), nn.Hardtanh(-1.0, 1.0), nn.ELU(),
                                        nn.PReLU(4), nn.Softshrink(0.5), nn.Hardswish()],
                         ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("method", ["exact-mip", "exact-bab", "shor"])
def test_exact_methods_refuse_activations_they_do_not_encode(activation, method):
    """Only ReLU, LeakyReLU (its slope), the identity and GroupSort are encoded exactly: a
    ReLU6 or Hardtanh (two kinks), an ELU, a per-channel PReLU is not read as a ReLU."""
    network = load_network(nn.Sequential(nn.Linear(2, 4), activation, nn.Linear(4, 1)))
    (bound,) = estimate(network, methods=[method], norm="inf").bounds
    assert bound.status.startswith("not applicable"), f"{method} ran on {activation}"


def _scaled_copy(model: nn.Sequential, factor: float) -> nn.Sequential:
    """Every Linear's weight times ``factor`` and its bias times ``factor`` to the layer's
    depth: the same activation pattern everywhere (ReLU / LeakyReLU / MaxMin are positively
    homogeneous), the function times ``factor ** depth``, so its constant too."""
    import copy

    scaled = copy.deepcopy(model).double()
    depth = 0
    with torch.no_grad():
        for layer in scaled:
            if isinstance(layer, nn.Linear):
                depth += 1
                layer.weight.mul_(factor)
                layer.bias.mul_(factor ** depth)
    return scaled, factor ** depth


@pytest.mark.parametrize("factor", [1e-5, 1e4])
@pytest.mark.parametrize(("method", "norm", "widths", "activation"), [
    ("exact-mip", "inf", [3, 8, 8, 2], nn.ReLU), ("exact-mip", "1", [3, 6, 6, 2], nn.LeakyReLU),
    ("exact-bab", "2", [2, 6, 6, 1], nn.ReLU), ("exact-bab", "inf", [2, 6, 6, 2], MaxMin)])
def test_a_badly_scaled_network_is_rescaled_by_powers_of_two(method, norm, widths, activation,
                                                             factor):
    """Weights of 1e-5 or 1e4 per layer put the constant near 1e-15 or 1e12, outside the range
    where the solvers' absolute tolerances are harmless: the exact methods solve the chain
    rescaled by powers of two and report the value in the network's units, which must be
    ``factor ** depth`` times the value on the unscaled network (within the methods' own
    relative tolerance)."""
    model = random_mlp(widths, activation=activation, seed=4)
    scaled, ratio = _scaled_copy(model, factor)
    options = {"norm": norm, "methods": [method], "budget": None, "time_limit": 60}
    plain = estimate(model, **options).bounds
    rescaled = estimate(scaled, **options).bounds
    assert plain[0].kind == "exact" and rescaled[0].kind == "exact", (plain, rescaled)
    assert "scaled_by" in rescaled[0].details and "scaled_by" not in plain[0].details
    assert rescaled[0].value == pytest.approx(plain[0].value * ratio, rel=1e-5)
    # the witness attains the value on the scaled network itself (autograd, numpy norms)
    point = rescaled[0].details["witness"]["x"].reshape(1, -1).double()
    jac = torch.autograd.functional.jacobian(lambda x: scaled(x), point)[0, :, 0, :].numpy()
    attained = np.linalg.norm(jac, ord={"inf": np.inf, "1": 1, "2": 2}[norm])
    assert attained == pytest.approx(rescaled[0].value, rel=1e-9)


@pytest.mark.parametrize("method", ["exact-mip", "exact-bab"])
def test_tiny_weights_with_ordinary_biases_are_refused_by_name(method):
    """Weights of 1e-6 with biases of order 1: rescaled to norms near 1 the biases would reach
    2^40, so no rescaling helps: refused, naming the biases (not answered with a solver's
    failure or a pattern the network does not take)."""
    model = random_mlp([3, 5, 5, 2], seed=1)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                layer.weight.mul_(1e-6)
                layer.bias.uniform_(-1.0, 1.0)
    bound = estimate(model, methods=[method], norm="inf", budget=None).bounds[0]
    assert bound.status.startswith("not applicable") and "biases would reach" in bound.status


@pytest.mark.parametrize("homogeneous", [True, False])
def test_the_engines_gate_bounds_contain_every_gate_input_and_beat_intervals(homogeneous):
    """exact-mip's big-M constants start from the engine's gate bounds over its domain
    ((x, t) with t in [0, 1] for the global constant): they contain every sampled gate
    input, and on a deep net many are tighter than plain interval propagation (the MIP
    keeps the intersection of both: linear bounds are not tighter on every gate)."""
    from lipkit.estimate.engine.gates import piecewise_linear_chain
    from lipkit.estimate.mip import gate_bounds

    network = load_network(random_mlp([4, 16, 16, 16, 1], seed=5))
    layers, _ = piecewise_linear_chain(network)
    lower, upper = -np.ones(4), np.ones(4)
    known = gate_bounds(network, layers, (lower, upper), homogeneous)
    rng = np.random.default_rng(0)
    h = rng.uniform(-1, 1, (4000, 4))
    t = rng.uniform(0, 1, (4000, 1)) if homogeneous else np.ones((4000, 1))
    box_low = np.append(lower, 0.0 if homogeneous else 1.0)
    box_high = np.append(upper, 1.0)
    interval_low, interval_high = box_low, box_high  # plain interval bounds of (h, t)
    narrower = 0
    for layer, (bottom, top) in zip(layers, known, strict=True):
        d = (h @ layer.weight.T + t * layer.bias) @ layer.gate.T
        assert (d >= bottom).all() and (d <= top).all()
        weight = layer.gate @ np.hstack([layer.weight, layer.bias[:, None]])
        centre, radius = (interval_low + interval_high) / 2, (interval_high - interval_low) / 2
        i_low, i_high = weight @ centre - np.abs(weight) @ radius, \
            weight @ centre + np.abs(weight) @ radius
        narrower += int(((top - bottom) < 0.99 * (i_high - i_low)).sum())
        h = np.maximum(d, 0)
        interval_low = np.append(np.maximum(i_low, 0), box_low[-1])
        interval_high = np.append(np.maximum(i_high, 0), 1.0)
    assert narrower > 0
