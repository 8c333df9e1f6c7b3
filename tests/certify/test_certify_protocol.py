"""``lipkit certify protocol``: Prach et al.'s CIFAR-10 protocol, end to end on a generated
CIFAR-shaped data set in the binary batch format, its report checked against the
definitions recomputed here."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lipkit.certify import comparison_convnet
from lipkit.certify.protocol import EPS_255, OFFSET, estimate_epochs
from lipkit.certify.train import TrainingConfig
from lipkit.checkpoint import load_checkpoint
from lipkit.cli import app
from lipkit.nn import export, lipschitz_bound

runner = CliRunner()
RECORD = 1 + 3 * 32 * 32


def _write_batch(path, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` records: a label byte, then 3 x 1024 pixel bytes (brighter for larger
    labels, so that the labels can be learned); returns the images in [0, 1] and labels."""
    generator = np.random.default_rng(seed)
    labels = generator.integers(0, 10, count).astype(np.uint8)
    pixels = (generator.integers(0, 128, (count, 3 * 32 * 32)) + 12 * labels[:, None])
    records = np.concatenate([labels[:, None], pixels.astype(np.uint8)], 1)
    path.write_bytes(records.tobytes())
    assert path.stat().st_size == count * RECORD
    return pixels.reshape(count, 3, 32, 32) / 255.0, labels.astype(np.int64)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cifar")
    first = _write_batch(folder / "data_batch_1.bin", 40, 0)
    second = _write_batch(folder / "data_batch_2.bin", 24, 1)
    x_test, y_test = _write_batch(folder / "test_batch.bin", 32, 2)
    x_train = np.concatenate([first[0], second[0]])
    return folder, x_train, x_test, y_test


def test_the_protocol_reports_what_its_checkpoint_certifies(cifar, tmp_path):
    folder, x_train, x_test, y_test = cifar
    out = tmp_path / "run"
    arguments = ["certify", "protocol", "--data", f"cifar10:{folder}", "--hours", "0.0005",
                 "--layer", "aol", "--batch-size", "32", "--out", str(out), "--json"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert {k: v for k, v in on_disk.items() if k != "history"} == report
    assert (out / "report.md").read_text().startswith("# CIFAR-10 protocol")

    # the paper's settings
    training = report["training"]
    assert training["loss_options"] == {"offset": OFFSET, "temperature": 0.25}
    assert abs(OFFSET - 0.3993) < 1e-4  # 2 sqrt(2) 36/255, the paper's margin
    assert (training["optimizer"], training["augment"]) == ("sgd", "crop-flip")
    assert report["eps"] == [e / 255 for e in EPS_255] == [36 / 255, 72 / 255, 108 / 255]
    # the budget: training stops after the batch that spends it, or runs its planned epochs
    assert report["budget_seconds"] == pytest.approx(1.8)
    if report["stopped_by_budget"]:
        assert report["train_seconds"] >= report["budget_seconds"]
    else:
        assert report["epochs_done"] == report["epochs_planned"]
    examples = sum(row["examples"] for row in on_disk["history"])
    assert report["images_per_second"] == pytest.approx(examples / report["train_seconds"])
    # centering by the training set's channel means
    np.testing.assert_allclose(report["center"], x_train.mean((0, 2, 3)), rtol=1e-5)

    # VRA: a lower bound on accuracy, non-increasing in eps
    vra = list(report["certified_accuracy"].values())
    assert all(v <= report["clean_accuracy"] for v in vra)
    assert all(a >= b for a, b in itertools.pairwise(vra))

    # recomputed from the checkpoint: logits in float64, radius margin / (sqrt(2) L)
    torch.manual_seed(0)
    model = comparison_convnet(3, 32, 10, "small", "aol")
    model(torch.zeros(2, 3, 32, 32))
    model.load_state_dict(load_checkpoint(out / "checkpoint.pt")["model"])
    model.eval()
    bound = lipschitz_bound(model)
    assert report["lipschitz_bound"] == pytest.approx(bound, rel=1e-6)
    inputs = torch.from_numpy(x_test - np.array(report["center"])[None, :, None, None])
    with torch.no_grad():
        logits = export(model).double()(inputs)
    labels = torch.from_numpy(y_test)
    true = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], -math.inf).max(1).values
    radius = (true - others).clamp_min(0) / (math.sqrt(2) * bound)
    correct = logits.argmax(1) == labels
    assert report["clean_accuracy"] == pytest.approx(float(correct.double().mean()))
    for eps, value in zip(report["eps"], vra, strict=True):
        assert value == pytest.approx(float((correct & (radius > eps)).double().mean())), eps

    # resuming the finished run keeps its plan and trains nothing more
    again = runner.invoke(app, arguments)
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.stdout)
    for key in ("epochs_planned", "epochs_done", "train_seconds", "certified_accuracy",
                "clean_accuracy"):
        assert resumed[key] == report[key], key


def test_the_epoch_estimate_fills_the_budget():
    """``epochs = floor(budget / (seconds per step * steps per epoch))``, at least 1."""
    torch.manual_seed(0)
    model = comparison_convnet(3, 8, 10, "small", "aol")
    x, y = torch.rand(40, 3, 8, 8), torch.randint(10, (40,))
    config = TrainingConfig(batch_size=16, augment="crop-flip")
    steps_per_epoch = 3
    for budget in (1e-6, 5.0):
        epochs, per_step = estimate_epochs(model, x, y, config, budget, timed_steps=2)
        assert per_step > 0
        epoch_seconds = per_step * steps_per_epoch
        assert epochs == max(1, math.floor(budget / epoch_seconds)), (epochs, per_step)
