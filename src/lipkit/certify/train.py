"""``train_certified(model, data, loss=...)``: train a Lipschitz classifier for certificates,
with atomic checkpoints and resume.

Adam with a one-cycle learning rate (Smith & Topin 2019), as in the certified-training
recipes of Prach et al. (CVPR 2024). A checkpoint (model, optimizer, schedule, random state,
history) is written atomically after each epoch when ``checkpoint`` is given, and training
resumes from it: a killed run loses at most the epoch in progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lipkit.certify.losses import get_loss
from lipkit.checkpoint import data_fingerprint, load_checkpoint, save_checkpoint
from lipkit.errors import (
    CheckpointError,
    InvalidArgumentError,
    LipkitError,
    check_finite_tensor,
    check_labels,
    check_positive,
    check_positive_integer,
    check_seed,
)


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
        check_positive_integer("epochs", self.epochs)
        check_positive_integer("batch size", self.batch_size)
        check_positive("learning rate", self.learning_rate)
        check_seed("seed", self.seed)
        get_loss(self.loss, **(self.loss_options or {}))  # unknown names fail here


def train_certified(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainingConfig | None = None, checkpoint: str | Path | None = None,
                    progress: Callable[[int, dict], None] | None = None,
                    evaluate: Callable[[torch.nn.Module], dict] | None = None,
                    data_name: str = "x_train, y_train") -> dict:
    """Train ``model`` in place; returns the history (loss, train accuracy, seconds, ...).

    Args:
        config: loss, epochs, batch size, peak learning rate, seed.
        checkpoint: a file to save after each epoch and resume from when it exists (a
            checkpoint of another configuration or data set is refused,
            :mod:`lipkit.checkpoint`).
        progress: called as ``progress(epoch, row)`` after each epoch.
        evaluate: called after each epoch with the model in eval mode; its dict joins the
            history row (e.g. test accuracy).
        data_name: how checkpoint messages name the data set.
    """
    config = config or TrainingConfig()
    _check_data(model, x_train, y_train)
    loss_function = get_loss(config.loss, **(config.loss_options or {}))
    torch.manual_seed(config.seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, epochs=config.epochs,
        steps_per_epoch=steps_per_epoch)
    history: dict = {"epochs": [], "seconds": 0.0}
    start_epoch = 0
    fingerprint = None
    if checkpoint is not None:
        fingerprint = data_fingerprint(data_name, x_train=x_train, y_train=y_train)
    if checkpoint is not None and Path(checkpoint).exists():
        start_epoch, history = _resume(checkpoint, config, fingerprint, model, optimizer,
                                       schedule)
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
            save_checkpoint(checkpoint, {
                "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "history": history, "generator_state": generator.get_state()},
                asdict(config), fingerprint)
        if progress is not None:
            progress(epoch + 1, row)
    model.eval()
    return history


def _check_data(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor) -> None:
    """Finite inputs, one integer label per input in [0, the model's output width)."""
    check_finite_tensor("x_train", x_train)
    if len(x_train) == 0:
        raise InvalidArgumentError("x_train is empty")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            width = model(x_train[:1]).shape[-1]
    except RuntimeError as error:
        raise InvalidArgumentError(f"x_train of shape {tuple(x_train.shape)} does not fit the "
                                   f"model: {str(error).splitlines()[0]}") from None
    finally:
        model.train(training)
    check_labels("y_train", y_train, width, len(x_train))


def _resume(path, config, fingerprint, model, optimizer, schedule) -> tuple[int, dict]:
    state = load_checkpoint(path, asdict(config), fingerprint)
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        history = dict(state["history"])
        history["generator_state"] = state["generator_state"]
        return int(state["epoch"]), history
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path} does not fit this model: "
                              f"{str(error).splitlines()[0]}") from None
