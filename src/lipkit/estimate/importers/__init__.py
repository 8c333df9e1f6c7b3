"""Importers: anything a user has -> :class:`~lipkit.estimate.network.Network`.

:func:`load_network` dispatches on the source: a ``torch.nn.Module``, a ``Network``
(returned as is), or a path to an ONNX file (``.onnx``) or a LipSDP weight file (``.mat``).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from lipkit.errors import InvalidArgumentError
from lipkit.estimate.network import Network


def load_network(source, input_shape=None) -> Network:
    """Import ``source`` (module, Network, or a .onnx / .mat path) into a Network."""
    if isinstance(source, Network):
        return source
    if isinstance(source, nn.Module):
        from lipkit.estimate.importers.torch_module import import_module

        return import_module(source, input_shape)
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.is_file():
            raise InvalidArgumentError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            from lipkit.estimate.importers.onnx_file import import_onnx

            return import_onnx(path, input_shape)
        if suffix == ".mat":
            from lipkit.estimate.importers.mat_file import import_mat

            return import_mat(path)
        raise InvalidArgumentError(
            f"{path}: unsupported file type '{suffix}'; lipkit reads .onnx and LipSDP .mat "
            "files (for a PyTorch model, pass the nn.Module from Python)"
        )
    raise InvalidArgumentError(f"cannot import a {type(source).__name__} as a network")


def __getattr__(name: str):
    """``import_module`` on first use: the torch importer (torch.fx, lipkit.nn's layers) is
    not needed to read a file (start-up of ``lipkit estimate small.mat``)."""
    if name == "import_module":
        from lipkit.estimate.importers.torch_module import import_module

        return import_module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["import_module", "load_network"]
