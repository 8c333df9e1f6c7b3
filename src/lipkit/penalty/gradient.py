"""Gradient penalty (Gulrajani, Ahmed, Arjovsky, Dumoulin & Courville, NeurIPS 2017).

By Rademacher's theorem ``||f||_L = sup_x ||grad f(x)||_2`` for a Lipschitz ``f``, so the
constraint ``||f||_L <= lambda`` is relaxed to a penalty on gradient norms at samples of a
distribution ``rho``. WGAN-GP takes ``rho`` = uniform random interpolates
``t * real + (1 - t) * fake``, ``t ~ U[0, 1]`` per pair, where the optimal critic has
gradient norm exactly 1 (their Proposition 1), and penalizes two-sided:

    weight * E_{x ~ rho} (||grad f(x)||_2 - lambda)^2.

The one-sided form ``weight * E max(||grad f(x)||_2 - lambda, 0)^2`` penalizes only
violations (the seminar's "gradient penalty"). With this ``rho`` it is the WGAN-LP that
Petzka et al. 2018 train and evaluate (and ``--reg lp`` in ALP's code); lipkit's ``lp`` is
the difference-quotient form on pairs, ``lipschitz.py``.
"""

from __future__ import annotations

import torch

from lipkit.errors import check_positive
from lipkit.penalty._samples import (
    check_batches,
    check_weight,
    critic_values,
    per_sample,
    sample_norms,
)


def interpolates(real: torch.Tensor, fake: torch.Tensor,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's ``rho``: ``t * real + (1 - t) * fake`` with ``t ~ U[0, 1]`` per sample pair.

    Batches of different sizes are paired up to the smaller one.
    """
    n = min(real.shape[0], fake.shape[0])
    real, fake = real[:n].detach(), fake[:n].detach()
    t = torch.rand(n, generator=generator, dtype=real.dtype, device="cpu").to(real.device)
    t = per_sample(t, real)
    return t * real + (1 - t) * fake


def gradient_norms(critic, x: torch.Tensor, create_graph: bool = True) -> torch.Tensor:
    """``||grad_x f(x)||_2`` for each sample of ``x`` (differentiable in the critic's weights)."""
    x = x.detach().requires_grad_(True)
    values = critic_values(critic, x, "gradient_norms")
    (gradient,) = torch.autograd.grad(values.sum(), x, create_graph=create_graph)
    return sample_norms(gradient)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, lipschitz: float = 1.0,
                     weight: float = 10.0, one_sided: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """``weight * E_rho (||grad f|| - lambda)^2`` at random interpolates (WGAN-GP).

    Args:
        critic: a module mapping a batch to one value per sample.
        real, fake: batches of one shape; ``rho`` interpolates between paired samples.
        lipschitz: the target constant ``lambda``.
        weight: the multiplier ``l`` (10 in the WGAN-GP paper; its toy script uses 0.1).
        one_sided: penalize ``max(||grad f|| - lambda, 0)^2`` only.
        generator: the random source of the interpolation weights.

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> penalty = gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2), weight=1.0)
        >>> round(penalty.item(), 4)  # (||w|| - 1)^2
        16.0
    """
    check_batches(real, fake, "gradient_penalty")
    lipschitz = check_positive("gradient_penalty lipschitz", lipschitz)
    weight = check_weight(weight, "gradient_penalty")
    excess = gradient_norms(critic, interpolates(real, fake, generator)) - lipschitz
    if one_sided:
        excess = excess.clamp(min=0)
    return weight * excess.square().mean()
