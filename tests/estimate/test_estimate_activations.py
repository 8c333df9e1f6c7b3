"""Activations: imported with every parameter, computing torch's function, with slope ranges
that contain every difference quotient and are attained; upper bounds exceed real pairs."""

import math

import pytest
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.estimate import estimate, load_network
from lipkit.estimate.activations import SELU_ALPHA, SELU_SCALE
from lipkit.estimate.network import Activation


def _prelu(channels: int, seed: int = 0) -> nn.PReLU:
    module = nn.PReLU(channels)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-1.5, 2.5, channels))
    return module


# (module, its slope range by hand); the ranges whose ends are only approached are the
# smallest closed ones
ACTIVATIONS = [
    (nn.ReLU(), (0.0, 1.0)),
    (nn.LeakyReLU(0.2), (0.2, 1.0)),
    (nn.LeakyReLU(-0.5), (-0.5, 1.0)),
    (nn.LeakyReLU(3.0), (1.0, 3.0)),
    (nn.PReLU(1, init=-0.3), (-0.3, 1.0)),
    (_prelu(4), (-1.5, 2.5)),
    (nn.RReLU(0.1, 0.4), (0.25, 1.0)),
    (nn.ELU(3.0), (0.0, 3.0)),
    (nn.ELU(0.5), (0.0, 1.0)),
    (nn.ELU(-1.0), (-1.0, 1.0)),
    (nn.CELU(2.0), (0.0, 1.0)),
    (nn.CELU(0.3), (0.0, 1.0)),
    (nn.SELU(), (0.0, SELU_ALPHA * SELU_SCALE)),
    (nn.Softplus(beta=2.0), (0.0, 1.0)),
    (nn.Softplus(beta=0.5, threshold=30.0), (0.0, 1.0)),
    (nn.Hardtanh(-2.0, 3.0), (0.0, 1.0)),
    (nn.ReLU6(), (0.0, 1.0)),
    (nn.Threshold(0.5, 0.5), (0.0, 1.0)),
    (nn.Tanh(), (0.0, 1.0)),
    (nn.Sigmoid(), (0.0, 0.25)),
    (nn.Hardsigmoid(), (0.0, 1.0 / 6.0)),
    (nn.Hardswish(), (-0.5, 1.5)),
    (nn.SiLU(), (-0.0998393, 1.0998393)),
    (nn.Mish(), (-0.1125261, 1.0884982)),
    (nn.GELU(), (-0.1289041, 1.1289041)),
    (nn.GELU("tanh"), (-0.1289931, 1.1289931)),
    (nn.Softsign(), (0.0, 1.0)),
    (nn.LogSigmoid(), (0.0, 1.0)),
    (nn.Tanhshrink(), (0.0, 1.0)),
    (nn.Softshrink(0.3), (0.0, 1.0)),
    (nn.Identity(), (1.0, 1.0)),
    (nn.Dropout(0.4), (1.0, 1.0)),
]
IDS = [f"{type(m).__name__}-{i}" for i, (m, _) in enumerate(ACTIVATIONS)]
# torch's Softplus switches to x above beta x > threshold: lipkit's continuous softplus
# differs from it there by at most log1p(exp(-threshold)) / beta
SOFTPLUS_GAP = math.log1p(math.exp(-20.0)) / 2.0


def _width(module) -> int:
    return module.weight.numel() if isinstance(module, nn.PReLU) else 1


def _grid() -> torch.Tensor:
    """Dense points on [-12, 12] (step 1e-3, so every kink is straddled closely), the kinks'
    neighbourhoods at 1e-7, and far points up to 60 (the tails)."""
    dense = torch.arange(-12.0, 12.0, 1e-3, dtype=torch.float64)
    kinks = torch.tensor([-6.0, -3.0, -2.0, -0.5, -0.3, 0.0, 0.3, 0.5, 3.0, 6.0],
                         dtype=torch.float64)
    near = (kinks[:, None] + torch.linspace(-1e-6, 1e-6, 21, dtype=torch.float64)).reshape(-1)
    far = torch.cat([torch.linspace(-60, -12, 400), torch.linspace(12, 60, 400)]).double()
    points = torch.cat([dense, near, far]).unique()
    # no two closer than 1e-8 (a kink and a grid point that round near each other)
    keep = torch.cat([torch.tensor([True]), points.diff() > 1e-8])
    return points[keep]


@pytest.mark.parametrize(("module", "expected"), ACTIVATIONS, ids=IDS)
def test_forward_equals_the_module_in_float64(module, expected):
    torch.manual_seed(0)
    width = _width(module)
    model = nn.Sequential(nn.Linear(3, width), module).double().eval()
    with torch.no_grad():
        model[0].weight.mul_(8.0)
    model.eval()
    network = load_network(model)
    x = torch.randn(4000, 3, dtype=torch.float64) * 4
    with torch.no_grad():
        want, got = model(x), network(x)
    gap = SOFTPLUS_GAP if isinstance(module, nn.Softplus) else 0.0
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12 + gap,
                               msg=f"{module}: the imported network computes another function")


@pytest.mark.parametrize(("module", "expected"), ACTIVATIONS, ids=IDS)
def test_slope_range_contains_every_quotient_and_is_attained(module, expected):
    width = _width(module)
    activation = load_network(nn.Sequential(nn.Linear(width, width), module)).nodes[1].op
    alpha, beta = activation.slope
    assert alpha == pytest.approx(expected[0], abs=1e-6)
    assert beta == pytest.approx(expected[1], abs=1e-6)
    assert activation.lipschitz == max(abs(alpha), abs(beta))
    points = _grid()
    with torch.no_grad():
        values = module.double().eval()(points[:, None].expand(-1, width).contiguous())
    if isinstance(module, nn.Softplus):  # the continuous softplus (see the module docs)
        values = nn.functional.softplus(points[:, None], module.beta, 40.0)
    quotients = values.diff(dim=0) / points.diff()[:, None]
    # random far-apart pairs too
    generator = torch.Generator().manual_seed(1)
    left = torch.randint(len(points), (20000,), generator=generator)
    right = torch.randint(len(points), (20000,), generator=generator)
    keep = points[left] != points[right]
    far = ((values[left] - values[right])[keep] /
           (points[left] - points[right])[keep, None])
    quotients = torch.cat([quotients, far])
    # rounding: |f| <= 60 with relative error 1e-15, over differences >= 1e-8
    tolerance = 1e-5
    assert float(quotients.min()) >= alpha - tolerance, f"{module}: a quotient below alpha"
    assert float(quotients.max()) <= beta + tolerance, f"{module}: a quotient above beta"
    # Softsign's slope 1 / (1 + |x|)^2 nears its infimum 0 only like 1 / x^2
    tight = 1e-3 if isinstance(module, nn.Softsign) else 2e-6
    assert float(quotients.min()) <= alpha + tight, f"{module}: alpha={alpha} is not attained"
    assert float(quotients.max()) >= beta - tight, f"{module}: beta={beta} is not attained"


def _largest_pair_ratio(model: nn.Module, dims: int, seed: int = 0) -> float:
    """The largest ``||f(x) - f(y)|| / ||x - y||`` over pairs ``y = x + h v`` (``v`` the top
    right singular vector of the Jacobian, computed by autograd on the torch module) from
    many random and scaled starting points: real pairs, without lipkit."""
    generator = torch.Generator().manual_seed(seed)
    best = 0.0
    starts = torch.cat([torch.randn(300, dims, generator=generator) * s
                        for s in (0.01, 0.1, 1.0, 3.0)]).double()
    for x in starts:
        jacobian = torch.autograd.functional.jacobian(model, x[None])[0, :, 0, :]
        direction = torch.linalg.svd(jacobian).Vh[0]
        y = x + 1e-6 * direction
        with torch.no_grad():
            ratio = float((model(x[None]) - model(y[None])).norm() / (x - y).norm())
        best = max(best, ratio)
    return best


def _aligned(activation: nn.Module, hidden: int = 6, dims: int = 3, bias: float = -0.05):
    """Linear - activation - Linear with the second weight the first's transpose (the
    Jacobian ``W^T D W`` is largest where the slopes ``D`` are), biases near the kinks."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(dims, hidden), activation, nn.Linear(hidden, dims))
    model = model.double().eval()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[0].bias.fill_(bias)
        model[2].weight.copy_(model[0].weight.T)
    return model


UPPER_METHODS = ["naive", "autolip", "lipsdp-neuron", "compositional"]


@pytest.mark.parametrize("activation", [
    nn.ELU(3.0), nn.LeakyReLU(-2.0), nn.Hardswish(), nn.GELU("tanh"), nn.Softplus(beta=2.0),
    _prelu(6), nn.Mish(), nn.SELU(), nn.Hardtanh(-0.5, 2.0)], ids=lambda m: type(m).__name__)
def test_upper_bounds_exceed_real_pairs_of_the_module(activation):
    model = _aligned(activation)
    ratio = _largest_pair_ratio(model, 3)
    report = estimate(model, methods=UPPER_METHODS, norm="2")
    for bound in report.bounds:
        assert bound.status == "ok", f"{bound.method}: {bound.status}"
        assert bound.value >= ratio * (1 - 1e-9), (
            f"{bound.method} reports {bound.value} < {ratio}, a real pair's ratio")
    # the l-infinity LP bound against the same pairs measured in l-infinity
    x = torch.zeros(1, 3, dtype=torch.float64)
    jacobian = torch.autograd.functional.jacobian(model, x)[0, :, 0, :]
    (lp,) = estimate(model, methods=["lp-jacobian"], norm="inf").bounds
    assert lp.value >= float(jacobian.abs().sum(dim=1).max()) * (1 - 1e-9)


def test_elu_alpha_3_bound_exceeds_the_pair_that_broke_it():
    """Linear - ELU(alpha=3) - Linear: ELU's slopes reach 3 below 0 (alpha e^x), so a bound
    using slopes <= 1 is false; the imported range is [0, 3]."""
    model = _aligned(nn.ELU(3.0), bias=-0.01)
    ratio = _largest_pair_ratio(model, 3)
    naive = estimate(model, methods=["naive"]).bounds[0].value
    one_slope = float(torch.linalg.matrix_norm(model[0].weight.detach(), 2) ** 2)  # slopes <= 1
    assert ratio > one_slope, "the test's pairs should beat a slope-1 bound"
    assert naive >= ratio


# -- refusals -------------------------------------------------------------------------------
class Functional(nn.Module):
    def __init__(self, function):
        super().__init__()
        self.layer, self.function = nn.Linear(3, 3), function

    def forward(self, x):
        return self.function(self.layer(x))


@pytest.mark.parametrize(("module", "reason"), [
    (nn.Hardshrink(0.5), "Hardshrink.*discontinuous"),
    (nn.Threshold(0.1, 20.0), "Threshold.*discontinuous"),
    (nn.CELU(-1.0), "alpha <= 0"),
    (nn.Softplus(threshold=5.0), "jumps"),
    (nn.Softmax(dim=1), "no translation"),
    (nn.GLU(), "no translation"),
    (Functional(lambda x: nn.functional.gelu(x, approximate="quadratic")), "approximate"),
    (Functional(lambda x: nn.functional.dropout(x, 0.5)), "training=True"),
    (Functional(lambda x: nn.functional.rrelu(x, training=True)), "training mode"),
    (Functional(lambda x: x.clamp(min=torch.zeros(3))), "one number"),
], ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_refused_activations_name_the_module(module, reason):
    model = module if isinstance(module, Functional) else nn.Sequential(nn.Linear(3, 4), module)
    with pytest.raises(UnsupportedModuleError, match=reason) as error:
        load_network(model)
    assert "unsupported module '" in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("value", "count"), [(math.nan, 1), (math.inf, 2)])
def test_non_finite_weights_name_the_layer(value, count):
    model = nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].bias[:count] = value
    with pytest.raises(InvalidArgumentError,
                       match=rf"layer '2': bias has {count} non-finite entries"):
        load_network(model)


def test_non_finite_batch_norm_statistics_and_boolean_weights_are_refused():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    model[1].running_var[0] = math.inf
    with pytest.raises(InvalidArgumentError, match=r"'1': running variance has 1 non-finite"):
        load_network(model)
    linear = nn.Linear(3, 2)
    linear.weight = nn.Parameter(torch.ones(2, 3, dtype=torch.bool), requires_grad=False)
    with pytest.raises(InvalidArgumentError, match=r"layer '0': weight has type bool"):
        load_network(nn.Sequential(linear))


def test_activation_kinds_and_parameters_are_checked():
    with pytest.raises(InvalidArgumentError, match="unknown activation kind 'swish'"):
        Activation("swish")
    with pytest.raises(InvalidArgumentError, match="elu: unknown parameters"):
        Activation("elu", params={"alpha": 1.0, "beta": 2.0})
    with pytest.raises(InvalidArgumentError, match="alpha must be finite"):
        Activation("elu", params={"alpha": math.nan})
    assert Activation("leaky_relu").params["negative_slope"] == 0.01
    assert Activation("hardtanh", params={"min_val": 2.0, "max_val": 1.0}).slope == (0.0, 0.0)


def test_every_activation_has_the_second_derivatives_gradient_searches_take():
    """lower-gradient differentiates the Jacobian's norm: every supported activation's
    function must have a double backward (torch's hardsigmoid has none), and torch's
    hardsigmoid is reproduced bit for bit."""
    from lipkit.estimate.activations import ELEMENTWISE

    x = torch.linspace(-4.0, 4.0, 97, dtype=torch.float64)
    for kind, build in ELEMENTWISE.items():
        function = (build(torch.full((97,), 0.2, dtype=torch.float64)) if kind == "prelu"
                    else build()).function
        point = x.clone().requires_grad_(True)
        (slope,) = torch.autograd.grad(function(point).sum(), point, create_graph=True)
        if slope.requires_grad:  # a constant slope has no graph: nothing to differentiate
            torch.autograd.grad((slope * slope).sum(), point)
    hardsigmoid = ELEMENTWISE["hardsigmoid"]().function
    wide = torch.randn(100_000, dtype=torch.float64) * 5
    assert torch.equal(hardsigmoid(wide), torch.nn.functional.hardsigmoid(wide))
    assert torch.equal(hardsigmoid(wide.float()), torch.nn.functional.hardsigmoid(wide.float()))
