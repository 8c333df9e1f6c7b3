"""``train_certified(model, data, loss=...)``: train a Lipschitz classifier for certificates,
with atomic checkpoints and resume, in one process or in a group of processes.

Adam with a one-cycle learning rate (Smith & Topin 2019), as in the certified-training
recipes of Prach et al. (CVPR 2024), or SGD with the same schedule, as in their comparison
(``optimizer="sgd"``). The loop is :func:`lipkit.training.train`, one step per epoch: a
checkpoint (model, optimizer, schedule, random states, history) is written atomically after
each epoch when ``checkpoint`` is given, and training resumes from it bit for bit: a killed
run loses at most the epoch in progress. A non-finite loss raises
:class:`lipkit.training.TrainingDivergedError` naming the epoch. A time budget stops training
after the batch that spends it.

**Several processes** (``torchrun``, :mod:`lipkit.distributed`): the model is wrapped in
torch's ``DistributedDataParallel``, whose gradient hooks sit on the parameters the
optimizer updates (for a constrained layer, the unconstrained ``original`` tensors of its
parametrization, so the constraint is applied after averaging, in every process alike).
``batch_size`` is the global batch: every process draws the same permutation and
augmentation and trains on its share of each global batch, its mean loss weighted so that
DDP's average is the gradient of the global batch's mean loss
(:func:`lipkit.distributed.shard`). The weights after training on ``W`` processes are then
those of one process, up to the order of floating-point sums, when

1. the loss is a mean of per-example terms (``margin-ce``, ``ce``, ``hinge``, ``gloro``; not
   ``hkr``, whose Kantorovich-Rubinstein term compares class means within each share), and
2. the model treats the examples of a batch independently (no batch normalization: none in
   lipkit's presets).

The losses and accuracies of the history are those of the global batches; rank 0 alone
writes checkpoints and calls ``progress`` and ``evaluate`` (its result reaches every rank);
the model itself, never the wrapper, is evaluated and returned.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lipkit import distributed
from lipkit.certify.losses import get_loss
from lipkit.checkpoint import data_fingerprint
from lipkit.data.augment import AUGMENTATIONS, crop_flip, draw_crop_flip
from lipkit.errors import (
    InvalidArgumentError,
    UnknownMethodError,
    check_finite_tensor,
    check_labels,
    check_positive,
    check_positive_integer,
    check_seed,
)
from lipkit.training import Checkpoint, ProgressEvent, train

OPTIMIZERS = ("adam", "sgd")
CROP_PADDING = 4
# fields added after the first checkpoints were written: at these values a run is the
# run of a checkpoint without them
_LATER_FIELDS = {"optimizer": "adam", "weight_decay": 0.0, "augment": None,
                 "time_budget": None}


@dataclass
class TrainingConfig:
    """What a run depends on; a checkpoint only resumes the run it was written by.

    ``batch_size`` is the global batch (of all processes together); ``optimizer`` is
    ``"adam"`` or ``"sgd"`` (momentum cycled between 0.95 and 0.85 by the one-cycle
    schedule, torch's default); ``weight_decay`` the optimizer's L2 term; ``augment`` None
    or ``"crop-flip"`` (:func:`lipkit.data.crop_flip`, padding 4, image inputs);
    ``time_budget`` the seconds of training after which it stops (None: all ``epochs``).
    """

    loss: str = "margin-ce"
    loss_options: dict | None = None
    epochs: int = 150
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    optimizer: str = "adam"
    weight_decay: float = 0.0
    augment: str | None = None
    time_budget: float | None = None

    def __post_init__(self):
        check_positive_integer("epochs", self.epochs)
        check_positive_integer("batch size", self.batch_size)
        check_positive("learning rate", self.learning_rate)
        check_seed("seed", self.seed)
        get_loss(self.loss, **(self.loss_options or {}))  # unknown names fail here
        if self.optimizer not in OPTIMIZERS:
            raise UnknownMethodError("optimizer", self.optimizer, OPTIMIZERS)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise InvalidArgumentError(f"weight decay must be a finite number >= 0, got "
                                       f"{self.weight_decay!r}")
        if self.augment is not None and self.augment not in AUGMENTATIONS:
            raise UnknownMethodError("augmentation", self.augment, AUGMENTATIONS)
        if self.time_budget is not None:
            self.time_budget = check_positive("time budget", self.time_budget)


def train_certified(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainingConfig | None = None, checkpoint: str | Path | None = None,
                    progress: Callable[[ProgressEvent], None] | None = None,
                    evaluate: Callable[[torch.nn.Module], dict] | None = None,
                    data_name: str = "x_train, y_train") -> dict:
    """Train ``model`` in place; returns the history (loss, train accuracy, seconds, ...).

    In a process group (:func:`lipkit.distributed.from_environment`) every process calls it
    with the same model, data and configuration (module docstring); on a GPU group the model
    moves to the process's GPU.

    Args:
        config: loss, epochs, global batch size, peak learning rate, seed, optimizer,
            augmentation, time budget.
        checkpoint: a file to save after each epoch and resume from when it exists (a
            checkpoint of another configuration or data set is refused,
            :mod:`lipkit.checkpoint`).
        progress: called after each epoch with a :class:`lipkit.training.ProgressEvent`
            (``step`` the epoch, ``figures`` its history row).
        evaluate: called after each epoch with the model in eval mode; its dict joins the
            history row (e.g. test accuracy).
        data_name: how checkpoint messages name the data set.

    The history: ``epochs`` (one row per epoch: ``epoch``, ``loss``, ``train_accuracy``,
    ``examples`` and what ``evaluate`` returned), ``seconds`` of training and
    ``stopped_by_budget``.
    """
    config = config or TrainingConfig()
    _check_data(model, x_train, y_train)
    if config.augment is not None and x_train.ndim != 4:
        raise InvalidArgumentError(f"{config.augment} augments images (n, C, H, W); x_train "
                                   f"has shape {tuple(x_train.shape)}")
    loss_function = get_loss(config.loss, **(config.loss_options or {}))
    group = distributed.current()
    main = group is None or group.is_main
    if group is not None and group.device.type == "cuda":
        model.to(group.device)
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)
    optimizer = _optimizer(model, config)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, epochs=config.epochs,
        steps_per_epoch=steps_per_epoch)
    history: dict = {"epochs": [], "seconds": 0.0, "stopped_by_budget": False}
    generator = torch.Generator().manual_seed(config.seed)
    network = _data_parallel(model, group)
    saved_run = None
    if checkpoint is not None:
        saved_run = Checkpoint(checkpoint, _identity(config),
                               data_fingerprint(data_name, x_train=x_train, y_train=y_train))
    name = f"{config.loss} loss"

    def epoch(index: int) -> dict:
        budget = config.time_budget
        if budget is not None and history["seconds"] >= budget:  # spent before a resume
            history["stopped_by_budget"] = True
            return {"stop": True}
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total, correct, seen, stop = 0.0, 0.0, 0, False
        for first in range(0, len(order), config.batch_size):
            batch = order[first:first + config.batch_size]
            draws = (draw_crop_flip(len(batch), CROP_PADDING, generator)
                     if config.augment else None)
            mine, weight = distributed.shard(len(batch), group)
            inputs = x_train[batch[mine]]
            if draws is not None:
                inputs = crop_flip(inputs, draws[mine], CROP_PADDING)
            inputs, labels = inputs.to(device), y_train[batch[mine]].to(device)
            logits = network(inputs)
            loss = loss_function(logits, labels)
            count = len(mine) if weight else 0  # a stand-in example counts for nothing
            local = torch.tensor([float(loss.detach()) * count if count else 0.0,
                                  float((logits.argmax(1) == labels).sum()) if count else 0.0],
                                 dtype=torch.float64)
            loss_sum, hits = distributed.all_sum(local).tolist()
            if not math.isfinite(loss_sum):  # the loop stops the run, naming the checkpoint
                return {"losses": {name: loss_sum / len(batch)}}
            optimizer.zero_grad()
            (loss * weight).backward()
            optimizer.step()
            schedule.step()
            total, correct, seen = total + loss_sum, correct + hits, seen + len(batch)
            finished = index == config.epochs and first + config.batch_size >= len(order)
            if budget is not None and not finished and not distributed.agree(
                    history["seconds"] + time.perf_counter() - started < budget):
                stop = history["stopped_by_budget"] = True
                break
        model.eval()
        # every rank counts the slowest one's time, so that all stop at the same epoch
        history["seconds"] = distributed.all_max(history["seconds"] + time.perf_counter()
                                                 - started)
        row = {"epoch": index, "loss": total / seen, "train_accuracy": correct / seen,
               "examples": seen}
        if evaluate is not None:
            row.update(distributed.broadcast(evaluate(model) if main else None))
        history["epochs"].append(row)
        return {**row, "losses": {name: row["loss"]}, "stop": stop}

    def state() -> dict:
        return {"epoch": len(history["epochs"]), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "history": history}

    def restore(saved: dict) -> None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        history.update(dict(saved["history"]))

    def report(event: ProgressEvent) -> None:
        if "epoch" in event.figures:  # not the empty step of a budget spent before
            progress(ProgressEvent(event.step, event.total, {
                k: v for k, v in event.figures.items() if k not in ("losses", "stop")}))

    train(epoch, config.epochs, state=state, restore=restore,
          generators={"generator_state": generator}, checkpoint=saved_run,
          checkpoint_every=1, unit="epoch", context="lower the learning rate",
          progress=None if progress is None else report)
    model.eval()
    return history


def _optimizer(model: torch.nn.Module, config: TrainingConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.learning_rate,
                            weight_decay=config.weight_decay)


def _data_parallel(model: torch.nn.Module, group) -> torch.nn.Module:
    """``model`` wrapped in ``DistributedDataParallel`` in a group, else itself."""
    if group is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # a parameter without entries (AOC's patch of a stride-1 layer) never reaches the loss;
    # DDP must then look for unused parameters, or it waits for their gradients forever
    unused = any(p.numel() == 0 for p in model.parameters() if p.requires_grad)
    return DistributedDataParallel(
        model, device_ids=[group.device.index] if group.device.type == "cuda" else None,
        find_unused_parameters=unused)


def _identity(config: TrainingConfig) -> dict:
    """The configuration a checkpoint records (fields added later left out at the values
    that reproduce the runs before them)."""
    return {k: v for k, v in asdict(config).items()
            if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}


def _check_data(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor) -> None:
    """Finite inputs, one integer label per input in [0, the model's output width)."""
    check_finite_tensor("x_train", x_train)
    if len(x_train) == 0:
        raise InvalidArgumentError("x_train is empty")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            width = model(x_train[:1].to(next(model.parameters()).device)).shape[-1]
    except RuntimeError as error:
        raise InvalidArgumentError(f"x_train of shape {tuple(x_train.shape)} does not fit the "
                                   f"model: {str(error).splitlines()[0]}") from None
    finally:
        model.train(training)
    check_labels("y_train", y_train, width, len(x_train))
