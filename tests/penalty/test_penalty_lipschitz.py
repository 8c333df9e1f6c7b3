"""lipkit.penalty.lipschitz: the difference-quotient penalty equals its closed form."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.penalty import difference_quotients, lipschitz_penalty


@settings(max_examples=25)
@given(dim=st.integers(1, 6), lipschitz=st.floats(0.1, 5.0), seed=st.integers(0, 2**31 - 1))
def test_linear_critic_penalty_over_any_pairs_is_the_closed_form(dim, lipschitz, seed):
    generator = torch.Generator().manual_seed(seed)
    critic = torch.nn.Linear(dim, 1).double()
    with torch.no_grad():
        critic.weight.normal_(generator=generator).mul_(2)
    w = critic.weight[0].detach()
    x1 = torch.randn(11, dim, generator=generator, dtype=torch.float64)
    x2 = torch.randn(11, dim, generator=generator, dtype=torch.float64) * 3
    quotient = ((x1 - x2) @ w).abs() / (x1 - x2).norm(dim=1)  # |w . (x1 - x2)| / ||x1 - x2||
    expected = 3.0 * ((quotient - lipschitz).clamp(min=0) ** 2).mean()
    torch.testing.assert_close(difference_quotients(critic, x1, x2).detach(), quotient)
    value = lipschitz_penalty(critic, x1, x2, lipschitz=lipschitz, weight=3.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-9, abs=1e-12)
    assert all(q <= float(w.norm()) + 1e-12 for q in quotient), "a secant beats the gradient"


def test_equal_samples_carry_no_penalty_and_no_nan():
    critic = torch.nn.Linear(2, 1)
    x = torch.randn(4, 2)
    value = lipschitz_penalty(critic, x, x.clone(), lipschitz=1e-3)
    assert value.item() == 0.0
    value.backward()
    assert torch.isfinite(critic.weight.grad).all()


def test_the_penalty_is_one_sided():
    critic = torch.nn.Linear(1, 1)
    with torch.no_grad():
        critic.weight.fill_(0.5)
    assert lipschitz_penalty(critic, torch.zeros(3, 1), torch.ones(3, 1)).item() == 0.0
