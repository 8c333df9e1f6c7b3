"""A tiny certifiably trained digits classifier shared by the certify tests."""

import pytest
import torch

from lipkit.certify import TrainingConfig, lipschitz_mlp, train_certified
from lipkit.data import load_digits


@pytest.fixture(scope="session")
def digits():
    return load_digits(test_fraction=0.2, seed=0)


@pytest.fixture(scope="session")
def trained(digits):
    """A 64-32-10 Björck + MaxMin MLP after 6 epochs of margin cross-entropy."""
    torch.manual_seed(0)
    model = lipschitz_mlp(64, 10, hidden=(32,), layer="bjorck")
    train_certified(model, digits.x_train, digits.y_train,
                    TrainingConfig(epochs=6, loss_options={"offset": 1.0, "temperature": 0.25}))
    return model.eval()
