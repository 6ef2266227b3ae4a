"""Ingest, train, run and score with every path an s3:// URL, on a real S3-compatible server (moto on 127.0.0.1).

Each step is cross-checked against the same step on local paths: the
objects on the bucket hold what the local run wrote (checkpoint weights,
forecast values, scores).
"""

from __future__ import annotations

import json
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
from tests.object_storage import s3_module, s3_server  # noqa: F401
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf

TRAIN = [
    "--model", "sfno", "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "2",
    "--batch-size", "2", "--workers", "0", "--device", "cpu", "--val-fraction", "0.3",
    "--val-every", "2", "--val-samples", "2", "--no-progress",
]  # fmt: skip
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
    ds = era5_like(hours("2020-01-01", 16), lat=np.linspace(90, -90, 9), lon=np.arange(0, 360, 20.0))
    local = tmp_path / "local"
    local.mkdir()
    for i in range(2):
        path = write_netcdf(ds.isel(valid_time=slice(8 * i, 8 * i + 8)), local / f"era5_{i}.nc")
        fs.put_file(str(path), f"{s3[5:]}/src/{path.name}")
    paths = {
        "store": (f"{s3}/store.zarr", str(local / "store.zarr")),
        "run": (f"{s3}/runs/sfno", str(local / "run")),
        "forecast": (f"{s3}/fc/forecast.zarr", str(local / "forecast.zarr")),
    }
    for pick, sources in ((0, f"{s3}/src/era5_*.nc"), (1, str(local / "era5_*.nc"))):
        store, run, forecast = (paths[k][pick] for k in ("store", "run", "forecast"))
        assert main(["ingest", sources, "--out", store, "--no-progress"]) == 0
        assert main(["train", "--data", store, "--out", run, *TRAIN]) == 0
        checkpoint = storage.join(run, "best.ckpt")
        assert main(["run", "--checkpoint", checkpoint, "--data", store, "--out", forecast, *RUN]) == 0
    return {"bucket": s3, "paths": paths, "tmp": tmp_path}


def test_ingest_train_run_and_score_on_s3_match_local_paths(chain: dict, capsys: pytest.CaptureFixture) -> None:
    paths, tmp = chain["paths"], chain["tmp"]
    (store, store_local), (run, run_local), (forecast, forecast_local) = paths["store"], paths["run"], paths["forecast"]
    # the run directory: every file published, the weights those of the same run on local paths
    for name in ("config.yaml", "latest.ckpt", "best.ckpt", "latest.state.pt", "metrics.jsonl"):
        assert storage.exists(storage.join(run, name)), name
    remote_weights = torch.load(staging.local_copy(f"{run}/best.ckpt"), weights_only=True)["state_dict"]
    local_weights = torch.load(Path(run_local) / "best.ckpt", weights_only=True)["state_dict"]
    assert remote_weights.keys() == local_weights.keys()
    for key in local_weights:
        torch.testing.assert_close(remote_weights[key], local_weights[key], rtol=0, atol=0)
    metrics = storage.read_bytes(f"{run}/metrics.jsonl").decode().splitlines()
    assert [json.loads(line)["kind"] for line in metrics] == [
        json.loads(line)["kind"] for line in (Path(run_local) / "metrics.jsonl").read_text().splitlines()
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
    assert not list((tmp / "staging").glob("s3-*/forecast.zarr*"))  # the stage is emptied after publishing
    # a second run of the same request finds it published and does nothing
    capsys.readouterr()
    assert main(["run", "--checkpoint", f"{run}/best.ckpt", "--data", store, "--out", forecast, *RUN]) == 0
    assert "already finished; nothing to do" in capsys.readouterr().err
    # scores: inputs and outputs on the bucket, the same numbers as on local paths
    scores = f"{chain['bucket']}/scores/scores.nc"
    assert main(["score", forecast, "--truth", store, "--out", scores, "--no-progress", "--no-spectra"]) == 0
    local_scores = tmp / "scores.nc"
    assert main(["score", forecast_local, "--truth", store_local, "--out", str(local_scores), "--no-progress", "--no-spectra"]) == 0
    got, want = open_scores(staging.local_copy(scores)), open_scores(local_scores)
    assert set(got.data_vars) == set(want.data_vars)
    for name in want.data_vars:
        if want[name].dtype.kind == "f":
            np.testing.assert_allclose(got[name].values, want[name].values, rtol=1e-6)
        else:
            np.testing.assert_array_equal(got[name].values, want[name].values)


def test_a_forecast_being_published_is_refused_and_another_request_is_refused(chain: dict, capsys: pytest.CaptureFixture) -> None:
    (store, _), (run, _), (forecast, _) = (chain["paths"][k] for k in ("store", "run", "forecast"))
    capsys.readouterr()
    code = main(["run", "--checkpoint", f"{run}/best.ckpt", "--data", store, "--out", forecast, "--init", "2020-01-02T06", "--steps", "2", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith(f"forecast run: error: {forecast}: output holds a finished forecast with other settings (init_times")
    # a publish that stops after withdrawing the old one (a kill): readers refuse it until a rerun publishes again
    staging.withdraw(forecast)
    manifest_key = forecast + ".manifest.json"
    storage.write_bytes(manifest_key, json.dumps({"status": "running"}).encode())
    code = main(["score", forecast, "--truth", store, "--no-progress", "--no-spectra"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and f"{forecast}: the forecast is incomplete" in err
    assert main(["run", "--checkpoint", f"{run}/best.ckpt", "--data", store, "--out", forecast, *RUN, "--overwrite"]) == 0
    assert json.loads(storage.read_bytes(manifest_key))["status"] == "finished"
    assert main(["score", forecast, "--truth", store, "--no-progress", "--no-spectra"]) == 0
