"""Exports (issue 23): all-or-nothing writing, JSON and CSV of a saved demo-shaped result (no analysis run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lungfuse.pipelines.export.writing import StagedWrite


def test_failed_export_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), StagedWrite(tmp_path) as w:
        w.write_bytes("a.json", b"{}")
        raise RuntimeError("fails mid-export")
    assert list(tmp_path.iterdir()) == []


def test_clean_export_renames_into_place(tmp_path: Path) -> None:
    with StagedWrite(tmp_path) as w:
        w.write_bytes("a.json", b"{}")
        assert not (tmp_path / "a.json").exists()  # staged, not yet in place
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
