"""The unconstrained ``W^alpha`` term: a Lipschitz penalty with no constraint to enforce.

For ``alpha > 1`` the seminar's dual (from Young's inequality on ``||f||_L``) is

    W(mu, nu)^alpha = sup_f E_mu f - E_nu f - (alpha - 1) alpha^(alpha / (1 - alpha))
                      ||f||_L^(alpha / (alpha - 1)),

over all Lipschitz ``f``: the supremum is attained by ``f = alpha W^(alpha - 1) f_1`` with
``f_1`` a 1-Lipschitz Kantorovich potential, so ``||f||_L = alpha W^(alpha - 1)`` at the
optimum and ``W = (||f||_L / alpha)^(1 / (alpha - 1))``. The term is subtracted from the critic's
objective (added to its loss) with no target constant.

``||f||_L`` is estimated on the batch by the adversarial ratio: the largest
``|f(x1) - f(x2)| / ||x1 - x2||_2`` over ALP's pairs ``(x, x + r_adv(x))`` (``adversarial.py``)
and over every (real, fake) pair of the batch. The maximum is taken in the graph, so the
gradient with respect to the critic's weights is that of the ratio of the maximizing pair
(a subgradient of the max; the pair itself is a constant).
"""

from __future__ import annotations

import torch

from lipkit.errors import InvalidArgumentError
from lipkit.penalty._samples import check_batches, check_weight, critic_values
from lipkit.penalty.adversarial import adversarial_pairs
from lipkit.penalty.lipschitz import _EPS


def alpha_coefficient(alpha: float) -> float:
    """``(alpha - 1) alpha^(alpha / (1 - alpha))``: 1/4 for ``alpha = 2``.

    Example:
        >>> alpha_coefficient(2.0)
        0.25
    """
    alpha = float(alpha)
    if not 1.0 < alpha < float("inf"):
        raise InvalidArgumentError(f"alpha must be a finite number > 1, got {alpha!r}")
    return (alpha - 1.0) * alpha ** (alpha / (1.0 - alpha))


def batch_lipschitz_ratio(critic, real: torch.Tensor, fake: torch.Tensor,
                          **adversarial_options) -> torch.Tensor:
    """The largest difference quotient of the critic over the batch's pairs (a lower bound).

    Pairs: ALP's ``(x, x + r_adv(x))`` for every sample (``adversarial_options`` go to
    :func:`lipkit.penalty.adversarial.adversarial_pairs`) and every (real, fake) pair.
    Differentiable in the critic's weights through the maximizing pair.
    """
    check_batches(real, fake, "batch_lipschitz_ratio")
    samples, perturbed = adversarial_pairs(critic, real, fake, **adversarial_options)
    n, m = samples.shape[0], real.shape[0]
    values = critic_values(critic, torch.cat([samples, perturbed]), "batch_lipschitz_ratio")
    distance = (samples - perturbed).flatten(1).norm(dim=1)
    adversarial = (values[:n] - values[n:]).abs() / distance.clamp(min=_EPS) * (distance > _EPS)
    real_values, fake_values = values[:m], values[m:n]
    cross_distance = torch.cdist(samples[:m].flatten(1), samples[m:n].flatten(1))
    cross = ((real_values[:, None] - fake_values[None, :]).abs()
             / cross_distance.clamp(min=_EPS) * (cross_distance > _EPS))
    return torch.maximum(adversarial.max(), cross.max())


def alpha_penalty(critic, real: torch.Tensor, fake: torch.Tensor, alpha: float = 2.0,
                  weight: float = 1.0, **adversarial_options) -> torch.Tensor:
    """``weight * (alpha - 1) alpha^(alpha/(1-alpha)) L^(alpha/(alpha-1))``, ``L`` the batch ratio.

    Args:
        critic: a module mapping a batch to one value per sample.
        real, fake: batches of one shape.
        alpha: the exponent ``alpha > 1`` of ``W^alpha``.
        weight: the multiplier; 1 gives exactly the ``W^alpha`` dual.
        adversarial_options: the search for ``r_adv`` (``xi``, ``epsilon``, ...).

    Example:
        >>> import torch
        >>> critic = torch.nn.Linear(1, 1)
        >>> with torch.no_grad():
        ...     _ = critic.weight.fill_(2.0)
        >>> penalty = alpha_penalty(critic, torch.zeros(4, 1), torch.ones(4, 1))
        >>> round(penalty.item(), 4)  # L = 2: L^2 / 4
        1.0
    """
    coefficient = alpha_coefficient(alpha)
    weight = check_weight(weight, "alpha_penalty")
    ratio = batch_lipschitz_ratio(critic, real, fake, **adversarial_options)
    return weight * coefficient * ratio ** (alpha / (alpha - 1.0))
