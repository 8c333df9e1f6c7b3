"""Importing torch models: the description computes the same function, errors name the node."""

import pytest
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError, UnsupportedModuleError
from lipkit.estimate import load_network
from lipkit.nn import L2NormPool2d, MaxMin, ScaledAvgPool2d, make_lipschitz


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(6)
        self.inner = nn.Conv2d(6, 6, 3, padding=1, dilation=1, groups=2)
        self.pool = nn.AvgPool2d(2)
        self.head = nn.Linear(6 * 2 * 2, 4)

    def forward(self, x):
        x = (x - 0.5) / 0.25
        h = nn.functional.leaky_relu(self.norm(self.conv(x)), 0.2)
        h = h + torch.tanh(self.inner(h)) * 0.5
        h = self.pool(h)
        return self.head(h.reshape(h.size(0), -1))


def _zoo():
    torch.manual_seed(0)
    residual = Residual()
    residual.norm.running_mean.uniform_(-1, 1)
    residual.norm.running_var.uniform_(0.5, 2.0)
    constrained = nn.Sequential(nn.Linear(6, 16), MaxMin(), nn.Linear(16, 16), nn.ReLU(),
                                nn.Linear(16, 3))
    make_lipschitz(constrained, "bjorck")
    convnet = nn.Sequential(nn.Conv1d(2, 4, 3, padding="same"), nn.ELU(), nn.Flatten(),
                            nn.Dropout(0.3), nn.Linear(4 * 9, 2), nn.Sigmoid())
    scaled = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Softplus(), ScaledAvgPool2d(2),
                           nn.Flatten(), nn.Linear(8, 1))
    from lipkit.nn import Residual as ConvexResidual

    blended = nn.Sequential(nn.Linear(5, 5), ConvexResidual(nn.Sequential(nn.Linear(5, 5),
                                                                          nn.Tanh()), t=0.3))
    return [(residual, (3, 8, 8)), (constrained, None), (convnet, (2, 9)), (scaled, (1, 4, 4)),
            (blended, (5,))]


@pytest.mark.parametrize("index", range(5))
def test_imported_network_computes_the_same_function(index):
    model, shape = _zoo()[index]
    model.eval()
    network = load_network(model, shape)
    x = torch.randn(7, *(shape or (6,)))
    with torch.no_grad():
        expected = model(x).double()
    torch.testing.assert_close(network(x), expected, atol=1e-5, rtol=1e-5)
    assert model.training is False  # import leaves the mode as it was (eval here)


def test_import_restores_training_mode_and_names_unsupported_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    model.train()
    with pytest.raises(UnsupportedModuleError, match=r"'1' of type LayerNorm"):
        load_network(model)
    assert model.training is True
    with pytest.raises(UnsupportedModuleError, match=r"'1' of type LogSoftmax: .* the logits"):
        load_network(nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1)))
    pooled = nn.Sequential(nn.Conv2d(1, 1, 3), L2NormPool2d(2))
    with pytest.raises(UnsupportedModuleError, match=r"L2NormPool2d"):
        load_network(pooled, (1, 6, 6))


def test_bad_shapes_and_missing_input_shape_are_clear_errors():
    with pytest.raises(InvalidArgumentError, match="input_shape"):
        load_network(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(UnsupportedModuleError, match="expects 3 channels"):
        load_network(nn.Sequential(nn.Conv2d(3, 2, 3)), (1, 5, 5))
    with pytest.raises(UnsupportedModuleError, match="two tensors"):
        class Product(nn.Module):
            def forward(self, x):
                return x * x

        load_network(Product(), (3,))
