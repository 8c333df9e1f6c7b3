"""MNIST-style idx files a user already has (LeCun's format; nothing is downloaded).

An idx file is a 4-byte magic number ``0 0 type ndim``, then ``ndim`` big-endian uint32
dimensions, then the data in big-endian order; ``.gz`` files are read through gzip.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError, LipkitError

# idx type code -> numpy big-endian dtype
MAX_IDX_BYTES = 2**30  # EMNIST's largest file holds 0.55 GB
_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class MnistSplit(NamedTuple):
    """Train and test tensors: images (n, 1, h, w) in [0, 1] and integer labels (n,)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_idx(path: str | Path, max_bytes: int = MAX_IDX_BYTES) -> torch.Tensor:
    """The array stored in the idx file ``path`` (optionally gzipped), as a tensor.

    The header's dimensions are checked against ``max_bytes`` before any data is read, and a
    gzipped file is decompressed incrementally: never more than the header declares plus one
    byte (which tells a file longer than its header), so a small compressed file cannot
    inflate into gigabytes.

    Raises:
        LipkitError: the file is missing, not an idx file, larger than its header or
            ``max_bytes`` says, or truncated (the message names it).
    """
    path = Path(path)
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as stream:
            array = _read_idx(stream, path, max_bytes)
    except (OSError, EOFError, zlib.error) as error:
        raise LipkitError(f"cannot read idx file {path}: {error}") from None
    return torch.from_numpy(array)


def _read_idx(stream, path: Path, max_bytes: int) -> np.ndarray:
    magic = stream.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES:
        raise InvalidArgumentError(f"{path} is not an idx file (bad magic number "
                                   f"{magic.hex() or 'empty'})")
    ndim = magic[3]
    dims = stream.read(4 * ndim)
    if ndim == 0 or len(dims) < 4 * ndim:
        raise InvalidArgumentError(f"{path}: truncated idx header ({ndim} dimensions)")
    shape = tuple(int(d) for d in np.frombuffer(dims, dtype=">u4"))
    dtype = np.dtype(_TYPES[magic[2]])
    expected = math.prod(shape) * dtype.itemsize
    if expected > max_bytes:
        raise InvalidArgumentError(f"{path}: the idx header declares shape {shape} "
                                   f"({expected} bytes), more than the {max_bytes} lipkit reads")
    raw = stream.read(expected)
    if len(raw) != expected or stream.read(1):
        size = f"{len(raw)}" if len(raw) != expected else f"more than {expected}"
        raise InvalidArgumentError(f"{path}: idx data of {size} bytes, expected {expected} "
                                   f"for shape {shape}")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem.replace("-idx", ".idx"), f"{stem}.gz",
                 f"{stem.replace('-idx', '.idx')}.gz"):
        if (folder / name).exists():
            return folder / name
    raise LipkitError(f"no {stem}[.gz] in {folder}")


def load_mnist(folder: str | Path, test_only: bool = False) -> MnistSplit:
    """MNIST (or Fashion-MNIST) from the four standard idx files in ``folder``.

    Looks for ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``). Pixels are scaled to [0, 1].
    ``test_only``: read only the two ``t10k`` files (for certifying a trained model); the
    training split is then empty.

    Raises:
        LipkitError: a missing folder or file, a corrupt or truncated file, images and labels
            that do not match, or a label outside 0-9 (the message names the file).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LipkitError(f"MNIST folder {folder} does not exist")
    parts = []
    for split in (("t10k",) if test_only else ("train", "t10k")):
        images = load_idx(_find(folder, f"{split}-images-idx3-ubyte"))
        labels_path = _find(folder, f"{split}-labels-idx1-ubyte")
        labels = load_idx(labels_path)
        bad = ((labels < 0) | (labels > 9)).nonzero().flatten() if labels.ndim == 1 else []
        if len(bad):
            raise InvalidArgumentError(f"{labels_path}: label {int(labels[bad[0]])} of item "
                                       f"{int(bad[0])} is outside 0-9")
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise InvalidArgumentError(
                f"{folder}: {split} images of shape {tuple(images.shape)} do not match labels "
                f"of shape {tuple(labels.shape)}")
        parts += [images.float().div(255.0).unsqueeze(1), labels.long()]
    if test_only:
        parts = [parts[0][:0], parts[1][:0], *parts]
    return MnistSplit(*parts)
