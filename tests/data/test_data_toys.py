"""The WGAN-GP toy distributions: their centres, noise levels and the Swiss roll's law."""

import math

import numpy as np
import ot
import pytest
import torch

from lipkit.data import TOYS, sample_toy
from lipkit.errors import InvalidArgumentError, UnknownMethodError


def _nearest(points: torch.Tensor, centers: torch.Tensor):
    distances = torch.cdist(points.double(), centers)
    return distances.argmin(1), points.double() - centers[distances.argmin(1)]


@pytest.mark.parametrize("name, centers, noise", [
    ("8gaussians", 2.0 * torch.tensor([[math.cos(k * math.pi / 4), math.sin(k * math.pi / 4)]
                                       for k in range(8)], dtype=torch.float64) / 1.414,
     0.02 / 1.414),
    ("25gaussians", torch.cartesian_prod(*[torch.arange(-2, 3, dtype=torch.float64) * 2] * 2)
     / 2.828, 0.05 / 2.828),
])
def test_mixtures_have_the_papers_centres_weights_and_noise(name, centers, noise):
    points = sample_toy(name, 20000, torch.Generator().manual_seed(0))
    index, offsets = _nearest(points, centers)
    counts = torch.bincount(index, minlength=len(centers)).double() / len(points)
    assert float((counts - 1 / len(centers)).abs().max()) < 0.01, counts
    assert float(offsets.std(0).sub(noise).abs().max()) < 0.05 * noise, offsets.std(0)
    assert float(offsets.mean(0).abs().max()) < 0.05 * noise


def test_swiss_roll_matches_scikit_learns_with_the_papers_scaling():
    from sklearn.datasets import make_swiss_roll

    ours = sample_toy("swissroll", 1500, torch.Generator().manual_seed(0)).double()
    theirs = torch.from_numpy(make_swiss_roll(1500, noise=0.25, random_state=0)[0][:, [0, 2]]
                              / 7.5)
    other = torch.from_numpy(make_swiss_roll(1500, noise=0.25, random_state=1)[0][:, [0, 2]]
                             / 7.5)
    uniform = np.full(1500, 1 / 1500)
    ours_vs_theirs = ot.emd2(uniform, uniform, torch.cdist(ours, theirs).numpy())
    theirs_vs_theirs = ot.emd2(uniform, uniform, torch.cdist(other, theirs).numpy())
    # the same law: as close to scikit-learn's samples as scikit-learn's own are
    assert ours_vs_theirs < 1.5 * theirs_vs_theirs, (ours_vs_theirs, theirs_vs_theirs)
    scaled = ours * 0.8  # a wrong scale (6 instead of 7.5) is seen
    assert ot.emd2(uniform, uniform, torch.cdist(scaled, theirs).numpy()) > 2.5 * theirs_vs_theirs


@pytest.mark.parametrize("name", list(TOYS))
def test_seeded_draws_reproduce(name):
    first = sample_toy(name, 50, torch.Generator().manual_seed(4))
    second = sample_toy(name, 50, torch.Generator().manual_seed(4))
    assert first.shape == (50, 2) and first.dtype == torch.float32
    assert torch.equal(first, second)


def test_bad_names_and_counts_raise():
    with pytest.raises(UnknownMethodError, match="8gaussians"):
        sample_toy("9gaussians", 10)
    with pytest.raises(InvalidArgumentError, match="integer >= 1"):
        sample_toy("swissroll", 0)
