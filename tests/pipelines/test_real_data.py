"""Ingest the real reanalysis files in ../shared/data/real and check values survive exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.store import open_store, store_grid
from pipelines.ingest import ingest


def test_era5_gaussian_netcdf_values_exact(real_data: Path, tmp_path: Path) -> None:
    path = real_data / "era5_tl31_19590102T00.nc"
    out = tmp_path / "tl31.zarr"
    report = ingest(
        [path], out, channels=["z500", "t850", "u250", "v250", "q700"], step="6h", progress=False
    )
    store = open_store(out)
    assert report.grid == "legendre-gauss 32x64" and report.regrid_method == "identity"
    assert store_grid(store).kind == "legendre-gauss"
    source = xr.open_dataset(path)
    for channel, (name, level) in {
        "z500": ("geopotential", 500),
        "t850": ("temperature", 850),
        "q700": ("specific_humidity", 700),
    }.items():
        expected = (
            source[name].sel(level=level).transpose("latitude", "longitude").values[::-1]
        )  # source is (level, lon, lat), lat ascending
        np.testing.assert_array_equal(
            store["data"].sel(channel=channel).isel(time=0).values, expected
        )
    assert (
        4.9e4 < float(store["mean"].sel(channel="z500")) < 5.8e4
    )  # geopotential at 500 hPa, m2 s-2
    assert np.isnan(store["diff_std"].values).all()  # one time step: no tendencies


def test_era5_grib_ensemble_member(real_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("cfgrib")
    path = real_data / "era5-levels-members.grib"
    out = tmp_path / "grib.zarr"
    report = ingest([path], out, member=4, progress=False)
    store = open_store(out)
    assert report.channels == ["z500", "z850", "t500", "t850"]
    assert report.step == "12h" and store.sizes["time"] == 4 and report.grid == "equiangular 61x120"
    source = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})
    np.testing.assert_array_equal(
        store["data"].sel(channel="t850").values,
        source["t"].sel(number=4, isobaricInhPa=850).values,
    )


def test_ncep_air_temperature_zarr_values_exact(real_data: Path, tmp_path: Path) -> None:
    path = real_data / "air_temperature.zarr"
    out = tmp_path / "ncep.zarr"
    report = ingest([path], out, start="2013-06-01", end="2013-07-31T18", progress=False)
    store = open_store(out)
    assert report.channels == ["t2m"] and report.grid == "regional 25x53"
    assert store.sizes["time"] == 61 * 4
    source = xr.open_zarr(path)["air"].sel(time=slice("2013-06-01", "2013-07-31T18"))
    np.testing.assert_array_equal(
        store["data"].isel(channel=0).values, source.values.astype(np.float32)
    )
    np.testing.assert_array_equal(store["longitude"].values, source["lon"].values)
    assert store.attrs["grid_kind"] == "regional"


def test_uk_grib_longitudes_across_greenwich_stay_contiguous(
    real_data: Path, tmp_path: Path
) -> None:
    pytest.importorskip("cfgrib")
    path = real_data / "era5-2mt-2019-03-uk.grib"
    out = tmp_path / "uk.zarr"
    ingest([path], out, step="6h", end="2019-03-03T18", progress=False)
    store = open_store(out)
    lon = store["longitude"].values
    assert lon[0] == 350.0 and lon[-1] == 362.0 and np.allclose(np.diff(lon), 0.25)
    source = xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""})["t2m"]
    np.testing.assert_array_equal(
        store["data"].isel(channel=0, time=2).values, source.sel(time="2019-03-01T12").values
    )
