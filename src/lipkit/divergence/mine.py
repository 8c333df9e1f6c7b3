"""MINE (Belghazi et al., ICML 2018): Donsker-Varadhan with a bias-corrected gradient.

The minibatch gradient of the DV objective ``E_P T - log E_Q e^T`` is
``E_P grad T - E_Q[e^T grad T] / E_Q e^T`` with both expectations over the same batch,
which is biased (the ratio of estimates). MINE replaces the denominator ``E_Q e^T`` by an
exponential moving average over steps, ``a_t = (1 - rate) a_{t-1} + rate * mean_batch e^T``
(kept in log space here, so large critic values do not overflow). The surrogate
``E_P T - mean_batch(e^T) / a_t`` (``a_t`` a constant) has exactly that gradient; its value is
not the estimate, which stays the DV objective (``donsker_varadhan.py``).
"""

from __future__ import annotations

import math

import torch

from lipkit.divergence._values import check_values, log_mean_exp
from lipkit.errors import InvalidArgumentError


class MovingAverage:
    """MINE's moving average of ``E_Q e^T``, in log space (``log_average``, None before use).

    Args:
        rate: the weight of the newest batch, in (0, 1] (1: no averaging, the biased
            minibatch gradient).
    """

    def __init__(self, rate: float = 0.01):
        rate = float(rate)
        if not 0.0 < rate <= 1.0:
            raise InvalidArgumentError(f"MINE moving-average rate must be in (0, 1], got {rate!r}")
        self.rate = rate
        self.log_average: torch.Tensor | None = None

    def update(self, q_values: torch.Tensor) -> torch.Tensor:
        """Fold ``log mean e^{q_values}`` into the average; returns the new ``log a_t``
        (detached; the first batch initializes it)."""
        batch = log_mean_exp(q_values.detach())
        if self.log_average is None or self.rate == 1.0:
            self.log_average = batch
        else:
            self.log_average = torch.logaddexp(self.log_average + math.log(1.0 - self.rate),
                                               batch + math.log(self.rate))
        return self.log_average


def mine_objective(p_values: torch.Tensor, q_values: torch.Tensor,
                   average: MovingAverage) -> torch.Tensor:
    """MINE's surrogate ``E_P T - mean(e^T) / a_t``: maximize it for the corrected gradient.

    Updates ``average`` with this batch first. The value is a training signal, not an
    estimate (use :func:`lipkit.divergence.donsker_varadhan` on the same outputs).

    Example:
        >>> import torch
        >>> average = MovingAverage(rate=0.5)
        >>> mine_objective(torch.tensor([1.0]), torch.zeros(3), average)  # a_1 = 1
        tensor(0.)
    """
    p_values = check_values(p_values, "p_values", "mine_objective")
    q_values = check_values(q_values, "q_values", "mine_objective")
    log_average = average.update(q_values)
    return p_values.mean() - torch.exp(log_mean_exp(q_values) - log_average)
