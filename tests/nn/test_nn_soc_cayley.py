"""lipkit.nn.soc and lipkit.nn.cayley: orthogonal convolutions from skew-symmetric generators.

Oracle: the operator materialized by pushing the identity basis through the layer (no bias),
its singular values by an SVD in float64; the truncated-series bound checked against them.
"""

import decimal
import math

import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.nn import CayleyConv2d, FourierConv2d, SkewOrthogonalConv2d, export, lipschitz_bound
from lipkit.nn.soc import exponential_tail


def singular_values(layer, shape, oracle):
    layer.eval()
    return torch.linalg.svdvals(oracle.materialize(layer, shape))


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
def test_the_generator_is_exactly_skew_symmetric(padding_mode, oracle):
    torch.manual_seed(0)
    layer = SkewOrthogonalConv2d(3, 3, bias=False, padding_mode=padding_mode).double()
    x = torch.randn(1, 3, 5, 6, dtype=torch.float64)
    layer(x)
    generator = oracle.materialize(layer.conv, (3, 5, 6))
    torch.testing.assert_close(generator, -generator.T, rtol=0, atol=1e-14)


@pytest.mark.parametrize("padding_mode", ["zeros", "circular"])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_soc_with_enough_terms_is_orthogonal(padding_mode, kernel, oracle):
    torch.manual_seed(kernel)
    layer = SkewOrthogonalConv2d(3, kernel, bias=False, padding_mode=padding_mode,
                                 eval_terms=14).double()
    layer.train()
    layer(torch.randn(2, 3, 6, 5, dtype=torch.float64))
    values = singular_values(layer, (3, 6, 5), oracle)
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-9)
    bound = lipschitz_bound(layer)
    assert values.max() <= bound <= 1 + 1e-8, (float(values.max()), bound)


@pytest.mark.parametrize("terms", [1, 2, 3, 4, 6])
def test_truncated_soc_exceeds_1_and_its_bound_covers_it(terms, oracle):
    """Few terms: exp_n(A) is not orthogonal (singular values |exp_n(j theta)|, above 1 for
    n = 1, 2 and any theta, for n = 6 at theta near 1.5); the certified bound
    1 + sum_{i > n} a^i / i! holds all the same."""
    torch.manual_seed(terms)
    layer = SkewOrthogonalConv2d(3, 3, bias=False, eval_terms=terms, max_norm=1.5).double()
    layer(torch.randn(1, 3, 6, 6, dtype=torch.float64))
    values = singular_values(layer, (3, 6, 6), oracle)
    bound = lipschitz_bound(layer)
    if terms in (1, 2):
        assert values.max() > 1 + 1e-3, "the truncated series expands"
    assert values.max() <= bound, (float(values.max()), bound)


def test_exponential_tail_closed_form():
    """Against the tail summed in 60-digit decimals."""
    decimal.getcontext().prec = 60
    for a, n in [(0.5, 3), (1.0, 6), (2.0, 12), (5.0, 4), (1.0, 12)]:
        big = decimal.Decimal(a)
        exact = sum(big**i / math.factorial(i) for i in range(n + 1, n + 120))
        assert exponential_tail(a, n) == pytest.approx(float(exact), rel=1e-9)
        assert decimal.Decimal(exponential_tail(a, n)) >= exact


def test_soc_trains_and_exports_equal():
    torch.manual_seed(3)
    layer = SkewOrthogonalConv2d(4, 3)
    x = torch.randn(8, 4, 8, 8)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(4):
        loss = (layer(x) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layer.eval()
    plain = export(layer)
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())
    torch.testing.assert_close(plain(x), layer(x), rtol=0, atol=1e-6)
    assert lipschitz_bound(layer) <= 1 + 1e-6
    assert lipschitz_bound(plain, example_input=x[:1]) <= 1 + 1e-6


def test_soc_refuses_even_kernels_and_reflect_padding():
    with pytest.raises(InvalidArgumentError, match="odd kernel"):
        SkewOrthogonalConv2d(2, 2)
    with pytest.raises(InvalidArgumentError, match="padding_mode"):
        SkewOrthogonalConv2d(2, 3, padding_mode="reflect")


@pytest.mark.parametrize("size", [(6, 6), (5, 7), (1, 4)])
def test_cayley_is_orthogonal(size, oracle):
    torch.manual_seed(sum(size))
    layer = CayleyConv2d(3, 3, bias=False).double()
    with torch.no_grad():
        layer.weight.mul_(5.0)
    layer(torch.zeros(1, 3, *size, dtype=torch.float64))
    values = singular_values(layer, (3, *size), oracle)
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-10)
    assert lipschitz_bound(layer) == pytest.approx(float(values.max()), abs=1e-12)


def test_cayley_is_a_circular_convolution(oracle):
    """The operator commutes with circular shifts of the input."""
    torch.manual_seed(5)
    layer = CayleyConv2d(2, 3).double()
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    shifted = torch.roll(x, shifts=(2, 3), dims=(2, 3))
    torch.testing.assert_close(layer(shifted), torch.roll(layer(x), (2, 3), (2, 3)))


def test_cayley_trains_and_exports_to_fourier_matrices():
    torch.manual_seed(4)
    layer = CayleyConv2d(4, 3)
    x = torch.randn(8, 4, 8, 8)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(4):
        loss = (layer(x) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layer.eval()
    plain = export(layer)
    assert type(plain) is FourierConv2d
    torch.testing.assert_close(plain(x), layer(x), rtol=0, atol=1e-6)
    assert lipschitz_bound(plain) == pytest.approx(lipschitz_bound(layer), abs=1e-6)
    with pytest.raises(InvalidArgumentError, match="exported for inputs of size"):
        plain(torch.zeros(1, 4, 6, 6))


def test_cayley_bound_needs_an_input_size():
    with pytest.raises(InvalidArgumentError, match="input size"):
        lipschitz_bound(CayleyConv2d(2))
