"""A local-disk fast path for whole-chunk writes, byte-identical to Zarr's own chunks.

For an array whose chunks are one element long on the leading axes and
whole on the others (the store's ``data`` and ``climatology``), whose codecs
are little-endian bytes, optionally Blosc and CRC32C, and which lives in a
local directory, :class:`ChunkWriter` encodes each chunk with numcodecs'
Blosc at the array's settings (the codec Zarr itself calls), appends the
CRC32C as Zarr's ``crc32c`` codec does, and writes the file of its chunk key
through a temporary file and a rename. What is skipped is Zarr's write
machinery around the codec, which costs about as much again as the
compression (docs/performance.md: 3.0 against 1.6 CPU-s per GB of chunks).
Any other array, and every array on object storage, is written through Zarr
(:func:`fast_writer` decides). ``tests/pipelines/test_chunkwriter.py``
checks the byte identity.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import numpy as np
import zarr
import zarr.codecs
import zarr.storage
from numcodecs import Blosc
from zarr.core.metadata import ArrayV3Metadata


class ChunkWriter:
    """Write whole chunks of a local Zarr array straight to their chunk files.

    Parameters
    ----------
    array : zarr.Array
        The array (or a view with a grown shape, :func:`forecast.publish.grown`);
        its store must be a ``zarr.storage.LocalStore``.
    atomic : bool
        Write each chunk through a temporary file and a rename (default), so
        that a reader never sees part of one; False writes the chunk file in
        place, for arrays nobody reads until the writer is done.

    Examples
    --------
    >>> fast_writer(array)[10:12] = block  # doctest: +SKIP
    """

    def __init__(self, array: zarr.Array, atomic: bool = True):
        self.atomic = atomic
        self.shape = tuple(array.shape)
        self.dtype = array.dtype
        meta, store = array.metadata, array.store_path.store
        assert isinstance(meta, ArrayV3Metadata) and isinstance(store, zarr.storage.LocalStore), (
            "see applies()"
        )
        chunks = array.chunks
        self.leading = next((i for i, c in enumerate(chunks) if c != 1), len(chunks))
        self.directory = Path(store.root) / array.store_path.path
        codecs = meta.codecs
        self._codec = None
        if len(codecs) > 1:
            blosc = codecs[1]
            assert isinstance(blosc, zarr.codecs.BloscCodec)
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[
                str(getattr(blosc.shuffle, "value", blosc.shuffle))
            ]
            cname = str(getattr(blosc.cname, "value", blosc.cname))
            self._codec = Blosc(
                cname=cname,
                clevel=blosc.clevel,
                shuffle=shuffle,
                blocksize=blosc.blocksize,
                typesize=blosc.typesize,
            )
        self._crc = len(codecs) == 3
        self._encoding = meta.chunk_key_encoding
        self._trailing = (0,) * (len(self.shape) - self.leading)

    def path(self, coords: tuple[int, ...]) -> Path:
        """The file of the chunk at ``coords`` (indices on the leading axes; leading axes of length 1 may be left out)."""
        missing = self.shape[len(coords) : self.leading]
        assert all(n == 1 for n in missing), f"{self.directory}: index every axis of length > 1"
        return self.directory / self._encoding.encode_chunk_key(
            tuple(int(c) for c in coords) + (0,) * len(missing) + self._trailing
        )

    def read(self, coords: tuple[int, ...], out: np.ndarray) -> np.ndarray:
        """Decode the chunk at ``coords`` into ``out`` (checking its CRC32C, if the array has one)."""
        import google_crc32c

        path = self.path(coords)
        raw = path.read_bytes()
        if self._crc:
            raw, checksum = raw[:-4], raw[-4:]
            if np.uint32(google_crc32c.value(raw)).tobytes() != checksum:
                raise OSError(f"{path}: the chunk fails its CRC32C checksum (damaged on disk)")
        if self._codec is not None:
            self._codec.decode(raw, out=out)
        elif len(raw) == out.nbytes:
            out.reshape(-1).view(np.uint8)[:] = np.frombuffer(raw, dtype=np.uint8)
        else:
            raise OSError(f"short read of {path}")
        return out

    @staticmethod
    def applies(array: zarr.Array) -> bool:
        """Whether ``array`` has the layout and codecs this writer reproduces byte for byte."""
        store = array.store_path.store
        meta = array.metadata
        codecs: tuple = getattr(meta, "codecs", ())
        chunks, shape = array.chunks, array.shape
        leading = next((i for i, c in enumerate(chunks) if c != 1), len(chunks))
        return (
            isinstance(store, zarr.storage.LocalStore)
            and all(c == n for c, n in zip(chunks[leading:], shape[leading:], strict=True))
            and len(codecs) in (1, 2, 3)
            and isinstance(codecs[0], zarr.codecs.BytesCodec)
            and str(getattr(codecs[0].endian, "value", codecs[0].endian)) == "little"
            and (len(codecs) == 1 or isinstance(codecs[1], zarr.codecs.BloscCodec))
            and (len(codecs) < 3 or isinstance(codecs[2], zarr.codecs.Crc32cCodec))
            and sys.byteorder == "little"
        )

    def __setitem__(self, key, values: np.ndarray) -> None:
        """Write ``values`` at ``key``: integers or step-1 slices over the leading axes only."""
        import google_crc32c

        key = key if isinstance(key, tuple) else (key,)
        if len(key) > self.leading:
            raise IndexError(
                f"{self.directory}: only the leading {self.leading} axes can be indexed"
            )
        ranges: list[range] = []
        squeeze: list[int] = []
        for axis, item in enumerate(key):
            if isinstance(item, slice):
                start, stop, step = item.indices(self.shape[axis])
                if step != 1:
                    raise IndexError(f"{self.directory}: slices must have step 1")
                ranges.append(range(start, stop))
            else:
                index = int(item)
                ranges.append(range(index, index + 1))
                squeeze.append(axis)
        for axis in range(len(key), self.leading):
            ranges.append(range(self.shape[axis]))
        selection = tuple(len(r) for r in ranges) + tuple(self.shape[self.leading :])
        values = np.asarray(values, dtype=self.dtype)
        if squeeze and values.ndim == len(selection) - len(
            squeeze
        ):  # integer indices drop their axes
            values = np.expand_dims(values, tuple(squeeze))
        values = np.broadcast_to(values, selection)
        self.directory.mkdir(parents=True, exist_ok=True)
        for block in np.ndindex(*selection[: self.leading]):
            chunk = np.ascontiguousarray(values[block])
            target = self.path(tuple(r[i] for r, i in zip(ranges, block, strict=True)))
            encoded = (
                self._codec.encode(chunk)
                if self._codec is not None
                else memoryview(chunk.data).cast("B")
            )
            checksum = b""
            if self._crc:
                encoded = bytes(encoded)  # Blosc's output is bytes already: no copy
                checksum = np.uint32(google_crc32c.value(encoded)).tobytes()
            temporary = (
                target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
                if self.atomic
                else target
            )
            try:
                with open(temporary, "wb") as handle:
                    handle.write(encoded)
                    handle.write(checksum)
                if self.atomic:
                    os.replace(temporary, target)
            except OSError as err:
                temporary.unlink(missing_ok=True)
                raise OSError(err.errno, err.strerror, str(target)) from None


def fast_writer(array: zarr.Array, atomic: bool = True):
    """``array`` itself, or a :class:`ChunkWriter` for it where that writes the same bytes faster (local disk).

    ``atomic``: see :class:`ChunkWriter` (Zarr itself writes each chunk whole
    on object storage, where a put is atomic).
    """
    return ChunkWriter(array, atomic=atomic) if ChunkWriter.applies(array) else array


def read_chunk(array: zarr.Array, coords: tuple[int, ...], out: np.ndarray) -> np.ndarray:
    """``array[coords]`` (integers on the leading axes, one whole chunk) into ``out``.

    On local disk, for the layouts :class:`ChunkWriter` writes, the chunk
    file is read and decoded directly (a data chunk of 3 MB: 2.2 ms against
    Zarr's 4.1; the uncompressed bin means: half Zarr's cost), checking its
    CRC32C; elsewhere through Zarr. Nothing is allocated per chunk beyond
    the file's bytes.
    """
    if not ChunkWriter.applies(array):
        out[...] = array[coords]
        return out
    return ChunkWriter(array).read(coords, out)
