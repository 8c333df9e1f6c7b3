"""``lipkit mi``: JSON metrics, files, one-line errors."""

import json
import math

from typer.testing import CliRunner

from lipkit.cli import app

runner = CliRunner()


def test_mi_command_writes_metrics_and_plot(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["mi", "--estimator", "d-lambda", "--lipschitz", "spectral",
                                 "--constant", "4", "--levels", "1,3", "--steps", "6",
                                 "--dim", "3", "--hidden", "16", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert [row["true_mi"] for row in metrics["levels"]] == [1.0, 3.0]
    assert metrics["log_batch"] == math.log(64)
    assert metrics["certified_lipschitz"] <= 4.0 * 1.01
    saved = json.loads((out / "metrics.json").read_text())
    assert len(saved["estimates"]) == 12
    assert (out / "mi.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mi_table_output(tmp_path):
    result = runner.invoke(app, ["mi", "--levels", "1", "--steps", "4", "--dim", "2",
                                 "--hidden", "8", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "InfoNCE" in result.output and "bias" in result.output


def test_mi_errors_are_one_line_with_exit_code_2(tmp_path):
    for arguments in (["--estimator", "kl"], ["--estimator", "wdm"], ["--levels", "2,x"],
                      ["--lipschitz", "magic"], ["--critic", "diagonal"], ["--steps", "0"]):
        result = runner.invoke(app, ["mi", *arguments, "--out", str(tmp_path)])
        assert result.exit_code == 2, (arguments, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), (arguments, result.output)
