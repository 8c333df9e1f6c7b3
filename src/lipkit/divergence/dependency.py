"""The Wasserstein dependency measure (Ozair et al., NeurIPS 2019).

``I_W(X; Y) = W1(p(x, y), p(x) p(y)) = sup_{||f||_L <= 1} E_{p(x,y)} f - E_{p(x)p(y)} f``:
the KL of mutual information replaced by W1, so a Lipschitz critic on pairs ``(x, y)``
(Euclidean norm of the concatenation; ``critics.py``) cannot exploit arbitrarily small
changes of the input, the source of the exponential sample complexity of KL-based bounds.
It is measured in the units of ``||(x, y)||``, not in nats. Ozair et al.'s practical estimator,
Wasserstein predictive coding, is the InfoNCE objective with a Lipschitz-constrained critic
(lipkit's ``wpc``; ``infonce.py``), a lower bound on MI in nats. Both use the batch's
pairs as samples of the joint and the ``n (n - 1)`` mismatched pairs as samples of
``p(x) p(y)``.
"""

from __future__ import annotations

import torch

from lipkit.divergence._values import check_scores, joint_and_marginal
from lipkit.errors import check_positive


def wasserstein_dependency(scores: torch.Tensor, lipschitz: float = 1.0) -> torch.Tensor:
    """``(mean_i s_ii - mean_{i != j} s_ij) / lambda`` for a critic with ``||f||_L <= lambda``.

    Example:
        >>> import torch
        >>> wasserstein_dependency(torch.tensor([[2.0, 0.0], [1.0, 3.0]]), lipschitz=2.0)
        tensor(1.)
    """
    scores = check_scores(scores, "wasserstein_dependency")
    lipschitz = check_positive("wasserstein_dependency lipschitz", lipschitz)
    joint, marginal = joint_and_marginal(scores)
    return (joint.mean() - marginal.mean()) / lipschitz
