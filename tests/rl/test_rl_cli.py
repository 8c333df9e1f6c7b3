"""``lipkit rl``: the report folder of a quick run; one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from lipkit.cli import app

runner = CliRunner()


def test_quick_rl_run_writes_a_report_where_the_theorem_holds(tmp_path):
    out = tmp_path / "rl"
    result = runner.invoke(app, ["rl", "--env", "CartPole-v1", "--lipschitz", "0.5,2",
                                 "--method", "clip", "--no-unconstrained", "--quick",
                                 "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    for name in ("metrics.json", "report.md", "compounding_error.png", "returns.png"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads(result.stdout)["environment"] == "CartPole-v1"
    models = [(run["method"], run["target"]) for run in metrics["runs"]]
    assert models == [("clip", 0.5), ("clip", 2.0)]
    for run in metrics["runs"]:
        error = run["compounding"]
        assert error["holds"]
        assert all(w <= b * (1 + 1e-9) + 1e-9
                   for w, b in zip(error["wasserstein"], error["bound"], strict=True))
        if run["target"] is not None:
            assert run["state_lipschitz"]["value"] <= run["target"] * (1 + 1e-5)
        # CartPole's reward is cut by termination: Theorem 2 is not checked, and it says why
        assert "termination" in run["value_bound"]["not_checked"]
    report = (out / "report.md").read_text()
    assert "| clip K=0.5 |" in report
    assert "CartPole-v1: its reward is 1 per step until termination" in report


@pytest.mark.parametrize("arguments,message", [
    (["--env", "Acrobot-v1"], "unknown environment 'Acrobot-v1'"),
    (["--lipschitz", "1,-2"], "lipschitz must be a finite number > 0"),
    (["--lipschitz", "0"], "lipschitz must be a finite number > 0"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--planner", "mppi"], "unknown planner 'mppi'"),
])
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, arguments, message):
    result = runner.invoke(app, ["rl", "--quick", "--out", str(tmp_path / "x"), *arguments])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not (tmp_path / "x").exists()


def test_demo_section_is_quick_and_sound(tmp_path):
    import time

    from lipkit.cli.demo import Progress, reinforcement_learning_section

    started = time.perf_counter()
    section = reinforcement_learning_section(tmp_path, Progress(False), 0, True, {})
    seconds = time.perf_counter() - started
    rows = [row for row in section.metrics["summary"] if "delta" in row]
    assert [row["model"] for row in rows] == ["spectral K=0.5", "spectral K=2", "unconstrained"]
    assert all(row["bound_held"] for row in rows)
    # Theorem 2, per start state, with Pendulum's Lipschitz reward
    assert all(row["value_bound_held"] and row["value_max_error"] <= row["value_bound"]
               for row in rows)
    assert rows[0]["state_lipschitz"] <= 0.5 * (1 + 1e-5)
    for figure in section.figures:
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| spectral K=2 |" in section.markdown and not section.markdown.startswith("#")
    assert seconds < 30, seconds  # a few seconds on an idle machine; generous when shared
