"""lipkit.penalty.adversarial: r_adv follows the top eigenvector; ALP's closed form."""

import pytest
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.penalty import (
    adversarial_direction,
    adversarial_lipschitz_penalty,
    adversarial_perturbation,
)


def _quadratic(eigenvalues, seed):
    """``f(x) = (x - c)^T A (x - c) / 2`` with a random rotation; returns f, A, c."""
    generator = torch.Generator().manual_seed(seed)
    dim = len(eigenvalues)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator,
                                              dtype=torch.float64))
    matrix = rotation @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ rotation.T
    center = torch.randn(dim, generator=generator, dtype=torch.float64)

    def critic(x):
        shifted = x - center
        return 0.5 * ((shifted @ matrix) * shifted).sum(1)

    return critic, matrix, center


@pytest.mark.parametrize("hessian", ["finite-difference", "exact"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_r_adv_aligns_with_the_top_eigenvector_of_a_quadratic(hessian, seed):
    critic, matrix, center = _quadratic([4.0, 2.0, 1.0, -0.5, 0.25], seed)
    top = torch.linalg.eigh(matrix).eigenvectors[:, -1]
    x = center.repeat(6, 1)  # at the minimum: the second-order argument is exact
    direction = adversarial_direction(critic, x, xi=0.5, n_power_iterations=40, hessian=hessian,
                                      generator=torch.Generator().manual_seed(seed))
    cosines = (direction @ top).abs()
    assert bool((cosines > 0.999).all()), cosines
    torch.testing.assert_close(direction.norm(dim=1), torch.ones(6, dtype=torch.float64))


def test_one_power_iteration_improves_on_the_random_start():
    critic, matrix, center = _quadratic([10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 3)
    top = torch.linalg.eigh(matrix).eigenvectors[:, -1]
    x = center.repeat(200, 1)
    start = adversarial_direction(critic, x, n_power_iterations=1,
                                  generator=torch.Generator().manual_seed(0))
    # the same start direction, no iteration: a random unit vector
    random = torch.randn(x.shape, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)
    random = random / random.norm(dim=1, keepdim=True)
    assert (start @ top).abs().mean() > (random @ top).abs().mean() + 0.3


def test_r_adv_magnitudes_lie_in_the_epsilon_range():
    critic = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    r = adversarial_perturbation(critic, torch.randn(100, 3), epsilon=(0.5, 2.0),
                                 generator=torch.Generator().manual_seed(0))
    norms = r.norm(dim=1)
    assert bool(((norms >= 0.5 - 1e-6) & (norms <= 2.0 + 1e-6)).all()), norms
    assert norms.max() - norms.min() > 1.0, "magnitudes should be spread over the range"


@pytest.mark.parametrize("norm, lipschitz", [(5.0, 1.0), (5.0, 2.5), (0.5, 1.0)])
def test_linear_critic_penalty_is_the_one_sided_closed_form(norm, lipschitz, dtype):
    # for f = w . x every direction's gradient is w, so r_adv points along +-w and the
    # ratio is ||w||: ALP = weight * max(||w|| - lambda, 0)^2
    critic = torch.nn.Linear(2, 1).to(dtype)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.8]], dtype=dtype) * norm)
    value = adversarial_lipschitz_penalty(critic, torch.randn(10, 2, dtype=dtype),
                                          torch.randn(10, 2, dtype=dtype), lipschitz=lipschitz,
                                          weight=2.0)
    expected = 2.0 * max(norm - lipschitz, 0.0) ** 2
    assert value.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_exact_products_of_a_piecewise_linear_critic_keep_the_start_direction():
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    x = torch.randn(5, 2)
    exact = adversarial_direction(critic, x, hessian="exact",
                                  generator=torch.Generator().manual_seed(1))
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(exact, start / start.norm(dim=1, keepdim=True))


def test_clamp_keeps_perturbed_samples_in_the_box_and_the_penalty_finite():
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    value = adversarial_lipschitz_penalty(critic, torch.rand(6, 2), torch.rand(6, 2),
                                          clamp=(0.0, 1.0))
    value.backward()
    assert torch.isfinite(value)
    assert all(torch.isfinite(p.grad).all() for p in critic.parameters())


@pytest.mark.parametrize("options, message", [
    ({"hessian": "newton"}, "choose from"),
    ({"epsilon": (2.0, 1.0)}, "eps_max"),
    ({"epsilon": 3.0}, "pair"),
    ({"xi": 0.0}, "xi"),
    ({"n_power_iterations": 0}, "n_power_iterations"),
])
def test_bad_options_raise(options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        adversarial_lipschitz_penalty(torch.nn.Linear(2, 1), torch.zeros(3, 2),
                                      torch.ones(3, 2), **options)


def test_penalty_is_the_mean_squared_excess_ratio_over_alps_pairs():
    from lipkit.penalty import adversarial_pairs

    torch.manual_seed(0)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    real, fake = torch.randn(7, 2), torch.randn(7, 2) + 1
    samples, perturbed = adversarial_pairs(critic, real, fake, xi=0.5, epsilon=(0.1, 1.0),
                                           generator=torch.Generator().manual_seed(2))
    ratio = ((critic(samples) - critic(perturbed)).abs().flatten()
             / (samples - perturbed).norm(dim=1))
    expected = 3.0 * ((ratio - 0.01).clamp(min=0) ** 2).mean()
    value = adversarial_lipschitz_penalty(critic, real, fake, lipschitz=0.01, weight=3.0,
                                          xi=0.5, epsilon=(0.1, 1.0),
                                          generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(value, expected)
    assert bool((ratio > 0.01).any()), "the check should see a violation"


def test_finite_difference_step_follows_the_gradient_at_the_distant_point_not_h_d():
    # f(x) = x1^2 + 3 x2: grad f = (2 x1, 3), H = diag(2, 0). One finite-difference power
    # iteration gives sign(f(x + xi d) - f(x)) grad f(x + xi d) / norm (module docstring);
    # the exact option gives H d / norm = e_1 (up to sign)
    def critic(x):
        return x[:, 0] ** 2 + 3 * x[:, 1]

    x = torch.tensor([[0.5, -1.0], [2.0, 0.3]], dtype=torch.float64)
    xi = 10.0
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    start = start / start.norm(dim=1, keepdim=True)
    far = x + xi * start
    gradient = torch.stack([2 * far[:, 0], torch.full_like(far[:, 0], 3.0)], dim=1)
    sign = torch.sign(critic(far) - critic(x))[:, None]
    expected = sign * gradient / gradient.norm(dim=1, keepdim=True)
    found = adversarial_direction(critic, x, xi=xi, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(found, expected)
    exact = adversarial_direction(critic, x, xi=xi, hessian="exact",
                                  generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(exact.abs(), torch.tensor([[1.0, 0.0], [1.0, 0.0]],
                                                         dtype=torch.float64))
