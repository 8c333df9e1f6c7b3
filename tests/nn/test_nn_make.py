"""lipkit.nn.make: ``make_lipschitz`` constrains an existing model to ``lambda``.

Oracles: the composed bound must not exceed ``lambda`` and must dominate observed ratios
``|f(x) - f(y)| / |x - y|``; every constrained layer's exact operator norm (SVD of the weight
or of the materialized convolution) is at most its share ``lambda ** (1 / n)``.
"""

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from lipkit.errors import InvalidArgumentError, UnknownMethodError, UnsupportedModuleError
from lipkit.nn import (
    METHODS,
    GroupSort,
    MaxMin,
    Residual,
    ScaledAvgPool2d,
    SpectralLinear,
    lipschitz_bound,
    make_lipschitz,
)

LIPSCHITZ = 2.0
CONV = {"padding": 1, "padding_mode": "circular"}  # stride 1, same size: exact conv bounds


def _mlp():
    return nn.Sequential(nn.Linear(6, 16), GroupSort(2), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def _convnet():
    # (2, 6, 6) -> (4, 6, 6) -> pooled (4, 3, 3) -> (4, 3, 3) -> 36 -> 3
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, **CONV), MaxMin(), ScaledAvgPool2d(2),
        nn.Conv2d(4, 4, 3, **CONV), nn.ReLU(), nn.Flatten(), nn.Linear(36, 3),
    )


def _conv_only():
    return nn.Sequential(nn.Conv2d(2, 4, 3, **CONV), nn.ReLU(), nn.Conv2d(4, 4, 3, **CONV),
                         GroupSort(2), nn.Conv2d(4, 3, 3, **CONV))


MODELS = {"mlp": (_mlp, (6,)), "convnet": (_convnet, (2, 6, 6)),
          "conv_only": (_conv_only, (2, 6, 6))}
CASES = [("mlp", m) for m in ("clip", "spectral", "bjorck", "aol", "orthogonal")] + [
    ("convnet", m) for m in ("clip", "spectral", "aol", "orthogonal")] + [
    ("conv_only", m) for m in ("bcop", "orthogonal", "spectral", "aol")]


def _constrained_layers(model):
    return [(path, m) for path, m in model.named_modules()
            if isinstance(m, nn.Linear | nn.Conv2d)]


def _snapshot(model):
    return {name: value.clone() for name, value in model.state_dict().items()}


def _assert_unmodified(model, snapshot):
    assert not any(parametrize.is_parametrized(m) for m in model.modules()), "parametrized"
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for name, value in snapshot.items():
        assert torch.equal(state[name], value), name


@pytest.mark.parametrize(("model_name", "method"), CASES)
def test_bound_is_at_most_lambda_and_dominates_observed_ratios(model_name, method, oracle):
    torch.manual_seed(0)
    build, shape = MODELS[model_name]
    model = build()
    options = {"n_power_iterations": 10} if method == "spectral" else {}
    assert make_lipschitz(model, method, lipschitz=LIPSCHITZ, **options) is model
    x = torch.randn(64, *shape)
    if method == "spectral":  # power iteration converges over training-mode forwards
        for _ in range(30):
            model(x)
    model.eval()
    layers = {}
    bound = lipschitz_bound(model, example_input=x[:1], layers=layers)
    assert bound <= LIPSCHITZ * (1 + 1e-3), f"{method} on {model_name}: bound {bound}"
    ratios = oracle.lipschitz_ratios(model, x, torch.randn_like(x))
    assert ratios.max() <= bound * (1 + 1e-5)
    near = oracle.lipschitz_ratios(model, x, x + 1e-3 * torch.randn_like(x))
    assert near.max() <= bound * (1 + 1e-4)
    targets = _constrained_layers(model)
    share = LIPSCHITZ ** (1 / len(targets))
    sizes = {}

    def record(module, args):
        sizes[module] = tuple(args[0].shape[1:])

    handles = [layer.register_forward_pre_hook(record) for _, layer in targets]
    model(x[:1])
    for handle in handles:
        handle.remove()
    for path, layer in targets:
        assert parametrize.is_parametrized(layer, "weight"), path
        exact = oracle.operator_norm(layer, sizes[layer])
        assert exact <= share * (1 + 1e-3), (path, exact, share)
        assert layers[path] >= exact * (1 - 1e-5), (path, layers[path], exact)
        if method in ("spectral", "bjorck", "orthogonal"):  # these make it exactly the share
            assert exact == pytest.approx(share, rel=1e-3), (path, exact, share)


def test_spectral_zero_padding_normalizes_the_exact_operator(oracle):
    # with zero padding the certified bound (a torus around the padded input) can exceed the
    # operator norm; what spectral normalization makes lambda is the operator norm itself
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(3, 2, 3, stride=2, padding=1))
    make_lipschitz(model, "spectral", lipschitz=4.0, n_power_iterations=10)
    x = torch.randn(8, 2, 7, 6)
    for _ in range(30):
        model(x)
    model.eval()
    exact = [oracle.operator_norm(model[0], (2, 7, 6)), oracle.operator_norm(model[2], (3, 7, 6))]
    for value in exact:
        assert value == pytest.approx(2.0, rel=1e-3)
    assert lipschitz_bound(model, example_input=x[:1]) >= exact[0] * exact[1] * (1 - 1e-5)


def test_unknown_method_lists_the_choices():
    model = _mlp()
    with pytest.raises(UnknownMethodError) as error:
        make_lipschitz(model, "parseval")
    message = str(error.value)
    assert "'parseval'" in message
    for name in METHODS:
        assert name in message, name
    assert isinstance(error.value, KeyError)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


@pytest.mark.parametrize(
    ("method", "model", "path", "kind"),
    [
        ("bjorck", _convnet, "0", "Conv2d"),
        ("bjorck", lambda: nn.Sequential(nn.Linear(3, 3), nn.Sequential(
            nn.ReLU(), nn.Conv1d(1, 1, 3))), "1.1", "Conv1d"),
        ("bcop", _mlp, "0", "Linear"),
        ("bcop", lambda: nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(),
                                       nn.Conv2d(4, 4, 3, groups=2)), "2", "Conv2d"),
        ("orthogonal", lambda: nn.Sequential(nn.Linear(3, 8), nn.Unflatten(1, (2, 4)),
                                             nn.Conv1d(2, 2, 3, groups=2)), "2", "Conv1d"),
        ("spectral", lambda: nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3)), "1",
         "LayerNorm"),
        ("aol", lambda: nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 3)), "0", "Embedding"),
    ],
)
def test_rejected_layers_are_named_and_nothing_is_modified(method, model, path, kind):
    torch.manual_seed(2)
    model = model()
    snapshot = _snapshot(model)
    with pytest.raises(UnsupportedModuleError, match=f"'{path}' of type {kind}") as error:
        make_lipschitz(model, method)
    assert error.value.path == path
    _assert_unmodified(model, snapshot)


@pytest.mark.parametrize("lipschitz", [0.0, -1.0, float("nan"), float("inf")])
def test_non_positive_lipschitz_raises(lipschitz):
    model = _mlp()
    snapshot = _snapshot(model)
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        make_lipschitz(model, "spectral", lipschitz=lipschitz)
    _assert_unmodified(model, snapshot)


def test_layers_constrained_before_are_kept_and_the_rest_constrained(oracle):
    torch.manual_seed(3)
    first = SpectralLinear(4, 8, lipschitz=3.0)
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    kept = copy.deepcopy(first.state_dict())
    make_lipschitz(model, "bjorck", lipschitz=4.0)
    assert type(first.parametrizations.weight[0]).__name__ == "SpectralNorm"
    assert len(first.parametrizations.weight) == 1
    for name, value in kept.items():
        assert torch.equal(first.state_dict()[name], value), name
    for index in (2, 4):  # the two new targets share lambda = 4: 2 each
        values = torch.linalg.svdvals(model[index].weight.detach().double())
        torch.testing.assert_close(values, torch.full_like(values, 2.0), rtol=1e-4, atol=0)
    assert lipschitz_bound(model.eval()) == pytest.approx(3.0 * 4.0, rel=1e-4)


def test_parametric_blocks_lipkit_counts_are_allowed():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.PReLU(),
                          Residual(nn.Linear(4, 4), 0.5, learnable=True))
    make_lipschitz(model, "aol")
    assert parametrize.is_parametrized(model[0]) and parametrize.is_parametrized(model[3].branch)
    assert not parametrize.is_parametrized(model[1])
    model.eval()
    x = torch.randn(32, 4)
    ratios = torch.linalg.vector_norm(model(x) - model(x.flip(0)), dim=1) / torch.linalg.\
        vector_norm(x - x.flip(0), dim=1)
    assert ratios.max() <= lipschitz_bound(model) * (1 + 1e-5)


def test_a_model_without_layers_is_returned_unchanged():
    model = nn.Sequential(nn.ReLU(), GroupSort(2))
    assert make_lipschitz(model, "spectral") is model
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
