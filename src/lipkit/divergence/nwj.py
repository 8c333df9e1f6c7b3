"""KL by the f-divergence dual of Nguyen, Wainwright & Jordan (2010): the NWJ bound.

``D(mu || nu) >= E_mu f - e^{-1} E_nu e^f`` for every ``f``, with equality at
``f = 1 + log dmu/dnu`` (Poole et al. 2019 call it ``I_NWJ`` for MI). Unlike Donsker-Varadhan
the objective is an unbiased sample mean, at the price of a larger variance; since
``log u <= u / e``, it is never above the DV objective of the same critic on the same batch.
"""

from __future__ import annotations

import torch

from lipkit.divergence._values import check_values, log_mean_exp


def nguyen_wainwright_jordan(p_values: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """``E_p f - e^{-1} E_q e^f`` from the critic's outputs on samples of p and q.

    Example:
        >>> import torch
        >>> nguyen_wainwright_jordan(torch.tensor([1.0]), torch.tensor([1.0, 1.0]))
        tensor(0.)
    """
    p_values = check_values(p_values, "p_values", "nguyen_wainwright_jordan")
    q_values = check_values(q_values, "q_values", "nguyen_wainwright_jordan")
    return p_values.mean() - torch.exp(log_mean_exp(q_values) - 1.0)
