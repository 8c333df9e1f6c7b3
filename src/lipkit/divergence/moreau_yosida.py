"""The Moreau-Yosida regularized KL divergence ``D_lambda`` (the seminar's last "Why?" page).

    D_lambda(mu || nu) = inf_xi D(xi || nu) + lambda W1(mu, xi)
                       = sup_{||f||_L <= lambda} E_mu f - log E_nu e^f,

the Donsker-Varadhan objective over ``lambda``-Lipschitz critics. Properties the tests and
the benchmark check: ``D_lambda`` is non-decreasing in ``lambda`` (the feasible set grows),
``D_lambda <= D`` (a sub-family of DV's critics) and ``D_lambda <= lambda W1(mu, nu)``
(take ``xi = nu``), ``D_lambda -> D`` as ``lambda -> infinity``, and ``mu -> D_lambda(mu||nu)``
is ``lambda``-Lipschitz in W1. The MI version is ``D_lambda(p(x, y) || p(x) p(y))`` with the
critic Lipschitz in the pair (``critics.py``). Any lipkit method enforces the constraint:
a construction (certified; the estimate is then a lower bound on ``D_lambda`` of the
sampled distributions up to the sampling error of the log-mean-exp) or a penalty (no
guarantee: the critic may exceed ``lambda`` between samples).
"""

from __future__ import annotations

import torch

from lipkit.divergence.donsker_varadhan import donsker_varadhan
from lipkit.errors import InvalidArgumentError, check_positive


def moreau_yosida_kl(p_values: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """``E_mu f - log E_nu e^f`` for a critic constrained to ``||f||_L <= lambda``.

    The objective is Donsker-Varadhan's; what makes it ``D_lambda`` is the constraint on the
    critic that produced the values.
    """
    return donsker_varadhan(p_values, q_values)


def gaussian_shift_moreau_yosida_kl(distance: float, lipschitz: float) -> float:
    """``D_lambda(N(m, I) || N(0, I))`` in closed form, ``d = ||m||``: ``lambda d - lambda^2/2``
    for ``lambda < d``, else the KL ``d^2 / 2``.

    The critic ``f(x) = lambda <m / d, x>`` gives the lower bound (DV objective
    ``lambda d - lambda^2 / 2``) and ``xi = N(lambda m / d, I)`` the equal upper bound
    (``D(xi||nu) = lambda^2 / 2``, ``W1(mu, xi) <= d - lambda``).

    Example:
        >>> gaussian_shift_moreau_yosida_kl(2.0, 1.0), gaussian_shift_moreau_yosida_kl(2.0, 3.0)
        (1.5, 2.0)
    """
    distance = float(distance)
    if not distance >= 0.0:
        raise InvalidArgumentError(f"distance must be >= 0, got {distance!r}")
    lipschitz = check_positive("gaussian_shift_moreau_yosida_kl lipschitz", lipschitz)
    if lipschitz >= distance:
        return distance * distance / 2.0
    return lipschitz * distance - lipschitz * lipschitz / 2.0
