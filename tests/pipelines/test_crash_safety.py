"""Nothing is ever lost: appends killed with SIGKILL anywhere, ingests killed while smoothing the climatology, concurrent writers, --overwrite, leftovers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from forecast.cli.main import main
from forecast.errors import DataError
from forecast.locking import lock
from forecast.store import open_store
from pipelines.ingest import ingest
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

REPO = Path(__file__).resolve().parents[2]

#: Where the subprocess kills itself: the function it wraps and on which call (1-based).
KILL_POINTS = {
    "before the data": ("pipelines.writer", "grow", 1),
    "during the data": ("zarr.storage.LocalStore", "set", 5),
    "after the data": ("forecast.publish", "commit", 1),
    "during the metadata": ("zarr.core.array.AsyncArray", "_save_metadata", 2),
    "before the root write": ("forecast.publish", "_save", 1),
}

KILLER = """
import importlib, os, signal, sys
module_name, name, call = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    owner = importlib.import_module(module_name)
except ModuleNotFoundError:
    parent, attr = module_name.rsplit(".", 1)
    owner = getattr(importlib.import_module(parent), attr)
real = getattr(owner, name)
calls = []
def killing(*args, **kwargs):
    calls.append(1)
    if len(calls) == call:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
setattr(owner, name, killing)
from forecast.cli.main import main
sys.exit(main(sys.argv[4:]))
"""


def _kill_at(point: str, args: list[str]) -> subprocess.CompletedProcess:
    module, name, call = KILL_POINTS[point]
    return subprocess.run(
        [sys.executable, "-c", KILLER, module, name, str(call), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def months(tmp_path: Path) -> list[Path]:
    ds = era5_like(
        hours("2020-01-25", 48), lat=np.linspace(90, -90, 7), lon=np.arange(0, 360, 30.0)
    )
    return [
        write_netcdf(ds.isel(valid_time=slice(0, 28)), tmp_path / "jan.nc"),
        write_netcdf(ds.isel(valid_time=slice(28, 48)), tmp_path / "feb.nc"),
    ]


def _files(store: Path) -> dict[str, bytes]:
    """Every file of a store by relative path, the root metadata without its history (a timestamp)."""
    found = {}
    for path in sorted(store.rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            if path.relative_to(store).as_posix() == "zarr.json":
                document = json.loads(content)
                document["attributes"].pop("history")
                for member in (
                    document.get("consolidated_metadata", {}).get("metadata", {}).values()
                ):
                    member.get("attributes", {}).pop("history", None)
                content = json.dumps(document, sort_keys=True).encode()
            found[path.relative_to(store).as_posix()] = content
    return found


@pytest.mark.parametrize(
    "recompute",
    [False, pytest.param(True, marks=pytest.mark.slow)],
    ids=["append", "append --recompute-statistics"],
)
@pytest.mark.parametrize(
    "point",
    [
        p
        if p in ("during the data", "during the metadata", "before the root write")
        else pytest.param(p, marks=pytest.mark.slow)
        for p in KILL_POINTS
    ],
)
def test_an_append_killed_anywhere_leaves_the_old_store_and_the_rerun_completes_it(
    tmp_path: Path, months: list[Path], point: str, recompute: bool
) -> None:
    reference, store = tmp_path / "reference.zarr", tmp_path / "store.zarr"
    flags = ["--no-progress", "--scheduler", "synchronous"] + (
        ["--recompute-statistics"] if recompute else []
    )
    for out in (reference, store):
        assert main(["ingest", str(months[0]), "--out", str(out), "--no-progress"]) == 0
    before = _files(store)
    assert main(["ingest", str(months[1]), "--out", str(reference), "--append", *flags]) == 0

    killed = _kill_at(point, ["ingest", str(months[1]), "--out", str(store), "--append", *flags])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    old = open_store(store)  # readers see the store as it was published before the append
    assert old.sizes["time"] == 28
    np.testing.assert_array_equal(old["data"].values, open_store(reference)["data"].values[:28])
    assert (
        store.parent / "store.zarr.lock"
    ).exists()  # a SIGKILL leaves the lock file: the rerun takes it over

    assert main(["ingest", str(months[1]), "--out", str(store), "--append", *flags]) == 0
    assert _files(store) == _files(reference)  # chunk for chunk, metadata included
    assert not (store.parent / "store.zarr.lock").exists()
    assert before != _files(store)


def test_concurrent_appends_one_wins_the_other_is_told(tmp_path: Path, months: list[Path]) -> None:
    reference, store = tmp_path / "reference.zarr", tmp_path / "store.zarr"
    for out in (reference, store):
        ingest([months[0]], out, progress=False)
    ingest([months[1]], reference, append=True, progress=False)
    command = [
        sys.executable,
        "-m",
        "forecast",
        "ingest",
        str(months[1]),
        "--out",
        str(store),
        "--append",
        "--no-progress",
    ]
    runs = [
        subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1).strip()
    assert len(loser.splitlines()) == 1
    assert (
        "another process is writing this output (forecast ingest pid" in loser
        or "the store is already up to date" in loser
    )
    assert _files(store) == _files(reference)


def test_a_held_lock_names_its_holder(
    tmp_path: Path, months: list[Path], capsys: pytest.CaptureFixture
) -> None:
    store = tmp_path / "store.zarr"
    ingest([months[0]], store, progress=False)
    with lock(store, "forecast ingest"):
        assert (
            main(["ingest", str(months[1]), "--out", str(store), "--append", "--no-progress"]) == 1
        )
    err = capsys.readouterr().err.strip()
    assert (
        f"{store}: another process is writing this output (forecast ingest pid {os.getpid()} on "
        in err
    )
    assert "wait for it to finish; the lock frees itself when that process ends" in err
    assert not (tmp_path / "store.zarr.lock").exists()  # released and deleted: no empty lock files


def test_overwrite_never_deletes_an_input_or_a_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    vict = tmp_path / "vict"
    vict.mkdir()
    write_netcdf(era5_like(hours("2020-01-01", 4)), vict / "a.nc")
    (vict / "notes.txt").write_text("keep me")
    code = main(["ingest", str(vict / "*.nc"), "--out", str(vict), "--overwrite", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert (
        f"{vict}: --overwrite would delete an input of this command ({vict}/*.nc); write the output somewhere else"
        in err
    )
    anydir = tmp_path / "anydir"
    anydir.mkdir()
    (anydir / "thesis.txt").write_text("years of work")
    code = main(
        ["ingest", str(vict / "a.nc"), "--out", str(anydir), "--overwrite", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert (
        f"{anydir}: --overwrite refuses to delete it: it is not a store written by forecast (it holds thesis.txt)"
        in err
    )
    assert (vict / "notes.txt").read_text() == "keep me" and (vict / "a.nc").exists()
    assert (anydir / "thesis.txt").read_text() == "years of work"
    # a store this software wrote is replaced
    store = tmp_path / "s.zarr"
    assert main(["ingest", str(vict / "a.nc"), "--out", str(store), "--no-progress"]) == 0
    assert (
        main(["ingest", str(vict / "a.nc"), "--out", str(store), "--overwrite", "--no-progress"])
        == 0
    )
    # ... but not when it is also a source of the command
    code = main(["ingest", str(store), "--out", str(store), "--overwrite", "--no-progress"])
    assert (
        code == 1 and "--overwrite would delete an input of this command" in capsys.readouterr().err
    )


def test_leftovers_of_killed_ingests_are_cleaned_at_the_next_start(
    tmp_path: Path, months: list[Path]
) -> None:
    store = tmp_path / "s.zarr"
    dead = tmp_path / ".s.zarr.tmp-999999"
    (dead / "data").mkdir(parents=True)
    (dead / "data" / "c.0.0.0.0").write_bytes(b"half")
    ingest([months[0]], store, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # killed between moving the old store aside and renaming the new one in: the old one comes back
    os.replace(store, tmp_path / ".s.zarr.old-999999")
    with pytest.raises(DataError, match="the store already exists"):
        ingest([months[0]], store, progress=False)
    assert open_store(store).sizes["time"] == 28


def test_appended_overlap_must_agree_with_the_store(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 12))
    write_netcdf(ds.isel(valid_time=slice(0, 8)), tmp_path / "a.nc")
    write_netcdf(ds.isel(valid_time=slice(6, 12)), tmp_path / "b_same.nc")
    other = ds.isel(valid_time=slice(6, 12)).copy(deep=True)
    other["t2m"] = other["t2m"] + 0.5
    write_netcdf(other, tmp_path / "c_diff.nc")
    store = tmp_path / "s.zarr"
    ingest([tmp_path / "a.nc"], store, progress=False)
    with pytest.raises(
        DataError,
        match=r"c_diff.nc: channel t2m disagrees with the store over 2 overlapping time\(s\) from 2020-01-02T12:00; drop the overlapping",
    ):
        ingest([tmp_path / "c_diff.nc"], store, append=True, progress=False)
    assert open_store(store).sizes["time"] == 8
    ingest(
        [tmp_path / "b_same.nc"], store, append=True, progress=False
    )  # an agreeing overlap is dropped
    assert open_store(store).sizes["time"] == 12


def test_a_single_time_source_names_the_file(tmp_path: Path) -> None:
    write_netcdf(era5_like(hours("2020-01-01", 1)), tmp_path / "one.nc")
    with pytest.raises(
        DataError,
        match=r"one.nc: cannot infer the time step from a single time \(2020-01-01T00:00\); pass --step",
    ):
        ingest([tmp_path / "one.nc"], tmp_path / "s.zarr", progress=False)


def test_a_damaged_chunk_is_a_one_line_error_naming_it(tmp_path: Path, months: list[Path]) -> None:
    store = tmp_path / "s.zarr"
    ingest([months[0]], store, progress=False)
    chunk = store / "data" / "c.3.0.0.0"
    content = bytearray(chunk.read_bytes())
    content[len(content) // 2] ^= 0xFF
    chunk.write_bytes(bytes(content))
    ds = open_store(store)
    np.testing.assert_array_equal(
        ds["data"].isel(time=2).values, open_store(store)["data"].isel(time=2).values
    )
    with pytest.raises(
        DataError,
        match=r"s.zarr: chunk data/c.3.0.0.0 is damaged \(its CRC32C checksum does not match.*re-ingest the data",
    ):
        _ = ds["data"].isel(time=3).values


#: Kills the ingest (``sys.argv[1]`` = N) right after the smoothing wrote its N-th climatology
#: field: ``_smooth_and_write`` writes each day the generator yields before asking for the next.
SMOOTHING_KILLER = """
import os, signal, sys
from pipelines import graph
real = graph.window_means
written = []
def killing(*args, **kwargs):
    for mean in real(*args, **kwargs):
        yield mean
        written.append(1)  # the caller has written that day's climatology chunk
        if len(written) == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)
graph.window_means = killing
from forecast.cli.main import main
sys.exit(main(sys.argv[2:]))
"""

#: Climatology fields written before the kill: the first smoothing task (12 days of one hour) done,
#: the second half-way.
SMOOTHED_BEFORE_THE_KILL = 18


def _chunks(folder: Path) -> set[str]:
    """Chunk files under ``folder`` (any key encoding), relative to it."""
    if not folder.is_dir():
        return set()
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        "zarr.json"
    }


@pytest.mark.parametrize(
    "case",
    [
        "ingest",
        # 20-30 s each on the shared 2-core machine: in the slow run, as the other kill points are
        pytest.param("ingest --overwrite", marks=pytest.mark.slow),
        pytest.param("append --recompute-statistics", marks=pytest.mark.slow),
    ],
)
def test_an_ingest_killed_while_smoothing_the_climatology_publishes_nothing_and_the_rerun_completes_it(
    tmp_path: Path, months: list[Path], case: str
) -> None:
    reference, store = tmp_path / "reference.zarr", tmp_path / "store.zarr"
    flags = ["--no-progress", "--scheduler", "synchronous"]
    if case == "append --recompute-statistics":
        assert main(["ingest", str(months[0]), "--out", str(store), "--no-progress"]) == 0
        shutil.copytree(store, reference)
        sources, flags = [str(months[1])], [*flags, "--append", "--recompute-statistics"]
    else:
        sources = [str(m) for m in months]
        if case == "ingest --overwrite":  # an older store that the new one replaces
            assert main(["ingest", str(months[0]), "--out", str(store), "--no-progress"]) == 0
            flags = [*flags, "--overwrite"]
    assert main(["ingest", *sources, "--out", str(reference), *flags]) == 0
    published = (
        {name: open_store(store)[name].values for name in ("data", "climatology", "mean", "std")}
        if store.exists()
        else None
    )
    before = _files(store) if store.exists() else None
    old_climatology = _chunks(store / "climatology")

    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            SMOOTHING_KILLER,
            str(SMOOTHED_BEFORE_THE_KILL),
            "ingest",
            *sources,
            "--out",
            str(store),
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # the kill came in the middle of the smoothing: exactly that many new climatology chunks exist
    if case == "append --recompute-statistics":
        written = _chunks(store / "climatology") - old_climatology  # the other key encoding
    else:
        (staging,) = tmp_path.glob(".store.zarr.tmp-*")  # the killed ingest's unpublished copy
        written = _chunks(staging / "climatology")
    assert len(written) == SMOOTHED_BEFORE_THE_KILL
    assert len(_chunks(reference / "climatology")) > SMOOTHED_BEFORE_THE_KILL

    if published is None:
        assert not store.exists()  # nothing published
    else:  # readers see the store as it was published before
        old = open_store(store)
        for name, values in published.items():
            np.testing.assert_array_equal(old[name].values, values)
        if case == "ingest --overwrite":
            assert _files(store) == before

    assert main(["ingest", *sources, "--out", str(store), *flags]) == 0
    assert _files(store) == _files(reference)  # chunk for chunk, metadata included
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
