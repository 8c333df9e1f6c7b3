"""Two CPU processes (gloo, torchrun's environment) train to the weights of one process.

The data and batch size are chosen so that the shares of the global batches are unequal
(15 = 8 + 7) and the last global batch (61 = 4 * 15 + 1) leaves rank 1 an empty share: the
weighting of :func:`lipkit.distributed.shard` must still give the one-process gradient.
"""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from lipkit import distributed
from lipkit.certify import TrainingConfig, comparison_convnet, lipschitz_mlp, train_certified
from lipkit.checkpoint import load_checkpoint

WORLD = 2
EXAMPLES, BATCH, EPOCHS = 61, 15, 2
BATCHES_PER_EPOCH = 5  # 4 full batches and one of a single example


class KilledError(Exception):
    """Stands for a run killed in its second epoch."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _cases():
    """name -> (build the model, x, y, config): a spectral MLP (power-iteration buffers,
    Adam) and a comparison ConvNet of AOC layers (a parameter without entries, SGD with
    weight decay, crop-flip augmentation)."""
    generator = torch.Generator().manual_seed(0)
    x_flat = torch.rand(EXAMPLES, 6, generator=generator)
    y_flat = (x_flat[:, 0] > x_flat[:, 1]).long()
    images = torch.rand(EXAMPLES, 1, 8, 8, generator=generator)
    y_images = (images[:, 0, :4].mean((1, 2)) > images[:, 0, 4:].mean((1, 2))).long()

    def mlp():
        torch.manual_seed(0)
        return lipschitz_mlp(6, 2, hidden=(8,), layer="spectral")

    def convnet():
        torch.manual_seed(0)
        return comparison_convnet(1, 8, 2, layer="aoc")

    return {
        "mlp": (mlp, x_flat, y_flat, TrainingConfig(epochs=EPOCHS, batch_size=BATCH,
                                                    learning_rate=1e-2)),
        "convnet": (convnet, images, y_images, TrainingConfig(
            epochs=EPOCHS, batch_size=BATCH, learning_rate=5e-2, optimizer="sgd",
            weight_decay=1e-3, augment="crop-flip")),
    }


def _kill_at(call: int):
    """A forward pre-hook raising at the ``call``-th training forward pass."""
    calls = [0]

    def hook(module, inputs):
        if module.training:
            calls[0] += 1
            if calls[0] == call:
                raise KilledError

    return hook


def _worker(folder: Path) -> None:
    """One process of the group (``RANK`` ... in its environment): each case is killed at
    the first batch of epoch 2, then resumed by a fresh model from the checkpoint rank 0
    wrote."""
    torch.set_num_threads(1)
    import lipkit.training

    group = distributed.from_environment()
    assert (group.world_size, group.backend) == (WORLD, "gloo"), group
    write = lipkit.training.save_checkpoint

    def recorded(path, *arguments, **options):  # who writes checkpoints
        with open(folder / f"written_by_rank_{group.rank}.txt", "a") as log:
            log.write(f"{Path(path).name}\n")
        return write(path, *arguments, **options)

    lipkit.training.save_checkpoint = recorded
    for name, (build, x, y, config) in _cases().items():
        checkpoint = folder / f"{name}.pt"
        model = build()
        model.register_forward_pre_hook(_kill_at(BATCHES_PER_EPOCH + 1))
        with contextlib.suppress(KilledError):
            train_certified(model, x, y, config, checkpoint=checkpoint)
        if group.is_main:  # for one process to resume
            shutil.copyfile(checkpoint, folder / f"{name}_epoch1.pt")
        resumed = build()
        history = train_certified(resumed, x, y, config, checkpoint=checkpoint)
        torch.save(resumed.state_dict(), folder / f"{name}_rank{group.rank}.pt")
        (folder / f"{name}_rank{group.rank}.json").write_text(json.dumps(history["epochs"]))
    distributed.exit(0)


def _environment(**variables) -> dict:
    """This environment, with this checkout's lipkit first on the path, one thread per
    process, and ``variables``."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(Path(distributed.__file__).parents[1]), environment.get("PYTHONPATH", "")])
    return {**environment, "OMP_NUM_THREADS": "1", **variables}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    """Two processes with the variables torchrun sets, on a free port of 127.0.0.1."""
    folder = tmp_path_factory.mktemp("ddp")
    port = str(_free_port())
    workers = [subprocess.Popen(
        [sys.executable, __file__, str(folder)], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        env=_environment(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD),
                         MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
        for rank in range(WORLD)]
    for rank, worker in enumerate(workers):
        _, errors = worker.communicate(timeout=240)
        assert worker.returncode == 0, f"rank {rank}: {errors[-3000:]}"
    return folder


@pytest.mark.parametrize("name", ["mlp", "convnet"])
def test_two_processes_train_to_the_weights_of_one(two_processes, name):
    """DDP averages ``(n_r W / n) grad mean_r`` = the one-process gradient of each global
    batch (margin-ce is a mean of per-example terms; the presets have no batch
    normalization), so after two epochs, one of them resumed, the weights agree with a
    single uninterrupted process up to float32 summation order; and a checkpoint of the
    group resumes in one process to the same weights."""
    build, x, y, config = _cases()[name]
    reference = build()
    history = train_certified(reference, x, y, config)
    rank0 = torch.load(two_processes / f"{name}_rank0.pt", weights_only=True)
    rank1 = torch.load(two_processes / f"{name}_rank1.pt", weights_only=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(rank0[key], rank1[key]), f"{key}: the replicas differ"
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5,
                                   msg=lambda text, key=key: f"{key}: {text}")
    # the checkpoint of epoch 1 written by the group resumes in one process
    alone = build()
    train_certified(alone, x, y, config, checkpoint=two_processes / f"{name}_epoch1.pt")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(alone.state_dict()[key], value, rtol=1e-4, atol=1e-5,
                                   msg=lambda text, key=key: f"{key}: {text}")
    rows = json.loads((two_processes / f"{name}_rank0.json").read_text())
    assert [row["examples"] for row in rows] == [EXAMPLES] * EPOCHS
    for row, expected in zip(rows, history["epochs"], strict=True):
        assert abs(row["loss"] - expected["loss"]) < 1e-5, (row, expected)
        assert row["train_accuracy"] == expected["train_accuracy"], (row, expected)


def test_only_rank_zero_wrote_the_checkpoints(two_processes):
    assert not (two_processes / "written_by_rank_1.txt").exists()
    written = (two_processes / "written_by_rank_0.txt").read_text().split()
    # per case: epoch 1 before the kill, epoch 2 after the resume
    assert written == ["mlp.pt", "mlp.pt", "convnet.pt", "convnet.pt"]
    for name in ("mlp", "convnet"):
        assert load_checkpoint(two_processes / f"{name}.pt")["step"] == EPOCHS


def test_torchrun_runs_the_command_and_rank_zero_reports(tmp_path):
    """``torchrun --nproc_per_node 2 -m lipkit certify train``: one JSON report on stdout,
    the folder written once, and the loss of the one-process command."""
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(EXAMPLES, 6, generator=generator)
    y = (x[:, 0] > x[:, 1]).long()
    save_file({"x_train": x, "y_train": y, "x_test": x[:20].clone(),
               "y_test": y[:20].clone()}, str(tmp_path / "data.safetensors"))
    arguments = ["certify", "train", "--data", str(tmp_path / "data.safetensors"), "--size",
                 "small", "--epochs", "1", "--batch-size", str(BATCH), "--eps", "0.05",
                 "--json"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "lipkit", *arguments, "--out", str(tmp_path / "two")]
    result = subprocess.run(command, capture_output=True, text=True, env=_environment(),
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)  # one report: rank 1 printed nothing
    from lipkit.cli import app

    alone = CliRunner().invoke(app, [*arguments, "--out", str(tmp_path / "one")])
    assert alone.exit_code == 0, alone.output
    single = json.loads(alone.stdout)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert abs(two["history"][0]["loss"] - one["history"][0]["loss"]) < 1e-5
    assert report["clean_accuracy"] == pytest.approx(single["clean_accuracy"], abs=0.051)
    assert report["broken_certificates"] == {"2": 0, "inf": 0}
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pt")["step"] == 1


def test_exit_flushes_and_ends_with_the_code_without_finalization(tmp_path):
    """``distributed.exit``: what was printed arrives, the code is the process's, and no
    atexit handler runs (the interpreter is not finalized)."""
    script = tmp_path / "ends.py"
    script.write_text(
        "import atexit, sys\n"
        "from lipkit import distributed\n"
        "atexit.register(lambda: print('finalized'))\n"
        "print('report', end='')\n"
        "sys.stderr.write('note')\n"
        "distributed.exit(3)\n"
        "print('after')\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=_environment(), timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (3, "report", "note")


if __name__ == "__main__":  # a process of the group started by the fixture
    _worker(Path(sys.argv[1]))
