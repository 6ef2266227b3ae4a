"""An ingest submitted in segments (pipelines.graph.SEGMENT_BLOCKS) writes the store of one graph, and builds each segment's graph only when the one before is computed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from forecast.store import open_store
from pipelines.ingest import ingest
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

LAT, LON = np.linspace(90, -90, 19), np.arange(0, 360, 10.0)
STEP_BYTES = 8 * 19 * 36 * 4  # one time step of era5_like's 8 channels


def segment_sources(folder: Path) -> list[Path]:
    """40 six-hourly steps in two files (22 and 18 steps): 20 blocks of 2 steps, 7 segments."""
    ds = era5_like(hours("2020-01-01", 40), lat=LAT, lon=LON)
    return [
        write_netcdf(ds.isel(valid_time=slice(0, 22)), folder / "a.nc"),
        write_netcdf(ds.isel(valid_time=slice(22, None)), folder / "b.nc"),
    ]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return segment_sources(tmp_path_factory.mktemp("segment-sources"))


def ingest_in_segments(
    sources: list[Path], out: Path, monkeypatch: pytest.MonkeyPatch, **options
) -> list[int]:
    """Ingest in blocks of 2 steps and segments of 3 blocks (6 steps).

    Returns, per segment, the data chunks (one a step) the store being
    written held when the segment's graph was built.
    """
    from pipelines import graph

    monkeypatch.setattr(graph, "BLOCK_BYTES", 2 * STEP_BYTES)
    monkeypatch.setattr(graph, "SEGMENT_BLOCKS", 3)
    written = out if options.get("append") else out.parent / f".{out.name}.tmp-{os.getpid()}"
    seen: list[int] = []
    build = graph.build_pass

    def watched(*args, **options):
        for segment in build(*args, **options):
            seen.append(len(list((written / "data").glob("c.*"))))
            yield segment

    monkeypatch.setattr("pipelines.ingest.build_pass", watched)
    ingest(sources, out, progress=False, **options)
    return seen


def test_segments_write_the_store_of_one_graph_built_one_after_another(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20 blocks in 7 segments: the data and climatology are the same bytes, the statistics (other
    merge trees) equal within float32 rounding; every tendency across a segment edge is counted."""
    one = tmp_path / "one.zarr"
    ingest(files, one, progress=False)
    parts = tmp_path / "parts.zarr"
    with monkeypatch.context() as patch:
        seen = ingest_in_segments(files, parts, patch)
    assert len(seen) == 7
    # on threads a segment's graph is built once the one before it is written, no sooner
    assert seen == [0, 6, 12, 18, 24, 30, 36]
    a, b = open_store(one), open_store(parts)
    for name in ("data", "climatology"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    for name in ("mean", "std", "diff_std"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=2e-7, atol=0)
    # (a tendency lost at one of the 6 segment edges would be 1 of 39 differences missing from diff_std)


def test_an_append_in_segments_recomputes_the_statistics_of_one_ingest(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = tmp_path / "one.zarr"
    ingest(files, one, progress=False)
    grown = tmp_path / "grown.zarr"
    ingest(files[:1], grown, progress=False)
    with monkeypatch.context() as patch:
        seen = ingest_in_segments(files[1:], grown, patch, append=True, recompute_statistics=True)
    # 11 blocks of the 22 old steps, read back, 9 of the 18 new ones written (never one of both)
    assert seen == [22, 22, 22, 22, 22 + 2, 22 + 8, 22 + 14]
    a, b = open_store(one), open_store(grown)
    for name in ("data", "climatology"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    for name in ("mean", "std", "diff_std"):
        np.testing.assert_allclose(a[name].values, b[name].values, rtol=2e-7, atol=0)
