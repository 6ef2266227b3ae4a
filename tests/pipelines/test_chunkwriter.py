"""The local fast path for whole chunks writes the same bytes as Zarr itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from forecast import publish
from pipelines.chunkwriter import ChunkWriter, fast_writer
from pipelines.writer import CHUNK_CODECS, FAST_COMPRESSOR, FLAT_KEYS


def _array(
    path: Path, name: str, shape: tuple, chunks: tuple, compressors=tuple(CHUNK_CODECS)
) -> zarr.Array:
    group = zarr.open_group(str(path), mode="a", zarr_format=3)
    return group.create_array(
        name,
        shape=shape,
        chunks=chunks,
        dtype="float32",
        fill_value=np.nan,
        compressors=list(compressors),
        chunk_key_encoding=FLAT_KEYS,
    )


def _smooth(rng: np.random.Generator, shape: tuple) -> np.ndarray:
    """Weather-like values: a smooth field plus small noise (so that Blosc has something to compress)."""
    lat = np.linspace(0, np.pi, shape[-2])[:, None]
    lon = np.linspace(0, 2 * np.pi, shape[-1])[None, :]
    base = 5000 + 300 * np.cos(lat) * np.sin(2 * lon)
    return (base + rng.normal(0, 1, shape)).astype(np.float32)


@pytest.mark.parametrize(
    "compressors",
    [tuple(CHUNK_CODECS), (FAST_COMPRESSOR,), ()],
    ids=["blosc+crc32c", "blosc", "raw"],
)
@pytest.mark.parametrize("atomic", [True, False], ids=["renamed", "in-place"])
def test_data_chunks_are_byte_identical_to_zarrs(tmp_path: Path, compressors, atomic) -> None:
    rng = np.random.default_rng(0)
    shape = (7, 3, 19, 36)
    values = _smooth(rng, shape)
    ours, theirs = tmp_path / "ours.zarr", tmp_path / "theirs.zarr"
    array = _array(ours, "data", shape, (1, 3, 19, 36), compressors)
    reference = _array(theirs, "data", shape, (1, 3, 19, 36), compressors)
    writer = fast_writer(array, atomic=atomic)
    assert isinstance(writer, ChunkWriter)  # the direct path, not the fallback
    writer[0:4] = values[0:4]
    writer[4:7] = values[4:7]
    reference[:] = values
    for t in range(shape[0]):
        name = f"c.{t}.0.0.0"
        assert (ours / "data" / name).read_bytes() == (theirs / "data" / name).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(str(ours), path="data", mode="r")[:], values)
    assert not list((ours / "data").glob("*.partial"))


def test_grown_and_flipped_views(tmp_path: Path) -> None:
    """Chunks beyond the saved shape (an append) and under the other key encoding (recomputed statistics)."""
    rng = np.random.default_rng(3)
    array = _array(tmp_path / "s.zarr", "data", (2, 2, 5, 6), (1, 2, 5, 6))
    values = _smooth(rng, (4, 2, 5, 6))
    fast_writer(array)[0:2] = values[:2]
    grown = publish.grown(array, (4, 2, 5, 6))
    fast_writer(grown)[2:4] = values[2:]
    assert zarr.open_array(str(tmp_path / "s.zarr"), path="data").shape == (
        2,
        2,
        5,
        6,
    )  # nothing published
    np.testing.assert_array_equal(grown[:], values)
    flipped = publish.flipped(array)
    fast_writer(flipped)[0:2] = values[2:]
    assert (tmp_path / "s.zarr" / "data" / "0.0.0.0").exists() and (
        tmp_path / "s.zarr" / "data" / "c.0.0.0.0"
    ).exists()
    np.testing.assert_array_equal(array[:], values[:2])  # the published chunks are untouched
    np.testing.assert_array_equal(flipped[:], values[2:])


def test_climatology_layout_with_an_integer_index(tmp_path: Path) -> None:
    """Two leading axes of length-1 chunks, written as ``out[days, hour] = fields`` like the climatology."""
    rng = np.random.default_rng(1)
    shape = (5, 4, 2, 9, 18)
    array = _array(tmp_path / "s.zarr", "climatology", shape, (1, 1, 2, 9, 18))
    writer = fast_writer(array)
    fields = _smooth(rng, (3, 2, 9, 18))
    writer[1:4, 2] = fields
    writer[0, 3] = fields[0]
    stored = zarr.open_array(str(tmp_path / "s.zarr"), path="climatology", mode="r")[:]
    np.testing.assert_array_equal(stored[1:4, 2], fields)
    np.testing.assert_array_equal(stored[0, 3], fields[0])
    untouched = np.ones(shape[:2], dtype=bool)
    untouched[1:4, 2] = untouched[0, 3] = False
    assert np.isnan(stored[untouched]).all()  # no other chunk was written
    assert len(list((tmp_path / "s.zarr" / "climatology").glob("c.*"))) == 4


def test_other_layouts_go_through_zarr(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    shape = (4, 2, 9, 18)
    values = _smooth(rng, shape)
    zstd = _array(
        tmp_path / "a.zarr",
        "zstd",
        shape,
        (1, 2, 9, 18),
        compressors=(zarr.codecs.ZstdCodec(level=1),),
    )
    split = _array(
        tmp_path / "a.zarr", "split", shape, (2, 2, 9, 9)
    )  # chunks that are not whole fields
    for array in (zstd, split):
        writer = fast_writer(array)
        assert writer is array
        writer[0:4] = values
        np.testing.assert_array_equal(
            zarr.open_array(str(tmp_path / "a.zarr"), path=array.basename, mode="r")[:], values
        )


def test_a_failed_chunk_write_names_the_chunk_file(tmp_path: Path) -> None:
    array = _array(tmp_path / "s.zarr", "data", (2, 1, 3, 4), (1, 1, 3, 4))
    (tmp_path / "s.zarr" / "data").mkdir(exist_ok=True)
    (
        tmp_path / "s.zarr" / "data" / "c.1.0.0.0"
    ).mkdir()  # the chunk's file name is taken by a folder
    with pytest.raises(OSError) as caught:
        fast_writer(array)[0:2] = np.zeros((2, 1, 3, 4), dtype=np.float32)
    assert caught.value.filename == str(tmp_path / "s.zarr" / "data" / "c.1.0.0.0")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("compressors", [tuple(CHUNK_CODECS), ()], ids=["blosc+crc32c", "raw"])
def test_read_chunk_equals_zarrs_read(tmp_path: Path, channels: int, compressors) -> None:
    """Decoded straight from the chunk file as Zarr decodes it; one channel leaves its axis out."""
    from pipelines.chunkwriter import read_chunk

    shape = (4, channels, 19, 36)
    values = _smooth(np.random.default_rng(1), shape)
    array = _array(tmp_path / "s.zarr", "data", shape, (1, channels, 19, 36), compressors)
    fast_writer(array)[:] = values
    out = np.empty(shape[1:], dtype=np.float32)
    for t in range(shape[0]):
        np.testing.assert_array_equal(read_chunk(array, (t,), out), array[t])
    if compressors:  # a damaged chunk fails its checksum instead of decoding into wrong numbers
        path = tmp_path / "s.zarr" / "data" / ("c.2.0.0.0")
        damaged = bytearray(path.read_bytes())
        damaged[len(damaged) // 2] ^= 0xFF
        path.write_bytes(bytes(damaged))
        with pytest.raises(OSError, match="CRC32C"):
            read_chunk(array, (2,), out)
