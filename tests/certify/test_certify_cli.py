"""``lipkit certify train`` and ``lipkit certify check``: the output folder, resume, errors."""

import json
import warnings

import onnxruntime
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from lipkit.cli import app
from lipkit.data import load_digits

runner = CliRunner()


def test_train_writes_the_folder_and_check_reads_the_model_back(tmp_path):
    out = tmp_path / "run"
    arguments = ["certify", "train", "--out", str(out), "--size", "small", "--epochs", "2",
                 "--eps", "0.1,0.5", "--json"]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["broken_certificates"] == {"2": 0, "inf": 0}
    assert set(metrics["certified_accuracy"]) == {"0.1", "0.5"}
    assert metrics["lipschitz_lower"]["value"] <= metrics["lipschitz_guaranteed"] * (1 + 1e-6)
    assert metrics["constants"]["source"] == "lipkit.nn.lipschitz_bound"
    for name in ("metrics.json", "model.onnx", "report.md", "certified_accuracy.png",
                 "checkpoint.pt", "model.safetensors"):
        assert (out / name).is_file(), name
    # the ONNX file has plain operators and computes the model's logits
    data = load_digits(test_fraction=0.2)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"x": data.x_test.numpy()})
    accuracy = float((torch.from_numpy(logits).argmax(1) == data.y_test).float().mean())
    assert abs(accuracy - metrics["clean_accuracy"]) < 0.01
    # resuming the finished run trains nothing more and gives the same numbers
    again = json.loads(runner.invoke(app, arguments).stdout)
    assert again["certified_accuracy"] == metrics["certified_accuracy"]
    # certify the saved weights as a user's model
    result = runner.invoke(app, ["certify", "check", str(out / "model.safetensors"),
                                 "--eps", "0.1,0.5", "--json"])
    assert result.exit_code == 0, result.output
    checked = json.loads(result.stdout)
    for eps, vra in checked["certified_accuracy"].items():
        assert abs(vra - metrics["certified_accuracy"][eps]) < 1e-6
    assert runner.invoke(app, ["certify", "check", str(out / "model.safetensors"),
                               "--eps", "0.1", "--no-attack"]).exit_code == 0


def test_check_an_onnx_relu_model_with_user_tensors(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.rand(1, 64),), str(tmp_path / "m.onnx"), dynamo=False,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    x = torch.rand(30, 64)
    save_file({"x": x, "y": model(x).argmax(1)}, str(tmp_path / "data.safetensors"))
    result = runner.invoke(app, ["certify", "check", str(tmp_path / "m.onnx"), "--data",
                                 str(tmp_path / "data.safetensors"), "--eps", "0,0.01",
                                 "--json"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["clean_accuracy"] == 1.0
    assert metrics["constants"]["source"].startswith("lipkit.estimate:")
    assert metrics["broken_certificates"] == {"2": 0, "inf": 0}
    # the same weights as a torch state dict, read with weights_only=True
    torch.save(model.state_dict(), tmp_path / "m.pt")
    result = runner.invoke(app, ["certify", "check", str(tmp_path / "m.pt"), "--activation",
                                 "relu", "--data", str(tmp_path / "data.safetensors"),
                                 "--eps", "0,0.01", "--json"])
    assert result.exit_code == 0, result.output
    from_state = json.loads(result.stdout)
    assert from_state["clean_accuracy"] == 1.0
    assert from_state["constants"]["source"] == "lipkit.nn.lipschitz_bound"
    assert from_state["broken_certificates"] == {"2": 0, "inf": 0}


def _one_line_error(result):
    lines = [line for line in result.output.splitlines() if line.strip()]
    return result.exit_code == 2 and lines[-1].startswith("error: ") and len(lines) <= 2


def test_bad_input_is_a_one_line_error_with_exit_code_2(tmp_path):
    corrupt = tmp_path / "bad.pt"
    corrupt.write_bytes(b"not a checkpoint")
    cases = [
        ["certify", "check", str(corrupt)],
        ["certify", "check", str(tmp_path / "missing.onnx")],
        ["certify", "check", str(corrupt), "--eps", "a,b"],
        ["certify", "train", "--out", str(tmp_path / "o"), "--loss", "nope", "--epochs", "1"],
        ["certify", "train", "--out", str(tmp_path / "o"), "--layer", "nope", "--epochs", "1"],
        ["certify", "train", "--out", str(tmp_path / "o"), "--data", "nope", "--epochs", "1"],
        ["certify", "train", "--out", str(tmp_path / "o"), "--loss", "hkr", "--offset", "1"],
    ]
    for arguments in cases:
        result = runner.invoke(app, arguments)
        assert _one_line_error(result), (arguments, result.output)
