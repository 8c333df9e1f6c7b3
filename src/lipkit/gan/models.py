"""The generator of WGAN-GP's toy experiments (``gan_toy.py``): noise -> ReLU MLP -> sample.

The paper's toy models are MLPs of 3 hidden ReLU layers of 512 units for both networks, with
2-D Gaussian noise; the critic is :func:`lipkit.penalty.critic_mlp` (its activation follows
the Lipschitz method).
"""

from __future__ import annotations

from torch import nn

from lipkit.errors import InvalidArgumentError


def generator_mlp(latent: int = 2, hidden: int = 512, depth: int = 3,
                  out_features: int = 2) -> nn.Sequential:
    """``latent -> hidden (x depth, ReLU) -> out_features``.

    Example:
        >>> import torch
        >>> generator_mlp(2, 16, 2, 3)(torch.randn(5, 2)).shape
        torch.Size([5, 3])
    """
    if min(int(latent), int(hidden), int(depth), int(out_features)) < 1:
        raise InvalidArgumentError(f"generator_mlp needs sizes >= 1, got latent={latent}, "
                                   f"hidden={hidden}, depth={depth}, out={out_features}")
    layers: list[nn.Module] = []
    width = int(latent)
    for _ in range(int(depth)):
        layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
        width = int(hidden)
    layers.append(nn.Linear(width, int(out_features)))
    return nn.Sequential(*layers)
