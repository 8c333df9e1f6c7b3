"""Checkpoints: written atomically, read back without executing anything.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts (state dicts, optimizer
states, the random generator's state, the history) saved with ``torch.save`` into memory and
moved into place by :func:`lipkit.io.atomic_write_bytes`, so a killed run leaves the previous
checkpoint intact; it is read with ``torch.load(..., weights_only=True)``, which refuses
anything but plain data.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from lipkit.errors import LipkitError
from lipkit.io import atomic_write_bytes


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict:
    """The state saved at ``path``; a missing or corrupt file raises LipkitError naming it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise LipkitError(f"no checkpoint at {path}") from None
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LipkitError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "step" not in state:
        raise LipkitError(f"{path} is not a lipkit GAN checkpoint")
    return state
