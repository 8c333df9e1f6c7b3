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

# phi' in closed form, for the gradients of the losses
PHI_PRIME = {
    "wasserstein": lambda x: torch.ones_like(x),
    "logistic": torch.sigmoid,
    "hinge": lambda x: (x > -1).to(x.dtype),
    "exponential": torch.exp,
    "least-squares": lambda x: 2 * (x + 1),
    "sqrt": lambda x: 1 + x / torch.sqrt(x.square() + 1),
}


def test_every_loss_has_its_closed_form_derivative():
    assert set(PHI_PRIME) == set(LOSSES)


@pytest.mark.parametrize("name", list(LOSSES))
def test_each_phi_is_convex_and_increasing_where_zhou_requires(name):
    # Zhou et al.'s conditions: phi'' >= 0 everywhere; phi' >= 0 (checked by differences);
    # the untruncated least squares of their code decreases below -1, as documented
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    phi = LOSSES[name](x)
    assert bool((phi.diff().diff() >= -1e-9).all()), "phi is not convex"
    increasing = x[1:] > -1 if name == "least-squares" else torch.ones(600, dtype=torch.bool)
    assert bool((phi.diff()[increasing] >= -1e-12).all()), "phi decreases"
    if name == "least-squares":
        assert bool((phi.diff()[x[1:] < -1] < 0).all()), "least squares is truncated"


@pytest.mark.parametrize("name", list(LOSSES))
def test_critic_loss_gradient_is_phi_prime_of_each_value(name):
    real = torch.tensor([-2.5, -0.3, 0.4, 3.0], dtype=torch.float64, requires_grad=True)
    fake = torch.tensor([-3.0, -1.5, 0.2], dtype=torch.float64, requires_grad=True)
    critic_loss(name, real, fake).backward()
    # d/d fake_i of mean phi(fake) = phi'(fake_i) / n,
    # d/d real_i of mean phi(-real) = -phi'(-real_i) / n
    torch.testing.assert_close(fake.grad, PHI_PRIME[name](fake.detach()) / 3)
    torch.testing.assert_close(real.grad, -PHI_PRIME[name](-real.detach()) / 4)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("value", [-3.0, -1.5, 0.0, 2.0])
def test_default_generator_gradient_is_minus_one_for_every_loss(name, value):
    # psi(x) = -x (Zhou et al.'s code): a rejected fake (f < -1) still gets gradient -1
    fake = torch.tensor([value], dtype=torch.float64, requires_grad=True)
    generator_loss(name, fake).backward()
    assert fake.grad.item() == -1.0


@pytest.mark.parametrize("name", list(LOSSES))
def test_other_generator_objectives_have_their_closed_form_gradients(name):
    values = torch.tensor([-3.0, -0.5, 1.0], dtype=torch.float64)
    fake = values.clone().requires_grad_(True)
    generator_loss(name, fake, "non-saturating").backward()  # psi(x) = phi(-x)
    torch.testing.assert_close(fake.grad, -PHI_PRIME[name](-values) / 3)
    fake = values.clone().requires_grad_(True)
    generator_loss(name, fake, "minimax").backward()  # psi(x) = -phi(x)
    torch.testing.assert_close(fake.grad, -PHI_PRIME[name](values) / 3)


def test_minimax_generator_saturates_where_the_issue_says():
    # the old default: no signal from a rejected fake for hinge, ~0.05 for logistic / exp
    fake = torch.tensor([-3.0], requires_grad=True)
    for name, expected in (("hinge", 0.0), ("logistic", -0.0474259), ("exponential", -0.0497871)):
        fake.grad = None
        generator_loss(name, fake, "minimax").backward()
        assert fake.grad.item() == pytest.approx(expected, abs=1e-6), name


def test_unknown_generator_objective_lists_the_choices():
    from lipkit.errors import UnknownMethodError

    with pytest.raises(UnknownMethodError, match="linear, minimax, non-saturating"):
        generator_loss("hinge", torch.zeros(2), "saturating")


def test_wasserstein_losses_are_the_kr_objective():
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -1.0])
    assert critic_loss("wasserstein", real, fake).item() == pytest.approx(-0.5 - 2.0)
    assert generator_loss("wasserstein", fake).item() == pytest.approx(0.5)
    for objective in ("non-saturating", "minimax"):  # all three agree for WGAN
        assert generator_loss("wasserstein", fake, objective).item() == pytest.approx(0.5)


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
