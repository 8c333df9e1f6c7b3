"""Presets: 1-Lipschitz by construction, with the last layer they were asked for."""

import pytest
import torch

from lipkit.certify import UnitRows, lipschitz_convnet, lipschitz_mlp
from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.nn import export, lipschitz_bound


@pytest.mark.parametrize("layer", ["bjorck", "spectral", "aol", "clip"])
@pytest.mark.parametrize("last", ["orthonormal", "unit-rows"])
def test_mlp_presets_are_bounded_and_their_last_layer_is_what_was_asked(layer, last, oracle):
    torch.manual_seed(0)
    model = lipschitz_mlp(12, 4, hidden=(16, 8), layer=layer, last=last)
    model(torch.rand(3, 12))
    model.eval()
    head = export(model)[-1].weight.detach().double()
    rows = head.norm(dim=1)
    torch.testing.assert_close(rows, torch.ones_like(rows), atol=1e-4, rtol=0)
    if last == "orthonormal":
        torch.testing.assert_close(head @ head.T, torch.eye(4, dtype=torch.float64), atol=1e-4,
                                   rtol=0)
    bound = lipschitz_bound(model)
    body = lipschitz_bound(model[:-1])
    assert body <= 1 + 1e-4
    x, y = torch.rand(64, 12), torch.rand(64, 12)
    assert float(oracle.lipschitz_ratios(model, x, y).max()) <= bound * (1 + 1e-5)


@pytest.mark.parametrize("layer", ["orthogonal", "aol", "spectral"])
def test_convnet_presets_are_bounded(layer, oracle):
    torch.manual_seed(0)
    model = lipschitz_convnet(1, 8, 10, "small", layer=layer)
    x = torch.rand(4, 1, 8, 8)
    assert model(x).shape == (4, 10)
    model.eval()
    bound = lipschitz_bound(model, x)
    limit = 1.0 if layer != "spectral" else 1.5  # untrained power iteration: its own bound
    assert bound <= limit + 1e-4
    y = x + 0.1 * torch.randn_like(x)
    assert float(oracle.lipschitz_ratios(model, x, y).max()) <= bound * (1 + 1e-5)


def test_unit_rows_bound_is_the_norm_of_the_normalized_weight(oracle):
    layer = torch.nn.Linear(5, 3)
    from lipkit.certify.presets import unit_rows

    unit_rows(layer)
    assert isinstance(layer.parametrizations.weight[0], UnitRows)
    assert abs(lipschitz_bound(layer) - oracle.exact_norm(layer.weight)) < 1e-6


def test_bad_preset_arguments():
    with pytest.raises(UnknownMethodError, match="bjorck"):
        lipschitz_mlp(4, 2, layer="nope")
    with pytest.raises(UnknownMethodError, match="orthonormal"):
        lipschitz_mlp(4, 2, last="nope")
    with pytest.raises(InvalidArgumentError, match="even"):
        lipschitz_mlp(4, 2, hidden=(5,))
    with pytest.raises(UnknownMethodError, match="small"):
        lipschitz_convnet(1, 8, 2, size="huge")


@pytest.mark.parametrize("layer", ["aoc", "aol", "bcop", "cayley", "soc", "sll", "cpl"])
def test_comparison_convnets_are_bounded_and_export_equal(layer, oracle):
    from lipkit.certify import comparison_convnet

    torch.manual_seed(0)
    model = comparison_convnet(1, 8, 10, "small", layer=layer)
    x = torch.rand(4, 1, 8, 8)
    model(x)  # training-mode forward: power iterations and input sizes
    model.eval()
    bound = lipschitz_bound(model, x[:1])
    limit = 1.0 if layer != "cpl" else 2.0  # CPL: the DFT bound on 8 x 8 maps is loose
    assert bound <= limit + 1e-4, bound
    y = x + 0.1 * torch.randn_like(x)
    assert float(oracle.lipschitz_ratios(model, x, y).max()) <= bound * (1 + 1e-5)
    plain = export(model)
    torch.testing.assert_close(plain(x), model(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("block", ["sll", "cpl"])
def test_liresnet_body_is_bounded_and_its_head_has_unit_rows(block, oracle):
    from lipkit.certify import liresnet

    torch.manual_seed(0)
    model = liresnet(3, 8, 10, block=block)
    x = torch.rand(4, 3, 8, 8)
    model(x)
    model.eval()
    head = export(model)[-1].weight.detach().double()
    torch.testing.assert_close(head.norm(dim=1), torch.ones(10, dtype=torch.float64),
                               atol=1e-5, rtol=0)
    body = lipschitz_bound(model[:-1], x[:1])
    assert body <= (1.0 if block == "sll" else 2.0) + 1e-4, body
    y = x + 0.1 * torch.randn_like(x)
    bound = lipschitz_bound(model, x[:1])
    assert float(oracle.lipschitz_ratios(model, x, y).max()) <= bound * (1 + 1e-5)
