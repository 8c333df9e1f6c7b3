"""Adversarial losses: WGAN and the Lipschitz GANs of Zhou et al. (ICML 2019).

Zhou et al. write a GAN as ``min_f E_{x~P_g} phi(f(x)) + E_{x~P_r} phi(-f(x))`` over a
Lipschitz-constrained discriminator ``f`` and ``min_g E_{z} psi(f(g(z)))`` for the generator;
they prove that the Lipschitz constraint makes the optimal discriminator unique and its
gradient informative for every increasing convex ``phi`` (the "gradient uninformativeness"
of unconstrained GANs). ``phi(x) = x`` is WGAN.

=================  =========================================================
name               ``phi(x)``
=================  =========================================================
``wasserstein``    ``x``
``logistic``       ``log(1 + e^x)`` (the original GAN's loss)
``hinge``          ``max(0, 1 + x)``
``exponential``    ``e^x``
``least-squares``  ``(x + 1)^2``, untruncated as in Zhou et al.'s code (so not
                   increasing below ``-1``: a critic pushed past ``-1`` on fakes
                   is pulled back)
``sqrt``           ``x + sqrt(x^2 + 1)``
=================  =========================================================

The generator's objective ``psi`` (:data:`GENERATOR_OBJECTIVES`):

- ``linear`` (the default, and the default of Zhou et al.'s code for every ``phi``):
  ``psi(x) = -x``, so the generator's gradient through ``f(g(z))`` is ``-1`` per sample
  whatever ``phi`` and wherever the critic puts the fake;
- ``non-saturating``: ``psi(x) = phi(-x)`` (Goodfellow et al.'s ``-log D`` trick for the
  logistic loss), gradient ``-phi'(-f)``;
- ``minimax``: ``psi(x) = -phi(x)``, the saddle point's own objective. Its gradient
  ``-phi'(f)`` vanishes where ``phi`` is flat: exactly 0 for ``hinge`` on a fake the critic
  rejects (``f < -1``), about ``-0.047`` for ``logistic`` and ``-0.050`` for ``exponential``
  at ``f = -3``, and of the wrong sign for the untruncated ``least-squares`` below ``-1``.
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
    "least-squares": lambda x: (x + 1).square(),
    "sqrt": lambda x: x + torch.sqrt(x.square() + 1),
}
GENERATOR_OBJECTIVES = ("linear", "non-saturating", "minimax")


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


def generator_loss(name: str, fake_values: torch.Tensor,
                   objective: str = "linear") -> torch.Tensor:
    """``E psi(f(g(z)))``: what the generator minimizes (``objective`` picks ``psi``, module
    docstring; ``name`` is the critic's loss ``phi``, used by the two non-linear ones).

    Example:
        >>> import torch
        >>> fake = torch.tensor([-3.0], requires_grad=True)
        >>> generator_loss("hinge", fake).backward()  # psi(x) = -x: gradient -1
        >>> fake.grad
        tensor([-1.])
    """
    phi = _phi(name)
    if objective == "linear":
        return -fake_values.mean()
    if objective == "non-saturating":
        return phi(-fake_values).mean()
    if objective == "minimax":
        return -phi(fake_values).mean()
    raise UnknownMethodError("generator objective", objective, GENERATOR_OBJECTIVES)
