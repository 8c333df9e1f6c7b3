"""The shared Domain: every number checked, the box contains the real domain, the solvers
refuse what float64 cannot resolve, and a local run keeps its lower bounds local."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.estimate import estimate
from lipkit.estimate.domain import Domain


@pytest.mark.parametrize("options, message", [
    ({"center": [0.0, math.nan]}, "non-finite"),
    ({"center": [0.0, math.inf]}, "non-finite"),
    ({"center": [0.0, 0.0, 0.0]}, "3 entries"),
    ({"center": [0.0, 0.0], "radius": math.inf}, "radius"),
    ({"center": [0.0, 0.0], "radius": -1.0}, "radius"),
    ({"center": [0.0, 0.0], "radius": math.nan}, "radius"),
    ({"center": [0.0, 0.0], "radius": "x"}, "radius"),
    ({"radius": 1.0}, "needs a center"),
    ({"box": ([1.0, 0.0], [0.0, 1.0])}, "lower end above"),
    ({"box": ([0.0, 0.0], [1.0, 1.0]), "center": [0.0, 0.0]}, "not both"),
    ({"center": [2.0, 0.5], "data_domain": (0.0, 1.0)}, "outside the data domain"),
    ({"center": [0.0, 0.0], "ball": "3"}, "ball"),
    ({"center": [1e308, 0.0], "radius": 1e308}, "overflows"),
])
def test_bad_domains_are_refused_with_a_named_error(options, message):
    with pytest.raises(InvalidArgumentError, match=message):
        Domain.from_options(2, options)


def test_box_contains_the_ball_and_clips_to_the_data_domain():
    domain = Domain.parse(3, center=[0.1, 0.5, 0.95], radius=0.1, data_domain=(0.0, 1.0))
    assert np.all(domain.lower <= np.array([0.0, 0.4, 0.85]))
    assert np.all(domain.upper >= np.array([0.2, 0.6, 1.0]))
    assert domain.upper[2] <= np.nextafter(1.0, 2.0)  # clipped, then rounded out once
    points = domain.sample(500, (3,), seed=0)
    assert bool(domain.contains(points).all())
    assert float(points.min()) >= 0.0 and float(points.max()) <= 1.0
    # l2 ball: points inside the ball itself, the box encloses it
    ball = Domain.parse(3, center=[0.0, 0.0, 0.0], radius=0.5, ball="2")
    sample = ball.sample(500, (3,), seed=1)
    assert float(sample.norm(dim=1).max()) <= 0.5
    far = ball.project(torch.full((1, 3), 10.0))
    assert bool(ball.contains(far).all())


def test_huge_centers_are_refused_by_the_solvers_not_answered():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    for center in (1e16, 1e300, 1e8):
        report = estimate(model, methods=["exact-mip", "exact-bab"], norm="inf",
                          center=[center, center], radius=0.1)
        for bound in report.bounds:
            assert not bound.usable, (center, bound)
            assert "not applicable" in bound.status and "beyond" in bound.status
    # lp-jacobian (proven by interval arithmetic and LP duals) stays sound far away
    center = torch.tensor([[1e3, -1e3]], dtype=torch.float64, requires_grad=True)
    report = estimate(model, methods=["lp-jacobian"], norm="inf", center=center[0].detach(),
                      radius=0.1)
    (gradient,) = torch.autograd.grad(model(center).sum(), center)
    assert report.upper.value >= float(gradient.abs().sum()) * (1 - 1e-12)


def test_a_local_run_has_local_lower_bounds_and_no_global_values():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 2)).double()
    center, radius = torch.tensor([0.3, -0.2, 0.1]), 0.05
    report = estimate(model, norm="inf", center=center, radius=radius)
    assert report.consistent, report.to_dict()["interval"]
    assert report.to_dict()["domain"]["kind"] == "local"
    for bound in report.bounds:
        witness = bound.details.get("witness", {})
        for key in ("x1", "x2", "x"):
            if key in witness:
                x = torch.as_tensor(witness[key], dtype=torch.float64).reshape(-1)
                assert float((x - center).abs().max()) <= radius * (1 + 1e-12), bound.method
        if bound.kind in ("lower", "exact", "estimate") and bound.method.startswith("lipsdp"):
            assert not bound.usable
    methods = {b.method for b in report.bounds if b.usable and b.kind == "lower"}
    assert {"lower-jacobian", "lower-adversarial"} <= methods
    # the local interval sits inside the global one at its lower end's ratio
    everywhere = estimate(model, norm="inf", methods=["naive"])
    assert report.interval[0] <= everywhere.interval[1]


def test_explicit_global_lower_method_is_skipped_on_a_local_domain():
    model = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)).double()
    report = estimate(model, methods=["shor", "naive"], norm="inf", center=[0.0, 0.0],
                      radius=0.1)
    naive = next(b for b in report.bounds if b.method == "naive")
    assert naive.usable and "global" in naive.details["domain"]
    # shor is an upper bound too: kept (a global upper bound bounds every domain)
    report = estimate(model, methods=["lipsdp-network"], norm="2", center=[0.0, 0.0],
                      radius=0.1)
    assert report.bounds[0].status.startswith("not applicable")


@pytest.mark.parametrize("value", [-1, 0, math.nan, math.inf, "soon"])
def test_time_limit_is_checked(value):
    with pytest.raises(InvalidArgumentError, match="time_limit"):
        estimate(nn.Linear(2, 1), methods=["naive"], time_limit=value)


@pytest.mark.parametrize("value", [2 ** 70, -1, 1.5, "x"])
def test_seed_is_checked(value):
    with pytest.raises(InvalidArgumentError, match="seed"):
        estimate(nn.Linear(2, 1), methods=["naive"], seed=value)


def test_cli_local_run_without_methods_is_local_and_consistent(tmp_path):
    import json
    import warnings

    from typer.testing import CliRunner

    from lipkit.cli import app

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 12), nn.ReLU(), nn.Linear(12, 2))
    path = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 3),), str(path), dynamo=False)
    result = CliRunner().invoke(app, ["estimate", str(path), "--norm", "inf", "--center",
                                      "0.5,-0.2,0.1", "--radius", "0.05", "--budget", "20",
                                      "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["domain"]["kind"] == "local" and payload["interval"]["consistent"]
    center = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    for bound in payload["bounds"]:
        witness = bound["details"].get("witness", {}) if isinstance(bound["details"],
                                                                    dict) else {}
        for key in ("x1", "x2", "x"):
            if key in witness:
                point = torch.tensor(witness[key], dtype=torch.float64).reshape(-1)
                assert float((point - center).abs().max()) <= 0.05 * (1 + 1e-9), bound
