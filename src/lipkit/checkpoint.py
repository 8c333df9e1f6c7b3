"""Checkpoints: checksummed, tied to their run, written atomically, read without executing.

A checkpoint file is a ``torch.save`` archive of plain data (torch's loader with
``weights_only=True`` reads it, and nothing in it is unpickled as code)::

    {"format": "lipkit-checkpoint", "version": 1, "sha256": "...", "payload": uint8 tensor}

where ``payload`` holds the bytes of another ``torch.save`` archive ``{"config": ...,
"data": ..., "state": ...}``: the run's configuration, the fingerprint of its data set
(:func:`data_fingerprint`) and the training state. ``sha256`` is the digest of those bytes,
so a flipped byte anywhere in them (torch does not check the zip CRCs) is refused rather
than resumed with altered weights; a configuration or data set that differs from the run
resuming it is refused with the differing fields named. Files are moved into place by
:func:`lipkit.io.atomic_write_bytes`, so a killed run leaves the previous checkpoint intact.

Used by every trainer that resumes, through :func:`lipkit.training.train`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import torch

from lipkit.errors import CheckpointError
from lipkit.io import atomic_write_bytes, check_input_file

FORMAT = "lipkit-checkpoint"
VERSION = 1
MAX_BYTES = 16 * 2**30  # a checkpoint is read into memory


def data_fingerprint(name: str, **tensors: torch.Tensor) -> dict:
    """What identifies a data set: its name (or path), the shape of each tensor and the
    SHA-256 of their contents (in the order given)."""
    digest = hashlib.sha256()
    shapes = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        shapes[key] = list(tensor.shape)
    return {"name": str(name), "shapes": shapes, "sha256": digest.hexdigest()}


def save_checkpoint(path: str | Path, state: dict, config: dict | None = None,
                    data: dict | None = None) -> Path:
    """Write ``state`` with the run's ``config`` and ``data`` fingerprint to ``path``
    atomically (module docstring); returns the path."""
    buffer = io.BytesIO()
    torch.save({"config": config, "data": data, "state": state}, buffer)
    payload = buffer.getvalue()
    wrapper = {"format": FORMAT, "version": VERSION,
               "sha256": hashlib.sha256(payload).hexdigest(),
               "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    buffer = io.BytesIO()
    torch.save(wrapper, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, config: dict | None = None, data: dict | None = None,
                    ignore: Iterable[str] = ()) -> dict:
    """The state saved at ``path``, after checking its checksum and, when given, that it was
    written by a run with the same ``config`` (but for the keys in ``ignore``) on the same
    ``data`` (:func:`data_fingerprint`).

    Raises:
        CheckpointError: a missing, unreadable or corrupt file, or one of another run; the
            message names the file and the differing fields.
    """
    saved_config, saved_data, state = _read(path)
    differences = []
    if config is not None:  # a key either side lacks counts as None
        saved = saved_config if isinstance(saved_config, dict) else {}
        keys = sorted((set(config) | set(saved)) - set(ignore))
        differences += [_difference(key, saved.get(key), config.get(key)) for key in keys
                        if saved.get(key) != config.get(key)]
    if data is not None and _identity(saved_data) != _identity(data):
        differences.append(_difference("data", _describe(saved_data), _describe(data)))
    if differences:
        raise CheckpointError(f"checkpoint {path} is of another run (differs in "
                              f"{'; '.join(differences)}); resume it with the same settings "
                              "or choose another folder")
    return state


def checkpoint_config(path: str | Path) -> dict:
    """The configuration of the run that wrote the checkpoint at ``path`` (checksum
    checked): what a run that plans from its first start (a number of epochs fitted to a
    time budget) reads back when it resumes.

    Raises:
        CheckpointError: a missing, unreadable or corrupt file.
    """
    config = _read(path)[0]
    return dict(config) if isinstance(config, dict) else {}


def _read(path: str | Path) -> tuple:
    """``(config, data, state)`` of the checkpoint at ``path``, its checksum checked."""
    path = check_input_file(path, "checkpoint", MAX_BYTES)
    try:
        wrapper = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or unsafe file
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)}") from None
    if not isinstance(wrapper, dict) or wrapper.get("format") != FORMAT:
        raise CheckpointError(f"cannot read checkpoint {path}: not a lipkit checkpoint")
    if wrapper.get("version") != VERSION:
        raise CheckpointError(f"cannot read checkpoint {path}: format version "
                              f"{wrapper.get('version')!r}, lipkit reads {VERSION}")
    payload = wrapper.get("payload")
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CheckpointError(f"cannot read checkpoint {path}: no payload")
    raw = payload.numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != wrapper.get("sha256"):
        raise CheckpointError(f"checkpoint {path} is corrupt: its contents do not match "
                              "their SHA-256 checksum")
    try:
        content = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        return content["config"], content["data"], content["state"]
    except Exception as error:
        raise CheckpointError(f"cannot read checkpoint {path}: {_first_line(error)}") from None


def _identity(data) -> tuple:
    """The fingerprint without the name: moving a data set does not change it."""
    if not isinstance(data, dict):
        return (None, None)
    return (data.get("shapes"), data.get("sha256"))


def _describe(data) -> str:
    if not isinstance(data, dict):
        return "none recorded"
    shapes = ", ".join(f"{k} {tuple(v)}" for k, v in (data.get("shapes") or {}).items())
    return f"{data.get('name')} [{shapes}] sha256 {str(data.get('sha256'))[:12]}"


def _difference(key: str, saved, current) -> str:
    return f"{key}: checkpoint {_short(saved)}, this run {_short(current)}"


def _short(value) -> str:
    text = repr(value) if not isinstance(value, str) or " " not in value else value
    return text if len(text) <= 80 else text[:77] + "..."


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(error).__name__
