"""Writing results safely: every report, figure and checkpoint is written atomically.

A file is written next to its destination under a temporary name and moved into place with
``os.replace``, so an interrupted run never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from lipkit.errors import InvalidArgumentError

MAX_MODEL_BYTES = 2 * 2**30  # ONNX's protobuf limit; lipkit reads a model into memory
MAX_DATA_BYTES = 16 * 2**30


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (creating parent folders); returns the path.

    The bytes go to ``.NAME.lipkit-PID-RANDOM.tmp`` in the target's folder, which is removed
    on any exception; temporary files of the same target left by a killed earlier run (their
    process is gone) are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.lipkit-"
                                         f"{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp creates 0600; honour the umask
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)  # gone already after a successful replace
    return path


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`atomic_write_bytes` left for ``path`` in a run that
    was killed (only names of lipkit's own pattern whose process no longer runs); returns
    them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(rf"\.{re.escape(path.name)}\.lipkit-(\d+)-[A-Za-z0-9_]+\.tmp")
    removed = []
    for candidate in path.parent.iterdir():
        match = pattern.fullmatch(candidate.name)
        if match and not _process_runs(int(match.group(1))) and candidate.is_file():
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_runs(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def check_input_file(path: str | os.PathLike, what: str, max_bytes: int) -> Path:
    """``path`` as a Path, or InvalidArgumentError naming it: missing, not a file, empty, or
    larger than ``max_bytes`` (a file lipkit reads into memory)."""
    path = Path(path)
    if not path.exists():
        raise InvalidArgumentError(f"{what} {path}: no such file")
    if not path.is_file():
        raise InvalidArgumentError(f"{what} {path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise InvalidArgumentError(f"{what} {path}: the file is empty")
    if size > max_bytes:
        raise InvalidArgumentError(f"{what} {path}: {size} bytes, more than the {max_bytes} "
                                   "lipkit reads")
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


OUTPUT_MARKER = ".lipkit-output.json"
_TEMPORARY = re.compile(r"\..+\.lipkit-\d+-[A-Za-z0-9_]+\.tmp")


def claim_output_folder(folder: str | os.PathLike, command: str,
                        outputs: list[str] | None = None):
    """Make sure ``command`` writes into ``folder`` without touching anything a user has;
    returns ``finish()``, to call when the command stops (done, failed or interrupted).

    The folder may be new or empty, or hold the output of an earlier run of the same command,
    recorded in its ``.lipkit-output.json``. With ``outputs`` (the file names the command
    writes), an existing file among them that lipkit did not write is refused; without them
    (a command whose files vary, the demo), every file in the folder must be lipkit's.
    Nothing is written when the folder is refused.

    Raises:
        InvalidArgumentError: the folder, or a file in it, is the user's (named).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InvalidArgumentError(f"output folder {folder} is a file")
    marker = folder / OUTPUT_MARKER
    existing = _files(folder)
    recorded: set[str] = set()
    if marker.is_file():
        try:
            record = json.loads(marker.read_text())
            owner, recorded = record["command"], set(record["files"])
        except (ValueError, KeyError, TypeError, OSError):
            raise InvalidArgumentError(f"{marker} is not a lipkit output record; lipkit does "
                                       "not write into this folder") from None
        if owner != command:
            raise InvalidArgumentError(f"output folder {folder} holds the output of "
                                       f"`lipkit {owner}`; choose another folder")
    elif outputs is None and existing:
        raise InvalidArgumentError(f"output folder {folder} is not empty and was not written "
                                   f"by `lipkit {command}`; choose a new folder")
    candidates = existing if outputs is None else existing & set(outputs)
    foreign = sorted(candidates - recorded)
    if foreign:
        raise InvalidArgumentError(f"{folder / foreign[0]} was not written by `lipkit "
                                   f"{command}`: lipkit does not overwrite it; move it or "
                                   "choose another folder")
    owned = recorded | set(outputs or ())
    created = not folder.exists()
    had_marker = marker.is_file()

    def write(files: set[str]) -> None:
        atomic_write_json(marker, {"command": command, "files": sorted(files)})

    write(owned)

    def finish() -> None:
        if not folder.is_dir():
            return
        new = _files(folder) - existing
        if not new and not had_marker:  # failed before writing: leave no trace
            marker.unlink(missing_ok=True)
            if created and not any(folder.iterdir()):
                folder.rmdir()
        elif outputs is None:  # every file is the command's: record them
            write(owned | new)

    return finish


def _files(folder: Path) -> set[str]:
    """Paths of the files under ``folder`` (relative, '/'-separated), without lipkit's
    marker and temporary files."""
    if not folder.is_dir():
        return set()
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*")
            if (path.is_file() or path.is_symlink()) and path.name != OUTPUT_MARKER
            and not _TEMPORARY.fullmatch(path.name)}
