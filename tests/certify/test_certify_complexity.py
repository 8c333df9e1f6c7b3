"""Spectral complexity against its closed forms."""

import pytest
import torch
from torch import nn

from lipkit.certify import spectral_complexity
from lipkit.certify.complexity import margins
from lipkit.errors import InvalidArgumentError


def test_one_layer_closed_form_is_the_row_norm_sum_of_the_distance(oracle):
    torch.manual_seed(0)
    model, reference = nn.Linear(5, 3), nn.Linear(5, 3)
    expected = float((model.weight.double() - reference.weight.double()).detach().norm(dim=1).sum())
    got = spectral_complexity(nn.Sequential(model), nn.Sequential(reference))
    assert abs(got.value - expected) < 1e-9 * expected
    assert abs(got.spectral_product - oracle.exact_norm(model.weight)) < 1e-9


def test_two_layer_closed_form_with_activation_constants(oracle):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(), nn.Linear(6, 2))
    s1, s2 = oracle.exact_norm(model[0].weight), oracle.exact_norm(model[2].weight)
    d1 = float(model[0].weight.detach().double().norm(dim=1).sum())
    d2 = float(model[2].weight.detach().double().norm(dim=1).sum())
    expected = 0.25 * s1 * s2 * ((d1 / s1) ** (2 / 3) + (d2 / s2) ** (2 / 3)) ** 1.5
    got = spectral_complexity(model)
    assert abs(got.value - expected) < 1e-9 * expected
    assert got.normalized(2.0) == got.value / 2.0


def test_convolutions_need_their_input_size_and_count_positions():
    torch.manual_seed(2)
    conv = nn.Conv2d(1, 2, 3, bias=False)  # no padding: the unrolled (2,1) norm is exact
    model = nn.Sequential(conv)
    with pytest.raises(InvalidArgumentError, match="example_input"):
        spectral_complexity(model)
    x = torch.rand(1, 1, 5, 5)
    got = spectral_complexity(model, example_input=x)
    unrolled = torch.func.jacrev(lambda v: conv(v.reshape(1, 1, 5, 5)).reshape(-1))(
        torch.zeros(25)).detach().double()
    assert abs(got.layers[0]["distance"] - float(unrolled.norm(dim=1).sum())) < 1e-6
    assert got.layers[0]["spectral_norm"] >= float(torch.linalg.matrix_norm(unrolled, 2)) - 1e-6


def test_margins():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 1.0, 0.5]])
    torch.testing.assert_close(margins(logits, torch.tensor([0, 0])), torch.tensor([1.0, -1.0]))
