"""lipkit.nn.aoc: exact orthogonal convolutions with a stride and groups.

Oracle: the convolution operator materialized through a plain torch copy of the layer and its
singular values (SVD, float64).
"""

import pytest
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.nn import aoc, export, lipschitz_bound
from lipkit.nn.aoc import compose_kernels

# (in, out, kernel, stride, padding, groups, size): circular padding (k - s) / 2, sizes
# divisible by the stride
ORTHOGONAL = [
    (3, 3, 3, 1, 1, 1, 5),
    (2, 5, 3, 1, 1, 1, 4),
    (4, 16, 4, 2, 1, 1, 6),  # 16 = 4 * 2 * 2 outputs per patch: an isometry
    (6, 4, 4, 2, 1, 2, 6),   # fewer outputs: orthonormal rows
    (4, 8, 2, 2, 0, 2, 4),   # kernel = stride: a reshaped orthogonal matrix
    (3, 9, 5, 3, 1, 1, 6),
    (4, 4, 3, 1, 1, 4, 5),   # depthwise
]


def make(cin, cout, k, s, p, g, mode="circular"):
    conv = aoc(nn.Conv2d(cin, cout, k, stride=s, padding=p, groups=g, bias=False,
                         padding_mode=mode).double(), tol=1e-10)
    return conv


@pytest.mark.parametrize("case", ORTHOGONAL, ids=str)
def test_circular_aoc_has_orthonormal_rows_or_columns(case, oracle):
    cin, cout, k, s, p, g, n = case
    torch.manual_seed(n + k)
    conv = make(cin, cout, k, s, p, g)
    values = torch.linalg.svdvals(oracle.operator_matrix(conv, (cin, n, n)))
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-8)


@pytest.mark.parametrize("case", ORTHOGONAL, ids=str)
def test_zero_padded_aoc_is_1_lipschitz(case, oracle):
    cin, cout, k, s, p, g, n = case
    torch.manual_seed(n)
    conv = make(cin, cout, k, s, p, g, mode="zeros")
    exact = oracle.operator_norm(conv, (cin, n, n))
    assert exact <= 1 + 1e-9
    assert exact * (1 - 1e-9) <= lipschitz_bound(conv) <= 1 + 1e-9


def test_composed_kernel_is_the_composition(oracle):
    torch.manual_seed(0)
    block = torch.randn(3, 2, 2, 3, dtype=torch.float64)
    patch = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    x = torch.randn(1, 2, 9, 8, dtype=torch.float64)
    two_steps = nn.functional.conv2d(nn.functional.conv2d(x, block), patch, stride=2)
    one = nn.functional.conv2d(x, compose_kernels(patch, block), stride=2)
    torch.testing.assert_close(one, two_steps)


def test_aoc_stays_orthogonal_while_training_and_exports_a_plain_conv(oracle):
    torch.manual_seed(1)
    conv = make(4, 16, 4, 2, 1, 1)
    x = torch.randn(6, 4, 8, 8, dtype=torch.float64)
    optimizer = torch.optim.Adam(conv.parameters(), lr=0.05)
    for _ in range(5):
        loss = (conv(x) - 1).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    values = torch.linalg.svdvals(oracle.operator_matrix(conv, (4, 8, 8)))
    torch.testing.assert_close(values, torch.ones_like(values), rtol=0, atol=1e-8)
    plain = export(conv)
    assert type(plain) is nn.Conv2d
    torch.testing.assert_close(plain(x), conv.eval()(x), rtol=0, atol=1e-6)


def test_aoc_refuses_kernels_smaller_than_the_stride_and_dilation():
    with pytest.raises(InvalidArgumentError, match="kernel_size >= stride"):
        aoc(nn.Conv2d(2, 2, 2, stride=3))
    with pytest.raises(InvalidArgumentError, match="dilation"):
        aoc(nn.Conv2d(2, 2, 3, dilation=2))
