"""lipkit.penalty.alpha: the W^alpha dual's coefficient and the batch Lipschitz ratio."""

import pytest
import torch
from scipy.optimize import minimize_scalar

from lipkit.errors import InvalidArgumentError
from lipkit.penalty import alpha_coefficient, alpha_penalty, batch_lipschitz_ratio


@pytest.mark.parametrize("alpha", [1.5, 2.0, 3.0])
@pytest.mark.parametrize("wasserstein", [0.3, 1.0, 2.5])
def test_the_dual_over_scaled_critics_attains_w_to_the_alpha(alpha, wasserstein):
    # a critic k f_1 with f_1 the 1-Lipschitz potential: sup_k k W - c k^(alpha/(alpha-1))
    coefficient = alpha_coefficient(alpha)
    result = minimize_scalar(lambda k: -(k * wasserstein
                                         - coefficient * k ** (alpha / (alpha - 1))),
                             bounds=(0, 100), method="bounded", options={"xatol": 1e-10})
    assert -result.fun == pytest.approx(wasserstein**alpha, rel=1e-6)
    assert result.x == pytest.approx(alpha * wasserstein ** (alpha - 1), rel=1e-4)


def test_batch_ratio_of_a_linear_critic_is_its_norm_and_its_gradient_flows():
    critic = torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[1.0, -2.0, 2.0]]))
    ratio = batch_lipschitz_ratio(critic, torch.randn(8, 3, dtype=torch.float64),
                                  torch.randn(8, 3, dtype=torch.float64))
    assert ratio.item() == pytest.approx(3.0, rel=1e-9)
    ratio.backward()  # through the maximizing pair (x, x + r_adv), r_adv along w
    torch.testing.assert_close(critic.weight.grad, critic.weight.detach() / 3.0)


def test_batch_ratio_is_a_lower_bound_of_the_lipschitz_constant():
    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    ratio = batch_lipschitz_ratio(critic, torch.randn(32, 2), torch.randn(32, 2))
    grid = torch.randn(20000, 2) * 3
    assert ratio.item() <= 1.0001 * _largest_gradient_upper(critic)
    assert ratio.item() >= 0.5 * _largest_gradient_norm(critic, grid)


def _largest_gradient_norm(critic, x):
    x = x.requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(x).sum(), x)
    return float(gradient.norm(dim=1).max())


def _largest_gradient_upper(critic):
    first, last = critic[0].weight.detach(), critic[2].weight.detach()
    return float(torch.linalg.matrix_norm(first, 2) * torch.linalg.matrix_norm(last, 2))


def test_alpha_penalty_closed_form_on_a_linear_critic():
    critic = torch.nn.Linear(1, 1).double()
    with torch.no_grad():
        critic.weight.fill_(3.0)
    value = alpha_penalty(critic, torch.zeros(5, 1, dtype=torch.float64),
                          torch.ones(5, 1, dtype=torch.float64), alpha=3.0, weight=2.0)
    assert value.item() == pytest.approx(2.0 * alpha_coefficient(3.0) * 3.0**1.5, rel=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.5, float("inf"), float("nan")])
def test_alpha_must_exceed_one(alpha):
    with pytest.raises(InvalidArgumentError, match="alpha"):
        alpha_coefficient(alpha)
