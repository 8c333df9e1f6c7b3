"""Hostile input, one row per case: exit status 2, ONE line on stderr naming the argument or
file, no traceback, and the folder's files unchanged (names and SHA-256 before and after).

The command rows run the console script's entry point (:func:`lipkit.cli.run`) in-process;
two rows run the installed script in a subprocess (the usage error box, torch's warnings).
"""

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lipkit import cli
from lipkit.errors import CheckpointError, InvalidArgumentError

BIG_SEED = str(2**70)


def _snapshot(folder: Path) -> dict:
    return {path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def _run(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.run(argv)
    return exit_info.value.code, capsys.readouterr().err


def _tensors(path: Path, **tensors) -> None:
    save_file({k: v.contiguous().clone() for k, v in tensors.items()}, str(path))


def _idx_gz(path: Path, shape: tuple, payload_bytes: int) -> None:
    header = bytes([0, 0, 0x08, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header)
        chunk = bytes(2**20)
        for start in range(0, payload_bytes, len(chunk)):
            stream.write(chunk[:min(len(chunk), payload_bytes - start)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file the rows use, and two runs' output folders (a GAN, a certified MLP)."""
    folder = tmp_path_factory.mktemp("bad_input")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    state = {k: v.detach() for k, v in net.state_dict().items()}
    _tensors(folder / "model.safetensors", **state)
    torch.onnx.export(net, (torch.zeros(1, 4),), str(folder / "model.onnx"), dynamo=False)
    _tensors(folder / "bias_shape.safetensors", **{**state, "0.bias": torch.zeros(5)})
    nan_weight = state["2.weight"].clone()
    nan_weight[1, 2] = float("nan")
    _tensors(folder / "nan_weight.safetensors", **{**state, "2.weight": nan_weight})
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "random.onnx").write_bytes(os.urandom(3000))
    (folder / "truncated.onnx").write_bytes((folder / "model.onnx").read_bytes()[:150])
    (folder / "model.txt").write_text("weights")
    x, y = torch.rand(30, 4), torch.randint(3, (30,))
    _tensors(folder / "data.safetensors", x=x, y=y)
    _tensors(folder / "labels_range.safetensors", x=x, y=y + 10)
    _tensors(folder / "labels_2d.safetensors", x=x, y=y.reshape(5, 6))
    _tensors(folder / "empty_x.safetensors", x=x[:0], y=y[:0])
    x_nan = x.clone()
    x_nan[3, 1] = float("nan")
    _tensors(folder / "nan_x.safetensors", x=x_nan, y=y)
    _tensors(folder / "train.safetensors", x_train=x, y_train=y, x_test=x, y_test=y)
    _tensors(folder / "other.safetensors", x_train=x + 1, y_train=y, x_test=x, y_test=y)
    _tensors(folder / "negative.safetensors", x_train=x, y_train=y - 1, x_test=x, y_test=y)
    _tensors(folder / "width.safetensors", x_train=x, y_train=y, x_test=torch.rand(30, 5),
             y_test=y)
    for name, shape, size in (("bomb", (1, 28, 28), 64 * 2**20),
                              ("huge", (100000, 100000, 1000), 0)):
        mnist = folder / name
        mnist.mkdir()
        _idx_gz(mnist / "train-images-idx3-ubyte.gz", shape, size)
        _idx_gz(mnist / "train-labels-idx1-ubyte.gz", (1,), 1)
    cifar = folder / "cifar_truncated"  # a training batch cut inside its second record
    cifar.mkdir()
    (cifar / "data_batch_1.bin").write_bytes(bytes(3073 + 1000))
    (cifar / "test_batch.bin").write_bytes(bytes(3073))
    labels = folder / "cifar_labels"  # a label byte of 10 in a CIFAR-10 file
    labels.mkdir()
    (labels / "data_batch_1.bin").write_bytes(bytes([10]) + bytes(3072))
    (labels / "test_batch.bin").write_bytes(bytes(3073))
    user = folder / "user_folder"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    old_demo = folder / "old_demo"
    (old_demo / "gan_gp").mkdir(parents=True)
    (old_demo / ".lipkit-output.json").write_text(json.dumps({"command": "demo",
                                                              "files": ["report.md"]}))
    (old_demo / "gan_gp" / "checkpoint.pt").write_bytes(b"the user's own checkpoint")
    user_gan = folder / "user_gan"
    user_gan.mkdir()
    (user_gan / "metrics.json").write_text("{}")
    (folder / "plot.png").write_bytes(b"the user's picture")

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        for argv in (["gan", "--steps", "2", "--hidden", "8", "--depth", "1", "--batch-size",
                      "16", "--eval-every", "2", "--eval-samples", "40", "--checkpoint-every",
                      "1", "--out", "gan_run", "--json"],
                     ["certify", "train", "--data", "train.safetensors", "--size", "small",
                      "--epochs", "1", "--out", "certify_run", "--json"]):
            with pytest.raises(SystemExit) as exit_info:
                cli.run(argv)
            assert exit_info.value.code == 0, argv
    finally:
        os.chdir(cwd)
    # flip one byte inside the checkpoint's payload: the zip entry's CRC no longer matches
    shutil.copytree(folder / "gan_run", folder / "gan_corrupt")
    path = folder / "gan_corrupt" / "checkpoint.pt"
    raw = bytearray(path.read_bytes())
    payload = torch.load(path, weights_only=True)["payload"].numpy().tobytes()
    offset = bytes(raw).find(payload[:256]) + len(payload) // 2
    raw[offset] ^= 0x40
    path.write_bytes(bytes(raw))
    return folder


# (command line, text the one line must hold); {seed} is 2**70
COMMAND_CASES = [
    (["demo", "--seed", BIG_SEED], "--seed"),
    (["estimate", "model.onnx", "--seed", BIG_SEED], "--seed"),
    (["gan", "--seed", BIG_SEED, "--out", "new_gan"], "--seed"),
    (["mi", "--seed", BIG_SEED, "--out", "new_mi"], "--seed"),
    (["certify", "train", "--seed", BIG_SEED, "--out", "new_c"], "--seed"),
    (["certify", "check", "model.safetensors", "--seed", BIG_SEED], "--seed"),
    (["certify", "generalization", "--seed", BIG_SEED, "--out", "new_g"], "--seed"),
    (["estimate", "model.onnx", "--time-limit", "-1"], "--time-limit"),
    (["estimate", "model.onnx", "--time-limit", "0"], "--time-limit"),
    (["estimate", "model.onnx", "--time-limit", "nan"], "--time-limit"),
    (["estimate", "model.onnx", "--center", "1,2"], "--center has 2 values"),
    (["estimate", "model.onnx", "--center", "1,nan,0,0"], "--center must be finite"),
    (["estimate", "model.onnx", "--center", "0,0,0,0", "--radius", "inf"], "--radius"),
    (["estimate", "missing.onnx"], "missing.onnx"),
    (["estimate", "empty.onnx"], "empty.onnx: the file is empty"),
    (["estimate", "random.onnx"], "random.onnx"),
    (["estimate", "truncated.onnx"], "truncated.onnx"),
    (["estimate", "model.txt"], "model.txt"),
    (["estimate", "model.onnx", "--plot", "plot.png"], "--plot plot.png exists"),
    (["certify", "check", "bias_shape.safetensors"], "layer 0 has a bias of shape (5,)"),
    (["certify", "check", "nan_weight.safetensors"], "nan_weight.safetensors: layer 2"),
    (["certify", "check", "random.onnx"], "random.onnx"),
    (["certify", "check", "model.safetensors", "--data", "labels_range.safetensors"],
     "labels_range.safetensors: labels: label 1"),
    (["certify", "check", "model.safetensors", "--data", "labels_2d.safetensors"],
     "labels_2d.safetensors: y must be 1-D"),
    (["certify", "check", "model.safetensors", "--data", "empty_x.safetensors"],
     "empty_x.safetensors: x is empty"),
    (["certify", "check", "model.safetensors", "--data", "nan_x.safetensors"],
     "nan_x.safetensors: x holds a non-finite value"),
    (["certify", "check", "model.safetensors", "--data", "data.safetensors", "--eps="],
     "--eps must hold at least one radius"),
    (["certify", "check", "model.safetensors", "--data", "data.safetensors", "--eps", "-1"],
     "--eps"),
    (["certify", "check", "model.safetensors", "--data", "data.safetensors", "--eps", "nan"],
     "--eps"),
    (["certify", "train", "--data", "negative.safetensors", "--out", "new_c"],
     "negative.safetensors: y_train: label -1"),
    (["certify", "train", "--data", "width.safetensors", "--out", "new_c"],
     "width.safetensors: x_train's inputs of shape (4,) differ from x_test's (5,)"),
    (["certify", "train", "--loss", "hkr", "--alpha", "-1", "--out", "new_c"], "alpha"),
    (["certify", "train", "--epochs", "0", "--out", "new_c"], "epochs"),
    (["certify", "train", "--data", "mnist:bomb", "--out", "new_c"],
     "train-images-idx3-ubyte.gz: idx data of more than 784 bytes"),
    (["certify", "train", "--data", "mnist:huge", "--out", "new_c"],
     "more than the 1073741824 lipkit reads"),
    (["certify", "train", "--data", "other.safetensors", "--size", "small", "--epochs", "1",
      "--out", "certify_run"], "differs in data"),
    (["certify", "protocol", "--data", "cifar10:no_such_folder", "--hours", "1", "--out",
      "new_p"], "CIFAR-10 folder no_such_folder does not exist"),
    (["certify", "protocol", "--data", "cifar10:cifar_truncated", "--hours", "1", "--out",
      "new_p"], "data_batch_1.bin: truncated CIFAR-10 binary file (4073 bytes"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "1", "--out",
      "new_p"], "data_batch_1.bin: record 0 has label 10"),
    (["certify", "protocol", "--data", "cifar10:user_folder", "--hours", "1", "--out",
      "new_p"], "no data_batch_<k>.bin in user_folder"),
    (["certify", "protocol", "--data", "digits", "--hours", "1", "--out", "new_p"],
     "--data must be cifar10:DIR"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "0", "--out",
      "new_p"], "--hours must be a finite number > 0, got 0.0"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "-2", "--out",
      "new_p"], "--hours must be a finite number > 0"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "nan", "--out",
      "new_p"], "--hours must be a finite number > 0, got nan"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "inf", "--out",
      "new_p"], "--hours must be a finite number > 0, got inf"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "x"], "--hours"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels"], "Missing option '--hours'"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "1", "--layer",
      "lot", "--out", "new_p"], "unknown comparison layer 'lot'; choose from: aoc, aol"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "1", "--epochs",
      "0", "--out", "new_p"], "--epochs must be an integer >= 1"),
    (["certify", "protocol", "--data", "cifar10:cifar_labels", "--hours", "1", "--out",
      "user_gan"], "user_gan/metrics.json was not written by"),
    (["gan", "--steps", "2", "--hidden", "8", "--depth", "1", "--batch-size", "16",
      "--eval-every", "2", "--eval-samples", "40", "--checkpoint-every", "1", "--out",
      "gan_corrupt", "--resume"], "gan_corrupt/checkpoint.pt is corrupt"),
    (["gan", "--steps", "0", "--out", "new_gan"], "steps"),
    (["gan", "--out", "user_gan"], "user_gan/metrics.json was not written by"),
    (["mi", "--steps", "0", "--out", "new_mi"], "steps"),
    (["demo", "--quick", "--out", "user_folder"], "user_folder is not empty"),
    (["demo", "--quick", "--out", "old_demo"], "old_demo/gan_gp/checkpoint.pt was not written"),
    (["estimate", "model.onnx", "--bogus"], "No such option: --bogus"),
    (["certify", "train", "--epochs", "x"], "--epochs"),
]


@pytest.mark.parametrize("argv, message", COMMAND_CASES,
                         ids=[" ".join(argv)[:60] for argv, _ in COMMAND_CASES])
def test_bad_command_line_is_one_line_exit_2_and_touches_nothing(files, argv, message,
                                                                  capsys, monkeypatch):
    monkeypatch.chdir(files)
    before = _snapshot(files)
    code, err = _run(argv, capsys)
    lines = err.splitlines()
    assert code == 2, (argv, code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert message in lines[0], (argv, lines[0])
    assert "Traceback" not in err
    assert _snapshot(files) == before, f"{argv} changed the folder"


def test_a_model_over_the_size_limit_is_refused(files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    monkeypatch.setattr("lipkit.io.MAX_MODEL_BYTES", 100)
    code, err = _run(["estimate", "model.onnx"], capsys)
    assert code == 2 and err.count("\n") == 1 and "more than the 100 lipkit reads" in err, err


def test_ctrl_c_exits_130(files, capsys, monkeypatch):
    monkeypatch.chdir(files)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lipkit.certify.experiment.load_classifier", interrupted)
    code, err = _run(["certify", "check", "model.safetensors"], capsys)
    assert code == 130, (code, err)


def test_a_demo_folder_of_an_earlier_demo_run_is_accepted(tmp_path):
    from lipkit.io import claim_output_folder

    finish = claim_output_folder(tmp_path / "demo", "demo")
    (tmp_path / "demo" / "report.md").write_text("first run")
    finish()
    finish = claim_output_folder(tmp_path / "demo", "demo")  # its own files: no error
    finish()
    (tmp_path / "demo" / "mine.txt").write_text("a user's file")
    with pytest.raises(InvalidArgumentError, match=r"mine\.txt was not written by"):
        claim_output_folder(tmp_path / "demo", "demo")
    with pytest.raises(InvalidArgumentError, match="holds the output of `lipkit demo`"):
        claim_output_folder(tmp_path / "demo", "gan", ["metrics.json"])


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _tensors(tmp_path / "negative.safetensors", x_train=torch.rand(4, 2),
             y_train=torch.tensor([0, -1, 1, 0]), x_test=torch.rand(4, 2),
             y_test=torch.tensor([0, 1, 1, 0]))
    code, _ = _run(["certify", "train", "--data", "negative.safetensors", "--out", "o"], capsys)
    assert code == 2 and not (tmp_path / "o").exists()


def test_stale_temporary_files_of_a_killed_write_are_removed(tmp_path):
    from lipkit.io import atomic_write_text

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = tmp_path / f".report.md.lipkit-{dead}-abc123.tmp"
    stale.write_text("half")
    other = tmp_path / f".notes.md.lipkit-{dead}-abc123.tmp"  # another target's: kept
    other.write_text("half")
    users = tmp_path / ".report.md.backup.tmp"  # not lipkit's pattern: kept
    users.write_text("mine")
    atomic_write_text(tmp_path / "report.md", "done")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [other.name, users.name, "report.md"])


def _console_script() -> str:
    script = Path(sys.executable).with_name("lipkit")
    return str(script) if script.exists() else shutil.which("lipkit")


@pytest.mark.parametrize("argv, message", [
    (["estimate", "--bogus"], "No such option: --bogus"),  # click's six-line box before
    (["certify", "check", "nan_weight.safetensors"], "layer 2"),  # torch warned before
])
def test_real_console_script_prints_one_line(files, argv, message):
    env = {**os.environ, "PYTHONPATH": str(Path(cli.__file__).parents[1])}
    result = subprocess.run([_console_script(), *argv], cwd=files, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


# --- the public functions ---------------------------------------------------------------

def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


def _with_weight(value):
    model = _mlp()
    with torch.no_grad():
        model[2].weight[0, 1] = value
    return model


def _certify(**changes):
    from lipkit.certify import certified_accuracy

    arguments = {"x": torch.rand(10, 4), "labels": torch.randint(3, (10,)), "eps": [0.1],
                 "steps": 2, **changes}
    return certified_accuracy(_mlp(), arguments.pop("x"), arguments.pop("labels"),
                              arguments.pop("eps"), attack=False, **arguments)


def _bounded(model):
    from lipkit.nn import lipschitz_bound

    return lipschitz_bound(model)


API_CASES = [
    (lambda: _bounded(_with_weight(float("nan"))), InvalidArgumentError, "layer '2'"),
    (lambda: _bounded(_with_weight(float("inf"))), InvalidArgumentError, "layer '2'"),
    (lambda: _certify(eps=[]), InvalidArgumentError, "eps must hold at least one"),
    (lambda: _certify(eps=[-1.0]), InvalidArgumentError, "eps"),
    (lambda: _certify(eps=[float("nan")]), InvalidArgumentError, "eps"),
    (lambda: _certify(steps=0), InvalidArgumentError, "steps"),
    (lambda: _certify(seed=2**70), InvalidArgumentError, "seed"),
    (lambda: _certify(x=torch.full((10, 4), float("nan"))), InvalidArgumentError, "x holds"),
    (lambda: _certify(x=torch.rand(0, 4), labels=torch.zeros(0)), InvalidArgumentError,
     "non-empty"),
    (lambda: _certify(x=torch.rand(10, 5)), InvalidArgumentError, "does not fit the model"),
    (lambda: _certify(labels=torch.full((10,), 3)), InvalidArgumentError, "outside [0, 3)"),
    (lambda: _certify(labels=torch.zeros(2, 5)), InvalidArgumentError, "labels must be 1-D"),
    (lambda: _certify(labels=torch.zeros(9)), InvalidArgumentError, "9 labels for 10"),
]


@pytest.mark.parametrize("call, error, message", API_CASES,
                         ids=[str(i) for i in range(len(API_CASES))])
def test_bad_arguments_of_public_functions_raise_lipkit_errors(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_checkpoints_refuse_a_flipped_byte_and_another_data_set(tmp_path):
    from lipkit.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint

    data = data_fingerprint("a", x=torch.arange(6.0))
    path = save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(50)}, {"seed": 1}, data)
    assert torch.equal(load_checkpoint(path, {"seed": 1}, data)["w"], torch.ones(50))
    with pytest.raises(CheckpointError, match=r"differs in seed: checkpoint 1, this run 2"):
        load_checkpoint(path, {"seed": 2}, data)
    with pytest.raises(CheckpointError, match=r"differs in data: checkpoint a"):
        load_checkpoint(path, {"seed": 1}, data_fingerprint("b", x=torch.arange(7.0)))
    raw = bytearray(path.read_bytes())
    raw[bytes(raw).find(torch.ones(50).numpy().tobytes()[:64]) + 8] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is corrupt"):
        load_checkpoint(path)
