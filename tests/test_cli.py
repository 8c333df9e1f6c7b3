"""The command line: help, version, the demo report, one-line errors."""

import json

import torch
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from lipkit import __version__
from lipkit.cli import app
from lipkit.data import load_digits

runner = CliRunner()


def test_help_lists_the_commands_and_version_prints():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


def test_quick_demo_writes_a_sound_report(tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    section = next(iter(metrics["sections"].values()))
    assert section["bound_dominates_observations"] is True
    for key in ("bjorck", "spectral"):
        variant = section[key]
        # the guaranteed bound of a model built for lipschitz=1 is 1 up to convergence
        assert variant["lipschitz_bound"] <= 1.0 + 1e-3, variant
        assert variant["largest_jacobian_norm"] <= variant["lipschitz_bound"] * (1 + 1e-4)
        assert variant["test_accuracy"] > 0.5, variant  # 4 epochs already learn digits
    report = (out / "report.md").read_text()
    assert "1-Lipschitz classifiers" in report and "digits_training.png" in report
    assert (out / "digits_training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "metrics.json").read_text())["seed"] == 0

    # the exported weights are plain tensors that a plain torch model loads
    plain = nn.Sequential(nn.Linear(64, 256), nn.Identity(), nn.Linear(256, 256),
                          nn.Identity(), nn.Linear(256, 10))
    state = load_file(str(out / "digits_orthogonal.safetensors"))
    plain.load_state_dict(state)
    singular_values = torch.linalg.svdvals(state["2.weight"])
    torch.testing.assert_close(singular_values, torch.ones(256), atol=1e-4, rtol=0)
    assert load_digits().x_test.shape[1] == 64


def test_demo_error_is_one_line_with_exit_code_2(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["demo", "--quick", "--out", str(blocker / "sub")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and len(lines) <= 3, result.output


def _export_onnx(path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 3)).eval()
    torch.onnx.export(model, (torch.randn(1, 4),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return model


def test_estimate_command_json_bounds_bracket_the_truth(tmp_path):
    path = tmp_path / "mlp.onnx"
    model = _export_onnx(path)
    result = runner.invoke(app, ["estimate", str(path), "-m", "naive", "-m", "seqlip",
                                 "-m", "lower-jacobian", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [b["method"] for b in report["bounds"]] == ["naive", "seqlip", "lower-jacobian"]
    for bound in report["bounds"]:
        assert {"method", "kind", "value", "seconds", "status"} <= set(bound)
    interval = report["interval"]
    naive = float(torch.linalg.matrix_norm(model[0].weight, 2) *
                  torch.linalg.matrix_norm(model[2].weight, 2))
    assert abs(report["bounds"][0]["value"] - naive) < 1e-5 * naive
    assert 0 < interval["lower"] <= interval["upper"] <= naive * (1 + 1e-9)
    assert interval["consistent"] is True


def test_estimate_command_table_and_errors(tmp_path):
    path = tmp_path / "mlp.onnx"
    _export_onnx(path)
    result = runner.invoke(app, ["estimate", str(path), "-m", "naive", "--norm", "inf"])
    assert result.exit_code == 0 and "naive" in result.output and "||f||_L in" in result.output
    truncated = tmp_path / "broken.onnx"
    truncated.write_bytes(path.read_bytes()[:50])
    for arguments, message in (
        ([str(truncated)], "not a valid ONNX model"),
        ([str(path), "-m", "nope"], "unknown estimation method 'nope'"),
        ([str(path), "--norm", "7"], "unsupported norm"),
        ([str(path), "--input-shape", "a,b"], "--input-shape"),
        ([str(tmp_path / "missing.onnx")], "no such file"),
    ):
        result = runner.invoke(app, ["estimate", *arguments])
        assert result.exit_code == 2, (arguments, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (
            arguments, result.output)


def test_estimate_command_plot_and_interval_ends(tmp_path):
    path = tmp_path / "mlp.onnx"
    _export_onnx(path)
    plot = tmp_path / "out" / "bounds.png"
    result = runner.invoke(app, ["estimate", str(path), "-m", "naive", "-m", "compositional",
                                 "-m", "lower-jacobian", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "lower: lower-jacobian" in result.output and "upper: compositional" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for arguments, message in (
        (["--plot", str(blocker / "bounds.png")], "cannot write the plot"),
        (["--workers", "0"], "--workers must be a positive integer"),
    ):
        result = runner.invoke(app, ["estimate", str(path), "-m", "naive", *arguments])
        assert result.exit_code == 2, (arguments, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (arguments, result.output)


def test_console_script_prints_lipkit_warnings_on_one_line_and_silences_others(
        monkeypatch, capsys):
    import warnings

    import pytest

    import lipkit.cli as cli
    from lipkit.errors import LipkitWarning

    def command(args, prog_name, standalone_mode):
        warnings.warn("a torch-like\nwarning", UserWarning, stacklevel=1)
        warnings.warn("spectral_norm(operator=False) does not\n  bound the convolution",
                      LipkitWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "app", command)
    with pytest.raises(SystemExit) as exit_:
        cli.run(["anything"])
    assert exit_.value.code == 0
    err = capsys.readouterr().err
    assert err == ("warning: spectral_norm(operator=False) does not bound the convolution\n")


# the solvers and file formats a naive estimate of a weight file never needs (and pydantic,
# which typer >= 0.29 imports to parse every option: pyproject pins typer below it)
HEAVY_MODULES = ("cvxpy", "highspy", "onnx", "onnxruntime", "ot", "gymnasium", "matplotlib",
                 "scipy.io", "scipy.sparse", "scipy.optimize", "sklearn", "lipkit.nn",
                 "pydantic")
_STARTUP_PROBE = """
import json, sys
prefixes = tuple(sys.argv[2:])
sys.argv = ["lipkit", "estimate", sys.argv[1], "-m", "naive", "--json"]
from lipkit.cli import run
try:
    run()
except SystemExit as done:
    code = done.code
heavy = sorted(name for name in sys.modules
               if any(name == p or name.startswith(p + ".") for p in prefixes))
print(json.dumps({"code": code, "heavy": heavy}))
"""


def test_a_naive_estimate_of_a_weight_file_imports_no_solver(tmp_path):
    """`lipkit estimate small.mat -m naive` starts fast (BENCHMARKS.md, start-up): lipkit
    imports the solvers, ONNX, scipy's readers and lipkit.nn only where they are used."""
    import subprocess
    import sys

    import numpy as np
    import scipy.io

    path = tmp_path / "small.mat"
    rng = np.random.default_rng(0)
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = rng.standard_normal((16, 8)), rng.standard_normal((4, 16))
    scipy.io.savemat(path, {"weights": cell})
    probe = tmp_path / "probe.py"
    probe.write_text(_STARTUP_PROBE)
    done = subprocess.run([sys.executable, str(probe), str(path), *HEAVY_MODULES],
                          capture_output=True, text=True, timeout=120, check=True)
    lines = done.stdout.strip().splitlines()
    report, probed = json.loads("\n".join(lines[:-1])), json.loads(lines[-1])
    assert probed["code"] == 0, done.stderr
    assert probed["heavy"] == [], probed["heavy"]
    expected = np.linalg.norm(cell[0, 0], 2) * np.linalg.norm(cell[0, 1], 2)
    assert abs(report["interval"]["upper"] / expected - 1) < 1e-9  # the file was read right
