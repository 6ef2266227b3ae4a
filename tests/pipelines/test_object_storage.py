"""Ingest from and to object storage: a real S3-compatible server on 127.0.0.1 (moto), every path an s3:// URL."""

from __future__ import annotations

import http.server
import os
import threading
import time
from pathlib import Path

import fsspec
import numpy as np
import pytest

from forecast import publish, storage
from forecast.cli.main import main
from forecast.errors import DataError
from forecast.locking import LockedError, lock
from forecast.store import open_store
from pipelines.ingest import ingest
from tests.killing import run_until_killed
from tests.object_storage import s3, s3_server  # noqa: F401
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sources(tmp_path: Path, s3: str) -> tuple[list[Path], str]:  # noqa: F811
    """Three local NetCDF files, and the same uploaded under s3://BUCKET/era5/."""
    ds = era5_like(hours("2020-01-01", 24))
    files = [
        write_netcdf(ds.isel(valid_time=slice(8 * i, 8 * i + 8)), tmp_path / f"era5_{i}.nc")
        for i in range(3)
    ]
    fs = fsspec.filesystem("s3")
    for path in files:
        fs.put_file(str(path), f"{s3[5:]}/era5/{path.name}")
    return files, s3


def _assert_same_store(local: Path, url: str) -> None:
    """The store at ``url`` read back through forecast.store equals the local one, value for value.

    The climatology has a chunk per day of the year and hour (1,464); a short store writes a
    few and the rest read as the fill value, each read of an absent chunk a request to the test
    server (a whole read: about 50 s). So its objects are compared byte for byte, the metadata
    included, and its written chunks value for value through forecast.store.
    """
    a, b = open_store(local), open_store(url)
    for name in ("data", "mean", "std", "diff_std"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    np.testing.assert_array_equal(a["time"].values, b["time"].values)
    fs = fsspec.filesystem("s3")
    folder = f"{url.removeprefix('s3://')}/climatology"
    remote = {path[len(folder) + 1 :]: fs.cat_file(path) for path in fs.find(folder)}
    written = {
        path.relative_to(local / "climatology").as_posix(): path.read_bytes()
        for path in (local / "climatology").rglob("*")
        if path.is_file()
    }
    assert remote == written
    keys = [k.split(".")[1:3] for k in written if k.startswith("c.")]
    assert keys, "no climatology chunk written"
    for day, hour in sorted({(int(d), int(h)) for d, h in keys}):
        np.testing.assert_array_equal(
            a["climatology"][day, hour].values, b["climatology"][day, hour].values
        )


@pytest.mark.slow
def test_ingest_s3_zarr_sources_to_an_s3_store_and_read_it_back(tmp_path: Path, s3: str) -> None:  # noqa: F811
    """Zarr sources found by a glob on the bucket, the store on the bucket, read back through open_store."""
    import xarray as xr

    ds = era5_like(hours("2020-01-01", 16), layout="old")
    local_sources = []
    for i in range(2):
        part = ds.isel(time=slice(8 * i, 8 * i + 8))
        part.to_zarr(f"{s3}/wb2/part{i}.zarr", zarr_format=3, consolidated=True)
        local_sources.append(tmp_path / f"part{i}.zarr")
        part.to_zarr(local_sources[-1], zarr_format=3, consolidated=True)
    local = tmp_path / "local.zarr"
    ingest(local_sources, local, progress=False)
    url = f"{s3}/stores/era5.zarr"
    report = ingest([f"{s3}/wb2/part*.zarr"], url, progress=False)
    assert report.store == url and report.times == 16
    assert report.sources == [f"{s3}/wb2/part0.zarr", f"{s3}/wb2/part1.zarr"]
    remote = open_store(url)
    _assert_same_store(local, url)
    assert remote.attrs[publish.STATUS_ATTR] == publish.COMPLETE
    assert xr.open_zarr(url).sizes["time"] == 16  # and plain xarray opens it too
    assert not storage.exists(url + ".lock")  # released and deleted


@pytest.mark.slow
def test_ingest_s3_netcdf_glob_to_an_s3_store_and_append(tmp_path: Path, sources) -> None:
    files, bucket = sources
    local = tmp_path / "local.zarr"
    ingest(files[:2], local, progress=False)
    url = f"{bucket}/stores/era5.zarr"
    report = ingest([f"{bucket}/era5/era5_[01].nc"], url, progress=False)
    assert report.store == url and report.times == 16
    remote = open_store(url)
    _assert_same_store(local, url)
    assert remote.attrs[publish.STATUS_ATTR] == publish.COMPLETE
    assert not storage.exists(url + ".lock")  # released and deleted
    # an append on object storage, the same as locally
    ingest([files[2]], local, append=True, progress=False)
    ingest([f"{bucket}/era5/era5_2.nc"], url, append=True, progress=False)
    _assert_same_store(local, url)


def test_cli_on_s3_and_a_store_being_written_is_refused(
    sources, capsys: pytest.CaptureFixture
) -> None:
    files, bucket = sources
    url = f"{bucket}/era5.zarr"
    assert main(["ingest", str(files[0]), "--out", url, "--no-progress"]) == 0
    assert "wrote s3://" in capsys.readouterr().out
    local = files[0].parent / "local.zarr"
    ingest([files[0]], local, progress=False)
    _assert_same_store(local, url)  # read back through forecast.store from the bucket
    assert open_store(url).attrs[publish.STATUS_ATTR] == publish.COMPLETE and not storage.exists(
        url + ".lock"
    )
    with lock(url, "forecast ingest"):  # another ingest holds the store
        code = main(["ingest", str(files[1]), "--out", url, "--overwrite", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert (
        f"{url}: another process is writing this output (forecast ingest pid {os.getpid()}" in err
        and "lease until" in err
    )


def test_an_unpublished_store_is_refused_by_readers(sources) -> None:
    files, bucket = sources
    url = f"{bucket}/era5.zarr"
    ingest([files[0]], url, progress=False)
    import zarr

    publish.mark_writing(
        zarr.open_group(storage.zarr_store(url), mode="r+", use_consolidated=False)
    )
    with pytest.raises(
        DataError,
        match=r"era5.zarr: the store is incomplete: 'forecast ingest' is writing it or was interrupted; wait for it",
    ):
        open_store(url)


@pytest.mark.slow
def test_a_killed_client_publishes_nothing_and_the_rerun_succeeds(sources) -> None:
    """SIGKILL of the ingest while it writes chunks: the store stays 'writing' (readers refuse it); the
    same command then completes it without --overwrite, taking over the dead process's lock."""
    files, bucket = sources
    url = f"{bucket}/killed.zarr"
    script = (
        "import os, signal, sys\n"
        "from pipelines import graph\n"
        "real = graph._write\n"
        "def write(target, start, block):\n"
        "    real(target, start, block)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "graph._write = write\n"
        "from forecast.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        "ingest",
        f"{bucket}/era5/*.nc",
        "--out",
        url,
        "--no-progress",
        "--scheduler",
        "synchronous",
    ]
    run_until_killed(script, args)
    assert publish.status(url) == publish.WRITING
    assert storage.exists(url + ".lock")  # the dead process's lock is still there ...
    with pytest.raises(DataError, match="the store is incomplete"):
        open_store(url)
    assert main([*args[:-2]]) == 0  # ... and is taken over: same host, process gone
    local = Path(files[0]).parent / "all.zarr"
    ingest(files, local, progress=False)
    _assert_same_store(local, url)


def _in_segments_of_4(kill: str) -> str:
    """A script for run_until_killed: the CLI in blocks of one step and segments of 4, once ``kill``
    (code that makes it SIGKILL itself) has run."""
    from tests.pipelines.test_segments import STEP_BYTES

    return (
        "import os, signal, sys\n"
        "from pipelines import graph, resume\n"
        f"graph.BLOCK_BYTES = {STEP_BYTES}\n"
        "graph.SEGMENT_BLOCKS = 4\n"
        f"{kill}"
        "from forecast.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


#: For :func:`_in_segments_of_4`: SIGKILLed once 3 segments are recorded.
AFTER_3_SEGMENTS = (
    "record = resume.Progress.record\n"
    "def record_then_die(self, result):\n"
    "    record(self, result)\n"
    "    if len(self.segments) == 3:\n"
    "        os.kill(os.getpid(), signal.SIGKILL)\n"
    "resume.Progress.record = record_then_die\n"
)


def _rerun_in_segments_of_4(
    files, args: list[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, list[int]]:
    """A local ingest of ``files`` in the segments of :func:`_in_segments_of_4`, then ``main(args)``
    in them; returns the local store and the start steps the rerun wrote."""
    from pipelines import graph
    from tests.pipelines.test_segments import STEP_BYTES

    monkeypatch.setattr(graph, "BLOCK_BYTES", STEP_BYTES)
    monkeypatch.setattr(graph, "SEGMENT_BLOCKS", 4)
    local = Path(files[0]).parent / "local.zarr"
    ingest(files, local, progress=False)
    starts: list[int] = []
    real = graph._write

    def write(target, start, block):
        starts.append(start)
        return real(target, start, block)

    monkeypatch.setattr(graph, "_write", write)
    assert main(args) == 0
    return local, starts


def test_a_killed_ingest_on_object_storage_resumes_after_its_last_segment(
    sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of one step, segments of 4, SIGKILLed once 3 of 6 are recorded (the progress is an object in the
    unpublished store): the rerun writes the 12 steps left and publishes the store of a local
    ingest in the same segments, bit for bit, without its progress object."""
    from pipelines.resume import PROGRESS

    files, bucket = sources
    url = f"{bucket}/resumed.zarr"
    args = ["ingest", f"{bucket}/era5/*.nc", "--out", url, "--no-progress"]
    run_until_killed(_in_segments_of_4(AFTER_3_SEGMENTS), args)
    assert publish.status(url) == publish.WRITING and storage.exists(f"{url}/{PROGRESS}")
    local, starts = _rerun_in_segments_of_4(files, args, monkeypatch)
    assert sorted(starts) == list(range(12, 24))
    assert not storage.exists(f"{url}/{PROGRESS}")
    _assert_same_store(local, url)


def test_a_kill_while_another_request_deletes_the_store_on_object_storage_leaves_no_progress(
    sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed after 3 of 6 segments; a rerun of another request (--end) is SIGKILLed while it deletes
    the unfinished store, once its data chunks are gone: the third run (the first request) must not
    resume segments whose chunks read as NaN now, and publishes the store of an uninterrupted ingest."""
    from pipelines.resume import PROGRESS

    files, bucket = sources
    url = f"{bucket}/resumed.zarr"
    args = ["ingest", f"{bucket}/era5/*.nc", "--out", url, "--no-progress"]
    run_until_killed(_in_segments_of_4(AFTER_3_SEGMENTS), args)
    chunks = f"{url.removeprefix('s3://')}/data/c.*"
    delete_chunks_then_die = (
        "import fsspec\n"
        "from forecast import storage\n"
        "remove = storage.remove\n"
        "def remove_then_die(path):\n"
        f"    if str(path).rstrip('/') == {url!r}:\n"
        "        fs = fsspec.filesystem('s3')\n"
        f"        fs.rm(fs.glob({chunks!r}))\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    remove(path)\n"
        "storage.remove = remove_then_die\n"
    )
    run_until_killed(_in_segments_of_4(delete_chunks_then_die), [*args, "--end", "2020-01-05T00"])
    assert not fsspec.filesystem("s3").glob(chunks) and publish.status(url) == publish.WRITING
    local, starts = _rerun_in_segments_of_4(files, args, monkeypatch)
    assert sorted(starts) == list(range(24))
    assert not storage.exists(f"{url}/{PROGRESS}")
    _assert_same_store(local, url)


def test_an_ingest_that_lost_its_lock_leaves_the_store_to_the_writer_that_took_it(
    sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its lease ran out and another ingest of the same request took the lock and the unfinished
    store over (and resumes it): the one that lost it, told so after its pass, publishes nothing
    and deletes nothing of the other's (store, progress, bin means) nor writes its statistics."""
    from forecast.locking import ObjectLock
    from pipelines import writer
    from pipelines.resume import PROGRESS

    _, bucket = sources
    url = f"{bucket}/taken.zarr"
    monkeypatch.setattr(ObjectLock, "held", lambda self: False)  # the lock object names another
    with pytest.raises(LockedError, match="lost its lock"):
        ingest([f"{bucket}/era5/*.nc"], url, progress=False)
    assert publish.status(url) == publish.WRITING  # unpublished, and still there for the other
    assert storage.exists(f"{url}/data/zarr.json") and storage.exists(f"{url}/{PROGRESS}")
    assert storage.exists(f"{url}/{writer.MEANS}/zarr.json")
    mean = fsspec.filesystem("s3").find(f"{url.removeprefix('s3://')}/mean")
    assert [m.rsplit("/", 1)[1] for m in mean] == ["zarr.json"]  # no statistics written


def test_an_append_that_lost_its_lock_deletes_nothing_of_the_writer_that_took_it(
    sources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ``--append --recompute-statistics`` whose lease ran out: another writer holds the lock
    and repairs the store. The one that lost it, told so after its pass, neither writes the
    statistics nor deletes the bin means (the other's, by then), and the store keeps its times."""
    from forecast.locking import ObjectLock
    from pipelines import writer

    _, bucket = sources
    url = f"{bucket}/appended.zarr"
    ingest([f"{bucket}/era5/era5_[01].nc"], url, progress=False)
    before = open_store(url)
    times, mean = before["time"].values, before["mean"].values
    monkeypatch.setattr(ObjectLock, "held", lambda self: False)  # the lock object names another
    with pytest.raises(LockedError, match="lost its lock"):
        ingest(
            [f"{bucket}/era5/era5_2.nc"],
            url,
            append=True,
            recompute_statistics=True,
            progress=False,
        )
    assert storage.exists(f"{url}/{writer.MEANS}/zarr.json")  # left to the writer holding the lock
    after = open_store(url)
    np.testing.assert_array_equal(after["time"].values, times)  # nothing published
    np.testing.assert_array_equal(after["mean"].values, mean)


class _Forbidden(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint that refuses every request with 403 AccessDenied."""

    def _deny(self) -> None:
        body = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _deny

    def log_message(self, *args) -> None:
        pass


def test_unauthorised_and_missing_buckets_are_one_line_errors(
    s3: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    tmp_path: Path,
) -> None:
    write_netcdf(era5_like(hours("2020-01-01", 4)), tmp_path / "a.nc")
    code = main(
        [
            "ingest",
            "s3://no-such-bucket-here/era5/*.nc",
            "--out",
            str(tmp_path / "s.zarr"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "s3://no-such-bucket-here/era5/*.nc" in err
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        fsspec.config.conf.clear()
        import s3fs

        s3fs.S3FileSystem.clear_instance_cache()
        code = main(
            [
                "ingest",
                str(tmp_path / "a.nc"),
                "--out",
                "s3://private-bucket/era5.zarr",
                "--no-progress",
            ]
        )
        # (aiohttp may warn about the sessions of the s3fs instances this test dropped from the cache)
        err = "\n".join(
            line
            for line in capsys.readouterr().err.strip().splitlines()
            if "client_session" not in line and "Unclosed" not in line
        )
        assert code == 1 and len(err.splitlines()) == 1, err
        assert (
            "s3://private-bucket/era5.zarr" in err
            and "access denied" in err
            and "AWS_ACCESS_KEY_ID" in err
        )
    finally:
        server.shutdown()
        s3fs.S3FileSystem.clear_instance_cache()


def test_a_scheme_without_a_filesystem_names_the_package(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_netcdf(era5_like(hours("2020-01-01", 4)), tmp_path / "a.nc")
    code = main(
        ["ingest", str(tmp_path / "a.nc"), "--out", "az://container/era5.zarr", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert (
        "az://container/era5.zarr: no filesystem for az:// is installed" in err
        and "pip install adlfs" in err
    )
    code = main(["ingest", "nosuch://x/a.nc", "--out", str(tmp_path / "s.zarr"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "nosuch://x/a.nc: unknown URL scheme nosuch://" in err


def test_lock_on_object_storage_expires_and_is_taken_over(s3: str) -> None:  # noqa: F811
    target = f"{s3}/store.zarr"
    # a lease long enough that the refused acquire below is sure to come before it ends (with 0.5 s
    # a loaded machine's S3 round trips took longer, and the second writer rightly took over)
    first = lock(target, "forecast ingest", lease=3.0)
    first.acquire()
    first._stop.set()  # a holder that stops renewing (a frozen or partitioned machine)
    with pytest.raises(LockedError, match="lease until"):
        lock(target, "forecast ingest").acquire()
    time.sleep(3.5)
    second = lock(target, "forecast ingest").acquire()  # the expired lease is taken over
    assert not first.held() and second.held()
    first.release()  # no longer its lock: releasing leaves the new holder's object alone
    assert second.held()
    second.release()
    assert not storage.exists(target + ".lock")


def test_an_ingest_that_lost_its_lease_does_not_publish(s3: str) -> None:  # noqa: F811
    from forecast.locking import Owner
    from pipelines.ingest import still_held

    target = f"{s3}/store.zarr"
    held = lock(target, "forecast ingest").acquire()
    still_held(held, target)  # ours: fine
    storage.write_bytes(
        target + ".lock", Owner.current("forecast ingest").to_json().encode()
    )  # taken over meanwhile
    with pytest.raises(
        LockedError, match=r"store.zarr: this ingest lost its lock .*nothing was published"
    ):
        still_held(held, target)
    held.release()
    assert storage.exists(target + ".lock")  # the new holder's lock is left alone
