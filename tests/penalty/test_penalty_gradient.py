"""lipkit.penalty.gradient: closed forms of the gradient penalty on linear and quadratic critics."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.errors import InvalidArgumentError
from lipkit.penalty import gradient_norms, gradient_penalty, interpolates


def _linear(weight: torch.Tensor) -> torch.nn.Linear:
    critic = torch.nn.Linear(weight.numel(), 1).to(weight.dtype)
    with torch.no_grad():
        critic.weight.copy_(weight.reshape(1, -1))
    return critic


@settings(max_examples=25)
@given(dim=st.integers(1, 6), lipschitz=st.floats(0.1, 5.0), weight=st.floats(0.1, 20.0),
       seed=st.integers(0, 2**31 - 1), one_sided=st.booleans())
def test_linear_critic_penalty_is_the_closed_form(dim, lipschitz, weight, seed, one_sided):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=generator, dtype=torch.float64) * 2
    real = torch.randn(7, dim, generator=generator, dtype=torch.float64)
    fake = torch.randn(7, dim, generator=generator, dtype=torch.float64) + 3
    excess = float(w.norm()) - lipschitz
    expected = weight * (max(excess, 0.0) if one_sided else excess) ** 2
    value = gradient_penalty(_linear(w), real, fake, lipschitz=lipschitz, weight=weight,
                             one_sided=one_sided)
    assert value.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_penalty_gradient_in_the_weights_is_the_closed_form(dtype):
    # d/dw (||w|| - lambda)^2 = 2 (||w|| - lambda) w / ||w||
    w = torch.tensor([3.0, -4.0], dtype=dtype)
    critic = _linear(w)
    gradient_penalty(critic, torch.randn(5, 2, dtype=dtype), torch.randn(5, 2, dtype=dtype),
                     lipschitz=2.0, weight=1.0).backward()
    torch.testing.assert_close(critic.weight.grad[0], 2 * (5.0 - 2.0) * w / 5.0)


def test_quadratic_critic_penalizes_the_norms_of_the_interpolates():
    # f(x) = ||x||^2 / 2 has gradient x: the penalty is the mean of (||x_t|| - lambda)^2 at
    # exactly the interpolates rho draws with the same random source
    real, fake = torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64)
    points = interpolates(real, fake, torch.Generator().manual_seed(5))
    expected = ((points.norm(dim=1) - 0.5) ** 2).mean()
    value = gradient_penalty(lambda x: 0.5 * (x**2).sum(1), real, fake, lipschitz=0.5,
                             weight=1.0, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(value, expected)


def test_interpolates_lie_on_the_segments_between_pairs():
    real, fake = torch.randn(50, 4, dtype=torch.float64), torch.randn(50, 4, dtype=torch.float64)
    points = interpolates(real, fake, torch.Generator().manual_seed(0))
    t = ((points - fake) * (real - fake)).sum(1) / ((real - fake) ** 2).sum(1)
    torch.testing.assert_close(points, fake + t[:, None] * (real - fake))
    assert bool(((t >= 0) & (t <= 1)).all()), t


def test_gradient_norms_of_a_linear_map_equal_the_weight_norm():
    norms = gradient_norms(_linear(torch.tensor([1.0, 2.0, 2.0])), torch.randn(6, 3))
    torch.testing.assert_close(norms, torch.full((6,), 3.0))


@pytest.mark.parametrize("real, fake, message", [
    (torch.zeros(4, 2), torch.zeros(4, 3), "differ"),
    (torch.zeros(4, 2), torch.full((4, 2), float("nan")), "NaN"),
    (torch.zeros(4), torch.zeros(4), "batch"),
    (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2), "floating"),
])
def test_bad_batches_raise_one_line_errors(real, fake, message):
    with pytest.raises(InvalidArgumentError, match=message):
        gradient_penalty(torch.nn.Linear(2, 1), real, fake)


@pytest.mark.parametrize("lipschitz, weight", [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)])
def test_non_positive_constants_are_rejected(lipschitz, weight):
    with pytest.raises(InvalidArgumentError):
        gradient_penalty(torch.nn.Linear(2, 1), torch.zeros(3, 2), torch.ones(3, 2),
                         lipschitz=lipschitz, weight=weight)


def test_a_critic_with_several_outputs_is_rejected():
    with pytest.raises(InvalidArgumentError, match="one value per sample"):
        gradient_penalty(torch.nn.Linear(2, 3), torch.zeros(3, 2), torch.ones(3, 2))


def test_max_gradient_penalty_is_the_weighted_square_of_the_largest_norm():
    from lipkit.penalty import max_gradient_penalty

    # f(x) = x1^2 + x2 (gradient (2 x1, 1)); interpolates at t = 1 - i/n of fixed pairs
    def critic(x):
        return x[:, 0] ** 2 + x[:, 1]

    real = torch.tensor([[1.0, 0.0], [3.0, 0.0], [-2.0, 5.0]], dtype=torch.float64)
    fake = torch.zeros_like(real)
    generator = torch.Generator().manual_seed(3)
    t = torch.rand(3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    points = t[:, None] * real
    expected = 0.1 * max(float(4 * p[0] ** 2 + 1) for p in points)
    value = max_gradient_penalty(critic, real, fake, generator=generator)
    assert value.item() == pytest.approx(expected, rel=1e-12)
