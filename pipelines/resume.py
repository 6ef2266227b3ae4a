"""The progress of a new ingest, segment by segment, so that a killed ingest's rerun resumes it.

A new store is written segment by segment (:mod:`pipelines.graph`). After
each segment, :class:`Progress` rewrites ``ingest_progress.json`` in the
store being written (the hidden staging copy on local disk, the unpublished
store itself on object storage) with every computed segment's moments and
the **request** the ingest was started with: the sources (each with its
size and modification time), the selected times, channels and grid, the
ensemble member, the step, the climatology window, the block and segment
sizes and the software version. A rerun that finds the file and the same request skips the
segments it lists; any difference, or no file, starts afresh. The file is
deleted before the store is published, and it is one atomic write, so a
kill at any line leaves the last complete list. A store being written is
deleted with its progress first (:func:`discard`): a kill during the
deletion leaves no list of segments whose chunks are gone.

Only new stores resume; an ``--append`` writes in place and its rerun starts
it again (docs/formats.md).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from forecast import __version__, storage
from pipelines.statistics import Moments

#: The file that lists a new ingest's computed segments, in the store being written.
PROGRESS = "ingest_progress.json"


def request(prepared, window: int, block_bytes: int, segment_blocks: int) -> dict:
    """What must be the same for a rerun to continue where a killed ingest stopped (see the module docstring)."""
    times = np.asarray(prepared.data["time"].values)
    return {
        "software_version": __version__,
        "sources": [_identity(s.path) for s in prepared.opened],
        "times": hashlib.sha256(np.asarray(times).astype(str).tobytes()).hexdigest(),
        "chunks": [int(c) for c in prepared.data.data.chunks[0]],
        "channels": list(prepared.channels),
        "grid": prepared.grid.describe(),
        "member": prepared.member,
        "regrid_method": prepared.regridder.method,
        "step": str(prepared.step),
        "calendar": str(prepared.calendar),
        "window": int(window),
        "block_bytes": int(block_bytes),
        "segment_blocks": int(segment_blocks),
    }


#: Inside a Zarr source (a folder, or a prefix on object storage), the object whose size and time
#: stand for the store's: its metadata, which every write that changes the store's shape rewrites.
ZARR_METADATA = ("zarr.json", ".zmetadata", ".zgroup", ".zarray")


def _identity(path: str) -> list:
    """A source's path with its size and version (its content tag or modification time).

    A folder (a Zarr source) is named by its metadata file's: a folder's own
    time changes only when entries come or go, and object storage has none.
    """
    fs, inner = storage.filesystem(path)
    try:
        info = fs.info(inner)
        if info.get("type") == "directory":
            for name in ZARR_METADATA:
                if fs.exists(f"{inner.rstrip('/')}/{name}"):
                    info = fs.info(f"{inner.rstrip('/')}/{name}")
                    break
    except (OSError, ValueError):  # a source that vanished: no match, the rerun starts afresh
        return [path, None, None]
    return [path, info.get("size"), storage.object_version(info)]


class Progress:
    """The computed segments of the new store at ``location``, for the ingest described by ``request``."""

    def __init__(self, location: str, request: dict):
        self.path = storage.join(location, PROGRESS)
        self.request = request
        self.segments: list[dict] = []

    def load(self) -> list[dict]:
        """The segments a killed ingest of the same request computed (empty: none, or another request)."""
        if not storage.exists(self.path):
            return []
        try:
            recorded = json.loads(storage.read_bytes(self.path))
        except ValueError:  # damaged: start afresh
            return []
        if recorded.get("request") != self.request:
            return []
        self.segments = [
            {key: _moments(part[key]) for key in ("moments", "tendencies")}
            for part in recorded.get("segments", [])
        ]
        return list(self.segments)

    def record(self, result: dict) -> None:
        """Add one computed segment (its ``moments`` and ``tendencies``) and rewrite the file atomically."""
        self.segments.append(result)
        body = {
            "request": self.request,
            "segments": [
                {key: _plain(part[key]) for key in ("moments", "tendencies")}
                for part in self.segments
            ],
        }
        storage.write_bytes(self.path, json.dumps(body).encode())

    def remove(self) -> None:
        """Delete the file (before publishing: a published store lists no progress)."""
        storage.remove(self.path)


def discard(location: str) -> None:
    """Delete the store being written at ``location``, its progress file first (see the module docstring)."""
    storage.remove(storage.join(location, PROGRESS))
    storage.remove(location)


def _plain(moments: Moments) -> dict:
    # floats as JSON writes them (shortest repr) read back to the same bits
    return {
        "count": int(moments.count),
        "mean": [float(x) for x in moments.mean],
        "m2": [float(x) for x in moments.m2],
    }


def _moments(plain: dict) -> Moments:
    return Moments(
        int(plain["count"]),
        np.asarray(plain["mean"], dtype=np.float64),
        np.asarray(plain["m2"], dtype=np.float64),
    )
