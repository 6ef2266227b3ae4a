"""Locations: local paths and URLs behind one API; --overwrite's judgement of what may be replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from forecast import storage
from forecast.overwrite import OverwriteError, check_replaceable, involves, written_by_us


def test_paths_and_urls() -> None:
    assert (
        storage.is_local("/a/b")
        and storage.is_local("file:///a/b")
        and not storage.is_local("s3://b/k")
    )
    assert storage.local_path("file:///a/b.zarr") == Path("/a/b.zarr")
    assert (
        storage.join("s3://bucket/dir/", "x.zarr", "zarr.json")
        == "s3://bucket/dir/x.zarr/zarr.json"
    )
    assert storage.sibling("s3://bucket/dir/x.zarr", "x.zarr.lock") == "s3://bucket/dir/x.zarr.lock"
    assert storage.staging_path("/data/era5.zarr", pid=12) == "/data/.era5.zarr.tmp-12"
    assert storage.normalise("s3://bucket/dir/") == "s3://bucket/dir"


def test_write_bytes_is_atomic_and_exclusive_on_request(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    storage.write_bytes(target, b"1")
    storage.write_bytes(target, b"2")
    assert target.read_bytes() == b"2"
    with pytest.raises(FileExistsError):
        storage.write_bytes(target, b"3", exclusive=True)
    assert target.read_bytes() == b"2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]  # no temporary files left


def test_glob_keeps_the_scheme_and_names_a_pattern_that_matches_nothing(tmp_path: Path) -> None:
    for name in ("b.nc", "a.nc"):
        (tmp_path / name).write_bytes(b"")
    assert storage.glob(f"file://{tmp_path}/*.nc") == [
        f"file://{tmp_path}/a.nc",
        f"file://{tmp_path}/b.nc",
    ]
    assert storage.glob(str(tmp_path / "*.nc")) == [str(tmp_path / "a.nc"), str(tmp_path / "b.nc")]
    with pytest.raises(FileNotFoundError) as caught:
        storage.glob(str(tmp_path / "*.grib"))
    assert caught.value.filename == str(tmp_path / "*.grib")


def test_unknown_scheme_and_missing_filesystem() -> None:
    with pytest.raises(storage.StorageError, match=r"nosuch://x: unknown URL scheme nosuch://"):
        storage.exists("nosuch://x")
    with pytest.raises(
        storage.StorageError,
        match=r"az://c/x.zarr: no filesystem for az:// is installed .*; pip install adlfs",
    ):
        storage.exists("az://c/x.zarr")


def _zarr_group(path: Path, attrs: dict) -> Path:
    path.mkdir(parents=True)
    (path / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attrs})
    )
    return path


def test_overwrite_only_replaces_our_outputs_and_never_an_input(tmp_path: Path) -> None:
    store = _zarr_group(
        tmp_path / "s.zarr", {"store_format_version": 1, "software_version": "0.1.0"}
    )
    forecast = _zarr_group(
        tmp_path / "fc.zarr", {"software_version": "forecast 0.1.0", "Conventions": "CF-1.8"}
    )
    foreign = _zarr_group(tmp_path / "other.zarr", {"software_version": "someone else"})
    assert written_by_us(store, ["store"]) == "store"
    assert written_by_us(forecast, ["store", "forecast"]) == "forecast"
    assert written_by_us(foreign, ["store", "forecast"]) is None
    check_replaceable(store, inputs=[tmp_path / "a.nc"])
    check_replaceable(tmp_path / "new.zarr", inputs=[tmp_path / "a.nc"])  # nothing there yet
    with pytest.raises(
        OverwriteError,
        match=r"other.zarr: --overwrite refuses to delete it: it is not a store written by forecast \(it holds zarr.json\)",
    ):
        check_replaceable(foreign, inputs=[])
    with pytest.raises(
        OverwriteError, match=r"fc.zarr: --overwrite would delete an input of this command"
    ):
        check_replaceable(forecast, inputs=[forecast], kinds=("forecast",))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: sfno\n")
    assert written_by_us(run, ["run-directory"]) == "run-directory"
    assert (
        involves(tmp_path, [f"{tmp_path}/data/*.nc"]) == f"{tmp_path}/data/*.nc"
    )  # the output holds the inputs
    assert involves(tmp_path / "s.zarr" / "sub", [tmp_path / "s.zarr"]) == str(
        tmp_path / "s.zarr"
    )  # inside an input
    assert (
        involves(tmp_path / "t.zarr", [tmp_path / "s.zarr", f"{tmp_path}/*.nc", "*.nc"]) is None
    )  # beside the sources
    assert (
        involves(tmp_path / "x.nc", [f"{tmp_path}/*.nc"]) == f"{tmp_path}/*.nc"
    )  # matched by a source glob
