"""``lipkit certify train / check --data mnist:DIR | fashion-mnist:DIR | cifar10:DIR`` on small
files made here, and ``check`` of the exported ONNX model (MaxMin imported as GroupSort)."""

import gzip
import json
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lipkit.certify import certified_accuracy
from lipkit.certify.experiment import build_model, write_onnx
from lipkit.cli import app
from lipkit.errors import InvalidArgumentError

runner = CliRunner()


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _images(count: int, shape, rng):
    """Images whose brightness grows with the label (learnable), and the labels."""
    labels = rng.integers(0, 10, size=count).astype(np.uint8)
    noise = rng.integers(0, 60, size=(count, *shape))
    return (noise + 20 * labels.reshape(-1, *[1] * len(shape))).astype(np.uint8), labels


def write_mnist(folder, rng):
    folder.mkdir()
    for split, count in (("train", 40), ("t10k", 8)):
        images, labels = _images(count, (28, 28), rng)
        for kind, array, rank in (("images", images, 3), ("labels", labels, 1)):
            (folder / f"{split}-{kind}-idx{rank}-ubyte.gz").write_bytes(gzip.compress(_idx(array)))


def write_cifar(folder, rng):
    folder.mkdir()
    for name, count in (("data_batch_1.bin", 20), ("data_batch_2.bin", 20),
                        ("test_batch.bin", 6)):
        images, labels = _images(count, (3 * 32 * 32,), rng)
        (folder / name).write_bytes(np.concatenate([labels[:, None], images], 1).tobytes())


@pytest.mark.parametrize(("kind", "model"), [("mnist", "mlp"), ("fashion-mnist", "mlp"),
                                             ("cifar10", "convnet")])
def test_train_one_epoch_and_check_the_onnx_model(kind, model, tmp_path):
    rng = np.random.default_rng(0)
    (write_cifar if kind == "cifar10" else write_mnist)(tmp_path / "data", rng)
    data = f"{kind}:{tmp_path / 'data'}"
    out = tmp_path / "run"
    result = runner.invoke(app, ["certify", "train", "--out", str(out), "--data", data,
                                 "--model", model, "--size", "small", "--epochs", "1",
                                 "--eps", "0.05,0.2", "--json"])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["broken_certificates"] == {"2": 0, "inf": 0}
    assert trained["onnx_max_abs_difference"] < 1e-4
    lower = trained["lipschitz_lower"]  # convnets: found on the imported ONNX model
    assert lower["status"] == "ok" and 0 < lower["value"] <= trained["lipschitz_guaranteed"] * (
        1 + 1e-6)
    result = runner.invoke(app, ["certify", "check", str(out / "model.onnx"), "--data", data,
                                 "--eps", "0.05,0.2", "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)
    assert checked["constants"]["source"].startswith("lipkit.estimate:")
    assert checked["broken_certificates"] == {"2": 0, "inf": 0}
    assert abs(checked["clean_accuracy"] - trained["clean_accuracy"]) < 1e-6
    # the imported model's proven bound is the construction's to rounding: the same VRA
    assert checked["constants"]["whole"] == pytest.approx(trained["constants"]["whole"],
                                                          rel=1e-5)
    assert checked["certified_accuracy"] == pytest.approx(trained["certified_accuracy"])


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_convnet_presets_take_mnist_and_cifar_images(shape):
    from lipkit.nn import lipschitz_bound

    data = SimpleNamespace(x_train=torch.rand(3, *shape), y_train=torch.tensor([0, 9, 1]),
                           y_test=torch.tensor([2]))
    torch.manual_seed(0)
    model = build_model("convnet", data, "orthogonal", "orthonormal", "small").eval()
    with torch.no_grad():
        assert model(data.x_train).shape == (3, 10)
    assert lipschitz_bound(model, data.x_train[:1]) <= 1 + 1e-4
    with pytest.raises(InvalidArgumentError, match="square"):
        build_model("convnet", SimpleNamespace(x_train=torch.rand(1, 1, 28, 20), **{
            k: getattr(data, k) for k in ("y_train", "y_test")}), "orthogonal", "orthonormal")


def test_check_of_the_exported_mlp_equals_the_torch_certificates(trained, digits, tmp_path):
    write_onnx(trained, digits.x_test[:8], tmp_path / "model.onnx")
    eps = [0.05, 0.1, 0.2, 0.3]
    result = runner.invoke(app, ["certify", "check", str(tmp_path / "model.onnx"), "--data",
                                 "digits", "--eps", ",".join(map(str, eps)), "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)
    reference = certified_accuracy(trained, digits.x_test, digits.y_test, eps, attack=False)
    assert checked["constants"]["source"].startswith("lipkit.estimate:")
    assert reference.constants.source == "lipkit.nn.lipschitz_bound"
    assert checked["clean_accuracy"] == pytest.approx(reference.clean_accuracy)
    assert list(checked["certified_accuracy"].values()) == pytest.approx(
        reference.certified_accuracy, abs=1e-9)
    assert max(reference.certified_accuracy) > 0.2  # a real comparison, not of zeros
    assert checked["broken_certificates"] == {"2": 0, "inf": 0}


def _one_line_error(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code == 2 and lines[-1].startswith("error: ") and len(lines) <= 2


def test_missing_or_corrupt_data_files_are_one_line_errors(tmp_path):
    rng = np.random.default_rng(1)
    write_cifar(tmp_path / "cifar", rng)
    test_batch = tmp_path / "cifar" / "test_batch.bin"
    test_batch.write_bytes(test_batch.read_bytes()[:-5])
    write_mnist(tmp_path / "mnist", rng)
    labels = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(gzip.compress(_idx(np.full(8, 11, np.uint8))))
    torch.manual_seed(0)
    onnx_path = tmp_path / "m.onnx"
    write_onnx(torch.nn.Sequential(torch.nn.Linear(64, 10)), torch.rand(2, 64), onnx_path)
    cases = [
        (["--data", f"mnist:{tmp_path / 'nowhere'}"], "does not exist"),
        (["--data", f"cifar10:{tmp_path / 'cifar'}"], "truncated CIFAR-10"),
        (["--data", f"fashion-mnist:{tmp_path / 'mnist'}"], "label 11 of item 0"),
        (["--data", "cifar10:"], "unknown data"),
    ]
    for arguments, message in cases:
        for command in (["certify", "train", "--out", str(tmp_path / "o"), "--epochs", "1"],
                        ["certify", "check", str(onnx_path)]):
            result = runner.invoke(app, command + arguments)
            assert _one_line_error(result) and message in result.output, (arguments,
                                                                          result.output)
    # the digits' 64 inputs do not fit a model of 28 x 28 images
    write_onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)),
               torch.rand(2, 1, 28, 28), onnx_path)
    result = runner.invoke(app, ["certify", "check", str(onnx_path)])
    assert _one_line_error(result) and "do not fit" in result.output, result.output
