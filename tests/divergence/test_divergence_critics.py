"""Critics of pairs: scores agree with the critic, certified bounds dominate observed ratios."""

import math

import pytest
import torch

from lipkit.divergence import critic_scores, joint_critic, separable_critic
from lipkit.divergence.critics import SeparableCritic
from lipkit.nn import lipschitz_bound
from lipkit.penalty import lipschitz_method


@pytest.mark.parametrize("kind", ["joint", "separable"])
def test_score_matrix_is_the_critic_on_every_pair(kind):
    torch.manual_seed(0)
    build = joint_critic if kind == "joint" else separable_critic
    critic = build(3, 2, hidden=8, method="none")
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    with torch.no_grad():
        scores = critic_scores(critic, x, y)
        for i in range(5):
            for j in range(5):
                value = critic(torch.cat([x[i], y[j]])[None])
                assert abs(float(scores[i, j]) - float(value.reshape(()))) < 1e-5


@pytest.mark.parametrize("name", ["spectral", "orthogonal", "clip"])
@pytest.mark.parametrize("lipschitz", [0.5, 3.0])
def test_separable_construction_is_certified_and_the_certificate_holds(name, lipschitz):
    torch.manual_seed(1)
    critic = separable_critic(4, 4, hidden=16, embedding=8,
                              method=lipschitz_method(name, lipschitz))
    with torch.no_grad():  # spectral normalization refreshes its estimate in forward passes
        for _ in range(30):
            critic(torch.randn(8, 8))
    bound = lipschitz_bound(critic)
    if name != "clip":  # clip's guarantee is c sqrt(mn), below the target here
        assert bound <= lipschitz * 1.01
    # observed: difference quotients over random and nearby pairs, and gradient norms
    z1 = 3 * torch.randn(2000, 8)
    z2 = torch.cat([3 * torch.randn(1000, 8), z1[1000:] + 1e-2 * torch.randn(1000, 8)])
    with torch.no_grad():
        ratios = (critic(z1) - critic(z2)).abs() / (z1 - z2).norm(dim=1)
    z = z1.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad(critic(z).sum(), z)
    observed = max(float(ratios.max()), float(gradient.norm(dim=1).max()))
    assert 0 < observed <= bound * (1 + 1e-4), (observed, bound)


def test_separable_bound_is_radius_times_the_norm_of_the_two_constants():
    g, h = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    with torch.no_grad():
        g.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
        h.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 0.0], [0.0, 0.0]]))
    assert lipschitz_bound(SeparableCritic(g, h, 2, radius=2.0)) == pytest.approx(10.0)
    # a bilinear form on unbounded embeddings has no finite constant
    assert lipschitz_bound(SeparableCritic(g, h, 2)) == math.inf
