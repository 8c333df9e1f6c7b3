"""Typed options: each method registers a frozen dataclass; unknown fields are errors naming
the method and the field, from the API and from the command line."""

import dataclasses
import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lipkit.cli import app
from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.estimate import METHODS, estimate
from lipkit.estimate.jacobian import JacobianOptions
from lipkit.estimate.registry import option_fields

runner = CliRunner()


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))


def test_options_reach_their_method_and_nothing_else():
    report = estimate(_model(), methods=["lower-jacobian", "naive"],
                      options={"lower-jacobian": JacobianOptions(points=12)})
    lower = next(b for b in report.bounds if b.method == "lower-jacobian")
    assert lower.details["points"] == 12
    report = estimate(_model(), methods=["lower-jacobian"],
                      options={"lower-jacobian": {"points": "20"}})  # text, as from a CLI
    assert report.bounds[0].details["points"] == 20
    report = estimate(_model(), methods=["lower-jacobian", "naive"], points=7)
    assert report.bounds[0].details["points"] == 7


def test_unknown_fields_and_methods_are_named():
    with pytest.raises(InvalidArgumentError, match="lower-jacobian has no option 'steps'"):
        estimate(_model(), methods=["lower-jacobian"], options={"lower-jacobian": {"steps": 3}})
    with pytest.raises(InvalidArgumentError, match="unknown option 'pointz'"):
        estimate(_model(), methods=["lower-jacobian", "naive"], pointz=3)
    with pytest.raises(InvalidArgumentError, match="points' must be"):
        estimate(_model(), methods=["lower-jacobian"], options={"lower-jacobian": {"points":
                                                                                  1.5}})
    with pytest.raises(InvalidArgumentError, match="does not use"):
        estimate(_model(), methods=["naive"], options={"lower-jacobian": {"points": 3}})
    with pytest.raises(UnknownMethodError):
        estimate(_model(), methods=["naive"], options={"nope": {}})


def test_every_typed_method_names_its_fields():
    for name, method in METHODS.items():
        if method.options is not None:
            fields = option_fields(method.options)
            defaults = method.make_options()
            assert all(hasattr(defaults, field) for field in fields), name
            with pytest.raises(dataclasses.FrozenInstanceError):
                defaults.__setattr__(next(iter(fields), "x"), 0)  # frozen


def test_cli_option_flag(tmp_path):
    path = tmp_path / "model.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_model().eval(), (torch.randn(1, 3),), str(path), dynamo=False)
    result = runner.invoke(app, ["estimate", str(path), "-m", "lower-jacobian", "-o",
                                 "lower-jacobian.points=9", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bounds"][0]["details"]["points"] == 9
    result = runner.invoke(app, ["estimate", str(path), "-m", "lower-jacobian", "-o",
                                 "lower-jacobian.nope=9"])
    assert result.exit_code == 2 and "has no option 'nope'" in result.output
    result = runner.invoke(app, ["estimate", str(path), "-o", "points=9"])
    assert result.exit_code == 2 and "METHOD.FIELD=VALUE" in result.output
