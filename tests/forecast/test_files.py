"""Atomic file writes: the old file or the whole new one, never a part, nothing left behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from forecast.files import atomic_write


def test_writes_through_a_hidden_temporary_with_the_same_suffix(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(temporary: Path) -> None:
        seen.append(temporary)
        temporary.write_text("new")

    target = tmp_path / "scores.nc"
    assert atomic_write(target, write, fsync=True) == target
    assert target.read_text() == "new"
    assert (
        seen[0].parent == tmp_path
        and seen[0].name.startswith(".scores.")
        and seen[0].suffix == ".nc"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scores.nc"]


def test_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "latest.ckpt"
    target.write_text("old")

    def write(temporary: Path) -> None:
        temporary.write_text("half of the new")
        raise OSError(errno.ENOSPC, "No space left on device", str(temporary))

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, write)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.ckpt"]
