"""Local certificates: never for an image PGD breaks inside the clipped ball, the direct
bound below the margins at sampled points of the ball, the constants above the sampled
gradients; the CLI's --local columns, JSON, bad input and test-only MNIST folders."""

import gzip
import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from lipkit.certify import certified_accuracy
from lipkit.certify.attack import pgd_attack
from lipkit.certify.local import certify_image, local_certificates
from lipkit.cli import app
from lipkit.data import load_digits
from lipkit.errors import InvalidArgumentError
from lipkit.estimate import load_network
from lipkit.estimate.engine import DenseChain

runner = CliRunner()


@pytest.fixture(scope="module")
def trained():
    """A normally trained ReLU MLP on the digits (64 inputs in [0, 1])."""
    torch.manual_seed(0)
    data = load_digits(test_fraction=0.2)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(data.x_train), data.y_train).backward()
        optimizer.step()
    return model.double().eval(), data.x_test[:8].double(), data.y_test[:8]


def test_certified_images_survive_pgd_and_bounds_hold_in_the_ball(trained):
    model, x, labels = trained
    eps = [0.03, 0.1]
    result = local_certificates(model, x, labels, eps, "inf", (0.0, 1.0), time_limit=1)
    counts = [result.counts(e) for e in eps]
    assert counts[0]["certified"] > 0, counts
    assert counts[1]["certified"] < counts[1]["images"], counts  # some not certifiable
    for image in result.images:
        x0 = x[image.index]
        low, high = (x0 - image.eps).clamp(0, 1), (x0 + image.eps).clamp(0, 1)
        generator = torch.Generator().manual_seed(image.index)
        points = low + (high - low) * torch.rand(200, 64, generator=generator,
                                                 dtype=torch.float64)
        others = [j for j in range(10) if j != image.label]
        points.requires_grad_(True)
        logits = model(points)
        margins = logits[:, image.label:image.label + 1] - logits[:, others]
        # the direct bound is below every sampled margin
        assert (torch.tensor(image.direct) <= margins.min(0).values + 1e-12).all()
        if image.predicted == image.label and np.isfinite(image.constants).all():
            for j in range(9):  # the local constant is above every sampled gradient norm
                (grad,) = torch.autograd.grad(margins[:, j].sum(), points, retain_graph=True)
                assert image.constants[j] >= float(grad.abs().sum(1).max()) * (1 - 1e-12)
        if image.certified:
            assert image.predicted == image.label
            adversarial = pgd_attack(model, x0[None].repeat(8, 1), torch.full(
                (8,), image.label), image.eps, "inf", steps=40, restarts=4,
                seed=image.index, domain=(0.0, 1.0))
            assert (adversarial - x0).abs().max() <= image.eps * (1 + 1e-9)
            assert (adversarial >= 0).all() and (adversarial <= 1).all()
            assert (model(adversarial).argmax(1) == image.label).all()


def test_a_misclassified_image_and_an_exhausted_time_limit_certify_nothing(trained):
    model, x, labels = trained
    network = load_network(model)
    chain = DenseChain.of(network)
    wrong = (int(labels[0]) + 1) % 10
    image = certify_image(network, chain, x[0], wrong, 0.001, "inf", (0.0, 1.0))
    assert not image.certified and image.status == "misclassified"
    image = certify_image(network, chain, x[0], int(labels[0]), 0.2, "inf", (0.0, 1.0),
                          time_limit=1e-9)
    assert not image.certified_by_constant and "time limit" in image.status


def test_bad_input_is_refused(trained):
    model, x, labels = trained
    with pytest.raises(InvalidArgumentError, match="eps"):
        local_certificates(model, x[:1], labels[:1], [0.0])
    with pytest.raises(InvalidArgumentError, match="eps"):
        local_certificates(model, x[:1], labels[:1], [float("nan")])
    with pytest.raises(InvalidArgumentError, match="outside the data domain"):
        local_certificates(model, x[:1] + 2, labels[:1], [0.01])
    with pytest.raises(InvalidArgumentError, match="do not fit"):
        local_certificates(model, x[:1, :50], labels[:1], [0.01])


def test_certified_accuracy_local_reports_both_columns(trained):
    model, x, labels = trained
    result = certified_accuracy(model, x[:4], labels[:4], [0.02], "inf", local=True,
                                data_domain=(0.0, 1.0), time_limit=1, steps=10)
    data = result.to_dict()
    assert data["broken_certificates"]["local"] == 0
    assert data["domain"] == "the ball clipped to [0, 1]"
    assert len(data["images"]) == 4
    assert data["certified_accuracy"]["0.02"] >= data["global_certified_accuracy"]["0.02"]


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def test_cli_local_on_test_only_mnist_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 784),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(3, 28, 28))
    with torch.no_grad():
        labels = model(torch.from_numpy(images).float().div(255).reshape(3, -1)).argmax(1)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels.numpy())
    result = runner.invoke(app, ["certify", "check", str(tmp_path / "m.onnx"), "--data",
                                 f"mnist:{tmp_path}", "--norm", "inf", "--eps", "0.001",
                                 "--local", "--json", "--time-limit", "2"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["domain"] == "the ball clipped to [0, 1]"
    assert {"certified", "margins", "local_constants", "direct_lower_bounds", "seconds"} <= set(
        metrics["images"][0])
    assert metrics["broken_certificates"]["local"] == 0
    # bad input: one line, exit 2
    for arguments in (["--eps", "0"], ["--eps", "nan"], ["--domain", "0.5,0.6"]):
        bad = runner.invoke(app, ["certify", "check", str(tmp_path / "m.onnx"), "--data",
                                  f"mnist:{tmp_path}", "--norm", "inf", "--local",
                                  *(["--eps", "0.01"] if arguments[0] != "--eps" else []),
                                  *arguments])
        assert bad.exit_code == 2, bad.output
        assert len(bad.output.strip().splitlines()) == 1, bad.output
    short = tmp_path / "short.safetensors"
    save_file({"x": torch.rand(2, 50), "y": torch.tensor([0, 1])}, str(short))
    bad = runner.invoke(app, ["certify", "check", str(tmp_path / "m.onnx"), "--data",
                              str(short), "--norm", "inf", "--eps", "0.01", "--local"])
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output
