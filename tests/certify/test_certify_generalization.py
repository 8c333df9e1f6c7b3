"""The random-label experiment: its rows are consistent and its figure is written."""

import math

from typer.testing import CliRunner

from lipkit.certify.generalization import label_noise_experiment, plot_label_noise
from lipkit.cli import app


def test_rows_are_consistent_and_the_figure_is_written(tmp_path):
    rows = label_noise_experiment(noise=(0.0, 1.0), epochs=1, hidden=(16,))
    assert [(r["network"], r["random_labels"]) for r in rows] == [
        ("unconstrained", 0.0), ("unconstrained", 1.0), ("lipschitz", 0.0), ("lipschitz", 1.0)]
    for row in rows:
        assert math.isclose(row["generalization_gap"],
                            row["train_accuracy"] - row["test_accuracy"])
        assert math.isclose(row["normalized_complexity"],
                            row["spectral_complexity"] / row["margin"])
        assert row["margin"] > 0 and row["spectral_complexity"] > 0
        # normalized margins are margins of correct points over R_A: positive
        assert all(m > 0 for m in row["normalized_margins"])
    # labels drawn at random carry nothing about the test labels: near chance (0.1)
    assert rows[1]["test_accuracy"] < 0.3 and rows[3]["test_accuracy"] < 0.3
    plot_label_noise(rows, tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_generalization_command_rejects_zero_epochs(tmp_path):
    result = CliRunner().invoke(app, ["certify", "generalization", "--epochs", "0", "--out",
                                      str(tmp_path)])
    assert result.exit_code == 2 and "error: --epochs" in result.output
