"""The CIFAR-10 protocol of Prach et al. (CVPR 2024, "1-Lipschitz Layers Compared: Memory,
Speed, and Certifiable Robustness"): train one layer type's network for a wall-clock
budget, then report clean accuracy and VRA at eps 36/255, 72/255 and 108/255 (l2).

What the paper's code does (github.com/berndprach/1LipschitzLayersCompared: ``datasets``,
``trainer``, ``epoch_budget_estimator.py`` and the settings of its 24-hour runs) and what
:func:`cifar10_protocol` does:

- **data**: the CIFAR-10 training and test sets, centered by the training set's channel
  means and not scaled (so l2 distances, and radii, are those of pixels in [0, 1]); the
  user's binary batches (:func:`lipkit.data.load_cifar10`). Same.
- **augmentation**: a random 32 x 32 window of the (centered) image zero-padded by 4, then
  a horizontal flip with probability 1/2 (torchvision's ``RandomCrop(32, 4)`` and
  ``RandomHorizontalFlip`` after ``Normalize``). Same (:func:`lipkit.data.crop_flip`).
- **network**: their ConvNet family with the layer under test; here
  :func:`lipkit.certify.comparison_convnet` (``small`` / ``medium``) with an orthonormal
  last layer.
- **loss**: offset cross-entropy with offset ``2 sqrt(2) 36/255 = 0.3993`` and temperature
  0.25 (``margin-ce``). Same.
- **optimizer**: SGD with momentum 0.9 (cycled 0.85-0.95 by torch's one-cycle schedule, as
  in their code), batch 256, the peak learning rate and weight decay their random search
  chose for their ConvNet S / M with that layer (:data:`PAPER_HYPERPARAMETERS`; AOC, which
  the paper does not have, takes BCOP's). Same, but for the architecture they were tuned on.
- **schedule and budget**: one-cycle over the number of epochs that fit the budget,
  estimated before training from the time of a few batches. The paper steps the schedule
  once per epoch over thousands of epochs; at CPU scale a budget holds a few epochs, so
  lipkit steps it once per batch, and stops after the batch that spends the budget when the
  estimate was optimistic (the paper trains its estimated epochs to the end).
- **certificate**: radius ``margin / (sqrt(2) L)`` with ``L`` the network's guaranteed
  bound (:func:`lipkit.nn.lipschitz_bound`; the paper takes ``L = 1``): the global form of
  :func:`lipkit.certify.certified_radius`, computed in float64.

It runs in one process or under ``torchrun`` (:mod:`lipkit.distributed`; the budget is
then the wall-clock time of the group).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from lipkit import distributed
from lipkit.certify.accuracy import certified_accuracy
from lipkit.certify.presets import COMPARISON_LAYERS, COMPARISON_SIZES, comparison_convnet
from lipkit.certify.train import CROP_PADDING, TrainingConfig, train_certified
from lipkit.checkpoint import checkpoint_config
from lipkit.data.augment import crop_flip, draw_crop_flip
from lipkit.errors import (
    InvalidArgumentError,
    LipkitError,
    UnknownMethodError,
    check_positive,
    check_positive_integer,
    check_seed,
)
from lipkit.io import atomic_write_json, atomic_write_text, json_safe
from lipkit.training import ProgressEvent

EPS_255 = (36, 72, 108)  # the paper's radii, in units of 1/255
OFFSET = 2 * math.sqrt(2) * 36 / 255  # 0.3993: the margin a radius of 36/255 needs, doubled
TEMPERATURE = 0.25
BATCH_SIZE = 256
# (peak learning rate, weight decay) of the paper's 24-hour CIFAR-10 runs of ConvNet S and M
# (data/runs/CIFAR10/final_training_24h/ConvNet{S,M}/<layer>/*/dumped_setting.yml)
PAPER_HYPERPARAMETERS = {
    "small": {"aol": (0.0126, 5.43e-5), "bcop": (0.00363, 7.74e-5),
              "cayley": (0.0139, 1.05e-5), "cpl": (0.0704, 1.50e-4),
              "sll": (0.0399, 1.94e-4), "soc": (0.0174, 2.13e-5)},
    "medium": {"aol": (0.0154, 1.03e-4), "bcop": (0.00602, 6.55e-6),
               "cayley": (0.0130, 5.59e-6), "cpl": (0.0844, 9.94e-5),
               "sll": (0.0947, 8.70e-5), "soc": (0.0712, 1.31e-4)},
}
PROTOCOL_OUTPUTS = ["checkpoint.pt", "metrics.json", "report.md"]


def check_protocol_arguments(layer: str, size: str, hours: float, epochs: int | None = None,
                             batch_size: int = BATCH_SIZE, learning_rate: float | None = None,
                             weight_decay: float | None = None, seed: int = 0) -> None:
    """Refuse what :func:`cifar10_protocol` cannot run, before any data is read.

    Raises:
        UnknownMethodError: a layer or size that the comparison does not have.
        InvalidArgumentError: hours not a finite number > 0 (NaN included), epochs or batch
            size not integers >= 1, a learning rate <= 0 or a negative weight decay.
    """
    if layer not in COMPARISON_LAYERS:
        raise UnknownMethodError("comparison layer", layer, COMPARISON_LAYERS)
    if size not in COMPARISON_SIZES:
        raise UnknownMethodError("comparison size", size, COMPARISON_SIZES)
    check_positive("--hours", hours)
    if epochs is not None:
        check_positive_integer("--epochs", epochs)
    check_positive_integer("--batch-size", batch_size)
    if learning_rate is not None:
        check_positive("--lr", learning_rate)
    if weight_decay is not None and not (math.isfinite(weight_decay) and weight_decay >= 0):
        raise InvalidArgumentError(f"--weight-decay must be a finite number >= 0, got "
                                   f"{weight_decay!r}")
    check_seed("--seed", seed)


def paper_hyperparameters(layer: str, size: str) -> tuple[float, float]:
    """The paper's ``(peak learning rate, weight decay)`` for ``layer`` in its ConvNet of
    ``size`` (AOC takes BCOP's)."""
    return PAPER_HYPERPARAMETERS[size]["bcop" if layer == "aoc" else layer]


def estimate_epochs(model: torch.nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
                    config: TrainingConfig, seconds: float, share: int | None = None,
                    timed_steps: int = 3) -> tuple[int, float]:
    """``(epochs, seconds per step)``: how many epochs of ``config`` fit in ``seconds``,
    from ``timed_steps`` training steps (after one to warm up) of a copy of ``model`` on
    batches of ``share`` examples (default: the batch size), augmented as in training.

    The paper's ``epoch_budget_estimator.py`` does the same with 100 steps on a GPU.
    """
    from lipkit.certify.losses import get_loss

    trial = copy.deepcopy(model).train()
    device = next(trial.parameters()).device
    optimizer = torch.optim.SGD(trial.parameters(), lr=config.learning_rate, momentum=0.9)
    loss_function = get_loss(config.loss, **(config.loss_options or {}))
    generator = torch.Generator().manual_seed(config.seed)
    share = min(share or config.batch_size, len(y_train))
    times = []
    for _ in range(timed_steps + 1):
        started = time.perf_counter()
        batch = torch.randperm(len(y_train), generator=generator)[:share]
        inputs = x_train[batch]
        if config.augment:
            inputs = crop_flip(inputs, draw_crop_flip(share, CROP_PADDING, generator),
                               CROP_PADDING)
        loss = loss_function(trial(inputs.to(device)), y_train[batch].to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    per_step = sorted(times[1:])[len(times[1:]) // 2]  # the median, after the warm-up
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    return max(1, int(seconds / (per_step * steps_per_epoch))), per_step


def _plan(checkpoint: Path, model, x_train, y_train, config: TrainingConfig,
          share: int) -> tuple:
    """``(epochs, seconds per step, seconds spent)``: the epochs a resumed run planned at
    its first start, or those that fit the budget (:func:`estimate_epochs`)."""
    if checkpoint.exists():
        planned = checkpoint_config(checkpoint).get("epochs")
        if isinstance(planned, int) and planned >= 1:
            return planned, None, 0.0
    started = time.perf_counter()
    epochs, per_step = estimate_epochs(model, x_train, y_train, config, config.time_budget,
                                       share)
    return epochs, per_step, time.perf_counter() - started


def cifar10_protocol(out: str | Path, data: str, layer: str = "aol", size: str = "small",
                     hours: float = 1.0, epochs: int | None = None,
                     batch_size: int = BATCH_SIZE, learning_rate: float | None = None,
                     weight_decay: float | None = None, seed: int = 0, attack: bool = False,
                     device: str | torch.device | None = None,
                     progress: Callable[[ProgressEvent], None] | None = None) -> dict | None:
    """Train ``layer``'s comparison network on CIFAR-10 for ``hours`` and certify it
    (module docstring); writes ``metrics.json``, ``report.md`` and ``checkpoint.pt`` (the
    run resumes from it, with the epochs it planned) into ``out``; returns the metrics (None
    in the processes of a group other than rank 0).

    Args:
        data: ``cifar10:DIR``, the folder of the binary batches.
        epochs: the schedule's epochs; default as many as fit the budget (timed).
        learning_rate, weight_decay: default :func:`paper_hyperparameters`.
        attack: also run PGD inside each certified radius (the soundness check; the paper
            reports certificates only).
        device: where to train in one process (default CUDA when available); a group trains
            on its processes' devices.
    """
    from lipkit.certify.experiment import load_data

    check_protocol_arguments(layer, size, hours, epochs, batch_size, learning_rate,
                             weight_decay, seed)
    if not data.startswith("cifar10:"):
        raise InvalidArgumentError(f"the protocol trains on CIFAR-10: --data must be "
                                   f"cifar10:DIR, got {data!r}")
    out = Path(out)
    group = distributed.current()
    if group is not None:
        device = group.device
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dataset = load_data(data, flat=False)
    center = dataset.x_train.mean((0, 2, 3))
    x_train = dataset.x_train.sub_(center[:, None, None]).to(device)
    x_test = dataset.x_test.sub_(center[:, None, None])
    y_train = dataset.y_train.to(device)
    paper_rate, paper_decay = paper_hyperparameters(layer, size)
    torch.manual_seed(seed)
    model = comparison_convnet(3, 32, 10, size, layer).to(device)
    budget = hours * 3600

    def configuration(epochs: int) -> TrainingConfig:
        return TrainingConfig(
            "margin-ce", {"offset": OFFSET, "temperature": TEMPERATURE}, epochs, batch_size,
            learning_rate or paper_rate, seed, optimizer="sgd",
            weight_decay=paper_decay if weight_decay is None else weight_decay,
            augment="crop-flip", time_budget=budget)

    checkpoint = out / "checkpoint.pt"
    plan: tuple = (epochs, None, 0.0)  # epochs, seconds per step, seconds spent estimating
    if epochs is None:
        if distributed.is_main():  # rank 0 plans, the others learn its plan or its error
            try:
                share = math.ceil(batch_size / (group.world_size if group else 1))
                plan = _plan(checkpoint, model, x_train, y_train, configuration(1), share)
            except LipkitError as error:
                plan = (str(error),)
        plan = distributed.broadcast(plan)
        if len(plan) == 1:
            raise LipkitError(plan[0])
    epochs, per_step, estimate_seconds = plan
    config = configuration(epochs)
    history = train_certified(model, x_train, y_train, config, checkpoint=checkpoint,
                              progress=progress, data_name=data)
    if not distributed.is_main():
        return None
    model.cpu()
    eps = [value / 255 for value in EPS_255]
    certification = certified_accuracy(model, x_test, dataset.y_test, eps, "2", "global",
                                       attack=attack, seed=seed)
    examples = sum(row["examples"] for row in history["epochs"])
    metrics = {
        "protocol": "Prach et al. 2024, CIFAR-10", "data": data, "layer": layer,
        "size": size, "hours": hours, "budget_seconds": budget, "device": str(device),
        "processes": group.world_size if group else 1,
        "epochs_planned": epochs, "epochs_done": len(history["epochs"]),
        "stopped_by_budget": history["stopped_by_budget"],
        "train_seconds": history["seconds"],
        "images_per_second": examples / history["seconds"] if history["seconds"] else 0.0,
        "estimate": {"seconds_per_step": per_step, "seconds": estimate_seconds},
        "training": asdict(config), "center": center.tolist(), "eps_255": list(EPS_255),
        **certification.to_dict(),
        "lipschitz_bound": certification.constants.whole,
        "history": history["epochs"],
    }
    metrics = json_safe(metrics)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "report.md", _report(metrics))
    return metrics


def _report(metrics: dict) -> str:
    rows = [f"| {e}/255 | {vra:.4f} |" for e, vra in zip(
        metrics["eps_255"], metrics["certified_accuracy"].values(), strict=True)]
    training = metrics["training"]
    return "\n".join([
        "# CIFAR-10 protocol of Prach et al. (CVPR 2024)", "",
        f"`{metrics['layer']}` layers in the {metrics['size']} comparison ConvNet, trained "
        f"{metrics['train_seconds'] / 3600:.4g} h of a {metrics['hours']:g} h budget on "
        f"{metrics['processes']} x {metrics['device']}: {metrics['epochs_done']} of "
        f"{metrics['epochs_planned']} planned epochs"
        f"{' (stopped by the budget)' if metrics['stopped_by_budget'] else ''}, "
        f"{metrics['images_per_second']:.1f} images/s.", "",
        f"SGD, peak learning rate {training['learning_rate']:g}, weight decay "
        f"{training['weight_decay']:g}, batch {training['batch_size']}, one-cycle; offset "
        f"cross-entropy {training['loss_options']}; crop (padding 4) and flip.", "",
        f"Clean accuracy: **{metrics['clean_accuracy']:.4f}**. Certified radius "
        f"margin / (sqrt(2) L), L = {metrics['lipschitz_bound']:.6g} "
        f"({metrics['constants']['source']}).", "",
        "| eps (l2) | certified accuracy (VRA) |", "|---|---|", *rows, "",
    ])
