"""Adversarial losses: WGAN and the Lipschitz GANs of Zhou et al. (ICML 2019).

Zhou et al. write a GAN as ``min_f E_{x~P_g} phi(f(x)) + E_{x~P_r} phi(-f(x))`` over a
Lipschitz-constrained discriminator ``f`` and ``min_g -E_{z} phi(f(g(z)))`` for the generator,
for any increasing convex ``phi``; they prove that the Lipschitz constraint makes the
optimal discriminator unique and its gradient informative for every such ``phi`` (the
"gradient uninformativeness" of unconstrained GANs). ``phi(x) = x`` is WGAN.

=================  ==========================
name               ``phi(x)``
=================  ==========================
``wasserstein``    ``x``
``logistic``       ``log(1 + e^x)`` (the original GAN's loss)
``hinge``          ``max(0, 1 + x)``
``exponential``    ``e^x``
``least-squares``  ``(x + 1)^2`` on ``x >= -1``, else 0 (increasing and convex)
=================  ==========================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lipkit.errors import UnknownMethodError

LOSSES = {
    "wasserstein": lambda x: x,
    "logistic": F.softplus,
    "hinge": lambda x: F.relu(1 + x),
    "exponential": torch.exp,
    "least-squares": lambda x: F.relu(x + 1).square(),
}


def _phi(name: str):
    if name not in LOSSES:
        raise UnknownMethodError("GAN loss", name, LOSSES)
    return LOSSES[name]


def critic_loss(name: str, real_values: torch.Tensor, fake_values: torch.Tensor) -> torch.Tensor:
    """``E phi(f(fake)) + E phi(-f(real))``: what the critic minimizes (before its penalty).

    Example:
        >>> import torch
        >>> critic_loss("wasserstein", torch.tensor([2.0]), torch.tensor([0.5]))
        tensor(-1.5000)
    """
    phi = _phi(name)
    return phi(fake_values).mean() + phi(-real_values).mean()


def generator_loss(name: str, fake_values: torch.Tensor) -> torch.Tensor:
    """``-E phi(f(g(z)))``: what the generator minimizes."""
    return -_phi(name)(fake_values).mean()
