"""``train_certified(model, data, loss=...)``: train a Lipschitz classifier for certificates,
with atomic checkpoints and resume.

Adam with a one-cycle learning rate (Smith & Topin 2019), as in the certified-training
recipes of Prach et al. (CVPR 2024). A checkpoint (model, optimizer, schedule, random state,
history) is written atomically after each epoch when ``checkpoint`` is given, and training
resumes from it: a killed run loses at most the epoch in progress.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lipkit.certify.losses import get_loss
from lipkit.errors import InvalidArgumentError, LipkitError, check_positive
from lipkit.io import atomic_write_bytes


@dataclass
class TrainingConfig:
    """What a run depends on; a checkpoint only resumes the run it was written by."""

    loss: str = "margin-ce"
    loss_options: dict | None = None
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0

    def __post_init__(self):
        if int(self.epochs) < 1 or int(self.batch_size) < 1:
            raise InvalidArgumentError(
                f"epochs and batch size must be >= 1, got {self.epochs}, {self.batch_size}")
        check_positive("learning rate", self.learning_rate)
        get_loss(self.loss, **(self.loss_options or {}))  # unknown names fail here


def train_certified(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainingConfig | None = None, checkpoint: str | Path | None = None,
                    progress: Callable[[int, dict], None] | None = None,
                    evaluate: Callable[[torch.nn.Module], dict] | None = None) -> dict:
    """Train ``model`` in place; returns the history (loss, train accuracy, seconds, ...).

    Args:
        config: loss, epochs, batch size, peak learning rate, seed.
        checkpoint: a file to save after each epoch and resume from when it exists.
        progress: called as ``progress(epoch, row)`` after each epoch.
        evaluate: called after each epoch with the model in eval mode; its dict joins the
            history row (e.g. test accuracy).
    """
    config = config or TrainingConfig()
    loss_function = get_loss(config.loss, **(config.loss_options or {}))
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, epochs=config.epochs,
        steps_per_epoch=steps_per_epoch)
    history: dict = {"epochs": [], "seconds": 0.0}
    start_epoch = 0
    if checkpoint is not None and Path(checkpoint).is_file():
        start_epoch, history = _resume(checkpoint, config, model, optimizer, schedule)
    generator = torch.Generator().manual_seed(config.seed)
    if history.get("generator_state") is not None:
        generator.set_state(history.pop("generator_state"))
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total, correct = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            index = order[first:first + config.batch_size]
            logits = model(x_train[index])
            loss = loss_function(logits, y_train[index])
            if not torch.isfinite(loss):
                raise LipkitError(f"the {config.loss} loss became {loss.item()} in epoch "
                                  f"{epoch + 1}; lower the learning rate")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
            correct += int((logits.argmax(1) == y_train[index]).sum())
        model.eval()
        history["seconds"] += time.perf_counter() - started
        row = {"epoch": epoch + 1, "loss": total / len(order),
               "train_accuracy": correct / len(order)}
        if evaluate is not None:
            row.update(evaluate(model))
        history["epochs"].append(row)
        if checkpoint is not None:
            _save(checkpoint, config, epoch + 1, model, optimizer, schedule, history, generator)
        if progress is not None:
            progress(epoch + 1, row)
    model.eval()
    return history


def _save(path, config, epoch, model, optimizer, schedule, history, generator) -> None:
    buffer = io.BytesIO()
    torch.save({"config": asdict(config), "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "history": history, "generator_state": generator.get_state()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _resume(path, config, model, optimizer, schedule) -> tuple[int, dict]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
        saved = state["config"]
        if saved != asdict(config):
            changed = sorted(k for k in saved if saved[k] != asdict(config).get(k))
            raise LipkitError(f"{path}: checkpoint of another run (differs in "
                              f"{', '.join(changed)}); delete it or use another folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
    except LipkitError:
        raise
    except Exception as error:  # a truncated or foreign file
        raise LipkitError(f"{path}: not a readable lipkit checkpoint ({type(error).__name__}: "
                          f"{str(error).splitlines()[0] if str(error) else ''})") from None
    history = dict(state["history"])
    history["generator_state"] = state["generator_state"]
    return int(state["epoch"]), history
