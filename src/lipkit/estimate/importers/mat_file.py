"""Import a LipSDP weight file (MATLAB ``.mat``) into a :class:`~lipkit.estimate.network.Network`.

The format of the LipSDP repository (Fazlyab et al., NeurIPS 2019; ``arobey1/LipSDP``): one
key, ``weights``, a cell array (loaded as a NumPy object array) of weight matrices ``W_i`` of
shape ``(out, in)``, first layer first, with a ReLU between consecutive layers and no biases:
``f(x) = W_L relu(W_{L-1} ... relu(W_1 x))``. MATLAB v7.3 (HDF5) files are not read.

The file is parsed as data (nothing in it is executed). The common case — a level-5
MAT-file whose ``weights`` is a real numeric matrix or a cell array of them, compressed or
not — is read by :func:`read_mat5_numeric` with NumPy and zlib alone, which also refuses a
level-5 file whose structure is damaged (``scipy.io.loadmat`` crashes the interpreter on
some: a segmentation fault on three changed bytes of ``random_weights.mat``); anything else
(sparse, complex, logical or text entries, v4 / v7.3 / big-endian files) goes to
``scipy.io.loadmat``, which reads and refuses files as before. The reason is start-up:
``scipy.io`` imports ``scipy.sparse`` and with it much of NumPy (f2py, ma, polynomial, ...),
0.1-0.2 s that ``lipkit estimate small.mat -m naive`` need not pay (BENCHMARKS.md,
start-up). The tests check both readers give the same arrays on the reference files and on
files scipy writes.
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.network import DTYPE, Activation, Affine, Matrix, Network, Node


def import_mat(path) -> Network:
    """Read a LipSDP ``.mat`` weight file: ``weights`` = cell array of ``(out, in)`` matrices.

    Raises InvalidArgumentError, naming the file and what is wrong, for a file that cannot
    be parsed, lacks the ``weights`` key, holds an entry that is not a finite real matrix, or
    whose shapes do not chain (``W_{i+1}`` must have as many columns as ``W_i`` has rows).
    """
    path = Path(path)
    weights = _read_weights(path)
    nodes: list[Node] = []
    for index, weight in enumerate(weights):
        if index:
            nodes.append(Node(f"relu{index - 1}", Activation("relu"), [len(nodes) - 1]))
        operator = Matrix(torch.from_numpy(weight).to(DTYPE))
        nodes.append(Node(f"weights{index}", Affine(operator), [len(nodes) - 1]))
    return Network((weights[0].shape[1],), nodes, source=str(path))


def _read_weights(path: Path) -> list[np.ndarray]:
    def fail(what: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{path}: {what}")

    if not path.is_file():
        raise fail("no such file")
    try:
        contents = read_mat5_numeric(path.read_bytes())
    except DamagedFileError as error:
        raise fail(f"not a readable MATLAB .mat file ({error})") from None
    if contents is None or contents.get("weights") is None:  # the general reader decides
        contents = _loadmat(path, fail)
    if "weights" not in contents:
        found = sorted(key for key in contents if not key.startswith("__"))
        raise fail(f"no 'weights' key (found: {', '.join(found) or 'nothing'})")
    cell = contents["weights"]
    if isinstance(cell, np.ndarray) and cell.dtype == object:
        if sum(size > 1 for size in cell.shape) > 1:
            raise fail(f"'weights' must be a 1-D cell array of matrices, got shape {cell.shape}")
        entries = list(cell.ravel())
    else:  # a single matrix saved without a cell
        entries = [cell]
    if not entries:
        raise fail("'weights' is empty")
    weights = []
    for index, entry in enumerate(entries):
        if hasattr(entry, "toarray"):  # a scipy.sparse matrix
            entry = entry.toarray()
        if (not isinstance(entry, np.ndarray) or entry.ndim != 2 or entry.size == 0
                or entry.dtype == object or not np.issubdtype(entry.dtype, np.number)
                or np.issubdtype(entry.dtype, np.complexfloating)):
            kind = (f"a {entry.dtype} array of shape {entry.shape}"
                    if isinstance(entry, np.ndarray) else type(entry).__name__)
            raise fail(f"weights[{index}] is not a non-empty real matrix ({kind})")
        entry = entry.astype(np.float64)
        if not np.isfinite(entry).all():
            raise fail(f"weights[{index}] has non-finite entries")
        if weights and entry.shape[1] != weights[-1].shape[0]:
            raise fail(
                f"shapes do not chain: weights[{index}] is {entry.shape[0]}x{entry.shape[1]} "
                f"(out x in) but weights[{index - 1}] has {weights[-1].shape[0]} outputs"
            )
        weights.append(np.ascontiguousarray(entry))
    return weights


def _loadmat(path: Path, fail) -> dict:
    import scipy.io  # 0.1-0.2 s of imports: only for the files read_mat5_numeric leaves

    try:
        return scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to v7.3 files
        raise fail("MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from None
    except Exception as error:  # a damaged file raises whatever the parser tripped on
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise fail(f"not a readable MATLAB .mat file ({reason})") from None


# Level-5 MAT-file format (MathWorks, "MAT-File Format", 2021): data element types and
# array classes
_COMPRESSED, _MATRIX = 15, 14
_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8",
          13: "u8"}
_VALID_TYPES = {*_TYPES, 14, 15, 16, 17, 18}  # and matrix, compressed, utf8 / 16 / 32
_CELL_CLASS = 1
_NUMERIC_CLASSES = range(6, 16)  # double, single, int8 ... uint64
_VALID_CLASSES = range(1, 18)
_COMPLEX, _GLOBAL, _LOGICAL = 0x0800, 0x0400, 0x0200  # array flags


class DamagedFileError(ValueError):
    """A level-5 MAT-file whose structure does not parse (the message says where)."""


class _UnsupportedError(Exception):
    """A valid construct :func:`read_mat5_numeric` leaves to scipy."""


def read_mat5_numeric(data: bytes) -> dict[str, np.ndarray | None] | None:
    """The real numeric matrices and cell arrays of them in a little-endian level-5
    MAT-file, by name, or None when the file holds anything else or is not such a file
    (then ``scipy.io.loadmat`` reads it). Numeric arrays are float64 of their stored shape,
    a cell array an object array of its shape, as ``scipy.io.loadmat`` gives them;
    variables of other classes are listed with the value None. A level-5 file whose
    structure does not parse raises :class:`DamagedFileError`.

    >>> import io, numpy as np, scipy.io
    >>> buffer = io.BytesIO()
    >>> scipy.io.savemat(buffer, {"w": np.arange(6.0).reshape(2, 3)}, do_compression=True)
    >>> read_mat5_numeric(buffer.getvalue())["w"]
    array([[0., 1., 2.],
           [3., 4., 5.]])
    """
    if len(data) < 128 or data[126:128] != b"IM" or b"\0" in data[:4]:
        return None  # big-endian, a v4 file or not a MAT-file
    if struct.unpack("<H", data[124:126])[0] != 0x0100:
        return None  # v7.3 (HDF5)
    contents: dict = {}
    try:
        position = 128
        while position < len(data):
            kind, body, position = _element(data, position)
            if kind == _COMPRESSED:
                kind, body, _ = _element(zlib.decompress(body), 0)
            if kind != _MATRIX:
                raise _UnsupportedError
            name, value = _matrix(body)
            contents[name] = value
    except _UnsupportedError:
        return None
    except (struct.error, zlib.error, ValueError, IndexError) as error:
        raise DamagedFileError(str(error) or type(error).__name__) from None
    return contents


def _element(data: bytes, position: int) -> tuple[int, bytes, int]:
    """The data element at ``position``: ``(type, body, next position)``."""
    kind, size = struct.unpack_from("<II", data, position)
    if kind >> 16:  # small data element: 2-byte size, 2-byte type, 4 bytes of data
        size, kind = kind >> 16, kind & 0xFFFF
        if size > 4 or kind not in _VALID_TYPES:
            raise ValueError(f"bad data element at byte {position}")
        return kind, data[position + 4 : position + 4 + size], position + 8
    if kind not in _VALID_TYPES:
        raise ValueError(f"unknown data type {kind} at byte {position}")
    start, end = position + 8, position + 8 + size
    if end > len(data):
        raise ValueError(f"a data element at byte {position} runs past the end")
    padded = end if kind == _COMPRESSED else start + (size + 7) // 8 * 8
    return kind, data[start:end], padded


def _numbers(kind: int, body: bytes) -> np.ndarray:
    if kind not in _TYPES:
        raise _UnsupportedError  # text (utf8 / 16 / 32): scipy's
    return np.frombuffer(body, dtype="<" + _TYPES[kind])


def _matrix(body: bytes) -> tuple[str, np.ndarray | None]:
    """``(name, value)`` of an miMATRIX element's body."""
    if not body:
        raise _UnsupportedError  # an empty cell entry
    kind, flags, position = _element(body, 0)
    flags = int(_numbers(kind, flags)[0])
    array_class = flags & 0xFF
    if array_class not in _VALID_CLASSES or flags & ~(0xFF | _COMPLEX | _GLOBAL | _LOGICAL):
        raise ValueError(f"bad array flags {flags:#x}")
    kind, dimensions, position = _element(body, position)
    shape = tuple(int(d) for d in _numbers(kind, dimensions))
    kind, name, position = _element(body, position)
    name = name.decode("ascii")
    count = math.prod(shape)
    if array_class == _CELL_CLASS:
        if count > len(body) // 8:  # every entry takes 8 bytes at least
            raise ValueError("more cells than the element holds")
        cells = np.empty(count, dtype=object)
        for index in range(count):
            kind, entry, position = _element(body, position)
            if kind != _MATRIX:
                raise _UnsupportedError
            cells[index] = _matrix(entry)[1]
            if cells[index] is None:
                raise _UnsupportedError  # scipy reads the whole file
        return name, cells.reshape(shape, order="F")
    if array_class not in _NUMERIC_CLASSES:
        if not name:
            raise _UnsupportedError  # inside a cell: scipy reads the whole file
        return name, None  # another variable, not this reader's business
    parts = []
    for _ in range(2 if flags & _COMPLEX else 1):  # the real part, the imaginary part
        kind, part, position = _element(body, position)
        values = _numbers(kind, part)
        if values.size != count:
            raise ValueError(f"{values.size} values for an array of shape {shape}")
        parts.append(values)
    if flags & (_COMPLEX | _LOGICAL):  # well formed (checked above), but scipy's to read
        if not name:
            raise _UnsupportedError
        return name, None
    return name, parts[0].astype(np.float64).reshape(shape, order="F")


__all__ = ["DamagedFileError", "import_mat", "read_mat5_numeric"]
