"""Atomic writes: an interrupted write leaves the previous file intact."""

import json
import os

import pytest

from lipkit.io import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_atomic_write_replaces_content_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "report.md"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.md"]


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_json(path, {"value": 1})

    def broken_replace(source, destination):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(path, b"{broken")
    assert json.loads(path.read_text()) == {"value": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_written_files_honour_the_umask(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
