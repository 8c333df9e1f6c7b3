"""A run's wall-clock budget: cheapest first, expensive methods stop at their share, what
does not fit is listed as skipped, Ctrl-C keeps the bounds found; the CLI shows the same."""

import itertools
import json
import math
import time

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lipkit.cli import app
from lipkit.errors import InvalidArgumentError
from lipkit.estimate import METHODS, estimate
from lipkit.estimate.report import DEFAULT_BUDGET

runner = CliRunner()


def _mlp(widths, seed=0):
    torch.manual_seed(seed)
    layers = []
    for a, b in itertools.pairwise(widths):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_default_budget_and_skipped_methods_are_listed():
    assert DEFAULT_BUDGET == 60.0
    model = _mlp([3, 8, 2])
    started = time.perf_counter()
    report = estimate(model, norm="2", budget=3.0)
    assert time.perf_counter() - started < 3.0 + 5.0
    assert report.budget == 3.0 and report.consistent
    statuses = {b.method: b.status for b in report.bounds}
    assert statuses["naive"] == "ok"  # instant methods always run
    # every registered method supporting the norm that can prove something appears: run,
    # or skipped with a reason (estimate-only methods run when asked for by name)
    for name, method in METHODS.items():
        if "2" in method.norms and method.kind != "estimate" and not method.needs_domain:
            assert name in statuses, name
        if method.kind == "estimate":
            assert name not in statuses, name


def test_a_tiny_budget_still_gives_the_instant_upper_bound():
    model = _mlp([20, 64, 64, 5])
    report = estimate(model, norm="2", budget=1e-9)
    naive = next(b for b in report.bounds if b.method == "naive")
    assert naive.usable and math.isfinite(report.interval[1])
    skipped = [b for b in report.bounds if b.status.startswith("skipped")]
    assert skipped and all("budget" in b.status for b in skipped)


@pytest.mark.parametrize("value", [0, -1, math.nan, math.inf, "soon"])
def test_bad_budgets_are_refused(value):
    with pytest.raises(InvalidArgumentError, match="budget"):
        estimate(nn.Linear(2, 1), methods=["naive"], budget=value)


def test_interrupt_keeps_the_bounds_found(monkeypatch):
    model = _mlp([3, 8, 2])
    original = METHODS["lower-adversarial"].function

    def interrupted(network, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(METHODS["lower-adversarial"], "function", interrupted)
    report = estimate(model, methods=["naive", "lower-jacobian", "lower-adversarial",
                                      "compositional"], norm="2")
    assert report.interrupted and report.consistent
    assert {b.method for b in report.bounds if b.usable} >= {"naive", "lower-jacobian"}
    assert any(b.status == "skipped: interrupted" for b in report.bounds)
    assert METHODS["lower-adversarial"].function is interrupted
    monkeypatch.setattr(METHODS["lower-adversarial"], "function", original)


def test_cli_budget_interrupt_and_json(tmp_path, monkeypatch):
    from scipy.io import savemat

    path = tmp_path / "net.mat"
    torch.manual_seed(0)
    weights = [torch.randn(8, 3).double().numpy(), torch.randn(2, 8).double().numpy()]
    savemat(path, {"weights": weights})
    result = runner.invoke(app, ["estimate", str(path), "--budget", "none", "-m", "naive",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["budget"] == "none"
    for bad in ("0", "-3", "nan", "soon"):
        result = runner.invoke(app, ["estimate", str(path), "--budget", bad])
        assert result.exit_code == 2 and "--budget" in result.output, (bad, result.output)

    def interrupted(network, options):
        raise KeyboardInterrupt

    monkeypatch.setattr(METHODS["lower-adversarial"], "function", interrupted)
    result = runner.invoke(app, ["estimate", str(path), "-m", "naive", "-m",
                                 "lower-adversarial", "--json"])
    assert result.exit_code == 130
    payload = json.loads(result.stdout)
    assert payload["interrupted"] is True and payload["interval"]["upper_method"] == "naive"
