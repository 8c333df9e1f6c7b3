"""scikit-learn's bundled digits data set (no download), as torch tensors."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Split(NamedTuple):
    """Train and test tensors: inputs (n, 64) in [0, 1] and integer labels (n,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(test_fraction: float = 0.25, seed: int = 0, flat: bool = True) -> Split:
    """The 8x8 digits of ``sklearn.datasets.load_digits``, pixel values scaled to [0, 1].

    Args:
        test_fraction: share of the 1,797 images held out, stratified by class.
        seed: the split's random seed.
        flat: inputs of shape (n, 64); otherwise (n, 1, 8, 8) images.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.long)
    index = torch.arange(len(y)).numpy()
    train, test = train_test_split(
        index, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    if not flat:
        x = x.reshape(-1, 1, 8, 8)
    train, test = torch.from_numpy(train), torch.from_numpy(test)
    return Split(x[train], y[train], x[test], y[test])
