"""Checks and small tensor helpers shared by the penalties."""

from __future__ import annotations

import torch

from lipkit.errors import InvalidArgumentError, check_positive


def check_batches(real: torch.Tensor, fake: torch.Tensor, where: str) -> None:
    """Raise InvalidArgumentError unless ``real`` and ``fake`` are finite batches of one shape."""
    for name, batch in (("real", real), ("fake", fake)):
        if not isinstance(batch, torch.Tensor):
            raise InvalidArgumentError(f"{where}: {name} must be a tensor, got "
                                       f"{type(batch).__name__}")
        if batch.ndim < 2 or batch.shape[0] == 0:
            raise InvalidArgumentError(f"{where}: {name} must be a non-empty batch of shape "
                                       f"(n, features...), got {tuple(batch.shape)}")
        if not batch.is_floating_point():
            raise InvalidArgumentError(f"{where}: {name} must be floating point, got {batch.dtype}")
        if not torch.isfinite(batch).all():
            raise InvalidArgumentError(f"{where}: {name} contains NaN or infinite values")
    if real.shape[1:] != fake.shape[1:]:
        raise InvalidArgumentError(f"{where}: real samples of shape {tuple(real.shape[1:])} and "
                                   f"fake samples of shape {tuple(fake.shape[1:])} differ")


def check_weight(weight: float, where: str) -> float:
    """A penalty multiplier ``l``: a finite number > 0."""
    return check_positive(f"{where} weight", weight)


def critic_values(critic, x: torch.Tensor, where: str) -> torch.Tensor:
    """``critic(x)`` as a vector of shape (n,); a critic must return one number per sample."""
    values = critic(x)
    if values.ndim > 1:
        if values[0].numel() != 1:
            raise InvalidArgumentError(f"{where}: the critic must return one value per sample, "
                                       f"got output shape {tuple(values.shape)}")
        values = values.reshape(values.shape[0])
    return values


def sample_norms(x: torch.Tensor) -> torch.Tensor:
    """The l2 norm of each sample of a batch (all dimensions after the first)."""
    return x.flatten(1).norm(dim=1)


def per_sample(scalars: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``scalars`` (n,) reshaped to broadcast over samples shaped like ``like``."""
    return scalars.reshape(-1, *([1] * (like.ndim - 1)))
