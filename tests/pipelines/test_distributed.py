"""A real dask.distributed cluster (2 worker processes) writes the same store as threads, from the workers.

The cluster runs in a process of its own (``distributed.LocalCluster`` started
by a helper script), so that everything this test process reads during an
ingest, counted by the kernel in ``/proc/self/io``, is what the client
received: the graph's small results, the scheduler's messages, the sources'
metadata.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from forecast.errors import DataError
from forecast.store import open_store
from pipelines.ingest import ingest
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]

CLUSTER = """
import json, sys, os
from distributed import Client, LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, scheduler_port=0)
    client = Client(cluster)
    print(json.dumps({"address": cluster.scheduler_address}), flush=True)
    sys.stdin.read()  # until the test closes our stdin
    client.close()
    cluster.close()
"""


def _start_cluster(extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-c", CLUSTER],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    address = json.loads(process.stdout.readline())["address"]
    return process, address


def _stop_cluster(process: subprocess.Popen) -> None:
    process.stdin.close()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    process, address = _start_cluster()
    yield address
    _stop_cluster(process)


def _worker_pids(address: str) -> list[int]:
    from distributed import Client

    with Client(address, set_as_default=False) as client:
        return sorted(client.run(os.getpid).values())


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """48 MB of sources: 96 six-hourly steps of 8 channels on a 2-degree grid, in two files."""
    folder = tmp_path_factory.mktemp("sources")
    ds = era5_like(
        hours("2020-01-01", 96), lat=np.linspace(90, -90, 91), lon=np.arange(0, 360, 2.0)
    )
    return [
        write_netcdf(ds.isel(valid_time=slice(0, 48)), folder / "a.nc"),
        write_netcdf(ds.isel(valid_time=slice(48, 96)), folder / "b.nc"),
    ]


@pytest.fixture(scope="module")
def threaded(files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("threads") / "threads.zarr"
    ingest(files, out, progress=False)
    return out


def _assert_same(a: Path, b: Path) -> None:
    sa, sb = open_store(a), open_store(b)
    for name in ("data", "mean", "std", "diff_std", "climatology"):
        np.testing.assert_array_equal(sa[name].values, sb[name].values)
    np.testing.assert_array_equal(sa["time"].values, sb["time"].values)
    for chunk in sorted((a / "data").iterdir())[:5]:  # byte for byte, too
        assert (b / "data" / chunk.name).read_bytes() == chunk.read_bytes()


class _Received:
    """Counts the bytes this process's Dask comms read from their sockets (Tornado's ``read_from_fd``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import tornado.iostream

        self.bytes = 0
        real = tornado.iostream.IOStream.read_from_fd

        def counting(stream, buffer):
            got = real(stream, buffer)
            self.bytes += got or 0
            return got

        monkeypatch.setattr(tornado.iostream.IOStream, "read_from_fd", counting)


def _store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_cluster_writes_the_same_store_and_the_client_receives_under_one_percent(
    cluster: str, files: list[Path], threaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bytes this process's comms read from the scheduler and workers during the whole ingest are
    counted at the socket; gathering a known array first shows that the counter sees real traffic."""
    from distributed import Client

    received = _Received(monkeypatch)
    with Client(
        cluster, set_as_default=False
    ) as client:  # the control: 8 MB gathered from a worker
        before = received.bytes
        assert client.submit(np.ones, 2**20, pure=False).result().nbytes == 8 * 2**20
        assert received.bytes - before >= 8 * 2**20
    out = tmp_path / "cluster.zarr"
    before = received.bytes
    ingest(files, out, scheduler=cluster, progress=False)
    during = received.bytes - before
    _assert_same(threaded, out)
    size = _store_bytes(out)
    assert size > 0.5 * 96 * 8 * 91 * 180 * 4
    assert during < 0.01 * size, f"the client received {during} bytes for a store of {size}"
    print(
        f"client received {during} B from the cluster for a store of {size} B ({100 * during / size:.3f}%)"
    )


def test_segments_on_the_cluster_write_what_they_write_on_threads_two_at_a_time(
    cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """7 segments of 6 steps: the cluster's store is the threaded one, bit for bit; a segment's graph is
    built while the one before runs (never two ahead), and the last (the climatology) after all."""
    from tests.pipelines.test_segments import ingest_in_segments, segment_sources

    files = segment_sources(tmp_path)
    threads, distributed = tmp_path / "threads.zarr", tmp_path / "distributed.zarr"
    with monkeypatch.context() as patch:
        assert ingest_in_segments(files, threads, patch) == [0, 6, 12, 18, 24, 30, 36]
    with monkeypatch.context() as patch:
        seen = ingest_in_segments(files, distributed, patch, scheduler=cluster)
    assert len(seen) == 7
    assert all(chunks >= 6 * (k - 1) for k, chunks in enumerate(seen))
    _assert_same(threads, distributed)


@pytest.mark.slow
def test_processes_scheduler_writes_the_same_store(
    files: list[Path], threaded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "processes.zarr"
    ingest(files, out, scheduler="processes", progress=False)
    _assert_same(threaded, out)


def _kill_a_worker_when(
    staging: Path, pids: list[int], chunks: int, killed: list[int]
) -> threading.Thread:
    """A thread that SIGKILLs the first worker once ``chunks`` data chunks are in ``staging``."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            folder = staging / "data"
            if folder.is_dir() and sum(1 for _ in folder.glob("c.*")) >= chunks:
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_a_worker_killed_mid_ingest_is_recomputed(
    cluster: str, files: list[Path], threaded: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import graph

    monkeypatch.setattr(
        graph, "BLOCK_BYTES", 4 * 8 * 91 * 180 * 4
    )  # blocks of 4 steps: many tasks to interrupt
    reference = (
        tmp_path / "threads-4.zarr"
    )  # the same blocks on threads (other blocks merge the moments in another order)
    ingest(files, reference, progress=False)
    out = tmp_path / "k.zarr"
    pids = _worker_pids(cluster)
    killed: list[int] = []
    watcher = _kill_a_worker_when(tmp_path / f".k.zarr.tmp-{os.getpid()}", pids, 8, killed)
    ingest(files, out, scheduler=cluster, progress=False)
    watcher.join(timeout=5)
    assert killed, "the worker was not killed while the ingest ran"
    assert _worker_pids(cluster) != pids  # the nanny started a new worker
    _assert_same(reference, out)


@pytest.mark.slow
def test_a_worker_that_dies_for_good_is_a_one_line_error(
    files: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines import graph

    monkeypatch.setattr(graph, "BLOCK_BYTES", 4 * 8 * 91 * 180 * 4)
    process, address = _start_cluster({"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"})
    try:
        out = tmp_path / "dead.zarr"
        killed: list[int] = []
        _kill_a_worker_when(
            tmp_path / f".dead.zarr.tmp-{os.getpid()}", _worker_pids(address), 4, killed
        )
        with pytest.raises(
            DataError,
            match=rf"{address}: a Dask worker died for good while ingesting .*check the workers' logs and memory.*nothing was published",
        ):
            ingest(files, out, scheduler=address, progress=False)
        assert killed and not out.exists()
    finally:
        _stop_cluster(process)


@pytest.mark.slow
def test_a_killed_client_publishes_nothing_and_the_rerun_succeeds(
    cluster: str, files: list[Path], threaded: Path, tmp_path: Path
) -> None:
    out = tmp_path / "c.zarr"
    script = (
        "import sys\n"
        "from pipelines import graph\n"
        f"graph.BLOCK_BYTES = {4 * 8 * 91 * 180 * 4}\n"
        "from forecast.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            script,
            "ingest",
            *map(str, files),
            "--out",
            str(out),
            "--scheduler",
            cluster,
            "--no-progress",
        ],
        cwd=REPO,
    )
    staging = tmp_path / f".c.zarr.tmp-{client.pid}" / "data"
    deadline = time.monotonic() + 300
    while (len(list(staging.glob("c.*"))) if staging.is_dir() else 0) < 8:
        assert client.poll() is None, "the ingest ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    client.send_signal(signal.SIGKILL)
    client.wait(timeout=60)
    assert not out.exists()  # nothing published
    time.sleep(1.0)  # the scheduler cancels the dead client's tasks
    ingest(files, out, scheduler=cluster, progress=False)
    _assert_same(threaded, out)
    assert (
        sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    )  # the staging copy was cleaned


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    write_netcdf(era5_like(hours("2020-01-01", 4)), tmp_path / "a.nc")
    with pytest.raises(DataError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        ingest(
            [tmp_path / "a.nc"], tmp_path / "s.zarr", scheduler="tcp://127.0.0.1:1", progress=False
        )
    assert not (tmp_path / "s.zarr").exists()


def _malloc_trim_threshold() -> str | None:
    import os

    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibcs_adaptive_malloc() -> None:
    """distributed sets MALLOC_TRIM_THRESHOLD_ in its workers, which turns every array over 128 KB
    into a fresh mmap (an ingest's tasks took twice their CPU time); local:N unsets it."""
    from pipelines.cluster import dask_scheduler

    with dask_scheduler("local:1") as where:
        found = where.client.run(_malloc_trim_threshold)
    assert len(found) == 1 and set(found.values()) == {None}, found
