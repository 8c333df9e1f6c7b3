"""Maximum gradient penalty, MaxGP (Zhou et al., "Lipschitz Generative Adversarial Nets",
ICML 2019).

Zhou et al.'s Lipschitz GANs add ``weight * k(f)^2`` to the critic's loss, with
``k(f) = ||f||_L`` estimated as the largest gradient norm over a batch of ``rho``:

    weight * max_{x ~ rho} ||grad f(x)||_2^2,

``rho`` being WGAN-GP's random interpolates of paired real and fake samples; the weight is
0.1 in their code. The penalty has no target constant: it shrinks ``||f||_L`` as a whole and
the loss ``phi`` sets the scale at which the two balance (for WGAN the optimum of
``E f(real) - E f(fake) - weight k^2`` over ``f = k f_1`` has ``k = W1 / (2 weight)``). Only
the steepest sample of the batch receives a gradient, unlike the mean of WGAN-GP.
"""

from __future__ import annotations

import torch

from lipkit.penalty._samples import check_batches, check_weight
from lipkit.penalty.gradient import gradient_norms, interpolates


def max_gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, weight: float = 0.1,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """``weight * max ||grad f||^2`` over random interpolates of (real, fake) pairs.

    Args:
        critic: a module mapping a batch to one value per sample.
        real, fake: batches of one shape; ``rho`` interpolates between paired samples.
        weight: the multiplier (0.1 in Zhou et al.'s code).
        generator: the random source of the interpolation weights.

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
        >>> round(max_gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2)).item(), 4)
        2.5
    """
    check_batches(real, fake, "max_gradient_penalty")
    weight = check_weight(weight, "max_gradient_penalty")
    norms = gradient_norms(critic, interpolates(real, fake, generator))
    return weight * norms.max().square()
