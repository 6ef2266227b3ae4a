"""The synthetic sea-surface temperature (``forecast synth --sst``) and its forcing store."""

from __future__ import annotations

import cftime
import numpy as np
import xarray as xr

from forecast.grid import Grid
from forecast.store import open_store
from pipelines.synthetic import synthesize
from pipelines.synthetic_forcing import sst_field
from tests.forcing_stores import store_times

GRID = Grid.equiangular(16, 32)


def test_sst_is_slow_seasonal_and_a_function_of_each_time_alone():
    times = store_times("2001-01-01", 4 * 365, "noleap")
    field = sst_field(times, GRID, seed=1)
    assert field.shape == (len(times), 16, 32) and field.dtype == np.float32
    assert 268.0 < field.min() and field.max() < 302.0
    assert np.abs(np.diff(field, axis=0)).max() < 0.1  # K per 6 h: slow beside the weather
    np.testing.assert_array_equal(sst_field(times[100:103], GRID, seed=1), field[100:103])
    assert not np.array_equal(sst_field(times[:3], GRID, seed=2), field[:3])
    zonal = field.mean(axis=2)  # (time, lat)
    warmest = GRID.latitude[zonal.argmax(axis=1)]
    january, july = warmest[:4 * 31].mean(), warmest[4 * 181 : 4 * 212].mean()  # fmt: skip
    assert january < 0 < july  # the warm band follows the sun
    # the seasonal phase follows the calendar: 1 July is 180/360 of a 360_day year, 181/365 of noleap
    phase_360 = sst_field([cftime.datetime(2001, 7, 1, calendar="360_day")], GRID)
    phase_noleap = sst_field([cftime.datetime(2001, 7, 1, calendar="noleap")], GRID)
    assert not np.array_equal(phase_360, phase_noleap)


def test_synth_sst_writes_an_era5_sst_that_ingests_into_a_forcing_store(tmp_path):
    from forecast.cli.main import main

    paths = synthesize(
        tmp_path / "raw", GRID, start="2020-02-28", days=2, spinup_days=0, calendar="noleap",
        progress=False, sst=True,
    )  # fmt: skip
    assert len(paths) == 2  # February and March
    ds = xr.open_mfdataset(
        paths, combine="by_coords", decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)
    ).load()
    assert ds["sst"].dims == ("valid_time", "latitude", "longitude")
    assert ds["sst"].attrs["units"] == "K"
    assert ds["sst"].attrs["standard_name"] == "sea_surface_temperature"
    np.testing.assert_allclose(
        ds["sst"].values, sst_field(ds["valid_time"].values, GRID), atol=1e-4
    )
    plain = synthesize(
        tmp_path / "plain", GRID, start="2020-02-28", days=1, spinup_days=0, progress=False
    )
    assert "sst" not in xr.open_dataset(plain[0]).variables
    out = tmp_path / "sst.zarr"
    assert (
        main(["ingest", *map(str, paths), "--out", str(out), "--channels", "sst", "--no-progress"])
        == 0
    )
    store = open_store(out)
    assert [str(c) for c in store["channel"].values] == ["sst"]
    assert store.attrs["calendar"] == "noleap"
    np.testing.assert_allclose(
        store["data"].values[:, 0], ds["sst"].values, atol=1e-3
    )  # the store's orientation is the file's (latitude descending, longitude from 0)
