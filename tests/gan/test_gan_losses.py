"""lipkit.gan.losses and metrics: the losses' shapes, exact W1 and the critic's lower bound."""

import pytest
import torch

from lipkit.gan import (
    LOSSES,
    critic_lipschitz_lower,
    critic_loss,
    exact_wasserstein,
    generator_loss,
)
from lipkit.nn import lipschitz_bound, make_lipschitz


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_phi_is_increasing_and_convex_and_the_losses_use_it(name):
    # Zhou et al.'s conditions on phi: phi' >= 0, phi'' >= 0 (checked by differences)
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    phi = LOSSES[name](x)
    assert bool((phi.diff() >= -1e-12).all()), "phi decreases"
    assert bool((phi.diff().diff() >= -1e-9).all()), "phi is not convex"
    real, fake = x[::7], x[3::11]
    torch.testing.assert_close(critic_loss(name, real, fake),
                               LOSSES[name](fake).mean() + LOSSES[name](-real).mean())
    torch.testing.assert_close(generator_loss(name, fake), -LOSSES[name](fake).mean())


def test_wasserstein_losses_are_the_kr_objective():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -1.0])
    assert critic_loss("wasserstein", real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_loss("wasserstein", fake).item() == pytest.approx(0.5)


def test_logistic_loss_is_the_original_gans_cross_entropy():
    real, fake = torch.tensor([0.3]), torch.tensor([-0.7])
    expected = -torch.log(torch.sigmoid(real)) - torch.log(1 - torch.sigmoid(fake))
    torch.testing.assert_close(critic_loss("logistic", real, fake), expected[0])


def test_exact_wasserstein_in_one_dimension_is_the_sorted_matching():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 1, generator=generator, dtype=torch.float64)
    y = torch.randn(200, 1, generator=generator, dtype=torch.float64) * 2 + 1
    expected = (x.sort(0).values - y.sort(0).values).abs().mean().item()
    assert exact_wasserstein(x, y) == pytest.approx(expected, rel=1e-9)


def test_critic_lower_bound_lies_below_the_guaranteed_bound():
    torch.manual_seed(0)
    critic = make_lipschitz(torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(),
                                                torch.nn.Linear(16, 1)), "spectral", 2.0)
    lower = critic_lipschitz_lower(critic, torch.randn(500, 2))
    assert 0 < lower <= lipschitz_bound(critic) * (1 + 1e-5)
    linear = torch.nn.Linear(3, 1)
    assert critic_lipschitz_lower(linear, torch.randn(4, 3)) == pytest.approx(
        float(linear.weight.detach().norm()), rel=1e-6)
