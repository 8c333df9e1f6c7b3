"""``train_certified(model, data, loss=...)``: train a Lipschitz classifier for certificates,
with atomic checkpoints and resume.

Adam with a one-cycle learning rate (Smith & Topin 2019), as in the certified-training
recipes of Prach et al. (CVPR 2024). The loop is :func:`lipkit.training.train`, one step per
epoch: a checkpoint (model, optimizer, schedule, random states, history) is written
atomically after each epoch when ``checkpoint`` is given, and training resumes from it bit
for bit: a killed run loses at most the epoch in progress. A non-finite loss raises
:class:`lipkit.training.TrainingDivergedError` naming the epoch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lipkit.certify.losses import get_loss
from lipkit.checkpoint import data_fingerprint
from lipkit.errors import (
    InvalidArgumentError,
    check_finite_tensor,
    check_labels,
    check_positive,
    check_positive_integer,
    check_seed,
)
from lipkit.training import Checkpoint, ProgressEvent, train


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
                    progress: Callable[[ProgressEvent], None] | None = None,
                    evaluate: Callable[[torch.nn.Module], dict] | None = None,
                    data_name: str = "x_train, y_train") -> dict:
    """Train ``model`` in place; returns the history (loss, train accuracy, seconds, ...).

    Args:
        config: loss, epochs, batch size, peak learning rate, seed.
        checkpoint: a file to save after each epoch and resume from when it exists (a
            checkpoint of another configuration or data set is refused,
            :mod:`lipkit.checkpoint`).
        progress: called after each epoch with a :class:`lipkit.training.ProgressEvent`
            (``step`` the epoch, ``figures`` its history row).
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
    generator = torch.Generator().manual_seed(config.seed)
    saved_run = None
    if checkpoint is not None:
        saved_run = Checkpoint(checkpoint, asdict(config),
                               data_fingerprint(data_name, x_train=x_train, y_train=y_train))

    def epoch(index: int) -> dict:
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total, correct = 0.0, 0
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            logits = model(x_train[batch])
            loss = loss_function(logits, y_train[batch])
            if not torch.isfinite(loss):  # the loop stops the run, naming the checkpoint kept
                return {"losses": {f"{config.loss} loss": loss.item()}}
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(batch)
            correct += int((logits.argmax(1) == y_train[batch]).sum())
        model.eval()
        history["seconds"] += time.perf_counter() - started
        row = {"epoch": index, "loss": total / len(order), "train_accuracy": correct / len(order)}
        if evaluate is not None:
            row.update(evaluate(model))
        history["epochs"].append(row)
        return {**row, "losses": {f"{config.loss} loss": row["loss"]}}

    def state() -> dict:
        return {"epoch": len(history["epochs"]), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "history": history}

    def restore(saved: dict) -> None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        history.update(dict(saved["history"]))

    train(epoch, config.epochs, state=state, restore=restore,
          generators={"generator_state": generator}, checkpoint=saved_run,
          checkpoint_every=1, unit="epoch", context="lower the learning rate",
          progress=None if progress is None else (lambda event: progress(ProgressEvent(
              event.step, event.total, {k: v for k, v in event.figures.items()
                                        if k != "losses"}))))
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
