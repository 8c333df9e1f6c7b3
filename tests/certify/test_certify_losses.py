"""Each certified-training loss against its closed form on hand-made logits."""

import math

import pytest
import torch

from lipkit.certify import (
    certified_radius,
    gloro_cross_entropy,
    hkr,
    margin_cross_entropy,
    multiclass_hinge,
    multiclass_kantorovich_rubinstein,
)
from lipkit.certify.losses import get_loss
from lipkit.errors import InvalidArgumentError, UnknownMethodError

LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])


def _log_softmax_target(row, target):
    return row[target] - math.log(sum(math.exp(v) for v in row))


def test_margin_cross_entropy_closed_form():
    offset, t = 1.5, 0.5
    expected = 0.0
    for row, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        shifted = [(v - (offset if j == y else 0.0)) / t for j, v in enumerate(row)]
        expected += -t * _log_softmax_target(shifted, y)
    got = margin_cross_entropy(LOGITS, LABELS, offset=offset, temperature=t)
    assert abs(float(got) - expected / 2) < 1e-12
    with pytest.raises(InvalidArgumentError):
        margin_cross_entropy(LOGITS, LABELS, temperature=0.0)


def test_hinge_kr_and_hkr_closed_forms():
    m = 1.0
    # sample 0 (y=0): relu(.5-2)=0, relu(.5+.5)=1, relu(.5-1)=0 -> 1
    # sample 1 (y=1): relu(.5+0)=.5, relu(.5-1)=0, relu(.5+3)=3.5 -> 4
    assert abs(float(multiclass_hinge(LOGITS, LABELS, m)) - 2.5) < 1e-12
    # class 0: 2 - 0 = 2; class 1: 1 - 0.5 = 0.5; class 2 has no member: skipped
    assert abs(float(multiclass_kantorovich_rubinstein(LOGITS, LABELS)) - 1.25) < 1e-12
    assert abs(float(hkr(LOGITS, LABELS, alpha=10.0, min_margin=m)) - (25.0 - 1.25)) < 1e-12


def test_gloro_bottom_class_closed_form_and_meaning():
    eps, lipschitz = 0.5, 1.0
    k = math.sqrt(2) * lipschitz
    expected = 0.0
    for row, y in zip(LOGITS.tolist(), LABELS.tolist(), strict=True):
        predicted = max(range(3), key=lambda j: row[j])
        bottom = max(row[j] + eps * k for j in range(3) if j != predicted)
        expected += -_log_softmax_target([*row, bottom], y)
    got = gloro_cross_entropy(LOGITS, LABELS, eps=eps, lipschitz=lipschitz)
    assert abs(float(got) - expected / 2) < 1e-12
    # the bottom logit is below the prediction exactly when the global radius exceeds eps
    radius = certified_radius(LOGITS, lipschitz, "global")
    for row, r in zip(LOGITS, radius, strict=True):
        top = row.max()
        bottom = max(float(v) + eps * k for v in row if v != top)
        assert (bottom < top) == (float(r) > eps)


def test_gloro_accepts_a_pairwise_matrix():
    pairwise = torch.full((3, 3), math.sqrt(2), dtype=torch.float64)
    torch.testing.assert_close(gloro_cross_entropy(LOGITS, LABELS, 0.3, pairwise),
                               gloro_cross_entropy(LOGITS, LABELS, 0.3, 1.0))


def test_unknown_loss_lists_the_choices():
    with pytest.raises(UnknownMethodError, match="margin-ce"):
        get_loss("nope")
