"""Certified radii: exact for linear classifiers, pairwise never looser than the global forms."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lipkit.certify import LogitConstants, certified_radius
from lipkit.errors import InvalidArgumentError


def _exact_distance(weight, bias, x):
    """Distance from x to the decision boundary of argmax(W x + b): the nearest of the
    half-spaces {f_j >= f_y}, by the point-to-hyperplane formula."""
    logits = x @ weight.T + bias
    y = logits.argmax(1)
    distances = []
    for i in range(len(x)):
        gaps = logits[i, y[i]] - logits[i]
        norms = (weight[y[i]] - weight).norm(dim=1)
        ratio = gaps / norms
        ratio[y[i]] = math.inf
        distances.append(ratio.min())
    return torch.stack(distances), logits


@settings(max_examples=20)
@given(st.integers(0, 10_000), st.integers(2, 6), st.integers(2, 8))
def test_linear_classifier_radius_is_the_distance_to_the_boundary(seed, classes, features):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(classes, features, generator=generator, dtype=torch.float64)
    bias = torch.randn(classes, generator=generator, dtype=torch.float64)
    x = torch.randn(16, features, generator=generator, dtype=torch.float64)
    exact, logits = _exact_distance(weight, bias, x)
    constants = LogitConstants.from_last_linear(1.0, weight, "test")
    pairwise = certified_radius(logits, constants, "pairwise")
    torch.testing.assert_close(pairwise, exact, rtol=1e-9, atol=1e-12)
    for form in ("global", "per-logit"):
        radius = certified_radius(logits, constants, form)
        assert bool((radius <= exact * (1 + 1e-9) + 1e-12).all()), form
        assert bool((radius <= pairwise * (1 + 1e-9) + 1e-12).all()), form


def test_just_beyond_the_pairwise_radius_the_prediction_changes():
    torch.manual_seed(0)
    weight, bias = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
    x = torch.randn(1, 5, dtype=torch.float64)
    logits = x @ weight.T + bias
    radius = float(certified_radius(logits, LogitConstants.from_last_linear(1.0, weight, "t")))
    y = int(logits.argmax())
    gaps = (logits[0, y] - logits[0]) / (weight[y] - weight).norm(dim=1)
    gaps[y] = math.inf
    j = int(gaps.argmin())
    direction = (weight[j] - weight[y]) / (weight[j] - weight[y]).norm()
    inside = (x + 0.999 * radius * direction) @ weight.T + bias
    beyond = (x + 1.001 * radius * direction) @ weight.T + bias
    assert int(inside.argmax()) == y and int(beyond.argmax()) != y


def test_orthonormal_rows_make_global_and_pairwise_radii_equal():
    torch.manual_seed(1)
    weight = torch.linalg.qr(torch.randn(8, 3, dtype=torch.float64)).Q.T  # 3 orthonormal rows
    x = torch.randn(32, 8, dtype=torch.float64)
    exact, logits = _exact_distance(weight, torch.zeros(3, dtype=torch.float64), x)
    constants = LogitConstants.from_last_linear(1.0, weight, "t")
    for form in ("global", "pairwise"):
        torch.testing.assert_close(certified_radius(logits, constants, form), exact)


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.floats(0.1, 5.0), st.floats(0.2, 2.0))
def test_pairwise_is_never_looser_than_the_global_forms(seed, body, shrink):
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(5, 7, generator=generator, dtype=torch.float64)
    logits = torch.randn(20, 5, generator=generator, dtype=torch.float64)
    spectral = float(torch.linalg.matrix_norm(weight, ord=2))
    # a whole-network bound that may be tighter than body * ||W|| (as an estimate can be)
    constants = LogitConstants.from_last_linear(body, weight, "t", whole=shrink * body * spectral)
    pairwise = certified_radius(logits, constants, "pairwise")
    for form in ("global", "per-logit"):
        assert bool((pairwise >= certified_radius(logits, constants, form) - 1e-12).all()), form


def test_global_and_per_logit_closed_forms_and_the_l_infinity_radius():
    logits = torch.tensor([[4.0, 1.0, 3.0], [0.0, 2.0, 0.5]])
    torch.testing.assert_close(certified_radius(logits, 2.0, "global"),
                               torch.tensor([1.0, 1.5], dtype=torch.float64) / (2 * 2 ** 0.5))
    torch.testing.assert_close(certified_radius(logits, 2.0, "per-logit"),
                               torch.tensor([1.0, 1.5], dtype=torch.float64) / 4)
    l2 = certified_radius(logits, 2.0, "global")
    torch.testing.assert_close(certified_radius(logits, 2.0, "global", "inf", input_dim=16),
                               l2 / 4)
    # with labels, a misclassified input has radius 0
    labelled = certified_radius(logits, 2.0, "global", labels=torch.tensor([2, 1]))
    assert float(labelled[0]) == 0.0 and float(labelled[1]) > 0


def test_bad_arguments_are_one_line_errors():
    logits = torch.zeros(2, 3)
    with pytest.raises(InvalidArgumentError, match="form"):
        certified_radius(logits, 1.0, "nope")
    with pytest.raises(InvalidArgumentError, match="input_dim"):
        certified_radius(logits, 1.0, "global", "inf")
    with pytest.raises(InvalidArgumentError, match="finite"):
        certified_radius(logits, math.nan)
    with pytest.raises(InvalidArgumentError, match="classes"):
        certified_radius(torch.zeros(3), 1.0)
