"""InfoNCE (van den Oord et al. 2018; Poole et al. 2019's ``I_NCE``): a contrastive MI bound.

For a batch of ``K`` pairs and scores ``s_ij = f(x_i, y_j)``,

    I_NCE = (1/K) sum_i log( e^{s_ii} / ((1/K) sum_j e^{s_ij}) ) <= I(X; Y),

a lower bound with low variance that can never exceed ``log K`` (each term is at most
``log K`` because ``s_ii`` is one of the ``K`` terms of the sum), so it saturates at
``log(batch)`` when the true MI is larger. With a Lipschitz-constrained critic this is the
practical estimator of the Wasserstein dependency measure (``dependency.py``).
"""

from __future__ import annotations

import math

import torch

from lipkit.divergence._values import check_scores


def info_nce(scores: torch.Tensor) -> torch.Tensor:
    """``mean_i (s_ii - logsumexp_j s_ij) + log K`` for a ``K x K`` score matrix.

    Example:
        >>> import math, torch
        >>> round(info_nce(torch.zeros(4, 4)).item(), 6)  # an uninformative critic
        0.0
        >>> round(info_nce(100 * torch.eye(4)).item(), 6) == round(math.log(4), 6)
        True
    """
    scores = check_scores(scores, "info_nce")
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(scores.shape[0])
