"""Publishing a Zarr group so that no reader ever sees half of it: the same rules on disk and on object storage.

A group written by this software carries the root attribute
``forecast_status``: ``"writing"`` from its creation until the last write,
then ``"complete"``. Readers (:func:`require_complete`) refuse a group that
is not complete. The last write of every writer is :func:`commit`: **one**
write of the root ``zarr.json`` holding the final attributes, the status and
the consolidated metadata of every array. On object storage that write is a
single PUT, locally a write to a temporary file and a rename, so the commit
is atomic everywhere; and since readers open the group through its
consolidated metadata, the shapes they see are those of the last commit.

- **A new group** is built locally under a staging name and renamed into
  place (:func:`forecast.storage.staging_path`), on object storage in place
  (there is no rename): either way it is ``writing`` until :func:`commit`.
- **Growing a group in place** (an append): the new chunks are written
  through :func:`grown` views, whose larger shape is not saved, so they lie
  beyond the published shape and are invisible; :func:`commit` then writes
  the arrays' metadata and, last, the root. A kill before the root write
  leaves the published group unchanged; :func:`repair` (run under the lock
  before the next write) puts back any array metadata written ahead of the
  root.
- **Rewriting arrays in place** (recomputed statistics): the new chunks
  are written through :func:`flipped` views, under the other chunk-key
  encoding (``c.0.0`` <-> ``0.0``), so the published chunks stay untouched
  until the commit switches the encoding; the old keys are deleted after it.

Other writers (forecasts in Zarr) use the same four calls.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable

import zarr
from zarr.core.array import Array, AsyncArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.chunk_key_encodings import DefaultChunkKeyEncoding, V2ChunkKeyEncoding
from zarr.core.group import ConsolidatedMetadata, GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.core.sync import sync

from forecast import storage
from forecast.errors import DataError

__all__ = [
    "COMPLETE",
    "STATUS_ATTR",
    "WRITING",
    "commit",
    "flipped",
    "grown",
    "repair",
    "require_complete",
    "status",
]

#: Root attribute that says whether a group is published.
STATUS_ATTR = "forecast_status"
WRITING, COMPLETE = "writing", "complete"


def _root_document(location: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(storage.join(location, "zarr.json")))
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except storage.StorageError as err:
        if "not found" in str(err):
            return None
        raise


def status(location: str) -> str | None:
    """``"writing"``, ``"complete"``, or None for a group without the attribute (or no group)."""
    document = _root_document(location)
    if document is None:
        return None
    return document.get("attributes", {}).get(STATUS_ATTR)


def require_complete(location: str, what: str = "store", writer: str = "forecast ingest") -> None:
    """Raise a one-line :class:`DataError` if the group at ``location`` is being written or was left unfinished."""
    if status(location) == WRITING:
        raise DataError(
            f"the {what} is incomplete: '{writer}' is writing it or was interrupted",
            path=location,
            hint=f"wait for it to finish, or rerun the same '{writer}' command to complete it",
        )


def mark_writing(group: zarr.Group) -> None:
    """Set the group's status to ``writing`` (one write of its root metadata)."""
    group.attrs[STATUS_ATTR] = WRITING


def _save(group: zarr.Group, metadata) -> None:
    buffers = metadata.to_buffer_dict(default_buffer_prototype())
    sync(group.store_path.store.set(storage_key(group, "zarr.json"), buffers["zarr.json"]))


def storage_key(group: zarr.Group, name: str) -> str:
    prefix = group.store_path.path
    return f"{prefix}/{name}" if prefix else name


def commit(store, attrs: dict | None = None, arrays: Iterable[Array] = ()) -> None:
    """Publish a group: save ``arrays``' metadata, then write the root once with ``attrs``, status and consolidated metadata.

    Parameters
    ----------
    store : zarr store
        The group's store (:func:`forecast.storage.zarr_store`).
    attrs : dict, optional
        Root attributes to merge in.
    arrays : iterable of zarr.Array
        Views whose metadata (a grown shape, a flipped key encoding) is to be
        saved before the root.
    """
    for array in arrays:
        sync(array._async_array._save_metadata(array.metadata, ensure_parents=False))
    group = zarr.open_group(store, mode="r+", use_consolidated=False)
    members = {
        name: node.metadata
        for name, node in group.members(max_depth=None, use_consolidated_for_children=False)
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        metadata = dataclasses.replace(
            group.metadata,
            attributes={**group.metadata.attributes, **(attrs or {}), STATUS_ATTR: COMPLETE},
            consolidated_metadata=ConsolidatedMetadata(metadata=members),
        )
    _save(group, metadata)


def grown(array: Array, shape: tuple[int, ...]) -> Array:
    """A view of ``array`` with a larger ``shape`` whose metadata is not saved (see the module docstring)."""
    metadata = array.metadata.update_shape(tuple(shape))
    return Array(
        AsyncArray(metadata=metadata, store_path=array.store_path, config=array._async_array.config)
    )


def _other_encoding(metadata):
    encoding = metadata.chunk_key_encoding
    if isinstance(encoding, V2ChunkKeyEncoding):
        return DefaultChunkKeyEncoding(separator=".")
    return V2ChunkKeyEncoding(separator=".")


def flipped(array: Array) -> Array:
    """A view of ``array`` whose chunks live under the other key encoding (metadata not saved)."""
    assert isinstance(array.metadata, ArrayV3Metadata), "only Zarr v3 arrays change key encoding"
    metadata = dataclasses.replace(
        array.metadata, chunk_key_encoding=_other_encoding(array.metadata)
    )
    return Array(
        AsyncArray(metadata=metadata, store_path=array.store_path, config=array._async_array.config)
    )


def delete_chunks(array: Array, encoding_of: Array) -> None:
    """Delete the chunk keys of every chunk of ``array`` under ``encoding_of``'s key encoding (old keys after a flip)."""
    assert isinstance(encoding_of.metadata, ArrayV3Metadata), (
        "only Zarr v3 arrays change key encoding"
    )
    encoding = encoding_of.metadata.chunk_key_encoding
    store = array.store_path.store
    prefix = array.store_path.path
    for coords in _all_chunk_coords(array):
        key = f"{prefix}/{encoding.encode_chunk_key(coords)}"
        sync(store.delete(key))


def _all_chunk_coords(array: Array):
    import itertools
    import math

    grid = [range(math.ceil(s / c)) for s, c in zip(array.shape, array.chunks, strict=True)]
    return itertools.product(*grid)


def _chunk_coords(key: str, encoding) -> tuple[int, ...] | None:
    """The chunk coordinates of a key relative to its array under ``encoding``, or None if it is not such a key."""
    separator = encoding.separator
    if isinstance(encoding, DefaultChunkKeyEncoding):
        if key == "c":
            return ()
        if not key.startswith("c" + separator):
            return None
        key = key[2:]
    parts = key.split(separator)
    if not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def _stray_chunks(store, name: str, metadata, flippable: bool) -> list[str]:
    """Keys under array ``name`` that its published metadata never reads: chunks beyond its shape, flipped leftovers."""
    import math

    grid = [math.ceil(s / c) for s, c in zip(metadata.shape, metadata.chunks, strict=True)]
    encoding = metadata.chunk_key_encoding
    other = _other_encoding(metadata) if flippable else None
    stray = []
    for key in sync(_listed(store, name + "/")):
        relative = key[len(name) + 1 :]
        if relative == "zarr.json":
            continue
        coords = _chunk_coords(relative, encoding)
        if coords is not None and len(coords) == len(grid):
            if any(c >= g for c, g in zip(coords, grid, strict=True)):
                stray.append(key)
            continue
        if other is not None and _chunk_coords(relative, other) is not None:
            stray.append(key)
    return stray


async def _listed(store, prefix: str) -> list[str]:
    return [key async for key in store.list_prefix(prefix)]


def repair(store, location: str, flippable: Iterable[str] = ()) -> list[str]:
    """Make the saved group agree with what was published (its consolidated metadata) again.

    Run under the writer's lock before writing to a published group:

    - array metadata saved by a commit that was killed before its root write
      is put back as published;
    - arrays that are not published (a killed writer's temporaries) are deleted;
    - chunks that the published metadata never reads are deleted: beyond an
      array's shape (a killed append's), and for the arrays in ``flippable``
      under the other chunk-key encoding (a killed rewrite's);
    - a local store's ``*.partial`` files (a killed key write's) are deleted.

    Returns the names of the arrays repaired or deleted and the stray keys.
    """
    published = zarr.open_group(store, mode="r+", use_consolidated=True)
    consolidated = published.metadata.consolidated_metadata
    if consolidated is None:
        return []
    fixed: list[str] = []
    flippable = set(flippable)
    raw = zarr.open_group(store, mode="r+", use_consolidated=False)
    for name, node in list(raw.members(max_depth=None, use_consolidated_for_children=False)):
        if name not in consolidated.metadata:
            del raw[name]
            fixed.append(name)
            continue
        metadata = consolidated.metadata[name]
        if (
            node.metadata != metadata
            and isinstance(node, Array)
            and not isinstance(metadata, GroupMetadata)
        ):
            sync(node._async_array._save_metadata(metadata, ensure_parents=False))
            fixed.append(name)
        if getattr(metadata, "chunk_key_encoding", None) is None:
            continue
        for key in _stray_chunks(store, storage_key(raw, name), metadata, name in flippable):
            sync(store.delete(key))
            fixed.append(key)
    return fixed + delete_partials(location)


def delete_partials(location: str) -> list[str]:
    """Delete a local store's ``*.partial`` files (what killed atomic writes of keys left); returns them.

    Object storage has none: a key is written in one PUT.
    """
    if not storage.is_local(location):
        return []
    deleted = []
    for leftover in storage.local_path(location).rglob("*.partial"):
        leftover.unlink(missing_ok=True)
        deleted.append(str(leftover))
    return deleted
