"""Writing results safely: every report, figure and checkpoint is written atomically.

A file is written next to its destination under a temporary name and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; honour the umask
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with every NaN / infinity written as a string (JSON has neither), recursively
    through dicts, lists and tuples; keys become strings.

    Example:
        >>> json_safe({"gap": float("inf"), 1: [0.5, float("nan")]})
        {'gap': 'inf', '1': [0.5, 'nan']}
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def atomic_write_json(path: str | os.PathLike, value: Any) -> Path:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return atomic_write_bytes(path, buffer.getvalue())
