"""Typed options: each method registers a frozen dataclass; unknown fields are errors naming
the method and the field, from the API and from the command line."""

import dataclasses
import json
import math
import time
import types
import typing

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from lipkit.cli import app
from lipkit.errors import InvalidArgumentError, UnknownMethodError
from lipkit.estimate import (
    METHODS,
    MethodOptions,
    Options,
    estimate,
    load_network,
    options_for,
    register_method,
)
from lipkit.estimate.jacobian import JacobianOptions
from lipkit.estimate.local_crown import LocalCrownOptions
from lipkit.estimate.mip import MipOptions
from lipkit.estimate.registry import option_fields

from .conftest import random_mlp

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


# ---------------------------------------------------------------------------------------
# every method: a frozen MethodOptions dataclass, unknown fields and bad values named


def _bad_values(kind):
    """Values a field of type ``kind`` must refuse, with the words the error must hold."""
    choices = typing.get_args(kind) if typing.get_origin(kind) in (typing.Union,
                                                                     types.UnionType) else (kind,)
    for choice in choices:
        if typing.get_origin(choice) is typing.Literal:
            yield "bogus", "one of"
        elif choice is int:
            yield -1, "integer >="
            yield 1.5, "must be"
        elif choice is float:
            yield math.nan, "must be"
            yield -1.0, "must be a number"
        elif choice is bool:
            yield "maybe", "must be"


def test_every_method_is_typed_and_refuses_unknown_fields_and_bad_values():
    network = load_network(_model())
    for name, method in METHODS.items():
        assert issubclass(method.options, MethodOptions), name
        with pytest.raises(InvalidArgumentError, match=f"{name} has no option 'nope'"):
            method.make_options({"nope": 1})
        with pytest.raises(InvalidArgumentError, match=f"{name} has no option 'nope'"):
            options_for(name, network, nope=1)
        for field, kind in option_fields(method.options).items():
            for value, words in _bad_values(kind):
                with pytest.raises(InvalidArgumentError, match=f"{name}.*'{field}'") as error:
                    method.make_options({field: value})
                assert words in str(error.value), (name, field, value, str(error.value))


def test_no_method_reads_an_untyped_dict():
    assert not hasattr(Options(), "extra")
    assert {f.name for f in dataclasses.fields(Options)} == {
        "norm", "time_limit", "data", "seed", "progress", "domain", "method"}
    with pytest.raises(InvalidArgumentError, match="was given JacobianOptions"):
        Options(method=JacobianOptions()).own(MipOptions)
    with pytest.raises(TypeError, match="frozen MethodOptions"):
        register_method("not-typed", kind="upper", options=dict)


def test_text_from_the_command_line_becomes_the_field_type():
    made = METHODS["exact-mip"].make_options({"time_limit": "2.5", "output": "0",
                                              "tighten": "interval", "vertex_bounds": "false",
                                              "node_limit": "none"})
    assert made == MipOptions(time_limit=2.5, output=0, tighten="interval",
                              vertex_bounds=False, node_limit=None)
    with pytest.raises(InvalidArgumentError, match="one of 'lp', 'interval'"):
        METHODS["exact-mip"].make_options({"tighten": "LP"})
    assert METHODS["lipsdp-neuron"].make_options({"solver": "scs"}).solver == "scs"


def test_a_keyword_only_a_skipped_method_has_is_allowed_in_a_default_run():
    # lipsdp-* do not apply to the l-inf norm: split is theirs, the run goes on without them
    report = estimate(_model(), norm="inf", split=2, budget=2)
    assert all(not b.method.startswith("lipsdp") for b in report.bounds)
    with pytest.raises(InvalidArgumentError, match="it is an option of lipsdp"):
        estimate(_model(), methods=["naive"], split=2)


# ---------------------------------------------------------------------------------------
# a typed option changes what its method does


def test_exact_mip_stops_at_its_own_time_limit_within_a_longer_run():
    model = random_mlp([10, 50, 50, 1], seed=0)  # its MIP takes minutes to close
    started = time.perf_counter()
    run_limited = estimate(model, methods=["exact-mip"], norm="inf", time_limit=4)
    run_seconds = time.perf_counter() - started
    started = time.perf_counter()
    own_limited = estimate(model, methods=["exact-mip"], norm="inf", time_limit=60,
                           options={"exact-mip": MipOptions(time_limit=0.5)})
    own_seconds = time.perf_counter() - started
    for report in (run_limited, own_limited):
        assert [b.kind for b in report.bounds] == ["upper", "lower"]
        assert all("time limit reached" in b.status for b in report.bounds)
    assert own_seconds < run_seconds - 1.0, (own_seconds, run_seconds)


def test_lp_jacobian_max_programs_leaves_the_other_rows_to_intervals():
    network = load_network(random_mlp([4, 12, 12, 12], seed=3))
    full = METHODS["lp-jacobian"].function(network, options_for("lp-jacobian", network,
                                                                norm="inf"))
    capped = METHODS["lp-jacobian"].function(network, options_for(
        "lp-jacobian", network, norm="inf", max_programs=1))
    assert full.status == "ok" and full.details["programs"] > 1
    assert capped.details["programs"] == 1
    assert capped.status.startswith("ok: 1 LPs reached")
    assert full.value <= capped.value <= capped.details["interval_bound"]


def _bounds(name, network, **keywords):
    result = METHODS[name].function(network, options_for(name, network, **keywords))
    return result if isinstance(result, list) else [result]


def test_exact_bab_output_and_max_branches():
    network = load_network(random_mlp([2, 8, 8, 2], seed=1))
    rows = []
    for row in (0, 1):
        (bound,) = _bounds("exact-bab", network, norm="inf", output=row)
        assert bound.kind == "exact" and bound.details["output"] == row
        rows.append(bound.value)
    (whole,) = _bounds("exact-bab", network, norm="inf")
    # the l-inf induced norm is the largest row l1 norm: its constant is the largest row's
    assert whole.value == pytest.approx(max(rows), rel=1e-6)
    bracket = _bounds("exact-bab", network, norm="inf", max_branches=1)
    assert [b.kind for b in bracket] == ["upper", "lower"]
    assert bracket[0].status.startswith("ok: box limit 1 reached")
    assert bracket[1].value <= whole.value * (1 + 1e-9) <= bracket[0].value * (1 + 2e-9)


def test_compositional_steps_and_lipsdp_options_reach_their_solvers():
    network = load_network(random_mlp([3, 6, 6, 2], seed=2))
    untuned = METHODS["compositional"].function(network, options_for(
        "compositional", network, steps=0))
    tuned = METHODS["compositional"].function(network, options_for(
        "compositional", network, steps=20, tuning_time_ratio=math.inf))
    assert untuned.details["steps"] == 0 and tuned.details["steps"] == 20
    # no step: ECLipsE-Fast's own value, proven; the steps can only improve on it
    assert untuned.value == pytest.approx(untuned.details["eclipse_fast"], rel=1e-6)
    assert tuned.value <= untuned.value * (1 + 1e-9)
    whole = METHODS["lipsdp-neuron"].function(network, options_for(
        "lipsdp-neuron", network, solver="clarabel"))
    split = METHODS["lipsdp-neuron"].function(network, options_for(
        "lipsdp-neuron", network, split=1, solver="clarabel"))
    assert whole.details["solver"] == "clarabel" and "pieces" not in whole.details
    assert len(split.details["pieces"]) == 3
    assert whole.value <= split.value * (1 + 1e-9)  # a product of pieces is looser
    coupled = METHODS["lipsdp-network-rand"].function(network, options_for(
        "lipsdp-network-rand", network, couplings=3))
    assert coupled.details["couplings"] == 3


def test_local_crown_output_and_spec_name_the_rows_bounded():
    network = load_network(random_mlp([3, 6, 2], seed=4))
    center = torch.zeros(3, dtype=torch.float64)
    by_row = [METHODS["local-crown"].function(network, options_for(
        "local-crown", network, norm="inf", center=center, radius=0.2, output=row))[0]
        for row in (0, 1)]
    spec = METHODS["local-crown"].function(network, options_for(
        "local-crown", network, norm="inf", center=center, radius=0.2,
        spec=torch.eye(2, dtype=torch.float64)[1:]))[0]
    assert [b.details["output"] for b in by_row] == [0, 1]
    assert len(by_row[0].details["rows_upper"]) == 1
    assert spec.value == pytest.approx(by_row[1].value, rel=1e-12)
    with pytest.raises(InvalidArgumentError, match="'output' or 'spec', not both"):
        LocalCrownOptions(output=0, spec=torch.eye(2))
    with pytest.raises(InvalidArgumentError, match="non-finite"):
        LocalCrownOptions(spec=torch.tensor([[math.nan, 1.0]]))


def test_cli_option_of_a_solver_method(tmp_path):
    path = tmp_path / "model.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(random_mlp([3, 6, 6, 2], seed=5).float().eval(),
                          (torch.randn(1, 3),), str(path), dynamo=False)
    common = ["estimate", str(path), "-m", "exact-mip", "--norm", "inf", "--json"]
    exact = runner.invoke(app, common)
    assert exact.exit_code == 0, exact.output
    (bound,) = json.loads(exact.stdout)["bounds"]
    assert bound["kind"] == "exact" and bound["details"]["tighten"] == "lp"
    bracket = runner.invoke(app, [*common, "-o", "exact-mip.node_limit=0", "-o",
                                  "exact-mip.tighten=interval"])
    assert bracket.exit_code == 0, bracket.output
    upper, lower = json.loads(bracket.stdout)["bounds"]
    assert (upper["kind"], lower["kind"]) == ("upper", "lower")
    assert upper["details"]["tighten"] == "interval" and upper["details"]["nodes"] == 0
    assert lower["value"] <= bound["value"] * (1 + 1e-9) <= upper["value"] * (1 + 1e-9)
    refused = runner.invoke(app, [*common, "-o", "exact-mip.tighten=cuts"])
    assert refused.exit_code == 2
    assert "exact-mip option 'tighten' must be one of 'lp', 'interval'" in refused.output
    refused = runner.invoke(app, [*common, "-o", "exact-mip.threads=0"])
    assert refused.exit_code == 2 and "'threads' must be an integer >= 1" in refused.output
