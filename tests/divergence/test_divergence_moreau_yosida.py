"""D_lambda, the Moreau-Yosida regularized KL: bounds that must hold on Gaussians.

Soundness argument: for ANY critic with ||f||_L <= lambda, the population DV objective is at
most D_lambda <= min(KL, lambda W1). A trained critic's estimate is noisy, so the tests
evaluate the objective of the trained (certified, spectral) critic EXACTLY, by quadrature
on a fine 1-D grid, and compare it with the closed forms: it may never exceed them (a real
bound, up to quadrature error 1e-6), and training must bring it close to D_lambda where that
is known in closed form (equal variances).
"""

import pytest
import torch

from lipkit.divergence import (
    donsker_varadhan_1d,
    evaluate_divergence,
    gaussian_kl,
    gaussian_shift_moreau_yosida_kl,
    gaussian_wasserstein_1d,
    train_divergence,
)
from lipkit.nn import lipschitz_bound


def _trained(mean, std, lipschitz):
    def sample_p(n, generator):
        return mean + std * torch.randn(n, 1, generator=generator)

    def sample_q(n, generator):
        return torch.randn(n, 1, generator=generator)

    return train_divergence("d-lambda", sample_p, sample_q, "spectral",
                            lipschitz_constant=lipschitz, hidden=32, steps=250,
                            batch_size=256, lr=3e-3, seed=0)


def test_closed_form_is_the_sup_over_linear_critics_and_has_the_properties():
    # the dual over f = a x with |a| <= lambda, in closed form E_nu e^{ax} = e^{a^2/2},
    # is the closed form; and it is non-decreasing, <= KL, <= lambda W1, = KL for large lambda
    distance = 2.0
    slopes = torch.linspace(-6, 6, 120_001, dtype=torch.float64)
    previous = 0.0
    for lipschitz in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 6.0):
        feasible = slopes[slopes.abs() <= lipschitz]
        linear = float((feasible * distance - feasible**2 / 2).max())
        closed = gaussian_shift_moreau_yosida_kl(distance, lipschitz)
        assert abs(linear - closed) < 1e-8
        assert previous <= closed <= gaussian_kl([distance], 1.0) + 1e-12
        assert closed <= lipschitz * gaussian_wasserstein_1d(distance, 1.0) + 1e-12
        previous = closed
    assert previous == gaussian_kl([distance], 1.0)


@pytest.mark.parametrize(("slope", "mean", "std"),
                         [(1.0, 2.0, 1.0), (-0.7, 1.0, 2.0), (3.0, 0.5, 0.5)])
def test_quadrature_objective_of_linear_critics_is_exact(slope, mean, std):
    # the oracle of the next tests, checked against E_mu ax = a m and E_nu e^{ax} = e^{a^2/2}
    critic = torch.nn.Linear(1, 1)
    with torch.no_grad():
        critic.weight.fill_(slope)
        critic.bias.fill_(0.3)
    exact = slope * mean - slope**2 / 2
    assert abs(donsker_varadhan_1d(critic, mean, std) - exact) < 1e-6


@pytest.mark.parametrize("lipschitz", [0.5, 1.0, 2.0])
def test_trained_d_lambda_is_at_most_the_closed_form_and_close_to_it(lipschitz):
    result = _trained(2.0, 1.0, lipschitz)
    certified = lipschitz_bound(result.critic)
    assert certified <= lipschitz * 1.01, "spectral normalization missed its target"
    value = donsker_varadhan_1d(result.critic, 2.0, 1.0)
    # a bound that must hold for any certified critic, whatever the training did
    assert value <= gaussian_shift_moreau_yosida_kl(2.0, certified) + 1e-6
    # the trainer finds the sup (tolerance: 0.05 nats)
    assert value >= gaussian_shift_moreau_yosida_kl(2.0, lipschitz) - 0.05
    # the evaluation on fresh samples agrees with the quadrature to sampling error
    generator = torch.Generator().manual_seed(5)
    p = 2.0 + torch.randn(20_000, 1, generator=generator)
    q = torch.randn(20_000, 1, generator=generator)
    sampled = evaluate_divergence("d-lambda", result.critic, result.method, p, q)
    assert abs(sampled - value) < 0.1


def test_unequal_variances_d_lambda_increases_and_stays_below_kl_and_lambda_w1():
    # N(1, 4) vs N(0, 1): the log ratio is quadratic, not Lipschitz, so D_lambda < KL
    kl, w1 = gaussian_kl([1.0], 2.0), gaussian_wasserstein_1d(1.0, 2.0)
    values = []
    for lipschitz in (0.5, 1.0, 2.0):
        result = _trained(1.0, 2.0, lipschitz)
        certified = lipschitz_bound(result.critic)
        value = donsker_varadhan_1d(result.critic, 1.0, 2.0)
        assert value <= kl + 1e-6 and value <= certified * w1 + 1e-6
        values.append(value)
    # gaps between consecutive lambdas are > 0.25 nats here (0.46, 0.74, 1.09 measured)
    assert values[0] < values[1] < values[2], values
