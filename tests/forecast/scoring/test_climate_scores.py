"""forecast score --climate: a perfect run scores zero, a shifted run its shift, drift as numpy computes it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import xarray as xr

from forecast.grid import Grid
from forecast.scoring.climate import climate_scores, open_products
from forecast.store import open_store
from forecast.time import time_index
from inference.climate import ClimateWriter, HistogramSpec
from inference.writers import forecast_template
from tests.inference.conftest import write_store

CHANNELS = ["z500", "t850", "u10m", "t2m"]
STEPS = 4 * 365 * 2  # two noleap years
NLAT, NLON = 8, 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two noleap years whose t2m has a seasonal cycle and a warmer second year (3 K)."""
    import zarr

    path = tmp_path_factory.mktemp("climate") / "store.zarr"
    write_store(
        path,
        calendar="noleap",
        start="2001-01-01",
        periods=STEPS + 1,
        nlat=NLAT,
        nlon=NLON,
        time_chunk=730,
    )
    data = zarr.open_group(path, mode="r+")["data"]
    values = data[:]
    step = np.arange(STEPS + 1)
    signal = 3.0 * (step >= 4 * 365) + 5.0 * np.sin(2 * np.pi * step / (4 * 365))
    values[:, CHANNELS.index("t2m")] += signal[:, None, None].astype(np.float32)
    data[:] = values
    return open_store(path)


def _run(store, out, shift=0.0, bins=20):
    """Products of a 'model' that replays the store (plus ``shift`` on t2m), through ClimateWriter."""
    grid = Grid.equiangular(NLAT, NLON)
    init = store["time"].values[:1]
    template = forecast_template(
        CHANNELS, grid, init, STEPS, dt.timedelta(hours=6), 1, "noleap", {}
    )
    spec = HistogramSpec(
        bins,
        store["mean"].values - 3 * store["std"].values,
        store["mean"].values + 3 * store["std"].values,
    )
    writer = ClimateWriter(out, ("monthly", "annual"), spec)
    writer.create(template)
    data = store["data"].values
    offset = np.zeros((1, len(CHANNELS), 1, 1), dtype=np.float32)
    offset[0, CHANNELS.index("t2m")] = shift
    for lead in range(STEPS + 1):
        writer.write(0, 0, lead, data[lead][None] + offset)
    writer.finish()
    # open_products reads the manifest's list of products; write the list as a run would
    import json

    out.with_name(out.name + ".manifest.json").write_text(
        json.dumps({"products": writer.products()})
    )
    return open_products(out)


def test_perfect_run_scores_zero_and_shift_scores_shift(tmp_path, store):
    perfect = climate_scores(_run(store, tmp_path / "perfect.zarr"), store)
    np.testing.assert_allclose(perfect["time_mean_rmse"].values, 0.0, atol=1e-3)
    np.testing.assert_allclose(perfect["annual_cycle_rmse"].values, 0.0, atol=1e-3)
    np.testing.assert_allclose(perfect["wasserstein"].values, 0.0, atol=1e-9)
    # drift: (second year - first year) of the store's area-weighted annual means / their std
    grid = Grid.equiangular(NLAT, NLON)
    weights = grid.area_weights()[:, None]
    years = np.asarray(time_index(store["time"].values[:STEPS]).year)
    means = np.stack(
        [
            (store["data"].values[:STEPS][years == y] * weights).mean(axis=(0, 2, 3))
            / weights.mean()
            for y in (2001, 2002)
        ]
    )
    spread = means.std(axis=0, ddof=1)
    t2m = CHANNELS.index("t2m")
    assert means[1, t2m] - means[0, t2m] == pytest.approx(3.0, rel=1e-3)
    assert float(perfect["drift"].sel(channel="t2m")) == pytest.approx(
        (means[1, t2m] - means[0, t2m]) / spread[t2m], rel=1e-4
    )
    assert float(perfect["interannual_std"].sel(channel="t2m")) == pytest.approx(
        spread[t2m], rel=1e-4
    )

    shifted = climate_scores(_run(store, tmp_path / "shifted.zarr", shift=2.0), store)
    t2m = {"channel": "t2m"}
    assert float(shifted["time_mean_bias"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    assert float(shifted["time_mean_rmse"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    assert float(shifted["annual_cycle_rmse"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    bin_width = 6 * float(store["std"].sel(channel="t2m")) / 20
    assert (
        abs(float(shifted["wasserstein"].sel(t2m)) - 2.0) <= bin_width
    )  # W1 of a shift is the shift
    others = shifted["time_mean_rmse"].sel(channel=["z500", "t850", "u10m"]).values
    np.testing.assert_allclose(others, 0.0, atol=1e-3)


def test_cli_climate_scores_file_and_plots(tmp_path, store, capsys):
    from forecast.cli.main import main

    out = tmp_path / "run.zarr"
    _run(store, out, shift=1.0)
    store_path = tmp_path / "store_copy.zarr"
    store.to_zarr(store_path, zarr_format=3)
    code = main(
        [
            "score",
            str(out),
            "--truth",
            str(store_path),
            "--climate",
            "--out",
            str(tmp_path / "scores.nc"),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    assert "time-mean RMSE" in capsys.readouterr().out
    scores = xr.open_dataset(tmp_path / "scores.nc")
    assert float(scores["time_mean_rmse"].sel(channel="t2m")) == pytest.approx(1.0, rel=1e-5)
    assert (tmp_path / "plots" / "time_mean_bias.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "annual_cycle.png").stat().st_size > 10_000
