"""lipkit.nn.bound: the Lipschitz bound a model's construction guarantees.

Oracles: exact SVD norms of dense layers and of materialized linear networks, observed ratios
``|f(x) - f(y)| / |x - y|`` and Jacobian spectral norms (``torch.func.jacrev``) of random
networks, and secant slopes of activations on a fine grid.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import UnsupportedModuleError
from lipkit.nn import (
    GroupSort,
    L2NormPool2d,
    MaxMin,
    ScaledAvgPool2d,
    lipschitz_bound,
    register_bound_rule,
)

SEEDS = st.integers(0, 2**31 - 1)


def _numpy_norm(layer: nn.Linear) -> float:
    return float(np.linalg.svd(layer.weight.detach().double().numpy(), compute_uv=False)[0])


def _random_batch_norm(features: int, dims: int, generator: torch.Generator) -> nn.Module:
    norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dims](features).double()
    with torch.no_grad():
        norm.weight.copy_(2 * torch.randn(features, generator=generator))
        norm.bias.copy_(torch.randn(features, generator=generator))
        norm.running_mean.copy_(torch.randn(features, generator=generator))
        norm.running_var.copy_(0.1 + torch.rand(features, generator=generator))
    return norm


def _max_jacobian_norm(model: nn.Module, points: torch.Tensor) -> float:
    best = 0.0
    for point in points:
        x = point.unsqueeze(0)
        jacobian = torch.func.jacrev(model)(x).reshape(model(x).numel(), x.numel())
        best = max(best, torch.linalg.matrix_norm(jacobian.detach(), ord=2).item())
    return best


def test_a_linear_chain_is_bounded_by_the_product_of_exact_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3), nn.Linear(3, 4),
                          GroupSort(2))
    layers = {}
    bound = lipschitz_bound(model, layers=layers)
    norms = [_numpy_norm(model[i]) for i in (0, 2, 3)]
    assert bound == pytest.approx(np.prod(norms), rel=1e-12)
    assert layers.keys() == {"0", "1", "2", "3", "4"}
    for path, norm in zip(("0", "2", "3"), norms, strict=True):
        assert layers[path] == pytest.approx(norm, rel=1e-12), path
    assert layers["1"] == 1.0 and layers["4"] == 1.0
    root = {}
    lipschitz_bound(model[0], layers=root)
    assert root == {"Linear": pytest.approx(norms[0], rel=1e-12)}


@settings(max_examples=25)
@given(seed=SEEDS, activation=st.sampled_from(["relu", "groupsort", "tanh", "leaky", "bn"]),
       bias=st.booleans())
def test_bound_dominates_ratios_and_jacobians_of_random_mlps(seed, activation, bias, oracle):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    def act(features):
        return {"relu": nn.ReLU, "groupsort": lambda: GroupSort(2), "tanh": nn.Tanh,
                "leaky": lambda: nn.LeakyReLU(-1.5),
                "bn": lambda: _random_batch_norm(features, 1, generator)}[activation]()

    model = nn.Sequential(nn.Linear(5, 8, bias=bias), act(8), nn.Linear(8, 6, bias=bias),
                          act(6), nn.Linear(6, 3, bias=bias)).double().eval()
    bound = lipschitz_bound(model)
    x = torch.randn(256, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(256, 5, generator=generator, dtype=torch.float64)
    near = x + 1e-4 * torch.randn(256, 5, generator=generator, dtype=torch.float64)
    assert oracle.lipschitz_ratios(model, x, y).max() <= bound * (1 + 1e-9)
    assert oracle.lipschitz_ratios(model, x, near).max() <= bound * (1 + 1e-9)
    assert _max_jacobian_norm(model, x[:10]) <= bound * (1 + 1e-9)
    if activation == "bn":  # no nonlinearity: the bound is at least the exact norm
        assert oracle.exact_norm(oracle.materialize(model, (5,))) <= bound * (1 + 1e-9)


@settings(max_examples=20)
@given(seed=SEEDS, pool=st.sampled_from(["max", "avg", "scaled", "l2"]),
       mode=st.sampled_from(["zeros", "circular", "reflect", "replicate"]),
       activation=st.sampled_from(["relu", "maxmin"]), stride=st.integers(1, 2))
def test_bound_dominates_ratios_and_jacobians_of_random_convnets(seed, pool, mode, activation,
                                                                 stride, oracle):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    pooling = {"max": lambda: nn.MaxPool2d(2), "avg": lambda: nn.AvgPool2d(3, 1),
               "scaled": lambda: ScaledAvgPool2d(2), "l2": lambda: L2NormPool2d(2, 1)}[pool]()
    act = {"relu": nn.ReLU, "maxmin": MaxMin}[activation]
    features = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, padding_mode=mode),
        _random_batch_norm(4, 2, generator),
        act(),
        pooling,
        nn.Conv2d(4, 4, 3, stride=stride, padding=1),
    ).double()
    shape = (2, 7, 8)
    width = features(torch.zeros(1, *shape, dtype=torch.float64)).numel()
    model = nn.Sequential(features, act(), nn.Flatten(), nn.Linear(width, 3)).double().eval()
    x = torch.randn(64, *shape, generator=generator, dtype=torch.float64)
    sized = lipschitz_bound(model, example_input=x[:1])
    any_size = lipschitz_bound(model)
    assert sized <= any_size * (1 + 1e-9), "the size-aware bound is looser"
    y = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    near = x + 1e-4 * torch.randn(x.shape, generator=generator, dtype=torch.float64)
    for other in (y, near):
        assert oracle.lipschitz_ratios(model, x, other).max() <= sized * (1 + 1e-9)
    assert _max_jacobian_norm(model, x[:4]) <= sized * (1 + 1e-9)


@settings(max_examples=20)
@given(seed=SEEDS, mode=st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
def test_bound_dominates_the_exact_norm_of_a_linear_convnet(seed, mode, oracle):
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, padding_mode=mode, bias=False),
        nn.AvgPool2d(2),
        nn.Conv2d(3, 2, 2, stride=1, padding=1, bias=False),
        nn.Flatten(),
    ).double()
    shape = (2, 6, 6)
    exact = oracle.exact_norm(oracle.materialize(model, shape))
    sized = lipschitz_bound(model, example_input=torch.zeros(1, *shape, dtype=torch.float64))
    assert exact <= sized * (1 + 1e-9) and sized <= lipschitz_bound(model) * (1 + 1e-9)


def test_batch_norm_bound_is_exact(oracle):
    norm = _random_batch_norm(5, 1, torch.Generator().manual_seed(0)).eval()
    # inference batch norm is diagonal: its norm is max |gamma| / sqrt(var + eps)
    assert lipschitz_bound(norm) == pytest.approx(
        oracle.exact_norm(oracle.materialize(norm, (5,))), rel=1e-12)
    norm.train()  # the bound is of inference: training mode does not change it
    assert lipschitz_bound(norm) == pytest.approx(
        (norm.weight.abs() / (norm.running_var + norm.eps).sqrt()).max().item(), rel=1e-12)


def test_adaptive_pooling_needs_an_example_input_and_then_dominates(oracle):
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.AdaptiveAvgPool2d((2, 3))).double()
    with pytest.raises(UnsupportedModuleError, match="'1' of type AdaptiveAvgPool2d"):
        lipschitz_bound(model)
    for size in ((5, 7), (4, 6), (7, 3)):
        example = torch.zeros(1, 2, *size, dtype=torch.float64)
        layers = {}
        lipschitz_bound(model, example_input=example, layers=layers)
        exact = oracle.exact_norm(oracle.materialize(model[1], (2, *size)))
        assert exact <= layers["1"] * (1 + 1e-12), (size, exact, layers["1"])


@pytest.mark.parametrize(
    ("model", "path", "kind"),
    [
        (nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), "1", "LayerNorm"),
        (nn.Sequential(OrderedDict(
            fc=nn.Linear(3, 3),
            block=nn.Sequential(OrderedDict(act=nn.ReLU(), norm=nn.LayerNorm(3))))),
         "block.norm", "LayerNorm"),
        (nn.Sequential(nn.Linear(3, 3), nn.Hardshrink()), "1", "Hardshrink"),
        (nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False)), "0", "BatchNorm1d"),
        (nn.LayerNorm(3), "<root>", "LayerNorm"),
    ],
)
def test_unsupported_modules_are_named_by_path_and_type(model, path, kind):
    with pytest.raises(UnsupportedModuleError, match=f"'{path}' of type {kind}") as error:
        lipschitz_bound(model)
    assert error.value.path == path and error.value.module_type == kind


class _Doubled(nn.Module):
    """A custom forward lipkit cannot see through."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return 2 * self.fc(x)


class _Skip(nn.Sequential):
    """An nn.Sequential whose forward adds the input: not the composition of its children."""

    def forward(self, x):
        return x + super().forward(x)


class _Chain(nn.Sequential):
    """An nn.Sequential subclass that keeps Sequential's forward."""


def test_custom_forwards_are_errors_not_guesses():
    model = nn.Sequential(OrderedDict(stem=nn.Linear(3, 3), head=_Doubled()))
    with pytest.raises(UnsupportedModuleError, match="'head' of type _Doubled"):
        lipschitz_bound(model)
    torch.manual_seed(0)
    skip = nn.Sequential(OrderedDict(skip=_Skip(nn.Linear(3, 3))))
    # the composition rule would report ||W||, the block is I + W: refuse rather than guess
    with pytest.raises(UnsupportedModuleError, match="'skip' of type _Skip"):
        lipschitz_bound(skip)
    chain = _Chain(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert lipschitz_bound(chain) == pytest.approx(
        _numpy_norm(chain[0]) * _numpy_norm(chain[2]), rel=1e-12)


class _Scale(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return self.factor * x


class _Average(nn.Module):
    def __init__(self, a, b):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x):
        return 0.5 * (self.a(x) + self.b(x))


def test_registered_rules_bound_custom_modules(oracle):
    register_bound_rule(_Scale)(lambda module, child_bound, input_size: abs(module.factor))

    @register_bound_rule(_Average)
    def _average(module, child_bound, input_size):
        return 0.5 * (child_bound(module.a, "a") + child_bound(module.b, "b"))

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 5), _Scale(-3.0),
                          _Average(nn.Linear(5, 2), nn.Sequential(nn.Linear(5, 2), nn.Tanh())))
    model = model.double()
    layers = {}
    bound = lipschitz_bound(model, layers=layers)
    first, a, b = (_numpy_norm(m) for m in (model[0], model[2].a, model[2].b[0]))
    assert bound == pytest.approx(first * 3.0 * 0.5 * (a + b), rel=1e-12)
    assert {"0", "1", "2.a", "2.b.0", "2.b.1"} == layers.keys()
    assert layers["2.a"] == pytest.approx(a, rel=1e-12)
    x, y = torch.randn(64, 4, dtype=torch.float64), torch.randn(64, 4, dtype=torch.float64)
    assert oracle.lipschitz_ratios(model, x, y).max() <= bound * (1 + 1e-12)


ACTIVATIONS = [
    nn.ReLU(), nn.ReLU6(), nn.Tanh(), nn.Hardtanh(), nn.Softsign(), nn.Softplus(),
    nn.Softplus(beta=3.0), nn.Tanhshrink(), nn.Softshrink(0.5), nn.Sigmoid(), nn.Hardsigmoid(),
    nn.Hardswish(), nn.GELU(), nn.GELU(approximate="tanh"), nn.SiLU(), nn.Mish(),
    nn.LeakyReLU(0.1), nn.LeakyReLU(-2.5), nn.ELU(0.5), nn.ELU(2.0), nn.CELU(0.5),
    nn.CELU(2.0), nn.SELU(), nn.Identity(), GroupSort(1),
]


@pytest.mark.parametrize("activation", ACTIVATIONS, ids=lambda m: repr(m))
def test_activation_constants_are_the_sup_of_the_slope(activation):
    grid = torch.linspace(-12, 12, 240_001, dtype=torch.float64)
    with torch.no_grad():
        values = activation(grid.reshape(1, -1)).flatten()
    slopes = (values[1:] - values[:-1]).abs() / (grid[1:] - grid[:-1])
    bound = lipschitz_bound(activation)
    assert slopes.max() <= bound * (1 + 1e-9), f"secant slope {slopes.max()} > {bound}"
    assert slopes.max() >= bound * (1 - 1e-3), f"constant {bound} is not the sup {slopes.max()}"


def test_prelu_uses_its_learned_slope():
    prelu = nn.PReLU(3)
    with torch.no_grad():
        prelu.weight.copy_(torch.tensor([0.2, -1.7, 0.9]))
    assert lipschitz_bound(prelu) == pytest.approx(1.7)
    x = torch.tensor([[-1.0, -1.0, -1.0]])
    y = torch.tensor([[-2.0, -2.0, -2.0]])
    with torch.no_grad():
        assert (prelu(x) - prelu(y)).abs().max().item() == pytest.approx(1.7)


def test_hardshrink_is_not_lipschitz():
    shrink = nn.Hardshrink(0.5)
    x, y = torch.tensor([0.5 + 1e-6]), torch.tensor([0.5 - 1e-6])
    assert (shrink(x) - shrink(y)).abs() / (x - y).abs() > 1e4  # the jump at the threshold
    with pytest.raises(UnsupportedModuleError, match="Hardshrink"):
        lipschitz_bound(shrink)


def test_dropout_and_flatten_count_one_in_inference(oracle):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 3)).double().eval()
    assert lipschitz_bound(model) == pytest.approx(_numpy_norm(model[2]), rel=1e-12)
    exact = oracle.exact_norm(oracle.materialize(model, (3, 4)))
    assert exact == pytest.approx(lipschitz_bound(model), rel=1e-12)


def test_example_input_leaves_training_modes_and_gradients_alone():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 1))
    model.train()
    model[1].eval()
    statistics = model[1].running_mean.clone()
    lipschitz_bound(model, example_input=torch.randn(2, 1, 6, 6))
    assert model.training and model[0].training and not model[1].training
    assert torch.equal(model[1].running_mean, statistics)
    assert all(p.grad is None for p in model.parameters())


@settings(max_examples=20)
@given(seed=SEEDS, stride=st.integers(1, 3), padding=st.integers(0, 2),
       groups=st.sampled_from([1, 2]), dilation=st.integers(1, 2))
def test_transposed_convolutions_are_bounded_for_every_input_size(seed, stride, padding, groups,
                                                                   dilation, oracle):
    torch.manual_seed(seed)
    layer = nn.ConvTranspose2d(2, 4, 3, stride=stride, padding=padding, groups=groups,
                               dilation=dilation, output_padding=stride - 1, bias=False)
    model = nn.Sequential(layer, nn.ReLU()).double()
    bound = lipschitz_bound(model)
    for size in (3, 5):  # the same bound holds on every input size
        exact = oracle.exact_norm(oracle.materialize(layer.double(), (2, size, size)))
        assert exact <= bound * (1 + 1e-9), (size, exact, bound)
    reflect = nn.ConvTranspose2d(2, 2, 3)
    reflect.padding_mode = "reflect"  # torch refuses it in forward: so does lipkit, by name
    with pytest.raises(UnsupportedModuleError, match="padding_mode 'reflect'"):
        lipschitz_bound(nn.Sequential(nn.Linear(4, 18), nn.Unflatten(1, (2, 3, 3)), reflect))
