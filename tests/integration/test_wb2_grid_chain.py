"""WeatherBench2's 5.625-degree grid with poles (33x64) end to end: ingest, train, run --layout wb2, score.

The source is a WeatherBench2-style Zarr at 1.5 degrees (240x121 with poles,
latitude ascending, long names, a ``level`` dim), regridded to 33x64 by
ingest; the forecast must come out on WeatherBench2's own coordinates, so
that it lines up with its ERA5 and climatology files.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from forecast.cli.main import main
from forecast.grid import Grid
from forecast.scoring.scores_file import open_scores


def wb2_source(path, grid_name="240x121_equiangular_with_poles", times=16):
    """A WeatherBench2-style ERA5 Zarr: smooth fields drifting eastwards."""
    grid = Grid.from_wb2_name(grid_name)
    lat = grid.latitude[::-1]  # ascending, as WeatherBench2 stores it
    lon = grid.longitude
    time = pd.date_range("2020-01-01", periods=times, freq="6h")
    la, lo = np.deg2rad(lat)[None, :, None], np.deg2rad(lon)[None, None, :]
    t = np.arange(times)[:, None, None]
    pattern = np.cos(la) * np.sin(2 * lo - 0.2 * t) + 0.3 * np.sin(la)
    level = np.array([500, 850])
    ds = xr.Dataset(
        {
            "geopotential": (
                ("time", "level", "latitude", "longitude"),
                np.stack([54000 + 2000 * pattern, 14000 + 900 * pattern], axis=1).astype(
                    np.float32
                ),
                {"units": "m**2 s**-2"},
            ),
            "temperature": (
                ("time", "level", "latitude", "longitude"),
                np.stack([250 + 10 * pattern, 275 + 12 * pattern], axis=1).astype(np.float32),
                {"units": "K"},
            ),
            "2m_temperature": (
                ("time", "latitude", "longitude"),
                (285 + 15 * pattern).astype(np.float32),
                {"units": "K"},
            ),
        },
        coords={"time": time, "level": level, "latitude": lat, "longitude": lon},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", zarr_format=3, consolidated=True)
    return path


def test_33x64_through_ingest_train_run_and_score(tmp_path):
    source = wb2_source(tmp_path / "era5_240x121.zarr")
    store = tmp_path / "store.zarr"
    assert (
        main(["ingest", str(source), "--out", str(store), "--grid", "33x64", "--no-progress"]) == 0
    )
    opened = xr.open_zarr(store)
    assert opened.attrs["grid_kind"] == "equiangular" and opened.sizes["latitude"] == 33
    run_dir = tmp_path / "run"
    assert main([
        "train", "--data", str(store), "--model", "sfno", "--out", str(run_dir),
        "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "2", "--batch-size", "2",
        "--workers", "0", "--device", "cpu", "--val-fraction", "0.3", "--val-every", "2",
        "--val-samples", "2", "--no-progress",
    ]) == 0  # fmt: skip
    forecast = tmp_path / "forecast.zarr"
    assert main([
        "run", "--checkpoint", str(run_dir / "best.ckpt"), "--data", str(store),
        "--init", "2020-01-02T00", "--steps", "2", "--members", "2", "--perturbation", "gaussian",
        "--layout", "wb2", "--out", str(forecast), "--no-progress",
    ]) == 0  # fmt: skip
    ds = xr.open_zarr(forecast)
    # WeatherBench2's 64x33 grid with poles, as its regrid.py writes it
    np.testing.assert_allclose(ds["latitude"].values, np.linspace(-90, 90, 33), atol=1e-9)
    np.testing.assert_allclose(ds["longitude"].values, np.arange(64) * 5.625, atol=1e-9)
    assert ds.attrs["wb2_grid"] == "64x33_equiangular_with_poles"
    assert ds["geopotential"].dims == (
        "time",
        "prediction_timedelta",
        "realization",
        "level",
        "latitude",
        "longitude",
    )
    assert np.isfinite(ds["geopotential"].values).all()
    scores_path = tmp_path / "scores.nc"
    assert main([
        "score", str(forecast), "--truth", str(store), "--out", str(scores_path), "--no-progress",
        "--no-spectra",
    ]) == 0  # fmt: skip
    scores = open_scores(scores_path)
    assert np.isfinite(scores["rmse"].sel(model="forecast", region="global").values).all()
    # lead 0 is the (perturbed) analysis: its error grows with lead time
    rmse = scores["rmse"].sel(model="forecast", region="global", channel="z500").values
    assert rmse[0] < rmse[-1]
