"""A killed new ingest's rerun continues from its last computed segment (pipelines.resume), and writes the store of an uninterrupted ingest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from forecast.store import open_store
from pipelines.ingest import ingest
from pipelines.resume import PROGRESS, Progress
from pipelines.statistics import Moments
from tests.killing import run_until_killed
from tests.pipelines.test_segments import STEP_BYTES, segment_sources

KILLED = """
import os, signal
from pipelines import graph, resume
from pipelines.ingest import ingest
graph.BLOCK_BYTES = {block_bytes}
graph.SEGMENT_BLOCKS = 3
record = resume.Progress.record
def record_then_die(self, result):
    record(self, result)
    if len(self.segments) == {segments}:
        os.kill(os.getpid(), signal.SIGKILL)
resume.Progress.record = record_then_die
ingest({sources!r}, {out!r}, progress=False, end={end!r})
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return segment_sources(tmp_path_factory.mktemp("resume-sources"))


def _segments(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Blocks of 2 steps, segments of 3 blocks; returns the start steps of the data writes, as they run."""
    from pipelines import graph

    monkeypatch.setattr(graph, "BLOCK_BYTES", 2 * STEP_BYTES)
    monkeypatch.setattr(graph, "SEGMENT_BLOCKS", 3)
    starts: list[int] = []
    real = graph._write

    def write(target, start: int, block: np.ndarray) -> int:
        starts.append(start)
        return real(target, start, block)

    monkeypatch.setattr(graph, "_write", write)
    return starts


def _run_killed(template: str, files: list[Path], out: Path, end: str | None, **fields) -> Path:
    """Run the ingest script ``template`` (which SIGKILLs itself) in a subprocess at the repository root; returns the staging copy it leaves."""
    script = template.format(
        block_bytes=2 * STEP_BYTES,
        sources=[str(f) for f in files],
        out=str(out),
        end=end,
        **fields,
    )
    run_until_killed(script, [])
    (staging,) = out.parent.glob(f".{out.name}.tmp-*")
    return staging


def _kill_after(files: list[Path], out: Path, segments: int, end: str | None = None) -> Path:
    """Run an ingest in a subprocess that SIGKILLs itself once ``segments`` segments are recorded; returns its staging copy."""
    return _run_killed(KILLED, files, out, end, segments=segments)


def _ingest(files: list[Path], out: Path, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Ingest in the segments of :func:`_segments`; returns the start steps of the data writes."""
    with monkeypatch.context() as patch:
        starts = _segments(patch)
        ingest(files, out, progress=False)
    return starts


def _assert_same_store(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    for name in ("data", "mean", "std", "diff_std", "climatology", "time"):
        np.testing.assert_array_equal(sa[name].values, sb[name].values)


def test_a_killed_ingest_resumes_after_its_last_segment_and_writes_the_uninterrupted_store(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after 4 of 7 segments (24 of 40 steps): the rerun writes only the 16 steps left, and the
    store is the uninterrupted ingest's, statistics included, bit for bit."""
    whole = tmp_path / "whole" / "s.zarr"
    _ingest(files, whole, monkeypatch)
    out = tmp_path / "s.zarr"
    staging = _kill_after(files, out, segments=4)
    assert not out.exists()  # nothing published
    recorded = json.loads((staging / PROGRESS).read_text())
    assert len(recorded["segments"]) == 4
    torn = staging / "data" / "c.30.0.0.0.0123abcd.partial"  # as a kill mid chunk write leaves
    torn.write_bytes(b"half a chunk")
    starts = _ingest(files, out, monkeypatch)
    assert sorted(starts) == list(range(24, 40, 2))  # the 4 segments done are not written again
    _assert_same_store(whole, out)
    assert not (out / PROGRESS).exists()  # a published store lists no progress
    assert not list(out.rglob("*.partial"))  # nor what the killed writes left
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_a_rerun_of_another_request_starts_afresh(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after 2 segments of an ingest up to 2020-01-09; the rerun without --end is another
    request: every step is written, and the store equals a fresh ingest of it."""
    fresh = tmp_path / "fresh" / "s.zarr"
    _ingest(files, fresh, monkeypatch)
    out = tmp_path / "s.zarr"
    _kill_after(files, out, segments=2, end="2020-01-09T00")
    starts = _ingest(files, out, monkeypatch)
    assert sorted(starts) == list(range(0, 40, 2))
    _assert_same_store(fresh, out)


def test_a_rerun_after_a_source_changed_starts_afresh(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request names each source with its size and modification time: a source touched after the
    kill is another request, so every step is written again."""
    out = tmp_path / "s.zarr"
    _kill_after(files, out, segments=2)
    stat = files[1].stat()
    os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    try:
        starts = _ingest(files, out, monkeypatch)
    finally:
        os.utime(files[1], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert sorted(starts) == list(range(0, 40, 2))


def test_progress_round_trips_the_moments_bit_for_bit_and_refuses_another_request(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    parts = [
        {
            key: Moments(
                int(rng.integers(1, 99)), rng.standard_normal(5) * 1e5, rng.random(5) * 1e9
            )
            for key in ("moments", "tendencies")
        }
        for _ in range(3)
    ]
    progress = Progress(str(tmp_path), {"a": 1})
    for part in parts:
        progress.record(part)
    loaded = Progress(str(tmp_path), {"a": 1}).load()
    assert len(loaded) == 3
    for got, want in zip(loaded, parts, strict=True):
        for key in ("moments", "tendencies"):
            assert got[key].count == want[key].count
            assert got[key].mean.tobytes() == want[key].mean.tobytes()
            assert got[key].m2.tobytes() == want[key].m2.tobytes()
    assert Progress(str(tmp_path), {"a": 2}).load() == []
    (tmp_path / PROGRESS).write_text('{"request": {"a": 1}, "segm')  # a damaged file
    assert Progress(str(tmp_path), {"a": 1}).load() == []


def test_a_zarr_source_is_named_by_its_metadata(tmp_path: Path) -> None:
    """A folder's own time changes only when entries come or go: a Zarr source's identity is its
    zarr.json's, so rewriting the metadata (as an append to the source does) is another request."""
    import xarray as xr

    from pipelines.resume import _identity

    source = tmp_path / "src.zarr"
    xr.Dataset({"t2m": ("x", np.arange(4.0))}).to_zarr(source, zarr_format=3, consolidated=False)
    first = _identity(str(source))
    assert first == _identity(str(source)) and first[1] == (source / "zarr.json").stat().st_size
    stat = (source / "zarr.json").stat()
    os.utime(source / "zarr.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _identity(str(source)) != first
    assert _identity(str(tmp_path / "gone.zarr"))[1:] == [None, None]


DELETED_MID_WAY = """
import os, signal
from forecast import storage
from pipelines import graph
from pipelines.ingest import ingest
graph.BLOCK_BYTES = {block_bytes}
graph.SEGMENT_BLOCKS = 3
remove = storage.remove
def remove_then_die(path):
    folder = storage.local_path(path)
    if folder.name.startswith({staging!r}) and folder.is_dir():
        for chunk in (folder / "data").glob("c.*"):  # the chunks first, as rmtree's order may have it
            chunk.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    remove(path)
storage.remove = remove_then_die
ingest({sources!r}, {out!r}, progress=False, end={end!r})
"""


def test_a_kill_while_another_request_deletes_the_copy_leaves_no_progress_to_resume(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after 4 segments; a rerun of another request is SIGKILLed while it deletes the copy,
    once its data chunks are gone: the third run (the first request again) must not resume
    segments whose chunks were deleted (the smoothing would fail to read them locally; on object
    storage they read as NaN), and writes the uninterrupted store."""
    whole = tmp_path / "whole" / "s.zarr"
    _ingest(files, whole, monkeypatch)
    out = tmp_path / "s.zarr"
    _kill_after(files, out, segments=4)
    staging = _run_killed(
        DELETED_MID_WAY, files, out, end="2020-01-09T00", staging=f".{out.name}.tmp-"
    )
    assert not list((staging / "data").glob("c.*")) and (staging / "data" / "zarr.json").exists()
    starts = _ingest(files, out, monkeypatch)
    assert sorted(starts) == list(range(0, 40, 2))
    _assert_same_store(whole, out)


def test_a_copy_left_under_this_process_id_does_not_stop_the_adoption(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container's processes often get the same PID run after run: a killed run's copy under this
    process's PID is in the way of the adopted one (a rename onto a full folder fails), and goes."""
    whole = tmp_path / "whole" / "s.zarr"
    _ingest(files, whole, monkeypatch)
    out = tmp_path / "s.zarr"
    _kill_after(files, out, segments=4)
    mine = tmp_path / f".{out.name}.tmp-{os.getpid()}"
    (mine / "data").mkdir(parents=True)
    (mine / "data" / "c.0.0.0.0").write_bytes(b"an older killed run's chunk")
    starts = _ingest(files, out, monkeypatch)
    assert sorted(starts) == list(range(24, 40, 2))
    _assert_same_store(whole, out)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_a_killed_copy_under_this_process_id_is_itself_adopted(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container case itself: the killed run had this process's PID, so its copy already has
    the adopted copy's name. It is resumed, not deleted as if it were in the way."""
    whole = tmp_path / "whole" / "s.zarr"
    _ingest(files, whole, monkeypatch)
    out = tmp_path / "s.zarr"
    killed = _kill_after(files, out, segments=4)
    killed.rename(tmp_path / f".{out.name}.tmp-{os.getpid()}")
    starts = _ingest(files, out, monkeypatch)
    assert sorted(starts) == list(range(24, 40, 2))
    _assert_same_store(whole, out)
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_the_request_differs_for_every_option_that_changes_the_store(tmp_path: Path) -> None:
    """The source order (the provenance lists it), --channels, --grid, --grid-kind, --member, --start,
    --step and the climatology window each make another request; the same options the same one."""
    from dataclasses import replace

    from pipelines import graph
    from pipelines.ingest import Selection, _prepare
    from pipelines.resume import request
    from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

    ds = era5_like(hours("2020-01-01", 8)).expand_dims(number=[0, 1])
    a = write_netcdf(ds.isel(valid_time=slice(0, 4)), tmp_path / "a.nc")
    b = write_netcdf(ds.isel(valid_time=slice(4, None)), tmp_path / "b.nc")
    base = Selection(member=0)

    def of(sources=(a, b), window: int = 31, **changed) -> dict:
        selection = replace(base, **changed)
        prepared = _prepare([str(s) for s in sources], str(tmp_path / "s.zarr"), selection, None)
        return request(prepared, window, graph.BLOCK_BYTES, graph.SEGMENT_BLOCKS)

    first = of()
    assert of() == first
    others = {
        "order": of(sources=(b, a)),
        "channels": of(channels=["t2m", "z500"]),
        "grid": of(grid="10x20"),
        "grid kind": of(grid="10x20", grid_kind="legendre-gauss"),
        "member": of(member=1),
        "start": of(start="2020-01-01T06"),
        "step": of(step="12h"),
        "window": of(window=15),
    }
    assert [name for name, other in others.items() if other == first] == []
    assert others["grid"] != others["grid kind"]


def test_an_https_source_is_named_by_what_its_server_reports(tmp_path: Path) -> None:
    """An HTTP server reports no mtime: its Last-Modified (or ETag) stands for the source's version,
    so a source changed on the server (here: a newer modification time) is another request."""
    import functools
    import http.server
    import threading

    from pipelines.resume import _identity

    (tmp_path / "a.nc").write_bytes(b"0123456789")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/a.nc"
    try:
        first = _identity(url)
        assert first[1] == 10 and first[2] is not None and "GMT" in first[2]  # Last-Modified
        stat = (tmp_path / "a.nc").stat()
        os.utime(tmp_path / "a.nc", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5 * 10**9))
        from forecast import storage

        storage.filesystem(url)[0].invalidate_cache()
        second = _identity(url)
        assert second[1] == 10 and second != first
    finally:
        server.shutdown()
        server.server_close()


def test_object_version_prefers_the_content_tag() -> None:
    from forecast.storage import object_version

    assert object_version({"size": 3, "ETag": '"abc"', "LastModified": "x"}) == '"abc"'
    assert object_version({"size": 3, "Last-Modified": "Tue, 01 Dec 2026 10:00:00 GMT"}) == (
        "Tue, 01 Dec 2026 10:00:00 GMT"
    )
    assert object_version({"size": 3, "mtime": 1.5}) == "1.5"
    assert object_version({"size": 3}) is None
