"""Ingest, train, run and score with every path an s3:// URL, on a real S3-compatible server (moto on 127.0.0.1).

Each step is cross-checked against the same step on local paths: the
objects on the bucket hold what the local run wrote (store, checkpoint
weights, forecast values, scores). The default run copies a locally
ingested store to the bucket (ingest to s3:// has its own tests in
tests/pipelines/test_object_storage.py); the slow test runs the whole chain
from s3:// sources.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
import xarray as xr

from forecast import staging, storage
from forecast.cli.main import main
from forecast.scoring.scores_file import open_scores
from forecast.store import open_store
from tests.killing import run_until_killed
from tests.object_storage import s3_module, s3_server  # noqa: F401
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

TRAIN = [
    "--model", "sfno", "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "2",
    "--batch-size", "2", "--workers", "0", "--device", "cpu", "--val-fraction", "0.3",
    "--val-every", "2", "--val-samples", "2", "--no-progress",
]  # fmt: skip
REPO = Path(__file__).resolve().parents[2]
RUN = ["--init", "2020-01-02T00", "--steps", "2", "--no-progress"]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, s3_module: str) -> Iterator[dict]:  # noqa: F811
    """Sources on the bucket, then the store, a trained run and a forecast, each on the bucket and locally.

    Built once for the module's tests (the tests run in order: the last one
    replaces the forecast).
    """
    with pytest.MonkeyPatch.context() as monkeypatch:
        yield _build(tmp_path_factory.mktemp("chain"), s3_module, monkeypatch)


def _build(tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("FORECAST_STAGING", str(tmp_path / "staging"))
    fs = fsspec.filesystem("s3")
    local = tmp_path / "local"
    local.mkdir()
    for path in _sources(local):
        fs.put_file(str(path), f"{s3[5:]}/src/{path.name}")
    paths = {
        "store": (f"{s3}/store.zarr", str(local / "store.zarr")),
        "run": (f"{s3}/runs/sfno", str(local / "run")),
        "forecast": (f"{s3}/fc/forecast.zarr", str(local / "forecast.zarr")),
    }
    # the store: ingested locally and copied to the bucket (ingest to s3:// is tested on its own,
    # and below in the slow test of the whole chain)
    assert (
        main(["ingest", str(local / "era5_*.nc"), "--out", paths["store"][1], "--no-progress"]) == 0
    )
    fs.put(paths["store"][1] + "/", paths["store"][0][5:], recursive=True)
    for pick in (0, 1):  # on the bucket, then on local paths
        store, run, forecast = (paths[k][pick] for k in ("store", "run", "forecast"))
        _train_and_run(store, run, forecast)
    return {"bucket": s3, "paths": paths, "tmp": tmp_path}


def _sources(folder: Path) -> list[Path]:
    ds = era5_like(
        hours("2020-01-01", 16), lat=np.linspace(90, -90, 9), lon=np.arange(0, 360, 20.0)
    )
    return [
        write_netcdf(ds.isel(valid_time=slice(8 * i, 8 * i + 8)), folder / f"era5_{i}.nc")
        for i in range(2)
    ]


def _train_and_run(store: str, run: str, forecast: str) -> None:
    assert main(["train", "--data", store, "--out", run, *TRAIN]) == 0
    checkpoint = storage.join(run, "best.ckpt")
    assert main(["run", "--checkpoint", checkpoint, "--data", store, "--out", forecast, *RUN]) == 0


def _score_and_compare(forecast: str, store: str, scores: str, reference: Path) -> None:
    """Score with every path a URL; the numbers must be those of ``reference`` (the same on local paths)."""
    assert (
        main(
            ["score", forecast, "--truth", store, "--out", scores, "--no-progress", "--no-spectra"]
        )
        == 0
    )
    got, want = open_scores(staging.local_copy(scores)), open_scores(reference)
    assert set(got.data_vars) == set(want.data_vars)
    for name in want.data_vars:
        if want[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got[name].values, want[name].values)


def test_train_run_and_score_on_s3_match_local_paths(
    chain: dict, capsys: pytest.CaptureFixture
) -> None:
    paths, tmp = chain["paths"], chain["tmp"]
    (store, store_local), (run, run_local), (forecast, forecast_local) = (
        paths["store"],
        paths["run"],
        paths["forecast"],
    )
    # the run directory: every file published, the weights those of the same run on local paths
    for name in ("config.yaml", "latest.ckpt", "best.ckpt", "latest.state.pt", "metrics.jsonl"):
        assert storage.exists(storage.join(run, name)), name
    remote_weights = torch.load(staging.local_copy(f"{run}/best.ckpt"), weights_only=True)[
        "state_dict"
    ]
    local_weights = torch.load(Path(run_local) / "best.ckpt", weights_only=True)["state_dict"]
    assert remote_weights.keys() == local_weights.keys()
    for key in local_weights:
        torch.testing.assert_close(remote_weights[key], local_weights[key], rtol=0, atol=0)
    metrics = storage.read_bytes(f"{run}/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["kind"] for line in metrics] == [
        json.loads(line)["kind"]
        for line in (Path(run_local) / "metrics.jsonl").read_text().splitlines()
    ]
    # the forecast: read from the bucket through zarr's fsspec store, identical to the local one
    remote_fc = xr.open_zarr(storage.zarr_store(forecast, read_only=True), decode_timedelta=True)
    local_fc = xr.open_zarr(forecast_local, decode_timedelta=True)
    assert set(remote_fc.data_vars) == set(local_fc.data_vars) and len(local_fc.data_vars) > 0
    for name in local_fc.data_vars:
        np.testing.assert_array_equal(remote_fc[name].values, local_fc[name].values)
    manifest = json.loads(storage.read_bytes(forecast + ".manifest.json"))
    assert manifest["status"] == "finished" and manifest["output"] == forecast
    assert manifest["store"] == store  # the identity names the URL, not a local path
    assert not list(
        (tmp / "staging").glob("s3-*/forecast.zarr*")
    )  # the stage is emptied after publishing
    # a second run of the same request finds it published and does nothing
    capsys.readouterr()
    assert (
        main(["run", "--checkpoint", f"{run}/best.ckpt", "--data", store, "--out", forecast, *RUN])
        == 0
    )
    assert "already finished; nothing to do" in capsys.readouterr().err
    # scores: inputs and outputs on the bucket, the same numbers as on local paths
    local_scores = tmp / "scores.nc"
    assert (
        main(
            [
                "score",
                forecast_local,
                "--truth",
                store_local,
                "--out",
                str(local_scores),
                "--no-progress",
                "--no-spectra",
            ]
        )
        == 0
    )
    _score_and_compare(forecast, store, f"{chain['bucket']}/scores/scores.nc", local_scores)


@pytest.mark.slow
def test_every_path_an_s3_url_from_ingest_to_score(chain: dict, tmp_path: Path) -> None:
    """The whole chain on the bucket, ingest from s3:// sources included: the same store, weights and scores."""
    bucket, (_, store_local), (_, run_local), (_, forecast_local) = (
        chain["bucket"],
        *(chain["paths"][k] for k in ("store", "run", "forecast")),
    )
    store, run, forecast = (
        f"{bucket}/all/store.zarr",
        f"{bucket}/all/run",
        f"{bucket}/all/forecast.zarr",
    )
    assert main(["ingest", f"{bucket}/src/era5_*.nc", "--out", store, "--no-progress"]) == 0
    for name in ("data", "mean", "std", "diff_std", "climatology"):
        np.testing.assert_array_equal(
            open_store(store)[name].values, open_store(store_local)[name].values
        )
    _train_and_run(store, run, forecast)
    got = torch.load(staging.local_copy(f"{run}/best.ckpt"), weights_only=True)["state_dict"]
    want = torch.load(Path(run_local) / "best.ckpt", weights_only=True)["state_dict"]
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)
    reference = tmp_path / "scores.nc"
    assert (
        main(
            [
                "score",
                forecast_local,
                "--truth",
                store_local,
                "--out",
                str(reference),
                "--no-progress",
                "--no-spectra",
            ]
        )
        == 0
    )
    _score_and_compare(forecast, store, f"{bucket}/all/scores.nc", reference)


def test_a_forecast_being_published_is_refused_and_another_request_is_refused(
    chain: dict, capsys: pytest.CaptureFixture
) -> None:
    (store, _), (run, _), (forecast, _) = (chain["paths"][k] for k in ("store", "run", "forecast"))
    capsys.readouterr()
    code = main(
        [
            "run",
            "--checkpoint",
            f"{run}/best.ckpt",
            "--data",
            store,
            "--out",
            forecast,
            "--init",
            "2020-01-02T06",
            "--steps",
            "2",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(
        f"forecast run: error: {forecast}: output holds a finished forecast with other settings (init_times"
    )
    # a publish stopped after the data objects, before the metadata: readers refuse it ...
    args = [
        "run",
        "--checkpoint",
        f"{run}/best.ckpt",
        "--data",
        store,
        "--out",
        forecast,
        "--init",
        "2020-01-02T06",
        "--steps",
        "2",
        "--no-progress",
    ]
    with _stopped_before_metadata(), pytest.raises(_Stopped):
        main([*args, "--overwrite"])
    _assert_refused_while_publishing(forecast, store, capsys)
    # ... and the same command, even without --overwrite, publishes it from the stage
    assert main(args) == 0
    _assert_published(forecast, "2020-01-02T06", chain)


class _Stopped(RuntimeError):
    """Stands for a kill (not an error that the code words; fsspec would swallow a BaseException in its loop)."""


@contextlib.contextmanager
def _stopped_before_metadata():
    """Uploads of Zarr metadata stop the process (after the data objects were uploaded)."""
    import s3fs

    real = s3fs.S3FileSystem._put_file

    async def put_file(self, lpath, rpath, *args, **kwargs):
        if str(rpath).endswith("zarr.json"):
            raise _Stopped
        return await real(self, lpath, rpath, *args, **kwargs)

    s3fs.S3FileSystem.clear_instance_cache()  # (cached instances hold their sync methods already)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put_file)
            yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def _assert_refused_while_publishing(
    forecast: str, store: str, capsys: pytest.CaptureFixture
) -> None:
    manifest = json.loads(storage.read_bytes(forecast + ".manifest.json"))
    assert manifest["status"] == "publishing"
    assert not storage.exists(
        f"{forecast}/zarr.json"
    )  # the old root is gone: no mix of old and new is readable
    err = _one_line_error(
        capsys, ["score", forecast, "--truth", store, "--no-progress", "--no-spectra"]
    )
    assert f"{forecast}: the forecast is incomplete (its manifest says 'publishing')" in err


def _assert_published(forecast: str, init: str, chain: dict) -> None:
    """The forecast on the bucket is finished and holds what a run on local paths writes."""
    manifest = json.loads(storage.read_bytes(forecast + ".manifest.json"))
    assert manifest["status"] == "finished" and manifest["init_times"] == [f"{init}:00"]
    (_, store_local), (_, run_local) = chain["paths"]["store"], chain["paths"]["run"]
    reference = chain["tmp"] / f"reference-{init}.zarr"
    if not reference.exists():
        args = ["--init", init, "--steps", "2", "--no-progress", "--out", str(reference)]
        assert (
            main(["run", "--checkpoint", f"{run_local}/best.ckpt", "--data", store_local, *args])
            == 0
        )
    got = xr.open_zarr(storage.zarr_store(forecast, read_only=True), decode_timedelta=True)
    want = xr.open_zarr(reference, decode_timedelta=True)
    for name in want.data_vars:
        np.testing.assert_array_equal(got[name].values, want[name].values)


@pytest.mark.slow
def test_a_publish_killed_by_sigkill_is_refused_then_completed(
    chain: dict, capsys: pytest.CaptureFixture
) -> None:
    """SIGKILL of 'forecast run' while it uploads the metadata: the 'publishing' manifest makes readers
    refuse the forecast; the same command then takes over the dead process's lock and publishes it."""
    (store, _), (run, _), (forecast, _) = (chain["paths"][k] for k in ("store", "run", "forecast"))
    script = (
        "import os, signal, sys\n"
        "import s3fs\n"
        "real = s3fs.S3FileSystem._put_file\n"
        "async def put_file(self, lpath, rpath, *args, **kwargs):\n"
        "    if str(rpath).endswith('zarr.json'):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return await real(self, lpath, rpath, *args, **kwargs)\n"
        "s3fs.S3FileSystem._put_file = put_file\n"
        "from forecast.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    args = [
        "run",
        "--checkpoint",
        f"{run}/best.ckpt",
        "--data",
        store,
        "--out",
        forecast,
        "--init",
        "2020-01-02T12",
        "--steps",
        "2",
        "--no-progress",
    ]
    run_until_killed(script, [*args, "--overwrite"])
    assert storage.exists(forecast + ".lock")  # the dead process's lock is left ...
    _assert_refused_while_publishing(forecast, store, capsys)
    assert main(args) == 0  # ... and taken over (same host, process gone)
    _assert_published(forecast, "2020-01-02T12", chain)
    assert not storage.exists(forecast + ".lock")


def _one_line_error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    capsys.readouterr()
    code = main(args)
    err = "\n".join(
        line
        for line in capsys.readouterr().err.strip().splitlines()
        if "client_session" not in line and "Unclosed" not in line
    )  # (aiohttp may warn about sessions of s3fs instances dropped from the cache)
    assert code == 1 and len(err.splitlines()) == 1, err
    return err


def test_bad_urls_of_train_run_and_score_are_one_line_errors(
    chain: dict, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    (store, store_local), (run, _), (forecast, _) = (
        chain["paths"][k] for k in ("store", "run", "forecast")
    )
    err = _one_line_error(
        capsys,
        ["train", "--data", "az://container/store.zarr", "--out", str(tmp_path / "r"), *TRAIN],
    )
    assert (
        "az://container/store.zarr: no filesystem for az:// is installed" in err
        and "pip install adlfs" in err
    )
    err = _one_line_error(
        capsys, ["train", "--data", store_local, "--out", "nosuch://x/run", *TRAIN]
    )
    assert (
        err.startswith("forecast train: error: nosuch://x/run")
        and "unknown URL scheme nosuch://" in err
    )
    missing = "s3://no-such-bucket-here"
    err = _one_line_error(
        capsys,
        [
            "run",
            "--checkpoint",
            f"{missing}/best.ckpt",
            "--data",
            store,
            "--out",
            str(tmp_path / "f.zarr"),
            *RUN,
        ],
    )
    assert f"{missing}/best.ckpt: not found" in err and "does the bucket exist" in err
    err = _one_line_error(
        capsys,
        [
            "run",
            "--checkpoint",
            f"{run}/best.ckpt",
            "--data",
            store,
            "--out",
            f"{missing}/fc.zarr",
            *RUN,
        ],
    )
    assert f"{missing}/fc.zarr" in err and "not found" in err
    err = _one_line_error(
        capsys, ["score", f"{missing}/fc.zarr", "--truth", store, "--no-progress"]
    )
    assert f"{missing}/fc.zarr" in err
    err = _one_line_error(
        capsys,
        [
            "score",
            forecast,
            "--truth",
            store,
            "--out",
            f"{missing}/scores.nc",
            "--no-progress",
            "--no-spectra",
        ],
    )
    assert f"{missing}/scores.nc: not found" in err


def test_an_unauthorised_bucket_is_a_one_line_error(
    chain: dict, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import s3fs

    from tests.pipelines.test_object_storage import _Forbidden

    store_local = chain["paths"]["store"][1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
        s3fs.S3FileSystem.clear_instance_cache()
        err = _one_line_error(
            capsys, ["train", "--data", store_local, "--out", "s3://private-bucket/run", *TRAIN]
        )
        assert (
            "s3://private-bucket/run" in err
            and "access denied" in err
            and "AWS_ACCESS_KEY_ID" in err
        )
        err = _one_line_error(
            capsys,
            ["score", "s3://private-bucket/fc.zarr", "--truth", store_local, "--no-progress"],
        )
        assert "s3://private-bucket/fc.zarr" in err and "access denied" in err
    finally:
        server.shutdown()
        s3fs.S3FileSystem.clear_instance_cache()
