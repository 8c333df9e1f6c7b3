"""lipkit.nn.spectral: spectral normalization of dense layers and convolution operators.

The oracle is the exact operator norm of the normalized layer: the SVD of the weight, or of
the convolution operator materialized through torch's own convolution.
"""

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn import lipschitz_bound, spectral_norm

SEEDS = st.integers(0, 2**31 - 1)
LIPSCHITZ = st.floats(0.1, 10.0)


def _buffers(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    constraint = layer.parametrizations.weight[0]
    return constraint._u.clone(), constraint._v.clone()


@settings(max_examples=25)
@given(rows=st.integers(1, 12), columns=st.integers(1, 12), target=LIPSCHITZ, seed=SEEDS)
def test_dense_layer_is_normalized_to_lambda(rows, columns, target, seed, oracle):
    torch.manual_seed(seed)
    layer = spectral_norm(nn.Linear(columns, rows), lipschitz=target)
    x = torch.randn(4, columns)
    for _ in range(3):
        layer(x)
    layer.eval()  # a training-mode read of .weight would iterate once more
    exact = oracle.operator_norm(layer)
    # power iteration estimates sigma_1 from below: the normalized norm is >= lambda
    assert exact >= target * (1 - 1e-5), (exact, target)
    assert exact <= target * (1 + 1e-3), (exact, target)
    assert lipschitz_bound(layer) == pytest.approx(exact, rel=1e-6)


@settings(max_examples=20)
@given(data=st.data(), target=LIPSCHITZ, seed=SEEDS)
def test_convolution_operator_is_normalized_to_lambda(data, target, seed, conv_layers, oracle):
    conv, shape = data.draw(conv_layers())
    conv = conv.float()
    spectral_norm(conv, lipschitz=target, n_power_iterations=10)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))
    for _ in range(60):
        conv(x)
    exact = oracle.operator_norm(conv, shape)
    assert exact <= target * (1 + 1e-3), f"operator norm {exact} > {target} for {conv}"
    if exact > 0:  # some padded geometries only ever read the padding: a zero operator
        assert exact >= target * (1 - 1e-5), (exact, target)
    bound = lipschitz_bound(conv)
    assert bound >= exact * (1 - 1e-6), f"lipschitz_bound {bound} < exact {exact}"


def test_kernel_reshape_variant_warns_and_the_bound_stays_sound(oracle):
    # the all-ones 3x3 kernel: the reshaped (1, 9) matrix has norm 3, the operator 9 (its
    # DC response on a circular image): normalizing the matrix leaves an operator norm of 3
    conv = nn.Conv2d(1, 1, 3, padding=1, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    with pytest.warns(UserWarning, match="does not bound"):
        spectral_norm(conv, operator=False)
    conv(torch.randn(1, 1, 6, 6))
    exact = oracle.operator_norm(conv, (1, 6, 6))
    assert exact == pytest.approx(3.0, rel=1e-5), "the reshape norm does not bound the operator"
    assert lipschitz_bound(conv) >= exact * (1 - 1e-6)
    assert lipschitz_bound(conv) == pytest.approx(3.0, rel=1e-5)  # circular: the exact norm


@settings(max_examples=15)
@given(data=st.data(), seed=SEEDS)
def test_kernel_reshape_variant_bound_is_sound_for_any_geometry(data, seed, conv_layers,
                                                                oracle):
    conv, shape = data.draw(conv_layers())
    with pytest.warns(UserWarning, match="does not bound"):
        spectral_norm(conv, operator=False)
    conv(torch.randn(1, *shape, dtype=torch.float64))
    exact = oracle.operator_norm(conv, shape)
    assert lipschitz_bound(conv) >= exact * (1 - 1e-9)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_buffers_move_in_training_mode_only(kind):
    torch.manual_seed(0)
    if kind == "linear":
        layer, x = spectral_norm(nn.Linear(6, 5)), torch.randn(3, 6)
    else:
        layer, x = spectral_norm(nn.Conv2d(2, 3, 3, padding=1)), torch.randn(3, 2, 5, 6)
    layer(x)
    original = layer.parametrizations.weight.original
    for _ in range(3):
        with torch.no_grad():  # a weight change the vectors have not followed yet
            original.add_(0.3 * torch.randn_like(original))
        layer.train()
        before = _buffers(layer)
        layer(x)
        after = _buffers(layer)
        assert not torch.equal(before[0], after[0]), "a training forward left u unchanged"
    layer.eval()
    layer(x)  # the vectors have seen this weight: an eval forward must not move them
    before = _buffers(layer)
    for _ in range(3):
        layer(x)
        _ = layer.weight
    after = _buffers(layer)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_eval_after_a_weight_change_uses_a_converged_estimate(kind, oracle):
    torch.manual_seed(1)
    if kind == "linear":
        layer, x, shape = spectral_norm(nn.Linear(8, 6)), torch.randn(3, 8), None
    else:
        layer, x, shape = (spectral_norm(nn.Conv2d(2, 3, 3, padding=1)),
                           torch.randn(3, 2, 5, 6), (2, 5, 6))
    layer(x)
    with torch.no_grad():  # an optimizer step after the last training forward
        layer.parametrizations.weight.original.add_(
            0.5 * torch.randn_like(layer.parametrizations.weight.original))
    layer.eval()
    layer(x)
    refreshed = _buffers(layer)
    assert oracle.operator_norm(layer, shape) == pytest.approx(1.0, rel=1e-3)
    layer(x)
    again = _buffers(layer)
    assert torch.equal(refreshed[0], again[0]), "a second eval forward iterated again"


def _layer_and_shape(kind):
    if kind == "linear":
        return nn.Linear(7, 5), (7,)
    if kind == "conv1d":
        return nn.Conv1d(3, 4, 3, stride=2, padding=2, dilation=2), (3, 9)
    return nn.Conv2d(2, 3, (3, 2), stride=(1, 2), padding=1, padding_mode="reflect"), (2, 5, 6)


def _train(layer, shape, device, dtype, lr, scale, steps=30):
    optimizer = torch.optim.Adam(layer.parameters(), lr=lr)
    x = torch.randn(16, *shape, device=device, dtype=dtype)
    target = scale * torch.randn_like(layer(x))
    for _ in range(steps):
        optimizer.zero_grad()
        (layer(x) - target).square().mean().backward()
        optimizer.step()


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_constraint_holds_after_optimizer_steps(kind, dtype, device, oracle):
    torch.manual_seed(2)
    layer, shape = _layer_and_shape(kind)
    layer = spectral_norm(layer.to(device, dtype), lipschitz=2.0)
    _train(layer, shape, device, dtype, lr=0.01, scale=1.0)
    layer.eval()
    exact = oracle.operator_norm(layer, shape)
    assert 2.0 * (1 - 1e-4) <= exact <= 2.0 * (1 + 1e-3), exact
    assert lipschitz_bound(layer) >= exact * (1 - 1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv1d", "conv2d"])
def test_bound_stays_sound_when_power_iteration_lags(kind, oracle):
    # large Adam steps against the constraint rotate the top singular vectors faster than
    # one power iteration per step follows (the tracked u can end up nearly orthogonal to
    # the new top one): the normalized norm may then exceed lambda, the bound may not
    torch.manual_seed(2)
    layer, shape = _layer_and_shape(kind)
    layer = spectral_norm(layer, lipschitz=2.0)
    _train(layer, shape, "cpu", torch.float32, lr=0.05, scale=10.0)
    layer.eval()
    exact = oracle.operator_norm(layer, shape)
    assert exact >= 2.0 * (1 - 1e-4)
    assert lipschitz_bound(layer) >= exact * (1 - 1e-5)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_gradient_is_that_of_lambda_w_over_u_w_v(kind, dtype):
    torch.manual_seed(3)
    if kind == "linear":
        layer, x = nn.Linear(5, 4).to(dtype), torch.randn(6, 5, dtype=dtype)
    else:
        layer, x = nn.Conv1d(2, 3, 3, padding=1).to(dtype), torch.randn(6, 2, 7, dtype=dtype)
    layer = spectral_norm(layer, lipschitz=1.5)
    layer(x)
    layer.eval()  # keep u, v fixed so that the reference sees the same ones
    weight = layer.parametrizations.weight.original
    r = torch.randn_like(layer(x))
    (layer(x) * r).sum().backward()
    u, v = _buffers(layer)
    reference = weight.detach().clone().requires_grad_(True)
    if kind == "linear":
        sigma = u @ reference @ v
        out = nn.functional.linear(x, 1.5 * reference / sigma, layer.bias)
    else:
        sigma = (v * nn.functional.conv1d(u, reference, padding=1)).sum()
        out = nn.functional.conv1d(x, 1.5 * reference / sigma, layer.bias, padding=1)
    (out * r).sum().backward()
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    rtol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(weight.grad, reference.grad, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_two_training_forwards_before_one_backward(kind):
    # a critic evaluated on real and fake samples, then one backward: the second forward
    # updates u, v, which the first one's graph must not depend on
    torch.manual_seed(4)
    if kind == "linear":
        layer, x = spectral_norm(nn.Linear(5, 4)), torch.randn(3, 5)
    else:
        layer, x = spectral_norm(nn.Conv2d(2, 2, 3, padding=1)), torch.randn(3, 2, 5, 5)
    loss = layer(x).square().sum() - layer(2 * x).square().sum()
    loss.backward()
    grad = layer.parametrizations.weight.original.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["linear", "conv_lazy", "conv_sized"])
def test_state_dict_round_trip_gives_identical_outputs(kind):
    torch.manual_seed(5)

    def build():
        if kind == "linear":
            return spectral_norm(nn.Linear(6, 4), lipschitz=0.5)
        size = None if kind == "conv_lazy" else (5, 6)
        return spectral_norm(nn.Conv2d(2, 3, 3, stride=2, padding=1), input_size=size)

    layer = build()
    x = torch.randn(8, 6) if kind == "linear" else torch.randn(8, 2, 5, 6)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.1)
    for _ in range(5):
        optimizer.zero_grad()
        layer(x).sum().backward()
        optimizer.step()
    state = copy.deepcopy(layer.state_dict())
    fresh = build()  # another random initialization: everything must come from the state
    fresh.load_state_dict(state)
    layer.eval()
    fresh.eval()
    expected = layer(x)
    assert torch.equal(fresh(x), expected), "the loaded layer computes another function"
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, layer.state_dict()[name]), name
    # a state saved after evaluation loads too
    again = build()
    again.load_state_dict(layer.state_dict())
    torch.testing.assert_close(again.eval()(x), expected, rtol=1e-5, atol=1e-6)


def test_conv_without_input_size_raises_before_the_first_forward():
    conv = spectral_norm(nn.Conv2d(2, 3, 3))
    with pytest.raises(InvalidArgumentError, match="input size"):
        _ = conv.weight
    conv(torch.randn(1, 2, 6, 6))
    assert conv.weight.shape == (3, 2, 3, 3)
    sized = spectral_norm(nn.Conv2d(2, 3, 3), input_size=(6, 6))
    assert sized.weight.shape == (3, 2, 3, 3)


def test_input_size_change_warns_and_renormalizes(oracle):
    torch.manual_seed(6)
    conv = spectral_norm(nn.Conv2d(2, 2, 3, padding=1), n_power_iterations=5)
    for _ in range(5):
        conv(torch.randn(2, 2, 4, 4))
    with pytest.warns(UserWarning, match="input size changed"):
        conv(torch.randn(2, 2, 7, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same size again: no warning
        for _ in range(40):
            conv(torch.randn(2, 2, 7, 5))
    assert oracle.operator_norm(conv, (2, 7, 5)) == pytest.approx(1.0, rel=1e-3)


def test_bad_arguments_raise():
    with pytest.raises(InvalidArgumentError, match="n_power_iterations"):
        spectral_norm(nn.Linear(3, 3), n_power_iterations=0)
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        spectral_norm(nn.Linear(3, 3), lipschitz=-1.0)
    with pytest.raises(UnsupportedModuleError, match="BatchNorm1d"):
        spectral_norm(nn.BatchNorm1d(3))
    layer = spectral_norm(nn.Linear(3, 3))
    with pytest.raises(InvalidArgumentError, match="already parametrized"):
        spectral_norm(layer)
