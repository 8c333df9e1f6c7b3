"""One training loop for lipkit's applications: steps, checks, checkpoints, progress events.

lipkit.gan, lipkit.divergence, lipkit.certify and lipkit.rl each describe one step of their
training (a generator step with its critic steps, an estimator step, an epoch) and hand it
to :func:`train`, which owns what they share:

- the loop ``for step in start + 1 .. steps``, where ``start`` is 0 or the step of the
  checkpoint resumed;
- the **divergence stop**: every loss a step reports (``{"losses": {name: value}}``, a
  number or a list of numbers) is checked; NaN, infinity or a magnitude beyond
  ``threshold`` raises :class:`TrainingDivergedError` naming the step, the loss and the last
  good checkpoint, which is kept;
- **evaluations** every ``evaluate_every`` steps and at the last one;
- **atomic checkpoints** every ``checkpoint_every`` steps and at the last one
  (:mod:`lipkit.checkpoint`: checksummed, refused when written by another configuration or
  data set), holding the application's state, the loop's step, the states of its random
  generators and torch's global random state, so that a run killed at any point and
  resumed continues bit for bit as the uninterrupted run;
- **one progress event** per step, :class:`ProgressEvent` ``(step, total, figures)``;
- an **early stop**: a step that reports ``{"stop": True}`` (a time budget spent) is the
  last, evaluated and checkpointed like the last step;
- **multi-process runs** (:mod:`lipkit.distributed`): in a process group, rank 0 alone
  writes the checkpoint while the others wait for it, every rank resumes from it, and rank
  0 alone reports progress. The step must make what the ranks decide on (its losses, its
  stop) the same in every process.

Example:
    >>> import torch
    >>> weight = torch.zeros(1, requires_grad=True)
    >>> optimizer = torch.optim.SGD([weight], lr=0.5)
    >>> def step(index):
    ...     loss = (weight - 2).square().sum()
    ...     optimizer.zero_grad(); loss.backward(); optimizer.step()
    ...     return {"losses": {"loss": loss.item()}}
    >>> run = train(step, 3)
    >>> round(weight.item(), 4), run.steps_done
    (2.0, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lipkit import distributed
from lipkit.checkpoint import load_checkpoint, save_checkpoint
from lipkit.errors import CheckpointError, LipkitError

# the key of torch's global random state in a checkpoint
GLOBAL_RANDOM_STATE = "torch_random_state"


class TrainingDivergedError(LipkitError):
    """A loss became NaN, infinite or larger than the divergence threshold."""


@dataclass(frozen=True)
class ProgressEvent:
    """What a training loop reports after each step: ``step`` of ``total`` done, and the
    step's ``figures`` (its losses; ``"evaluation"`` when it evaluated)."""

    step: int
    total: int
    figures: dict = field(default_factory=dict)


@dataclass
class Checkpoint:
    """Where a run's checkpoint lives and what it must match to be resumed: the run's
    ``config`` (but for the keys in ``ignore``) and its ``data`` fingerprint
    (:func:`lipkit.checkpoint.data_fingerprint`)."""

    path: Path
    config: dict | None = None
    data: dict | None = None
    ignore: tuple[str, ...] = ()

    def __post_init__(self):
        self.path = Path(self.path)


@dataclass
class TrainingRun:
    """What :func:`train` did: the step it resumed from (None: from scratch), the steps done
    in all, and the last checkpoint written or read (path, step)."""

    resumed_from: int | None
    steps_done: int
    last_checkpoint: tuple[Path, int] | None


def check_finite(value, what: str, step: int, *, unit: str = "step", context: str = "",
                 threshold: float = math.inf,
                 last_checkpoint: tuple[Path, int] | None = None) -> float:
    """``float(value)``, or :class:`TrainingDivergedError` when it is NaN, infinite or larger
    in magnitude than ``threshold``; the message names the step (``unit``), the loss
    (``what``), the run (``context``) and the last good checkpoint."""
    number = float(value)
    if math.isfinite(number) and abs(number) <= threshold:
        return number
    kept = (f"last good checkpoint: {last_checkpoint[0]} ({unit} {last_checkpoint[1]})"
            if last_checkpoint else "no checkpoint was saved")
    problem = ("is not finite" if not math.isfinite(number)
               else f"exceeds the divergence threshold {threshold:g}")
    where = f" ({context})" if context else ""
    raise TrainingDivergedError(f"training diverged at {unit} {step}: the {what} ({number:g}) "
                                f"{problem}{where}; {kept}")


def _check_losses(losses: Mapping, step: int, unit: str, context: str, threshold: float,
                  last_checkpoint) -> None:
    for name, values in losses.items():
        for value in values if isinstance(values, (list, tuple)) else (values,):
            check_finite(value, name, step, unit=unit, context=context, threshold=threshold,
                         last_checkpoint=last_checkpoint)


def train(step: Callable[[int], dict], steps: int, *,
          state: Callable[[], dict] | None = None,
          restore: Callable[[dict], None] | None = None,
          generators: Mapping[str, torch.Generator] | None = None,
          checkpoint: Checkpoint | None = None, checkpoint_every: int = 1,
          resume: bool = True,
          evaluate: Callable[[int], dict] | None = None, evaluate_every: int = 1,
          progress: Callable[[ProgressEvent], None] | None = None,
          threshold: float = math.inf, unit: str = "step", context: str = "") -> TrainingRun:
    """Run ``step(1) .. step(steps)`` with checks, evaluations, checkpoints and progress.

    Args:
        step: one step of training, given its number (from 1); returns its figures, with
            the losses to check under ``"losses"``.
        steps: the number of the last step.
        state: the application's state to checkpoint (models, optimizers, history, ...);
            plain data and tensors (read back with ``weights_only``).
        restore: puts a checkpointed state back (the inverse of ``state``).
        generators: ``name -> torch.Generator``: their states are checkpointed under those
            names and restored on resume, with torch's global random state.
        checkpoint: where to checkpoint (None: never); ``checkpoint_every`` steps apart and
            at the last step.
        resume: continue from an existing checkpoint; when False, an existing checkpoint
            is refused rather than overwritten.
        evaluate: called after ``step(n)`` when ``n`` is a multiple of ``evaluate_every``
            or the last step; its result joins the figures as ``"evaluation"``.
        progress: called after every step with a :class:`ProgressEvent`.
        threshold: the divergence threshold on the magnitude of every loss.
        unit, context: how error messages name a step (``"generator step"``, ``"epoch"``)
            and the run.

    Raises:
        TrainingDivergedError: a loss is NaN, infinite or beyond ``threshold``.
        CheckpointError: a checkpoint that cannot be resumed (corrupt, of another run, not
            fitting the state), or one that exists when ``resume`` is False.
    """
    generators = dict(generators or {})
    main = distributed.is_main()
    start, resumed_from, last = 0, None, None
    # rank 0's view decides, so that every rank resumes or none does
    if checkpoint is not None and distributed.broadcast(checkpoint.path.exists()):
        if not resume:
            raise CheckpointError(f"{checkpoint.path} exists: resume it or choose another "
                                  "folder")
        failure = None
        try:
            start = _restore(checkpoint, restore, generators)
        except CheckpointError as error:
            failure = error
        if not distributed.agree(failure is None):
            raise failure or CheckpointError(f"checkpoint {checkpoint.path}: another process "
                                             "of the group could not resume it")
        resumed_from = start
        last = (checkpoint.path, start)

    done = max(steps, start)
    for index in range(start + 1, steps + 1):
        figures = dict(step(index) or {})
        _check_losses(figures.get("losses", {}), index, unit, context, threshold, last)
        final = index == steps or bool(figures.get("stop"))
        if evaluate is not None and (index % evaluate_every == 0 or final):
            figures["evaluation"] = evaluate(index)
        if checkpoint is not None and (index % checkpoint_every == 0 or final):
            _save(checkpoint, index, state, generators, main)
            last = (checkpoint.path, index)
        if progress is not None and main:
            progress(ProgressEvent(index, steps, figures))
        if final:
            done = index
            break
    return TrainingRun(resumed_from, done, last)


def _restore(checkpoint: Checkpoint, restore, generators) -> int:
    """Put the checkpointed state back; returns its step."""
    saved = load_checkpoint(checkpoint.path, checkpoint.config, checkpoint.data,
                            checkpoint.ignore)
    try:
        start = int(saved["step"])
        if restore is not None:
            restore(saved)
        for name, generator in generators.items():
            generator.set_state(saved[name])
        if GLOBAL_RANDOM_STATE in saved:
            torch.set_rng_state(saved[GLOBAL_RANDOM_STATE])
    except (RuntimeError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {checkpoint.path} does not fit this run: "
                              f"{str(error).splitlines()[0]}") from None
    return start


def _save(checkpoint: Checkpoint, index: int, state, generators, main: bool) -> None:
    """Rank 0 (or the only process) writes the checkpoint; in a group the others wait until
    it is in place, and stop with rank 0 when it could not be written."""
    failure = None
    if main:
        saved = dict(state() if state is not None else {})
        saved["step"] = index
        saved.update({name: g.get_state() for name, g in generators.items()})
        saved[GLOBAL_RANDOM_STATE] = torch.get_rng_state()
        try:
            save_checkpoint(checkpoint.path, saved, checkpoint.config, checkpoint.data)
        except OSError as error:
            failure = error
    if not distributed.agree(failure is None):
        raise failure or CheckpointError(f"rank 0 could not write the checkpoint "
                                         f"{checkpoint.path}")
