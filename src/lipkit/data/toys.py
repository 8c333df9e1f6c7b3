"""The 2-D toy distributions of WGAN-GP's toy experiments (Gulrajani et al. 2017).

Parameters are those of the paper's official ``gan_toy.py`` (igul222/improved_wgan_training):

- ``8gaussians``: centres ``2 (cos k pi/4, sin k pi/4)``, ``k = 0..7``, chosen uniformly,
  isotropic noise of standard deviation 0.02, the whole divided by 1.414;
- ``25gaussians``: centres on the grid ``(2i, 2j)``, ``i, j in {-2..2}``, noise 0.05, divided by
  2.828 (the script draws a fixed set of 100,000 points; here every draw is fresh);
- ``swissroll``: scikit-learn's ``make_swiss_roll(noise=0.25)``, coordinates 0 and 2, divided
  by 7.5: ``t = 1.5 pi (1 + 2u)``, ``u ~ U[0, 1]``, point ``(t cos t, t sin t)`` plus
  Gaussian noise 0.25 on each coordinate (drawn here with torch, to honour ``generator``).
"""

from __future__ import annotations

import math

import torch

from lipkit.errors import InvalidArgumentError, UnknownMethodError


def _count(n: int) -> int:
    if int(n) != n or int(n) < 1:
        raise InvalidArgumentError(f"the number of toy samples must be an integer >= 1, got {n!r}")
    return int(n)


def eight_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples (n, 2) of the 8-Gaussians ring."""
    n = _count(n)
    angles = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], dim=1)
    index = torch.randint(8, (n,), generator=generator)
    noise = 0.02 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return ((centers[index] + noise) / 1.414).float()


def twenty_five_gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples (n, 2) of the 5 x 5 grid of Gaussians."""
    n = _count(n)
    grid = torch.arange(-2, 3, dtype=torch.float64) * 2.0
    centers = torch.cartesian_prod(grid, grid)
    index = torch.randint(25, (n,), generator=generator)
    noise = 0.05 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return ((centers[index] + noise) / 2.828).float()


def swiss_roll(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples (n, 2) of the 2-D Swiss roll."""
    n = _count(n)
    t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
    points = torch.stack([t * t.cos(), t * t.sin()], dim=1)
    noise = 0.25 * torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return ((points + noise) / 7.5).float()


TOYS = {"8gaussians": eight_gaussians, "25gaussians": twenty_five_gaussians,
        "swissroll": swiss_roll}


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` samples of the toy distribution called ``name`` (one of :data:`TOYS`).

    Example:
        >>> import torch
        >>> sample_toy("8gaussians", 5, torch.Generator().manual_seed(0)).shape
        torch.Size([5, 2])
    """
    if name not in TOYS:
        raise UnknownMethodError("toy data set", name, TOYS)
    return TOYS[name](n, generator)
