"""Results files of the long benchmarks: one JSON object per line, appended as each piece of
work finishes, so that a run can be killed and started again (it skips what is there) and a
partial file is already a table."""

from __future__ import annotations

import json
import os
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    """Every complete line of ``path`` (a line cut by a kill is ignored)."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict) -> None:
    """Append ``row`` as one line and flush it to disk."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        handle.write(json.dumps(row) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
