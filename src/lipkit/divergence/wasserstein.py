"""Wasserstein distances by their duals: W1 (Kantorovich-Rubinstein) and ``W^alpha``.

Kantorovich-Rubinstein: ``W1(mu, nu) = sup_{||f||_L <= 1} E_mu f - E_nu f``; a critic
constrained to ``||f||_L <= lambda`` estimates ``lambda W1``, so the estimate divides by
``lambda`` (:meth:`lipkit.penalty.LipschitzMethod.wasserstein` divides by the certified bound
for construction methods).

``W^alpha`` (the seminar's unconstrained form, ``alpha > 1``), over all Lipschitz ``f``:

    W(mu, nu)^alpha = sup_f E_mu f - E_nu f
                      - (alpha - 1) alpha^(alpha/(1-alpha)) ||f||_L^(alpha/(alpha-1));
 the subtracted term is lipkit.penalty's ``unconstrained-alpha``
penalty, so the objective is this module's gap minus that penalty.
"""

from __future__ import annotations

import torch

from lipkit.divergence._values import check_values
from lipkit.errors import check_positive
from lipkit.penalty import alpha_coefficient


def kantorovich_rubinstein(p_values: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """``E_p f - E_q f``: the KR dual objective from the critic's outputs on samples of p and q.

    Example:
        >>> import torch
        >>> kantorovich_rubinstein(torch.tensor([1.0, 3.0]), torch.tensor([0.0, 0.5, 1.0]))
        tensor(1.5000)
    """
    p_values = check_values(p_values, "p_values", "kantorovich_rubinstein")
    q_values = check_values(q_values, "q_values", "kantorovich_rubinstein")
    return p_values.mean() - q_values.mean()


def wasserstein_alpha(p_values: torch.Tensor, q_values: torch.Tensor, lipschitz: torch.Tensor,
                      alpha: float = 2.0) -> torch.Tensor:
    """``E_p f - E_q f - (alpha-1) alpha^(alpha/(1-alpha)) L^(alpha/(alpha-1))``: the ``W^alpha``
    dual objective for a critic of Lipschitz constant ``L`` (e.g. lipkit.penalty's
    ``batch_lipschitz_ratio``).

    At the optimum ``f = alpha W^(alpha-1) f_1`` (``f_1`` a Kantorovich potential) the
    objective equals ``W^alpha``.

    Example:
        >>> import torch
        >>> # W1 = 1 between the point masses 0 and 1; f(x) = 2x is optimal for alpha = 2
        >>> wasserstein_alpha(torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor(2.0))
        tensor(1.)
    """
    check_positive("wasserstein_alpha lipschitz", float(lipschitz) or float("nan"))
    coefficient = alpha_coefficient(alpha)
    return (kantorovich_rubinstein(p_values, q_values)
            - coefficient * lipschitz ** (alpha / (alpha - 1.0)))
