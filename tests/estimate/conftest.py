"""Shared helpers of the estimation tests: small random networks and their exact constants."""

import itertools

import pytest
import torch
from torch import nn

from lipkit.estimate.witness import jacobians


def random_mlp(widths, activation=nn.ReLU, seed=0, bias=True):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers).double()


def local_jacobian_max(network, center, radius=0.05, resolution=101):
    """The largest Jacobian spectral norm over a fine grid around ``center`` (2-D input)."""
    axis = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    points = center.reshape(1, 2) + torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], 1)
    return float(torch.linalg.matrix_norm(jacobians(network, points), ord=2).max())


def segment_jacobian_max(network, first, second, samples=20_001):
    """The largest Jacobian spectral norm along the segment [x1, x2]: by the mean value
    inequality a pair's ratio never exceeds it."""
    t = torch.linspace(0, 1, samples, dtype=torch.float64).reshape(-1, 1)
    points = first.reshape(1, -1) + t * (second - first).reshape(1, -1)
    best = 0.0
    for chunk in points.split(50_000):
        best = max(best, float(torch.linalg.matrix_norm(jacobians(network, chunk), ord=2).max()))
    return best


def exact_l2_constant_2d(network, radius=8.0, resolution=801):
    """The largest Jacobian spectral norm over a dense grid of a 2-D input plane.

    Every activation region of a small ReLU net with 2-D input is a polygon; a fine grid over
    a box containing every bounded region visits them, so this is the exact constant to the
    grid's resolution (the unbounded regions reach the box's border too)."""
    axis = torch.linspace(-radius, radius, resolution, dtype=torch.float64)
    grid_x, grid_y = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
    best = 0.0
    for chunk in points.split(50_000):
        best = max(best, float(torch.linalg.matrix_norm(jacobians(network, chunk), ord=2).max()))
    return best


@pytest.fixture
def mlp_factory():
    return random_mlp
