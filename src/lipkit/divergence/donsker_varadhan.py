"""KL divergence by the Donsker-Varadhan representation.

``D(mu || nu) = sup_f E_mu f - log E_nu e^f`` over bounded measurable ``f``; the supremum
is attained at ``f = log dmu/dnu + c``. With samples, ``log E_nu e^f`` becomes the log of the
batch mean (biased: the log of an unbiased estimate; MINE's moving average corrects the
gradient, ``mine.py``). Constraining ``||f||_L <= lambda`` turns the same objective into the
Moreau-Yosida regularized ``D_lambda`` (``moreau_yosida.py``).
"""

from __future__ import annotations

import torch

from lipkit.divergence._values import check_values, log_mean_exp


def donsker_varadhan(p_values: torch.Tensor, q_values: torch.Tensor) -> torch.Tensor:
    """``E_p f - log E_q e^f`` from the critic's outputs on samples of p and q.

    Example:
        >>> import math, torch
        >>> value = donsker_varadhan(torch.tensor([1.0]), torch.tensor([0.0, math.log(3.0)]))
        >>> round(value.item(), 6)  # 1 - log((1 + 3) / 2)
        0.306853
    """
    p_values = check_values(p_values, "p_values", "donsker_varadhan")
    q_values = check_values(q_values, "q_values", "donsker_varadhan")
    return p_values.mean() - log_mean_exp(q_values)
