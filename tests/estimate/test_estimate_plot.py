"""The report's PNG: written atomically, decodable, one row per method."""

import matplotlib.image
import pytest

from lipkit.estimate import estimate
from lipkit.estimate.plot import plot_report

from .conftest import random_mlp


def test_plot_report_writes_a_png_with_every_method(tmp_path):
    from torch import nn

    from lipkit.nn import GroupSort

    model = nn.Sequential(nn.Linear(3, 4), GroupSort(2), nn.Linear(4, 2)).double()
    # seqlip does not apply to GroupSort: its reason is drawn instead of a bar
    report = estimate(model, methods=["lower-jacobian", "naive", "seqlip"])
    path = plot_report(report, tmp_path / "sub" / "bounds.png")
    image = matplotlib.image.imread(path)
    assert path.name == "bounds.png" and image.ndim == 3 and image.shape[0] > 100
    assert not list(path.parent.glob("*.tmp*"))  # atomic: no leftover temporary file


def test_plot_report_taller_with_more_methods(tmp_path):
    model = random_mlp([3, 6, 2], seed=0)
    few = plot_report(estimate(model, methods=["naive"]), tmp_path / "few.png")
    many = plot_report(estimate(model, methods=["naive", "autolip", "seqlip", "compositional",
                                                "lower-jacobian", "lower-adversarial"]),
                       tmp_path / "many.png")
    assert matplotlib.image.imread(many).shape[0] > matplotlib.image.imread(few).shape[0]


def test_plot_report_into_a_file_path_fails_cleanly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    report = estimate(random_mlp([2, 3, 1], seed=0), methods=["naive"])
    with pytest.raises(OSError):
        plot_report(report, blocker / "bounds.png")
