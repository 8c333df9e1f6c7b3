"""Multi-process training with PyTorch's own engine: one process per device, started by
``torchrun``.

``torchrun --nproc_per_node N -m lipkit certify train ...`` starts N copies of the command
with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set;
:func:`from_environment` reads them and joins the process group: NCCL when CUDA is available
(process ``LOCAL_RANK`` on ``cuda:LOCAL_RANK``), gloo on CPU. Without those variables it
returns None and everything runs in one process.

What lipkit does in a process group (:func:`lipkit.certify.train_certified`,
:func:`lipkit.training.train`):

- **one global batch**: ``batch_size`` is the batch of the whole group. Every process draws
  the same permutation (and the same augmentation) from the run's seeded generator, cuts it
  into the same global batches and takes its own contiguous share of each
  (:func:`shard`: sizes differ by at most one); torch's ``DistributedDataParallel`` averages
  the gradients, each weighted so that the average is the gradient of the global batch's
  mean loss (:func:`shard`'s ``weight``);
- **rank 0 writes**: checkpoints (atomic, :mod:`lipkit.checkpoint`), reports and progress;
  the others wait until the file is in place (:func:`agree` is the barrier, and an error on
  one rank stops all of them instead of leaving them waiting);
- **every rank resumes**: each loads the checkpoint rank 0 wrote (a file system all ranks
  see, as on one machine);
- after training, evaluation and certificates use the model itself, never the wrapper.

A process of the group ends with :func:`exit`: it leaves the group and ends without the
interpreter's finalization. On CPU, torch's gloo backend can abort a process there
(``terminate called without an active exception``, SIGABRT, after all its work is done and
the group destroyed: seen in about 1 of 30 runs of a two-process ``certify train`` on a busy
machine, always in the rank that finishes first); torchrun then reports the whole run failed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from lipkit.errors import InvalidArgumentError, LipkitError

ENVIRONMENT = ("RANK", "WORLD_SIZE")


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the group: ``rank`` of ``world_size``, its ``device`` and the
    ``backend`` (``"nccl"`` or ``"gloo"``)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints and reports and draws progress."""
        return self.rank == 0


def launched() -> bool:
    """Whether this process was started by ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set)."""
    return all(key in os.environ for key in ENVIRONMENT)


def from_environment() -> ProcessGroup | None:
    """Join the process group ``torchrun`` describes in the environment, or None when the
    process was not started by it. Joining twice returns the group joined.

    Raises:
        InvalidArgumentError: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` are not integers
            with ``0 <= RANK < WORLD_SIZE``, or CUDA is used and ``LOCAL_RANK`` has no GPU.
        LipkitError: the group cannot be joined (``MASTER_ADDR`` missing, a port in use).
    """
    if not launched():
        return None
    if dist.is_available() and dist.is_initialized():
        return current()
    try:
        rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise InvalidArgumentError(
            f"RANK={os.environ['RANK']!r}, WORLD_SIZE={os.environ['WORLD_SIZE']!r}, "
            f"LOCAL_RANK={os.environ.get('LOCAL_RANK')!r} must be integers") from None
    if not 0 <= rank < world_size or local_rank < 0:
        raise InvalidArgumentError(f"RANK={rank} and LOCAL_RANK={local_rank} must lie in "
                                   f"[0, WORLD_SIZE={world_size})")
    if not dist.is_available():
        raise LipkitError("this build of torch has no torch.distributed")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise InvalidArgumentError(f"LOCAL_RANK={local_rank} has no GPU (this machine "
                                       f"has {torch.cuda.device_count()})")
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend, init_method="env://", rank=rank,
                                world_size=world_size)
    except (ValueError, RuntimeError) as error:
        raise LipkitError(f"cannot join the process group (rank {rank} of {world_size}, "
                          f"{backend}): {' '.join(str(error).split())[:200]}") from None
    return current()


def current() -> ProcessGroup | None:
    """The group this process has joined (by :func:`from_environment` or by
    ``torch.distributed.init_process_group``), or None."""
    if not (dist.is_available() and dist.is_initialized()):
        return None
    rank = dist.get_rank()
    backend = str(dist.get_backend())
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return ProcessGroup(rank, dist.get_world_size(), local_rank, backend, device)


def is_main() -> bool:
    """True in rank 0 of a group and in a process without one."""
    group = current()
    return group is None or group.is_main


def leave() -> None:
    """Leave the group joined (nothing when there is none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def exit(code: int = 0) -> None:
    """Leave the group, flush stdout and stderr, and end this process with ``code`` at once
    (``os._exit``: no atexit handlers, no interpreter finalization, where gloo can abort a
    process that has finished its work). Write and close every file before calling it."""
    leave()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe
            stream.flush()
    os._exit(code)


def agree(ok: bool) -> bool:
    """True when every process of the group passes ``ok`` True (a barrier: each waits for
    all); ``ok`` itself without a group."""
    group = current()
    if group is None:
        return bool(ok)
    failed = torch.tensor([0.0 if ok else 1.0], device=group.device)
    dist.all_reduce(failed)
    return float(failed) == 0.0


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over the group (``values`` itself without one)."""
    group = current()
    if group is None:
        return values
    summed = values.detach().to(group.device, torch.float64).clone()
    dist.all_reduce(summed)
    return summed.to(values.device)


def all_max(value: float) -> float:
    """The largest ``value`` of the group (``value`` itself without one)."""
    group = current()
    if group is None:
        return float(value)
    largest = torch.tensor([float(value)], dtype=torch.float64, device=group.device)
    dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    return float(largest)


def broadcast(value, source: int = 0):
    """Rank ``source``'s ``value`` (any picklable object) in every process (``value`` itself
    without a group)."""
    if current() is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=source)
    return box[0]


def shard(count: int, group: ProcessGroup | None) -> tuple[torch.Tensor, float]:
    """This process's positions in a global batch of ``count`` examples, and the weight of
    its mean loss.

    The batch is cut into ``world_size`` contiguous shares whose sizes differ by at most one;
    share ``r`` has ``n_r`` examples. DDP averages the gradients of the ``W`` processes, so
    weighting process ``r``'s mean loss by ``n_r W / n`` gives
    ``(1/W) sum_r (n_r W / n) grad mean_r = (1/n) sum_i grad loss_i``: the gradient of the
    global batch's mean loss, whatever the sizes. A process whose share is empty (``n < W``)
    computes the loss of one stand-in example (the batch's first) with weight 0, so that it
    still joins the gradient average.

    Example:
        >>> shard(5, None)
        (tensor([0, 1, 2, 3, 4]), 1.0)
    """
    positions = torch.arange(count)
    if group is None or group.world_size == 1:
        return positions, 1.0
    mine = torch.tensor_split(positions, group.world_size)[group.rank]
    if len(mine) == 0:
        return positions[:1], 0.0
    return mine, len(mine) * group.world_size / count
