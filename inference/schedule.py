"""Scheduled runs: ``latest`` init time, locks, manifests and resume progress.

Next to an output ``OUT`` (``.zarr`` or ``.nc``) a run keeps

- ``OUT.lock``: the :mod:`forecast.locking` lock, held while a run writes
  ``OUT`` and removed when the run ends; the kernel releases it when the
  process ends, however it ends, so a file left by a killed run is no stale
  lock (the next run takes it and removes it);
- ``OUT.manifest.json``: what was run (checkpoint digest, store, init times,
  members, perturbation, seed, batch size), timings, software version and
  ``status`` (``running``, ``finished``, ``failed``);
- ``OUT.progress/``: per batch, the last lead time completely written
  (removed when the run finishes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from forecast import locking
from forecast.errors import ConfigError
from forecast.files import atomic_write
from forecast.time import format_time

#: Statuses of a manifest.
RUNNING, FINISHED, FAILED = "running", "finished", "failed"


def manifest_path(out: Path) -> Path:
    """``OUT.manifest.json``."""
    return out.with_name(out.name + ".manifest.json")


def lock_path(out: Path) -> Path:
    """``OUT.lock`` (:func:`forecast.locking.lock_path`)."""
    return Path(locking.lock_path(out))


def progress_dir(out: Path) -> Path:
    """``OUT.progress/``."""
    return out.with_name(out.name + ".progress")


def init_label(value) -> str:
    """Text of an init time used in file names: ``2020-01-01T06``."""
    return format_time(value)[:13]


def output_for(out_template: str | Path, init_time) -> Path:
    """Fill ``{init}`` in an output path with an init time (``20200101T06``)."""
    text = str(out_template)
    if "{init}" not in text:
        return Path(text)
    return Path(text.replace("{init}", init_label(init_time).replace("-", "")))


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write JSON to ``path`` through a temporary file and a rename."""
    text = json.dumps(content, indent=2, sort_keys=False, default=str) + "\n"
    atomic_write(path, lambda temporary: temporary.write_text(text))


def read_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest of an output, or None when there is none (or it is unreadable)."""
    path = manifest_path(Path(out))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_finished(out: Path, init_times: list[str] | None = None) -> bool:
    """Whether ``out`` holds a finished forecast (for these init times, when given)."""
    manifest = read_manifest(Path(out))
    if not manifest or manifest.get("status") != FINISHED or not Path(out).exists():
        return False
    return init_times is None or manifest.get("init_times") == init_times


class Progress:
    """Per-batch record of the last lead time completely written.

    Parameters
    ----------
    out : Path
        The output; records live in ``OUT.progress/batch-NNNNNN.json``.
    """

    def __init__(self, out: Path):
        self.directory = progress_dir(Path(out))

    def reset(self) -> None:
        """Forget all progress (a fresh run)."""
        if self.directory.exists():
            shutil.rmtree(self.directory)
        self.directory.mkdir(parents=True)

    def ensure(self) -> None:
        """Create the directory if needed (a resumed run)."""
        self.directory.mkdir(parents=True, exist_ok=True)

    def completed(self, batch: int) -> int:
        """Last lead index written completely for ``batch``; -1 if none."""
        try:
            return int(json.loads((self.directory / f"batch-{batch:06d}.json").read_text())["lead"])
        except (OSError, ValueError, KeyError):
            return -1

    def mark(self, batch: int, lead: int) -> None:
        """Record that ``batch`` is written up to and including ``lead``."""
        write_json_atomic(self.directory / f"batch-{batch:06d}.json", {"lead": int(lead)})

    def remove(self) -> None:
        """Delete the records (the run finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)


def finished_inits(out: Path, manifest: dict[str, Any], field_bytes: int) -> list[int]:
    """Indices of the init times of an unfinished run that are written to their last lead.

    Parameters
    ----------
    out : Path
        The output; its ``OUT.progress/`` records each batch's last complete lead.
    manifest : dict
        Its manifest (``init_times``, ``members``, ``steps``, ``batch_size``).
    field_bytes : int
        Bytes of one member's field of one channel on the output grid (the
        run's member chunking depends on it).

    Returns
    -------
    list of int
        Ascending; empty when the run had not started writing.
    """
    from inference.batching import member_chunk, plan_batches

    try:
        steps, members = int(manifest["steps"]), int(manifest["members"])
        size, n_init = int(manifest["batch_size"]), len(manifest["init_times"])
    except (KeyError, TypeError, ValueError):
        return []
    plan = plan_batches(n_init, members, size, member_chunk(size, members, field_bytes))
    progress = Progress(Path(out))
    done = set(range(n_init))
    for batch in plan:
        if progress.completed(batch.index) < steps:
            done -= {int(i) for i in batch.init_index}
    return sorted(done)


def resolve_latest(
    available: np.ndarray, out_template: str | Path
) -> tuple[np.ndarray, Path, bool]:
    """The newest init time for a scheduled run, and whether it is already done.

    Parameters
    ----------
    available : numpy.ndarray
        Init times the store can serve (with enough history), ascending.
    out_template : str or Path
        ``--out``, possibly with ``{init}``.

    Returns
    -------
    init_times : numpy.ndarray
        Shape ``(1,)``: the newest available time.
    out : Path
        The output path for it.
    finished : bool
        True when that output holds a finished forecast from that time:
        a scheduled run then has nothing to do.

    Notes
    -----
    Older times without a forecast are not back-filled: an operational run
    forecasts from the newest analysis. Run them with an explicit ``--init``.
    """
    if len(available) == 0:
        raise ConfigError(
            "--init latest: the store has no time with enough history to start a forecast"
        )
    newest = np.asarray(available)[-1:]
    out = output_for(out_template, newest[0])
    return newest, out, is_finished(out, [format_time(t) for t in newest])
