"""The training store: opening and validation, its coordinates, climatology lookups, the diurnal cycle."""

from __future__ import annotations

import datetime as dt
import warnings

import cftime
import numpy as np
import pytest
import xarray as xr

from forecast.errors import DataError
from forecast.grid import Grid
from forecast.store import (
    STORE_FORMAT_VERSION,
    climatology_at,
    diurnal_cycle,
    open_store,
    require_channels,
    store_calendar,
    store_channels,
    store_grid,
    store_step,
)
from tests.inference.conftest import CHANNELS, write_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store") / "s.zarr")


def _rewrite(source, target, change):
    ds = xr.open_zarr(source).load()
    ds = change(ds)
    for name in ds.variables:
        ds[name].encoding = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(target, mode="w", zarr_format=3)
    return target


def test_open_and_describe(store_path):
    ds = open_store(store_path)
    assert store_channels(ds) == CHANNELS
    assert store_grid(ds) == Grid.equiangular(16, 32)
    assert store_step(ds) == dt.timedelta(hours=6)
    assert store_calendar(ds) == "standard"
    require_channels(ds, ["t2m", "z500"])
    with pytest.raises(DataError, match=r"store lacks channel\(s\) q700, msl; it has z500"):
        require_channels(ds, ["z500", "q700", "msl"], store_path)


def test_chunk_bytes_gathers_whole_store_chunks_per_dask_chunk(store_path):
    one = open_store(store_path)  # 12 states of 4 channels 16x32: one Dask chunk per time step
    assert one["data"].chunks[0] == (1,) * 12
    step = 4 * 16 * 32 * 4
    five = open_store(store_path, chunk_bytes=5 * step + 1)
    assert five["data"].chunks[0] == (5, 5, 2)
    np.testing.assert_array_equal(five["data"].values, one["data"].values)
    assert five["data"].attrs == one["data"].attrs and five.attrs == one.attrs
    assert open_store(store_path, chunk_bytes=1)["data"].chunks[0] == (1,) * 12


def test_the_calendar_comes_from_the_attribute_or_the_times(tmp_path, store_path):
    ds360 = open_store(write_store(tmp_path / "c.zarr", calendar="360_day", start="2000-02-29"))
    assert store_calendar(ds360) == "360_day"
    assert isinstance(ds360["time"].values[0], cftime.Datetime360Day)
    without = open_store(store_path).copy()
    without.attrs = {k: v for k, v in without.attrs.items() if k != "calendar"}
    assert store_calendar(without) == "standard"


def test_what_is_not_a_store_is_a_one_line_error(tmp_path, store_path):
    with pytest.raises(FileNotFoundError):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(DataError, match="not a readable Zarr store") as info:
        open_store(tmp_path / "empty.zarr")
    assert "\n" not in str(info.value)
    no_stats = _rewrite(store_path, tmp_path / "no_stats.zarr", lambda ds: ds.drop_vars("diff_std"))
    with pytest.raises(DataError, match="not a training store: missing diff_std"):
        open_store(no_stats)

    def newer(ds):
        ds.attrs["store_format_version"] = STORE_FORMAT_VERSION + 1
        return ds

    with pytest.raises(
        DataError, match=r"store format version 2 is newer than this software reads"
    ):
        open_store(_rewrite(store_path, tmp_path / "newer.zarr", newer))
    transposed = _rewrite(
        store_path,
        tmp_path / "transposed.zarr",
        lambda ds: ds.assign(data=ds["data"].transpose("channel", "time", ...)),
    )
    with pytest.raises(DataError, match=r"data has dims \('channel', 'time'"):
        open_store(transposed)


def test_climatology_takes_the_nearest_hour_and_day_cyclically(tmp_path, store_path):
    def seasonal(ds):
        days, hours = np.arange(1, 367), np.array([0, 12])
        values = np.full((366, 2, len(CHANNELS), 16, 32), np.nan, dtype=np.float32)
        for d in (10, 200):  # only two days of the year have values
            for h in range(2):
                values[d - 1, h] = d + 0.5 * h
        return (
            ds.drop_vars(["climatology", "dayofyear", "hour"])
            .assign(climatology=(("dayofyear", "hour", "channel", "latitude", "longitude"), values))
            .assign_coords(dayofyear=days, hour=hours)
        )

    ds = open_store(_rewrite(store_path, tmp_path / "clim.zarr", seasonal))
    times = np.array(
        ["2021-01-10T00", "2021-01-10T11", "2021-07-01T05", "2021-12-31T18"], "datetime64[ns]"
    )
    clim = climatology_at(ds, times)
    assert clim.dims == ("time", "channel", "latitude", "longitude")
    # day 10 at 0 h; 11 h -> 12 h; day 182 -> day 200; day 365 -> day 10 across the new year
    np.testing.assert_array_equal(clim.isel(channel=0, latitude=0, longitude=0).values,
                                  [10.0, 10.5, 200.0, 10.5])  # fmt: skip
    np.testing.assert_array_equal(clim["time"].values, times)


def test_diurnal_cycle_is_centred_and_needs_two_hours(tmp_path, store_path):
    with pytest.raises(DataError, match="has 1 hour of day; a diurnal cycle needs two or more"):
        diurnal_cycle(open_store(store_path), CHANNELS)

    def two_hours(ds):
        values = np.zeros((2, 2, len(CHANNELS), 16, 32), dtype=np.float32)
        values[:, 0, 1] = 274.0  # t850: 274 K at 0 h, 276 K at 12 h
        values[:, 1, 1] = 276.0
        return (
            ds.drop_vars(["climatology", "hour"])
            .assign(climatology=(("dayofyear", "hour", "channel", "latitude", "longitude"), values))
            .assign_coords(hour=[0, 12])
        )

    ds = open_store(_rewrite(store_path, tmp_path / "two.zarr", two_hours))
    hours, table = diurnal_cycle(ds, ["t850", "z500"])
    np.testing.assert_array_equal(hours, [0.0, 12.0])
    assert table.shape == (2, 2, 16, 32)
    np.testing.assert_allclose(table[:, 0, 0, 0], [-1.0, 1.0])  # centred over the hours
    np.testing.assert_allclose(table[:, 1], 0.0)
    with pytest.raises(DataError, match="no values on the days of year asked for"):
        diurnal_cycle(ds, ["t850"], np.array(["2020-06-01"], "datetime64[ns]"))
