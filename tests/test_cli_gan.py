"""``lipkit gan``: a short run writes its folder, resumes, and fails in one line."""

import json

from typer.testing import CliRunner

from lipkit.cli import app

runner = CliRunner()
SMALL = ["gan", "--steps", "4", "--n-critic", "2", "--hidden", "16", "--depth", "2",
         "--batch-size", "32", "--eval-every", "2", "--eval-samples", "64",
         "--checkpoint-every", "2"]


def test_gan_json_run_then_resume(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, [*SMALL, "--lipschitz", "alp", "--option", "epsilon=0.01,1",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["config"]["method_options"] == {"epsilon": [0.01, 1.0]}
    assert [e["step"] for e in metrics["evaluations"]] == [2, 4]
    assert metrics["final"]["w1_exact"] > 0
    assert json.loads((out / "metrics.json").read_text())["final"] == metrics["final"]
    longer = [a if a != "4" else "6" for a in SMALL]
    result = runner.invoke(app, [*longer, "--lipschitz", "alp", "--option", "epsilon=0.01,1",
                                 "--out", str(out), "--resume", "--json"])
    assert result.exit_code == 0, result.output
    resumed = json.loads(result.stdout)
    assert resumed["resumed_from_step"] == 4 and resumed["final"]["step"] == 6


def test_gan_errors_are_one_line_with_exit_code_2(tmp_path):
    for arguments, text in [
        (["--lipschitz", "weight-decay"], "choose from"),
        (["--data", "cifar"], "8gaussians"),
        (["--option", "xii=3", "--lipschitz", "alp"], "no option xii"),
        (["--option", "novalue"], "key=value"),
    ]:
        result = runner.invoke(app, [*SMALL, *arguments, "--out", str(tmp_path / "x")])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2, result.output
        assert lines[-1].startswith("error: ") and text in lines[-1], result.output
