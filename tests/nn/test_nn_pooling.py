"""lipkit.nn.pooling: pooling layers and their Lipschitz factors.

Oracles: average pooling is linear, so its exact norm is the SVD of the materialized operator;
max and l2-norm pooling are checked through ratios ``|f(x) - f(y)| / |x - y|`` and Jacobian
spectral norms (``torch.func.jacrev``) at random points.
"""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

from lipkit.nn import L2NormPool2d, ScaledAvgPool2d, lipschitz_bound
from lipkit.nn.pooling import pooling_bound

SEEDS = st.integers(0, 2**31 - 1)


@st.composite
def _windows(draw, dims=2, dilation=False):
    """kernel, stride, padding (<= kernel / 2, as torch requires), dilation, input size."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    dilations = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(dims))
    size = tuple(draw(st.integers(2, 6)) for _ in range(dims))
    assume(all(n + 2 * p >= (k - 1) * d + 1
               for n, p, k, d in zip(size, padding, kernel, dilations, strict=True)))
    return kernel, stride, padding, dilations, size


def _jacobian_norms(function, shape, seed, count=5) -> list[float]:
    generator = torch.Generator().manual_seed(seed)
    norms = []
    for _ in range(count):
        x = torch.randn(1, *shape, generator=generator, dtype=torch.float64)
        jacobian = torch.func.jacrev(function)(x).reshape(function(x).numel(), x.numel())
        norms.append(float(torch.linalg.matrix_norm(jacobian, ord=2)))
    return norms


@settings(max_examples=60)
@given(window=_windows(), channels=st.integers(1, 2), ceil_mode=st.booleans(),
       count_include_pad=st.booleans(), divisor=st.sampled_from([None, 1, 2, 5]))
def test_average_pooling_bound_dominates_its_exact_norm(window, channels, ceil_mode,
                                                         count_include_pad, divisor, oracle):
    kernel, stride, padding, _, size = window
    pool = nn.AvgPool2d(kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    exact = oracle.exact_norm(oracle.materialize(pool, (channels, *size)))
    bound = pooling_bound(pool)
    assert exact <= bound * (1 + 1e-12), f"exact {exact} > bound {bound} for {pool}"
    assert lipschitz_bound(pool) == bound


@settings(max_examples=30)
@given(window=_windows(dims=1), ceil_mode=st.booleans(), count_include_pad=st.booleans())
def test_average_pooling_1d(window, ceil_mode, count_include_pad, oracle):
    kernel, stride, padding, _, size = window
    pool = nn.AvgPool1d(kernel, stride, padding, ceil_mode, count_include_pad)
    exact = oracle.exact_norm(oracle.materialize(pool, (1, *size)))
    assert exact <= pooling_bound(pool) * (1 + 1e-12), (exact, pool)


def test_non_overlapping_average_pooling_is_one_over_sqrt_taps(oracle):
    # disjoint k x k windows tiling the input: A A^T = I / k^2, every singular value 1 / k
    pool = nn.AvgPool2d(3)
    exact = oracle.exact_norm(oracle.materialize(pool, (2, 6, 9)))
    assert exact == pytest.approx(1 / 3, rel=1e-12)
    assert pooling_bound(pool) == pytest.approx(1 / 3, rel=1e-12)


@settings(max_examples=50)
@given(window=_windows(), channels=st.integers(1, 2))
def test_scaled_average_pooling_bound_dominates_its_exact_norm(window, channels, oracle):
    kernel, stride, padding, _, size = window
    pool = ScaledAvgPool2d(kernel, stride, padding)
    exact = oracle.exact_norm(oracle.materialize(pool, (channels, *size)))
    bound = pooling_bound(pool)
    assert exact <= bound * (1 + 1e-12), f"exact {exact} > bound {bound} for {pool}"
    assert bound == pytest.approx(math.sqrt(math.prod(
        math.ceil(k / s) for k, s in zip(kernel, stride, strict=True))), rel=1e-12)


@pytest.mark.parametrize("kernel", [1, 2, 3, (2, 3)])
def test_non_overlapping_scaled_pooling_is_norm_preserving(kernel, oracle):
    pool = ScaledAvgPool2d(kernel)
    assert pooling_bound(pool) == 1.0
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    # an input tiled by the windows: A A^T = I, every singular value is 1
    values = torch.linalg.svdvals(oracle.materialize(pool, (2, 2 * k[0], 3 * k[1])))
    torch.testing.assert_close(values, torch.ones_like(values), rtol=1e-12, atol=0)


@settings(max_examples=40)
@given(window=_windows(dilation=True), ceil_mode=st.booleans(), seed=SEEDS)
def test_max_pooling_ratios_and_jacobians_stay_below_the_bound(window, ceil_mode, seed,
                                                                oracle):
    kernel, stride, padding, dilation, size = window
    pool = nn.MaxPool2d(kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    bound = pooling_bound(pool)
    shape = (2, *size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, *shape, generator=generator, dtype=torch.float64)
    for y in (torch.randn(x.shape, generator=generator, dtype=torch.float64),
              x + 1e-3 * torch.randn(x.shape, generator=generator, dtype=torch.float64)):
        ratios = oracle.lipschitz_ratios(pool, x, y)
        assert ratios.max() <= bound * (1 + 1e-9), (ratios.max(), bound, pool)
    assert max(_jacobian_norms(pool, shape, seed)) <= bound * (1 + 1e-9)


@pytest.mark.parametrize("kernel", [1, 2, 3, 4])
def test_max_pooling_bound_is_attained_by_a_peak(kernel, oracle):
    # stride 1: a peak is the max of all k windows that contain it, so moving it moves k
    # outputs by the same amount: ratio sqrt(k), the bound
    pool = nn.MaxPool1d(kernel, stride=1)
    x = torch.zeros(1, 1, 9, dtype=torch.float64)
    x[0, 0, 4] = 5.0
    y = x.clone()
    y[0, 0, 4] = 4.0
    ratio = float(oracle.lipschitz_ratios(pool, x, y)[0])
    assert ratio == pytest.approx(math.sqrt(kernel), rel=1e-12)
    assert pooling_bound(pool) == pytest.approx(math.sqrt(kernel), rel=1e-12)


@settings(max_examples=30)
@given(window=_windows(dims=1, dilation=True), seed=SEEDS)
def test_max_pooling_1d(window, seed, oracle):
    kernel, stride, padding, dilation, size = window
    pool = nn.MaxPool1d(kernel, stride, padding, dilation)
    x = torch.randn(64, 1, *size, generator=torch.Generator().manual_seed(seed),
                    dtype=torch.float64)
    ratios = oracle.lipschitz_ratios(pool, x, x.flip(0))
    assert ratios.max() <= pooling_bound(pool) * (1 + 1e-9)


@settings(max_examples=40)
@given(window=_windows(), seed=SEEDS)
def test_l2_norm_pooling_ratios_and_jacobians_stay_below_the_bound(window, seed, oracle):
    kernel, stride, padding, _, size = window
    pool = L2NormPool2d(kernel, stride, padding)
    bound = pooling_bound(pool)
    assert bound == pytest.approx(math.sqrt(math.prod(
        math.ceil(k / s) for k, s in zip(kernel, stride, strict=True))), rel=1e-12)
    shape = (2, *size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(64, *shape, generator=generator, dtype=torch.float64)
    for y in (torch.randn(x.shape, generator=generator, dtype=torch.float64),
              x + 1e-3 * torch.randn(x.shape, generator=generator, dtype=torch.float64)):
        ratios = oracle.lipschitz_ratios(pool, x, y)
        assert ratios.max() <= bound * (1 + 1e-9), (ratios.max(), bound)
    assert max(_jacobian_norms(pool, shape, seed)) <= bound * (1 + 1e-9)


def test_l2_norm_pooling_outputs_window_norms():
    pool = L2NormPool2d(2, eps=0.0)
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4)
    expected = torch.stack([x[0, 0, i:i + 2, j:j + 2].norm()
                            for i in (0, 2) for j in (0, 2)]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(pool(x), expected)


def test_unknown_modules_have_no_pooling_bound():
    assert pooling_bound(nn.ReLU()) is None
    assert pooling_bound(nn.Linear(2, 2)) is None
