"""A residual block whose Lipschitz constant is guaranteed.

``x + f(x)`` is ``(1 + L_f)``-Lipschitz, so stacking plain residual blocks multiplies
constants above 1. :class:`Residual` uses the convex combination

    y = (1 - t) x + t f(x),   t in [0, 1],

whose constant is at most ``(1 - t) + t L_f``: at most 1 whenever the branch is
1-Lipschitz, for every ``t``. ``t`` is fixed, or learned through a sigmoid when
``learnable=True`` (the bound then uses its current value).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipkit.errors import InvalidArgumentError


class Residual(nn.Module):
    """``(1 - t) * x + t * branch(x)`` with ``0 <= t <= 1``."""

    def __init__(self, branch: nn.Module, t: float = 0.5, learnable: bool = False):
        super().__init__()
        if not 0.0 <= float(t) <= 1.0:
            raise InvalidArgumentError(f"Residual t must be in [0, 1], got {t}")
        self.branch = branch
        self.learnable = learnable
        if learnable:
            t = min(max(float(t), 1e-6), 1 - 1e-6)
            self.logit = nn.Parameter(torch.tensor(math.log(t / (1 - t))))
        else:
            self.register_buffer("_t", torch.tensor(float(t)))

    @property
    def t(self) -> torch.Tensor:
        return torch.sigmoid(self.logit) if self.learnable else self._t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.t
        return (1 - t) * x + t * self.branch(x)

    def combine_bound(self, branch_bound: float) -> float:
        # the coefficients exactly as forward computes them: 1 - t rounded in t's dtype (a
        # float32 buffer), detached (float() of a learnable t would warn)
        t = self.t.detach()
        # |1 - t| + |t| L: a state_dict may carry a t outside [0, 1]
        return abs(float(1 - t)) + abs(float(t)) * branch_bound
