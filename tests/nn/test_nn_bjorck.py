"""lipkit.nn.bjorck: Björck orthonormalization and gradient norm preserving dense layers.

Oracles: singular values by an SVD, the polar factor ``U V^T`` by an SVD (numpy, float64),
derivatives by central finite differences of that SVD polar factor.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.nn import bjorck, bjorck_orthonormalize, lipschitz_bound

SEEDS = st.integers(0, 2**31 - 1)
SHAPES = st.tuples(st.integers(1, 10), st.integers(1, 10))  # (out, in): tall, wide, square


def _polar(matrix: np.ndarray) -> np.ndarray:
    u, _, vh = np.linalg.svd(matrix, full_matrices=False)
    return u @ vh


def _singular_values(layer: nn.Linear) -> torch.Tensor:
    return torch.linalg.svdvals(layer.weight.detach().double())


def _perturb(layer: nn.Linear, seed: int, size: float) -> None:
    """Move the parameter off the manifold, as optimizer steps do."""
    original = layer.parametrizations.weight.original
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        noise = torch.randn(original.shape, generator=generator).to(original.dtype)
        original.add_(size * noise / noise.norm() * original.norm())


@settings(max_examples=30)
@given(shape=SHAPES, target=st.floats(0.1, 10.0), seed=SEEDS, drift=st.floats(0.0, 0.5))
def test_every_singular_value_is_lambda(shape, target, seed, drift):
    torch.manual_seed(seed)
    rows, columns = shape
    layer = bjorck(nn.Linear(columns, rows), lipschitz=target).eval()
    _perturb(layer, seed, drift)
    values = _singular_values(layer)
    assert len(values) == min(rows, columns)
    torch.testing.assert_close(values, torch.full_like(values, target), rtol=1e-4, atol=0,
                               msg=f"singular values {values} for lambda {target}")
    assert lipschitz_bound(layer) == pytest.approx(target, rel=1e-4)


@pytest.mark.parametrize("shape", [(6, 6), (9, 4), (4, 9)])
@pytest.mark.parametrize("backward", ["projected", "autograd"])
def test_still_orthonormal_after_optimizer_steps(shape, backward, dtype, device):
    torch.manual_seed(0)
    rows, columns = shape
    layer = bjorck(nn.Linear(columns, rows).to(device, dtype), lipschitz=1.5,
                   backward=backward)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    x = torch.randn(32, columns, device=device, dtype=dtype)
    target = torch.randn(32, rows, device=device, dtype=dtype)
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = (layer(x) - target).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        values = _singular_values(layer.eval())
        layer.train()
        torch.testing.assert_close(values, torch.full_like(values, 1.5), rtol=1e-4, atol=0)
    assert losses[-1] < losses[0], "the steps did not descend"


@settings(max_examples=15)
@given(size=st.integers(1, 10), seed=SEEDS)
def test_square_layer_preserves_gradient_norms(size, seed):
    torch.manual_seed(seed)
    layer = bjorck(nn.Linear(size, size).double())
    x = torch.randn(5, size, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, size, dtype=torch.float64)
    layer(x).backward(g)
    # dL/dx = W^T g for each sample, and W is orthogonal
    torch.testing.assert_close(x.grad.norm(dim=1), g.norm(dim=1), rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(6, 6), (8, 3), (3, 8)])
@pytest.mark.parametrize("backward", ["projected", "autograd"])
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_gradient_is_the_derivative_of_the_polar_factor(shape, backward, scale):
    # at W = s Q (Q with orthonormal rows or columns) the derivative of polar(W) has a closed
    # form; finite differences of the SVD polar factor are the oracle
    rng = np.random.default_rng(sum(shape) + int(scale))
    rows, columns = shape
    q = _polar(rng.standard_normal(shape))
    layer = bjorck(nn.Linear(columns, rows, bias=False).double(), lipschitz=2.0,
                   backward=backward, reproject=False)
    with torch.no_grad():
        layer.parametrizations.weight.original.copy_(torch.from_numpy(scale * q))
    r = rng.standard_normal(shape)
    (layer.weight * torch.from_numpy(r)).sum().backward()
    grad = layer.parametrizations.weight.original.grad.numpy()
    for _ in range(3):
        direction = rng.standard_normal(shape)
        epsilon = 1e-6
        plus = np.sum(r * 2.0 * _polar(scale * q + epsilon * direction))
        minus = np.sum(r * 2.0 * _polar(scale * q - epsilon * direction))
        expected = (plus - minus) / (2 * epsilon)
        assert np.sum(grad * direction) == pytest.approx(expected, rel=1e-5, abs=1e-8)


def test_projected_and_autograd_gradients_agree_on_an_orthogonal_weight():
    torch.manual_seed(1)
    q = torch.linalg.qr(torch.randn(10, 10))[0]
    x, r = torch.randn(16, 10), torch.randn(16, 10)
    grads = {}
    for backward in ("projected", "autograd"):
        layer = nn.Linear(10, 10)
        with torch.no_grad():
            layer.weight.copy_(q)
            layer.bias.zero_()
        bjorck(layer, backward=backward)
        (layer(x) * r).sum().backward()
        grads[backward] = layer.parametrizations.weight.original.grad.flatten()
    cosine = torch.nn.functional.cosine_similarity(grads["projected"], grads["autograd"], dim=0)
    assert cosine > 0.99, f"cosine {cosine}"


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("shape", [(7, 7), (9, 4), (4, 9)])
def test_every_order_converges_to_the_polar_factor(order, shape, dtype):
    rng = np.random.default_rng(order)
    for _ in range(5):
        matrix = rng.standard_normal(shape)
        # pre-scaled by sigma_1: every singular value in (0, 1], where every order converges
        scaled = matrix / np.linalg.svd(matrix, compute_uv=False)[0]
        q, iterations, residual = bjorck_orthonormalize(
            torch.from_numpy(scaled).to(dtype), order=order, tol=1e-6, max_iterations=100
        )
        tolerance = 1e-4 if dtype == torch.float32 else 1e-6
        assert iterations < 100 and residual <= tolerance
        torch.testing.assert_close(q.double(), torch.from_numpy(_polar(matrix)),
                                   rtol=0, atol=tolerance)


@pytest.mark.parametrize("order", [1, 2, 3])
def test_every_order_gives_an_orthonormal_layer(order):
    torch.manual_seed(order)
    layer = bjorck(nn.Linear(6, 8), lipschitz=0.5, order=order)
    _perturb(layer, order, 0.3)
    values = _singular_values(layer)
    torch.testing.assert_close(values, torch.full_like(values, 0.5), rtol=1e-4, atol=0)


def test_training_forward_reprojects_without_changing_the_function():
    torch.manual_seed(2)
    layer = bjorck(nn.Linear(5, 5))
    _perturb(layer, 2, 0.3)
    original = layer.parametrizations.weight.original
    x = torch.randn(4, 5)
    before = layer(x)  # training mode: writes polar(W) into W
    values = torch.linalg.svdvals(original.detach().double())
    torch.testing.assert_close(values, torch.ones_like(values), rtol=1e-4, atol=0)
    torch.testing.assert_close(layer(x), before, rtol=1e-5, atol=1e-6)
    frozen = bjorck(nn.Linear(5, 5), reproject=False)
    _perturb(frozen, 2, 0.3)
    kept = frozen.parametrizations.weight.original.detach().clone()
    frozen(x)
    assert torch.equal(frozen.parametrizations.weight.original, kept)
    layer.eval()
    _perturb(layer, 3, 0.3)
    kept = original.detach().clone()
    layer(x)
    assert torch.equal(original, kept), "an eval forward changed the parameter"


@pytest.mark.parametrize("train_tol", [1e-3, 1e-2])
def test_training_forward_stays_within_train_tol(train_tol):
    """Singular values of the training-mode weight lie within the residual bound:
    ||I - Q^T Q||_2 <= ||I - Q^T Q||_F <= train_tol gives |sigma^2 - 1| <= train_tol."""
    torch.manual_seed(5)
    layer = bjorck(nn.Linear(48, 32), lipschitz=2.0, train_tol=train_tol)
    optimizer = torch.optim.Adam(layer.parameters(), lr=1e-2)
    x, target = torch.randn(64, 48), torch.randn(64, 32)
    for _ in range(20):
        optimizer.zero_grad()
        weight = layer.weight  # training mode, grad enabled: the looser stopping rule
        values = torch.linalg.svdvals(weight.detach().double()) / 2.0
        worst = float((values.square() - 1).abs().max())
        assert worst <= train_tol * 1.01, f"|sigma^2 - 1| = {worst} > train_tol {train_tol}"
        (x @ weight.t() - target).square().mean().backward()
        optimizer.step()
    strict = torch.linalg.svdvals(layer.eval().weight.detach().double())
    torch.testing.assert_close(strict, torch.full_like(strict, 2.0), rtol=1e-4, atol=0)


@pytest.mark.parametrize("order", [0, 4, -1])
def test_bad_order_raises(order):
    with pytest.raises(InvalidArgumentError, match="order"):
        bjorck(nn.Linear(3, 3), order=order)
    with pytest.raises(InvalidArgumentError, match="order"):
        bjorck_orthonormalize(torch.eye(3), order=order)


def test_bad_backward_and_module_raise():
    with pytest.raises(InvalidArgumentError, match="projected, autograd"):
        bjorck(nn.Linear(3, 3), backward="implicit")
    with pytest.raises(UnsupportedModuleError, match="Conv2d"):
        bjorck(nn.Conv2d(3, 3, 3))
    with pytest.raises(InvalidArgumentError, match="lipschitz"):
        bjorck(nn.Linear(3, 3), lipschitz=0.0)
