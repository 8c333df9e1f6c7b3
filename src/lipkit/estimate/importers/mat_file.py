"""Import a LipSDP weight file (MATLAB ``.mat``) into a :class:`~lipkit.estimate.network.Network`.

The format of the LipSDP repository (Fazlyab et al., NeurIPS 2019; ``arobey1/LipSDP``): one
key, ``weights``, a cell array (loaded as a NumPy object array) of weight matrices ``W_i`` of
shape ``(out, in)``, first layer first, with a ReLU between consecutive layers and no biases:
``f(x) = W_L relu(W_{L-1} ... relu(W_1 x))``. ``scipy.io.loadmat`` parses the file's data
(it executes nothing); MATLAB v7.3 (HDF5) files are not read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
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
        contents = scipy.io.loadmat(path)
    except NotImplementedError:  # scipy's answer to v7.3 files
        raise fail("MATLAB v7.3 (HDF5) files are not supported; save it with -v7") from None
    except Exception as error:  # a damaged file raises whatever the parser tripped on
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise fail(f"not a readable MATLAB .mat file ({reason})") from None
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
        if scipy.sparse.issparse(entry):
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


__all__ = ["import_mat"]
