"""Constants for models a user brings: proven upper bounds only, and the record says whence."""

import math
import warnings

import pytest
import torch
from torch import nn

from lipkit.certify import certified_accuracy, logit_constants
from lipkit.errors import InvalidArgumentError


def _relu_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 4)).eval()


def _onnx(model, path):
    with warnings.catch_warnings():  # the legacy exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 6),), str(path), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return path


def test_onnx_constants_come_from_a_proven_upper_bound(tmp_path, oracle):
    model = _relu_model()
    constants = logit_constants(_onnx(model, tmp_path / "m.onnx"))
    assert constants.source.startswith("lipkit.estimate:")
    kinds = {kind for _, kind, _, _ in constants.details["tried"]}
    assert kinds <= {"upper", "exact"}
    # sound: above the exact norm of the Jacobian at random points
    x = torch.randn(64, 6, requires_grad=True)
    jacobians = torch.func.vmap(torch.func.jacrev(model))(x).detach()
    assert float(torch.linalg.matrix_norm(jacobians, ord=2).max()) <= constants.whole
    # the body bound times ||w_y - w_j||, with the body's bound at least ||W_1||
    weight = model[2].weight.detach().double()
    body = constants.details["body"]
    assert body >= oracle.exact_norm(model[0].weight) * (1 - 1e-9)
    expected = torch.minimum(body * torch.cdist(weight, weight),
                             torch.full((4, 4), math.sqrt(2) * constants.whole,
                                        dtype=torch.float64))
    assert float((constants.pairwise - expected).max()) <= 1e-9


def test_the_onnx_model_certifies_soundly(tmp_path):
    model = _relu_model()
    from lipkit.estimate import load_network

    network = load_network(_onnx(model, tmp_path / "m.onnx"))
    x = torch.randn(40, 6)
    labels = model(x).argmax(1)
    result = certified_accuracy(network, x, labels, [0.0, 0.05], steps=10)
    assert result.clean_accuracy == 1.0 and result.broken == {"2": 0, "inf": 0}


def test_an_estimate_is_never_used(tmp_path):
    with pytest.raises(InvalidArgumentError, match="lower bound; a certificate needs"):
        logit_constants(_onnx(_relu_model(), tmp_path / "m.onnx"), methods=["lower-jacobian"])


def test_torch_models_without_a_known_bound_are_estimated():
    class Custom(nn.Module):  # lipschitz_bound cannot read a custom forward
        def __init__(self):
            super().__init__()
            self.first, self.second = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.second(torch.relu(self.first(x)))

    torch.manual_seed(0)
    constants = logit_constants(Custom())
    assert constants.source.startswith("lipkit.estimate:")
