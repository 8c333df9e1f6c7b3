"""The report: the interval, unusable bounds, inconsistency, JSON, errors."""

import json
import math

import pytest
import torch
from torch import nn

from lipkit.errors import UnknownMethodError
from lipkit.estimate import Bound, Report, estimate, load_network
from lipkit.estimate.report import default_methods

from .conftest import random_mlp


def test_interval_uses_only_proven_bounds():
    network = load_network(nn.Linear(2, 2))
    report = Report(network, "2", [
        Bound(0.5, "lower", 2, "a"), Bound(0.7, "lower", 2, "b"),
        Bound(3.0, "upper", 2, "c"), Bound(2.0, "upper", 2, "d"),
        Bound(0.1, "estimate", 2, "heuristic"),
        Bound(1.0, "upper", 2, "failed", status="uncertified: R not negative definite"),
        Bound(math.nan, "upper", 2, "skipped", status="not applicable: x"),
    ])
    assert report.interval == (0.7, 2.0)
    assert report.lower.method == "b" and report.upper.method == "d"
    assert math.isclose(report.gap, 2.0 / 0.7) and report.consistent
    report.bounds.append(Bound(2.5, "lower", 2, "buggy"))
    assert not report.consistent


def test_estimate_report_is_json_and_sound_on_a_random_net():
    model = random_mlp([5, 20, 20, 3], seed=2)
    report = estimate(model, methods=["naive", "autolip", "seqlip", "lower-jacobian",
                                      "lower-adversarial"], steps=10)
    text = json.dumps(report.to_dict())
    payload = json.loads(text)
    for bound in payload["bounds"]:
        assert {"method", "kind", "value", "seconds", "status"} <= set(bound)
    low, high = report.interval
    assert 0 < low <= high and report.consistent
    assert payload["interval"]["upper_method"] in ("seqlip", "autolip", "naive")


def test_default_methods_fit_and_unknown_method_lists_choices():
    network = load_network(random_mlp([3, 4, 2]))
    assert {"naive", "seqlip", "lower-jacobian"} <= set(default_methods(network, "2"))
    assert "seqlip" not in default_methods(network, "inf")  # l2 only
    with pytest.raises(UnknownMethodError, match=r"choose from: .*naive"):
        estimate(network, methods=["nope"])


def test_norm_not_supported_is_reported_not_raised():
    report = estimate(nn.Linear(3, 3), methods=["seqlip", "naive"], norm="inf")
    by_method = {bound.method: bound for bound in report.bounds}
    assert by_method["seqlip"].status.startswith("not applicable")
    assert by_method["naive"].usable
    assert math.isclose(report.interval[1], float(
        report.network.nodes[0].op.operator.weight.abs().sum(1).max()), rel_tol=1e-12)


def test_data_points_are_used_by_the_lower_bounds():
    torch.manual_seed(0)
    model = random_mlp([2, 8, 1], seed=7)
    data = torch.randn(50, 2)
    report = estimate(model, methods=["lower-jacobian"], data=data, points=20)
    assert report.bounds[0].details["points"] == 50 + 20  # all data (up to 4x) + random
