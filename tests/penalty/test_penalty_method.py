"""lipkit.penalty.method: the selector of a critic's Lipschitz method."""

import pytest
import torch

from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.nn import MaxMin, lipschitz_bound
from lipkit.penalty import METHODS, critic_mlp, lipschitz_method


def test_unknown_method_lists_the_choices():
    with pytest.raises(UnknownMethodError) as error:
        lipschitz_method("gradient")
    assert "choose from" in str(error.value)
    assert all(name in str(error.value) for name in METHODS)


@pytest.mark.parametrize("name", ["clip", "spectral", "orthogonal"])
@pytest.mark.parametrize("lipschitz", [0.5, 1.0, 3.0])
def test_constructions_guarantee_the_target_and_add_no_penalty(name, lipschitz):
    torch.manual_seed(0)
    method = lipschitz_method(name, lipschitz=lipschitz)
    critic = critic_mlp(2, hidden=8, depth=2, method=method)
    assert method.construction
    assert lipschitz_bound(critic) <= lipschitz * (1 + 1e-5)
    assert any(isinstance(m, MaxMin) for m in critic) == (name == "orthogonal")
    penalty = method.penalty(critic, torch.randn(4, 2), torch.randn(4, 2))
    assert penalty.item() == 0.0 and penalty.ndim == 0


def test_clip_value_option_is_the_papers_box():
    critic = critic_mlp(2, hidden=8, depth=1, method=lipschitz_method("clip", clip_value=0.01))
    assert float(critic[0].weight.detach().abs().max()) <= 0.01
    assert lipschitz_bound(critic) <= 0.01 * 4 * 0.01 * 8**0.5 + 1e-9


@pytest.mark.parametrize("name, default", [("gp", 10.0), ("gp-one-sided", 10.0),
                                           ("lp", 10.0), ("alp", 10.0),
                                           ("unconstrained-alpha", 1.0), ("max-gp", 0.1)])
def test_penalty_methods_default_to_the_papers_weight(name, default):
    method = lipschitz_method(name)
    assert method.weight == default and not method.construction
    critic = critic_mlp(2, hidden=8, method=method)
    value = method.penalty(critic, torch.randn(4, 2), torch.randn(4, 2))
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value)


def test_penalty_through_the_selector_equals_the_function():
    from lipkit.penalty import gradient_penalty

    critic = torch.nn.Linear(2, 1)
    real, fake = torch.randn(5, 2), torch.randn(5, 2)
    method = lipschitz_method("gp-one-sided", lipschitz=0.1, weight=3.0)
    torch.testing.assert_close(
        method.penalty(critic, real, fake),
        gradient_penalty(critic, real, fake, lipschitz=0.1, weight=3.0, one_sided=True))


def test_wasserstein_of_a_linear_critic_is_the_mean_gap_over_lambda():
    critic = torch.nn.Linear(1, 1)
    with torch.no_grad():
        critic.weight.fill_(2.0)
    real, fake = torch.full((4, 1), 3.0), torch.zeros(4, 1)
    assert lipschitz_method("gp", lipschitz=2.0).wasserstein(critic, real, fake).item() == 3.0
    # unconstrained-alpha divides by the batch ratio, here exactly 2
    estimate = lipschitz_method("unconstrained-alpha").wasserstein(critic, real, fake)
    assert estimate.item() == pytest.approx(3.0)


@pytest.mark.parametrize("call, message", [
    (lambda: lipschitz_method("spectral", weight=1.0), "takes no weight"),
    (lambda: lipschitz_method("alp", xii=3), "no option xii"),
    (lambda: lipschitz_method("gp", lipschitz=0), "lipschitz"),
    (lambda: lipschitz_method("gp", weight=-1), "weight"),
    (lambda: lipschitz_method("unconstrained-alpha", lipschitz=2.0), "no target"),
    (lambda: critic_mlp(2, hidden=7, method="orthogonal"), "even"),
    (lambda: critic_mlp(0, hidden=8), ">= 1"),
])
def test_bad_arguments_raise(call, message):
    with pytest.raises(InvalidArgumentError, match=message):
        call()


@pytest.mark.parametrize("name", ["gp", "alp", "unconstrained-alpha", "lp"])
def test_a_seeded_generator_makes_the_penalty_reproducible(name):
    torch.manual_seed(0)
    method = lipschitz_method(name)
    critic = critic_mlp(2, hidden=8, method=method)
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    values = [method.penalty(critic, real, fake, torch.Generator().manual_seed(3)).item()
              for _ in range(2)]
    assert values[0] == values[1]


def test_max_gp_has_no_target_and_estimates_w1_with_the_critics_own_scale():
    with pytest.raises(InvalidArgumentError, match="no target constant"):
        lipschitz_method("max-gp", lipschitz=2.0)
    method = lipschitz_method("max-gp")
    critic = torch.nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    real, fake = torch.randn(6, 2), torch.randn(6, 2)
    gap = (critic(real).mean() - critic(fake).mean()).item()
    with torch.no_grad():  # as the GAN evaluation calls it
        assert method.wasserstein(critic, real, fake).item() == pytest.approx(gap / 5, rel=1e-5)
    assert method.penalty(critic, real, fake).item() == pytest.approx(0.1 * 25, rel=1e-5)
