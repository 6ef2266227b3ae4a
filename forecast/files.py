"""Atomic file writes: a temporary file in the same folder, then a rename.

Readers see either the old file or the complete new one, never part of one;
a failed write (a full disk, an interrupt, an error in the writer) leaves the
old file as it was and no temporary file behind.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, write: Callable[[Path], object], fsync: bool = False) -> Path:
    """Call ``write(temporary_path)``, then rename the result to ``path``.

    Parameters
    ----------
    path : str or Path
        The file to write; its folder must exist.
    write : callable
        Writes the whole file at the path it is given. The temporary path
        lives in the same folder (same file system, so the rename is atomic),
        is hidden (a leading dot) and ends with ``path``'s suffix, so writers
        that choose a format by suffix still work.
    fsync : bool
        Flush the file to the disk before the rename (for files that must
        survive a power cut, such as checkpoints).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        if fsync:
            descriptor = os.open(temporary, os.O_RDONLY)
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
