"""The binary version of CIFAR-10 a user already has (nothing is downloaded or unpickled).

Each ``.bin`` file of ``cifar-10-binary.tar.gz`` is a sequence of 3,073-byte records: one
label byte (0-9), then the 32 x 32 image as 1,024 red, 1,024 green and 1,024 blue bytes,
each channel row by row. The python version's pickled files are never read: unpickling a
file can execute code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, LipkitError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
_RECORD = 1 + 3 * 32 * 32


class CifarSplit(NamedTuple):
    """Train and test tensors: images (n, 3, 32, 32) in [0, 1] and integer labels (n,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_cifar10_batch(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (n, 3, 32, 32) in [0, 1] and labels (n,) of one CIFAR-10 ``.bin`` file.

    Raises:
        LipkitError: the file is missing or unreadable, empty or truncated (its size is not
            a multiple of 3,073 bytes), or has a label outside 0-9 (the message names it).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise LipkitError(f"cannot read CIFAR-10 file {path}: {error}") from None
    if not raw or len(raw) % _RECORD:
        raise InvalidArgumentError(f"{path}: truncated CIFAR-10 binary file ({len(raw)} bytes "
                                   f"is not a positive multiple of the {_RECORD}-byte record)")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0]
    bad = np.flatnonzero(labels >= len(CLASSES))
    if bad.size:
        raise InvalidArgumentError(f"{path}: record {bad[0]} has label {labels[bad[0]]}, "
                                   "outside 0-9 (not a CIFAR-10 binary file?)")
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32))
    return images.div_(255.0), torch.from_numpy(labels.astype(np.int64))


def load_cifar10(folder: str | Path) -> CifarSplit:
    """CIFAR-10 from the binary files in ``folder`` (or its ``cifar-10-batches-bin``).

    The training set is every ``data_batch_<k>.bin`` present (the full set has k = 1..5, in
    order of k), the test set ``test_batch.bin``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LipkitError(f"CIFAR-10 folder {folder} does not exist")
    if not (folder / "test_batch.bin").exists() and (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    train = sorted((int(match.group(1)), path) for path in folder.iterdir()
                   if (match := re.fullmatch(r"data_batch_(\d+)\.bin", path.name)))
    if not train:
        raise LipkitError(f"no data_batch_<k>.bin in {folder} (lipkit reads the binary "
                          "version of CIFAR-10)")
    if not (folder / "test_batch.bin").exists():
        raise LipkitError(f"no test_batch.bin in {folder}")
    batches = [load_cifar10_batch(path) for _, path in train]
    x_test, y_test = load_cifar10_batch(folder / "test_batch.bin")
    return CifarSplit(torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]),
                      x_test, y_test)
