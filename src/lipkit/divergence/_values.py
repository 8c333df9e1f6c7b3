"""Checks shared by the estimators: critic outputs are finite vectors, score matrices square."""

from __future__ import annotations

import math

import torch

from lipkit.errors import InvalidArgumentError


def check_values(values: torch.Tensor, name: str, where: str) -> torch.Tensor:
    """``values`` as a vector (n,): a non-empty, finite, floating-point tensor of critic outputs."""
    if not isinstance(values, torch.Tensor):
        raise InvalidArgumentError(f"{where}: {name} must be a tensor, got {type(values).__name__}")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1 or values.shape[0] == 0:
        raise InvalidArgumentError(f"{where}: {name} must be a non-empty vector of critic outputs, "
                                   f"got shape {tuple(values.shape)}")
    if not values.is_floating_point():
        raise InvalidArgumentError(f"{where}: {name} must be floating point, got {values.dtype}")
    if not torch.isfinite(values).all():
        raise InvalidArgumentError(f"{where}: {name} contains NaN or infinite values")
    return values


def check_scores(scores: torch.Tensor, where: str) -> torch.Tensor:
    """A square, finite score matrix ``scores[i, j] = f(x_i, y_j)`` with at least 2 rows."""
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2 \
            or scores.shape[0] != scores.shape[1] or scores.shape[0] < 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise InvalidArgumentError(f"{where}: scores must be a square matrix f(x_i, y_j) with at "
                                   f"least 2 rows, got {shape}")
    if not scores.is_floating_point() or not torch.isfinite(scores).all():
        raise InvalidArgumentError(f"{where}: scores must be finite floating-point values")
    return scores


def log_mean_exp(values: torch.Tensor) -> torch.Tensor:
    """``log (1/n) sum_i e^{v_i}``, computed stably."""
    return torch.logsumexp(values, dim=0) - math.log(values.shape[0])


def joint_and_marginal(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The diagonal ``f(x_i, y_i)`` (samples of the joint) and the ``n (n - 1)`` off-diagonal
    entries ``f(x_i, y_j)``, ``i != j`` (samples of the product of the marginals), as Poole
    et al. 2019 use every batch."""
    n = scores.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=scores.device)
    return scores.diagonal(), scores[off_diagonal]
