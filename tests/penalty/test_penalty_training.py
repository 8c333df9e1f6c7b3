"""Critics trained with each Lipschitz method estimate W1 between two 2-D Gaussians.

The oracle is the exact W1 between the two sample sets (POT's network simplex). By the
Kantorovich-Rubinstein duality, ``(E f(real) - E f(fake)) / lambda <= W1`` for EVERY
``lambda``-Lipschitz ``f`` on these empirical measures, with equality at the optimal critic:
construction methods must stay below the exact value, and approach it when trained.
Penalties only push ``||f||_L`` towards ``lambda`` softly, so they may overshoot a little.
"""

import ot
import pytest
import torch

from lipkit.penalty import critic_mlp, lipschitz_method

# the paper defaults of ALP's search suit images in [-1, 1]^3072; these samples have unit scale
SEARCH = {"epsilon": (0.05, 1.0), "xi": 1.0}
# method -> (options, lowest and highest estimate / exact W1 accepted)
CASES = {
    "gp": ({"weight": 100.0}, 0.9, 1.1),
    "gp-one-sided": ({"weight": 100.0}, 0.9, 1.1),
    "lp": ({"weight": 100.0}, 0.9, 1.1),
    "alp": ({"weight": 100.0, **SEARCH}, 0.9, 1.1),
    "unconstrained-alpha": (SEARCH, 0.9, 1.1),
    "spectral": ({}, 0.9, 1.0),
    "orthogonal": ({}, 0.9, 1.0),
    # clipping is sound but leaves the critic far flatter than its bound (the weights the
    # box stops at get no gradient): only the bound is asserted, and that it learned
    "clip": ({}, 0.01, 1.0),
}


@pytest.fixture(scope="module")
def gaussians():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(256, 2, generator=generator)
    fake = torch.randn(256, 2, generator=generator) * 0.5 + torch.tensor([2.0, 0.0])
    uniform = torch.full((256,), 1 / 256, dtype=torch.float64)
    exact = float(ot.emd2(uniform, uniform, torch.cdist(real.double(), fake.double())))
    return real, fake, exact


@pytest.mark.parametrize("name", list(CASES))
def test_trained_critic_estimates_w1(name, gaussians):
    real, fake, exact = gaussians
    options, low, high = CASES[name]
    torch.manual_seed(0)
    method = lipschitz_method(name, **options)
    critic = critic_mlp(2, hidden=32, depth=2, method=method)
    steps = 300
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    for _ in range(steps):
        loss = critic(fake).mean() - critic(real).mean() + method.penalty(critic, real, fake)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():  # ALP's search in unconstrained-alpha differentiates regardless
        estimate = method.wasserstein(critic, real, fake).item()
    assert low * exact <= estimate <= high * exact + 1e-4, (name, estimate, exact)
