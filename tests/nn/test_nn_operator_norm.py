"""lipkit.nn.operator_norm: exact and certified norms of dense and convolution operators.

Oracle: the convolution operator materialized by pushing the identity basis through torch's
own ``nn.Conv1d/2d`` in float64, and its SVD.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.errors import InvalidArgumentError
from lipkit.nn import (
    ConvGeometry,
    conv_matrix,
    conv_operator_norm_upper,
    conv_power_iteration,
    linear_operator_norm,
    lipschitz_bound,
)

SEEDS = st.integers(0, 2**31 - 1)


@settings(max_examples=60)
@given(data=st.data())
def test_upper_bound_dominates_the_exact_norm(data, conv_layers, oracle):
    conv, shape = data.draw(conv_layers())
    exact = oracle.operator_norm(conv, shape)
    geometry = ConvGeometry.of(conv, shape[1:])
    known = conv_operator_norm_upper(conv.weight, geometry, exact_entries=0)  # the DFT bound
    unknown = conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv))
    assert known >= exact * (1 - 1e-9), f"known-size bound {known} < exact {exact} for {conv}"
    assert unknown >= exact * (1 - 1e-9), f"any-size bound {unknown} < exact {exact} for {conv}"
    # small enough to be materialized where zero padding is a third of the torus: the
    # default is then the operator's norm, rounding added; never above the DFT bound
    tight = conv_operator_norm_upper(conv.weight, geometry)
    assert exact * (1 - 1e-12) <= tight <= known, (tight, exact, known, conv)
    if conv.padding_mode == "zeros" and np.prod(geometry.padded_size()) >= 1.5 * np.prod(
            shape[1:]):
        assert tight <= exact * (1 + 1e-9) + 1e-12, (tight, exact, conv)


def test_a_small_feature_map_gets_the_materialized_norm(oracle):
    """A 3x3 kernel on a 4x4 map with zero padding: the DFT bound (6x6 torus) is loose, the
    default bound is the operator's norm (the oracle's SVD of torch's own layer applied to
    the identity basis); above ``exact_entries`` the DFT bound is used."""
    torch.manual_seed(3)
    conv = torch.nn.Conv2d(32, 32, 3, padding=1).double()
    exact = oracle.operator_norm(conv, (32, 4, 4))
    geometry = ConvGeometry.of(conv, (4, 4))
    dft = conv_operator_norm_upper(conv.weight, geometry, exact_entries=0)
    assert dft > 1.05 * exact  # the gap the materialization closes
    assert exact <= conv_operator_norm_upper(conv.weight, geometry) <= exact * (1 + 1e-9)
    assert conv_operator_norm_upper(conv.weight, geometry, exact_entries=512 ** 2 - 1) == dft


def test_lipschitz_bound_materializes_up_to_the_entries_asked(oracle):
    # 16 channels on 8x8: a 1024-sided operator, 2^20 entries
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).double()
    model = torch.nn.Sequential(conv, torch.nn.ReLU())
    x = torch.zeros(1, 16, 8, 8, dtype=torch.float64)
    exact = oracle.operator_norm(conv, (16, 8, 8))
    dft = lipschitz_bound(model, x, exact_entries=0)
    tight = lipschitz_bound(model, x, exact_entries=1 << 20)
    assert exact <= tight <= exact * (1 + 1e-9) < dft
    assert lipschitz_bound(model, x, exact_entries=(1 << 20) - 1) == dft
    assert lipschitz_bound(model, x) == tight  # the default takes 2^22
    # the setting does not outlive the call
    assert conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv, (8, 8))) == tight
    with pytest.raises(InvalidArgumentError, match="exact_entries"):
        lipschitz_bound(model, x, exact_entries=-1)


@settings(max_examples=30)
@given(data=st.data())
def test_circular_same_size_bound_is_exact(data, conv_layers, oracle):
    # stride 1 and output size == input size: the operator is the full circular convolution,
    # block-diagonalised by the DFT, so the bound is its norm
    conv, shape = data.draw(conv_layers(padding_modes=("circular",), same=True))
    exact = oracle.operator_norm(conv, shape)
    assert oracle.operator_matrix(conv, shape).shape[0] == conv.out_channels * np.prod(shape[1:])
    bound = conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv, shape[1:]))
    assert bound == pytest.approx(exact, rel=1e-9, abs=1e-12), (bound, exact, conv)


@pytest.mark.parametrize(
    ("size", "padding", "stride", "copies"),
    [(1, 1, 1, 3), (2, 2, 2, 3), (4, 4, 2, 3), (3, 1, 1, 2), (5, 1, 2, 1)],
)
def test_circular_padding_that_wraps_around_repeats_rows(size, padding, stride, copies):
    # a 1x1 kernel w: every output is w times an input sample, and the padding wraps the
    # input around, so the operator norm is |w| sqrt(most copies of one sample in the output)
    conv = torch.nn.Conv1d(1, 1, 1, stride, padding, padding_mode="circular", bias=False)
    with torch.no_grad():
        conv.weight.fill_(-0.7)
    expected = 0.7 * copies**0.5
    for geometry in (ConvGeometry.of(conv, size), ConvGeometry.of(conv)):
        bound = conv_operator_norm_upper(conv.weight, geometry)
        assert bound >= expected * (1 - 1e-7), (geometry, bound, expected)
    exact_size = conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv, size))
    assert exact_size == pytest.approx(expected, rel=1e-7)


@settings(max_examples=30)
@given(data=st.data())
def test_conv_matrix_is_the_layer_without_bias(data, conv_layers, oracle):
    conv, shape = data.draw(conv_layers())
    matrix = conv_matrix(conv.weight, ConvGeometry.of(conv, shape[1:]))
    x = torch.randn(4, *shape, dtype=torch.float64)
    bias = 0 if conv.bias is None else conv.bias.reshape(-1, *([1] * (len(shape) - 1)))
    with torch.no_grad():
        expected = (conv(x) - bias).flatten(1)
    torch.testing.assert_close(x.flatten(1) @ matrix.T, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=40)
@given(data=st.data(), seed=SEEDS)
def test_apply_adjoint_is_the_transpose(data, seed, conv_layers):
    conv, shape = data.draw(conv_layers())
    geometry = ConvGeometry.of(conv, shape[1:])
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, *shape, generator=generator, dtype=torch.float64)
    with torch.no_grad():
        ax = geometry.apply(x, conv.weight)
        y = torch.randn(ax.shape, generator=generator, dtype=torch.float64)
        aty = geometry.apply_adjoint(y, conv.weight)
    assert aty.shape == x.shape
    left = (ax * y).sum(dim=tuple(range(1, ax.ndim)))
    right = (x * aty).sum(dim=tuple(range(1, x.ndim)))
    torch.testing.assert_close(left, right, rtol=1e-10, atol=1e-10,
                               msg="<A x, y> != <x, A^T y>")


@settings(max_examples=10)
@given(data=st.data(), seed=SEEDS)
def test_power_iteration_approaches_the_norm_from_below(data, seed, conv_layers, oracle):
    conv, shape = data.draw(conv_layers(max_size=5))
    exact = oracle.operator_norm(conv, shape)
    geometry = ConvGeometry.of(conv, shape[1:])
    generator = torch.Generator().manual_seed(seed)
    u0 = torch.randn(1, *shape, generator=generator, dtype=torch.float64)
    u0 = u0 / u0.norm()
    estimates = []
    for n_iterations in (1, 1500):
        u, v = conv_power_iteration(conv.weight, geometry, u0, n_iterations)
        # unit vectors, unless the operator is zero (a stride that only reads the padding)
        expected = torch.tensor(float(exact > 0), dtype=torch.float64)
        torch.testing.assert_close(u.norm(), expected)
        torch.testing.assert_close(v.norm(), expected)
        with torch.no_grad():
            estimates.append(float((v * geometry.apply(u, conv.weight)).sum()))
    assert max(estimates) <= exact * (1 + 1e-9), (estimates, exact)
    assert estimates[1] >= exact * (1 - 1e-3), f"not converged: {estimates[1]} vs {exact}"


@settings(max_examples=40)
@given(rows=st.integers(1, 12), columns=st.integers(1, 12), seed=SEEDS,
       scale=st.floats(1e-3, 1e3))
def test_linear_operator_norm_is_the_largest_singular_value(rows, columns, seed, scale):
    generator = torch.Generator().manual_seed(seed)
    weight = scale * torch.randn(rows, columns, generator=generator)
    expected = np.linalg.svd(weight.double().numpy(), compute_uv=False)[0]
    assert linear_operator_norm(weight) == pytest.approx(expected, rel=1e-12)


def test_linear_operator_norm_closed_forms():
    diagonal = torch.diag(torch.tensor([0.5, -3.0, 2.0]))
    assert linear_operator_norm(diagonal) == pytest.approx(3.0, rel=1e-15)
    u, v = torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0, 2.0])
    assert linear_operator_norm(torch.outer(u, v)) == pytest.approx(15.0, rel=1e-12)
    assert linear_operator_norm(torch.zeros(0, 4)) == 0.0
    with pytest.raises(InvalidArgumentError, match="matrix"):
        linear_operator_norm(torch.zeros(2, 3, 4))


def test_geometry_needs_an_input_size_for_a_matrix():
    conv = torch.nn.Conv2d(2, 3, 3)
    with pytest.raises(InvalidArgumentError, match="input size"):
        conv_matrix(conv.weight, ConvGeometry.of(conv))
    with pytest.raises(InvalidArgumentError, match="2 positive spatial sizes"):
        ConvGeometry.of(conv, (4, 4, 4))
    with pytest.raises(InvalidArgumentError, match="Conv"):
        ConvGeometry.of(torch.nn.Linear(2, 2))


def test_bound_runs_on_the_weight_device_and_dtype(device, dtype, oracle):
    conv = torch.nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular").to(device, dtype)
    bound = conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv, (5, 6)))
    exact = oracle.operator_norm(conv, (3, 5, 6))
    assert bound == pytest.approx(exact, rel=1e-6), (bound, exact)


def test_materialize_up_to_reaches_the_bounds_computed_inside_it(oracle):
    from lipkit.certify import logit_constants
    from lipkit.nn import materialize_up_to

    torch.manual_seed(5)
    conv = torch.nn.Conv2d(16, 16, 3, padding=1).double()
    model = torch.nn.Sequential(conv, torch.nn.Flatten(), torch.nn.Linear(16 * 64, 3).double())
    x = torch.zeros(1, 16, 8, 8, dtype=torch.float64)
    default = logit_constants(model, example_input=x)  # materializes the 1024-sided operator
    with materialize_up_to(0):
        dft_only = logit_constants(model, example_input=x)
    assert default.source == dft_only.source == "lipkit.nn.lipschitz_bound"
    exact = oracle.operator_norm(conv, (16, 8, 8))
    dft = conv_operator_norm_upper(conv.weight, ConvGeometry.of(conv, (8, 8)), exact_entries=0)
    assert dft > exact * 1.01
    assert dft_only.whole / default.whole == pytest.approx(dft / lipschitz_bound(conv, x),
                                                           rel=1e-9)
