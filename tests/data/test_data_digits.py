"""The bundled digits loader: shapes, ranges, a stratified disjoint split."""

import torch

from lipkit.data import load_digits


def test_digits_split_is_disjoint_complete_and_scaled():
    data = load_digits(test_fraction=0.25, seed=3)
    assert data.x_train.shape[1] == 64 and len(data.x_train) + len(data.x_test) == 1797
    assert float(data.x_train.min()) >= 0.0 and float(data.x_train.max()) <= 1.0
    train_rows = {tuple(r.tolist()) for r in data.x_train}
    overlap = sum(tuple(r.tolist()) in train_rows for r in data.x_test)
    # a few digits are pixel-identical duplicates; a shared index would give hundreds
    assert overlap < 10, overlap
    counts = torch.bincount(data.y_test, minlength=10)
    assert int(counts.min()) >= 40, counts  # stratified: every class present


def test_digits_images_and_seed_reproducibility():
    a = load_digits(seed=1, flat=False)
    b = load_digits(seed=1, flat=False)
    assert a.x_train.shape[1:] == (1, 8, 8)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
