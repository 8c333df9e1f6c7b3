"""Lipschitz penalty on pairs: the seminar's difference-quotient form.

The Lipschitz condition itself, ``|f(x1) - f(x2)| <= lambda ||x1 - x2||_2``, is penalized
one-sided over pairs ``(x1, x2) ~ rho``:

    weight * E_{(x1, x2) ~ rho} max(|f(x1) - f(x2)| / ||x1 - x2||_2 - lambda, 0)^2.

Here ``rho`` pairs each real sample with the generated sample of the same index (the
coupling on which an optimal critic of the Kantorovich-Rubinstein dual is tight). Only a
violation is penalized, so the critic is free to be flatter than ``lambda``.

Which "LP" this is. Petzka, Fischer & Lukovnikov (ICLR 2018) state the penalty in this
difference-quotient form, but the WGAN-LP they train and evaluate, like ``--reg lp`` in the
code of Terjék's ALP paper, is the one-sided *gradient* penalty
``weight * E max(||grad f(x)||_2 - lambda, 0)^2`` at WGAN-GP's random interpolates: that is
lipkit's ``gp-one-sided`` (``gradient.py``), not ``lp``. lipkit's ``lp`` is the pair form of
the seminar. As the seminar notes, training with this random-pair penalty can diverge:
pairs of far-apart samples see only secants, which almost never constrain the critic where
it is steepest (ALP, ``adversarial.py``, fixes that by choosing the pair).
"""

from __future__ import annotations

import torch

from lipkit.errors import check_positive
from lipkit.penalty._samples import check_batches, check_weight, critic_values, sample_norms

_EPS = 1e-12  # pairs of equal samples carry no information: their quotient is taken as 0


def difference_quotients(critic, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """``|f(x1) - f(x2)| / ||x1 - x2||_2`` for each pair (0 for equal samples)."""
    values = critic_values(critic, torch.cat([x1, x2]), "difference_quotients")
    first, second = values[: x1.shape[0]], values[x1.shape[0]:]
    distance = sample_norms(x1 - x2)
    return (first - second).abs() / distance.clamp(min=_EPS) * (distance > _EPS)


def lipschitz_penalty(critic, real: torch.Tensor, fake: torch.Tensor, lipschitz: float = 1.0,
                      weight: float = 10.0) -> torch.Tensor:
    """``weight * E max(|f(x1) - f(x2)| / ||x1 - x2|| - lambda, 0)^2`` over (real, fake) pairs.

    Args:
        critic: a module mapping a batch to one value per sample.
        real, fake: batches of one shape, paired by index (up to the smaller one).
        lipschitz: the target constant ``lambda``.
        weight: the multiplier ``l`` (Petzka et al. use 10 as WGAN-GP does).

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(1, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.fill_(3.0)
        >>> penalty = lipschitz_penalty(critic, torch.zeros(4, 1), torch.ones(4, 1), weight=1.0)
        >>> round(penalty.item(), 4)  # (3 - 1)^2
        4.0
    """
    check_batches(real, fake, "lipschitz_penalty")
    lipschitz = check_positive("lipschitz_penalty lipschitz", lipschitz)
    weight = check_weight(weight, "lipschitz_penalty")
    n = min(real.shape[0], fake.shape[0])
    quotients = difference_quotients(critic, real[:n].detach(), fake[:n].detach())
    return weight * (quotients - lipschitz).clamp(min=0).square().mean()
