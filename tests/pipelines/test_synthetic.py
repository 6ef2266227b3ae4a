"""Tests of the synthetic ERA5-style generator (``forecast synth``): layout, physics, determinism."""

from __future__ import annotations

import cftime
import numpy as np
import pytest
import xarray as xr

from forecast.cli.main import main
from forecast.errors import CalendarError, ConfigError, GridError
from forecast.grid import Grid
from pipelines.synthetic import synthesize
from pipelines.synthetic_fields import derive_fields

GRID = Grid.parse("32x64")
CFTIME = xr.coders.CFDatetimeCoder(use_cftime=True)
PRESSURE = ("z", "t", "u", "v")
SINGLE = ("t2m", "u10", "v10", "msl")
UNITS = {
    "z": "m**2 s**-2",
    "t": "K",
    "u": "m s**-1",
    "v": "m s**-1",
    "t2m": "K",
    "u10": "m s**-1",
    "v10": "m s**-1",
    "msl": "Pa",
}


def _run(path, **kwargs):
    options = {"start": "2020-01-01", "days": 1, "spinup_days": 2, "seed": 0, "progress": False}
    options.update(kwargs)
    return synthesize(path, GRID, **options)


@pytest.fixture(scope="module")
def month_run(tmp_path_factory):
    """30 days from 2020-01-20 (crosses into February), 6-hourly, 10 days of spin-up."""
    out = tmp_path_factory.mktemp("synth_month")
    paths = synthesize(
        out, GRID, start="2020-01-20", days=30, spinup_days=10, seed=3, progress=False
    )
    return paths, xr.open_mfdataset(paths, combine="by_coords").load()


def _area_mean(field: xr.DataArray) -> xr.DataArray:
    weights = xr.DataArray(
        GRID.area_weights(), dims="latitude", coords={"latitude": field.latitude}
    )
    return field.weighted(weights).mean(("latitude", "longitude"))


# -- layout ------------------------------------------------------------------------------
def test_layout_and_attributes_as_cds(month_run):
    paths, _ = month_run
    assert [p.name for p in paths] == ["era5_synthetic_2020-01.nc", "era5_synthetic_2020-02.nc"]
    counts = []
    for path in paths:
        ds = xr.open_dataset(path)
        assert set(ds.dims) == {"valid_time", "pressure_level", "latitude", "longitude"}
        assert set(ds.data_vars) == set(PRESSURE + SINGLE)
        for name in PRESSURE:
            assert ds[name].dims == ("valid_time", "pressure_level", "latitude", "longitude")
        for name in SINGLE:
            assert ds[name].dims == ("valid_time", "latitude", "longitude")
        for name, units in UNITS.items():
            assert ds[name].attrs["units"] == units
            assert ds[name].attrs["long_name"]
            assert ds[name].dtype == np.float32
        assert ds["z"].attrs["GRIB_paramId"] == 129 and ds["t2m"].attrs["GRIB_paramId"] == 167
        assert ds["z"].attrs["standard_name"] == "geopotential"
        assert ds.latitude.values[0] == 90.0 and ds.latitude.values[-1] == -90.0
        assert np.all(np.diff(ds.latitude.values) < 0)
        assert (
            ds.latitude.attrs["units"] == "degrees_north"
            and ds.longitude.attrs["units"] == "degrees_east"
        )
        assert ds.longitude.values[0] == 0.0 and ds.longitude.values.max() < 360.0
        assert np.all(np.diff(ds.longitude.values) > 0)
        assert (
            list(ds.pressure_level.values) == [850.0, 500.0]
            and ds.pressure_level.attrs["units"] == "hPa"
        )
        assert np.issubdtype(ds.valid_time.dtype, np.datetime64)
        assert ds.valid_time.encoding["units"] == "seconds since 1970-01-01"
        assert ds.valid_time.encoding["dtype"] == np.int64
        assert ds.attrs["synthetic"] == "true" and ds.attrs["synthetic_seed"] == 3
        assert "synthetic" in ds.attrs["title"].lower() and ds.attrs["Conventions"].startswith("CF")
        counts.append(ds.sizes["valid_time"])
    assert counts == [12 * 4, 18 * 4]  # 20-31 January, 1-18 February


def test_times_regular_and_realistic_magnitudes(month_run):
    _, ds = month_run
    times = ds.valid_time.values
    assert times[0] == np.datetime64("2020-01-20T00") and len(times) == 120
    assert np.all(np.diff(times) == np.timedelta64(6, "h"))
    z500 = ds.z.sel(pressure_level=500)
    assert 5.3e4 < float(_area_mean(z500).mean()) < 5.7e4
    assert 4.4e4 < float(z500.min()) and float(z500.max()) < 6.1e4
    assert 0.9e4 < float(ds.z.sel(pressure_level=850).min())
    assert 225 < float(ds.t.min()) and float(ds.t.max()) < 305
    assert (
        float(ds.t.sel(pressure_level=850).mean()) > float(ds.t.sel(pressure_level=500).mean()) + 15
    )
    assert 9.9e4 < float(_area_mean(ds.msl).mean()) < 1.025e5
    assert 270 < float(_area_mean(ds.t2m).mean()) < 295
    assert float(np.abs(ds.u10).max()) < 30 and float(np.abs(ds.u).max()) < 90


def test_winds_are_geostrophic_with_height(month_run):
    """Westerlies where z500 falls poleward (north: u ~ -dZ/dy / f > 0), as on Earth."""
    _, ds = month_run
    zonal = ds.sel(pressure_level=500).mean(("valid_time", "longitude"))
    z = zonal.z.values
    lat = zonal.latitude.values
    mid_north = (lat > 30) & (lat < 50)
    gradient = np.gradient(z, np.deg2rad(lat) * 6.371e6)  # dZ/dy (y northwards)
    f = 2 * 7.292e-5 * np.sin(np.deg2rad(lat))
    geostrophic = -gradient / np.where(np.abs(f) > 1e-5, f, np.nan)
    assert np.all(zonal.u.values[mid_north] > 5)
    assert np.corrcoef(geostrophic[mid_north], zonal.u.values[mid_north])[0, 1] > 0.8


# -- physics ----------------------------------------------------------------------------
def test_weather_is_persistent_at_6h_and_decorrelates_by_5_days(month_run):
    _, ds = month_run
    z500 = ds.z.sel(pressure_level=500).values
    anomaly = (z500 - z500.mean(axis=0)).reshape(len(z500), -1)

    def lag_correlation(lag: int) -> float:
        pairs = zip(anomaly[:-lag], anomaly[lag:], strict=True)
        return float(np.mean([np.corrcoef(a, b)[0, 1] for a, b in pairs]))

    assert lag_correlation(1) > 0.9
    assert lag_correlation(20) < 0.5  # 5 days
    assert lag_correlation(20) < lag_correlation(1) - 0.4


def test_kinetic_energy_is_steady(month_run):
    _, ds = month_run
    wind = ds.sel(pressure_level=500)
    energy = _area_mean(0.5 * (wind.u**2 + wind.v**2)).values
    eddy = _area_mean(0.5 * ((wind.u - wind.u.mean("longitude")) ** 2 + wind.v**2)).values
    first, last = energy[:40].mean(), energy[-40:].mean()
    assert 1 / 1.3 < last / first < 1.3
    assert eddy.min() > 0.02 * energy.mean()  # eddies never die out
    assert 1 / 2 < eddy[-40:].mean() / eddy[:40].mean() < 2


def test_t2m_diurnal_cycle_peaks_in_local_afternoon(month_run):
    """Composite by local solar time over all longitudes of the 45N band: a few K, peak 12-17 h."""
    _, ds = month_run
    band = ds.t2m.sel(latitude=slice(50, 40))
    utc_hour = ds.valid_time.dt.hour.values[:, None] + ds.valid_time.dt.minute.values[:, None] / 60
    local_hour = (utc_hour + ds.longitude.values[None, :] / 15.0) % 24
    values = band.values - band.mean("valid_time").values  # (time, lat, lon), geography removed
    bins = np.broadcast_to(np.floor(local_hour).astype(int)[:, None, :], values.shape)
    composite = np.array([values[bins == hour].mean() for hour in range(24)])
    amplitude = composite.max() - composite.min()
    assert 2.0 < amplitude < 10.0
    assert 12 <= int(np.argmax(composite)) <= 17
    assert int(np.argmin(composite)) <= 6 or int(np.argmin(composite)) >= 22


def test_seasonal_cycle_of_t2m_is_opposite_in_the_hemispheres():
    lat = GRID.latitude
    lon = GRID.longitude
    zero = np.zeros(GRID.shape)
    january = derive_fields(zero, zero, zero, lat, lon, 0.0, 0.04)["t2m"].mean(axis=1)
    july = derive_fields(zero, zero, zero, lat, lon, 0.0, 0.54)["t2m"].mean(axis=1)
    north, south = (lat > 40) & (lat < 80), (lat < -40) & (lat > -80)
    assert np.all(july[north] - january[north] > 5)
    assert np.all(january[south] - july[south] > 2)


# -- determinism, calendars, packing -------------------------------------------------------
def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path):
    first = _run(tmp_path / "a", seed=7)
    second = _run(tmp_path / "b", seed=7)
    other = _run(tmp_path / "c", seed=8)
    assert first[0].read_bytes() == second[0].read_bytes()
    a, c = xr.open_dataset(first[0]), xr.open_dataset(other[0])
    difference = float(np.abs(a.z - c.z).max())
    assert difference > 100.0  # m**2 s**-2: different weather, not rounding


def test_noleap_calendar_has_no_february_29(tmp_path):
    paths = _run(tmp_path, start="2020-02-28", days=2, calendar="noleap")
    ds = xr.open_mfdataset(paths, combine="by_coords", decode_times=CFTIME)
    times = ds.valid_time.values
    assert isinstance(times[0], cftime.datetime) and times[0].calendar == "noleap"
    assert [(t.month, t.day) for t in times[::4]] == [(2, 28), (3, 1)]
    assert xr.open_dataset(paths[0], decode_times=False).valid_time.attrs["calendar"] == "noleap"


def test_360_day_calendar_has_february_30(tmp_path):
    paths = _run(tmp_path, start="2020-02-29", days=2, calendar="360_day")
    ds = xr.open_dataset(paths[0], decode_times=CFTIME)
    times = ds.valid_time.values
    assert times[0].calendar == "360_day"
    assert [(t.month, t.day) for t in times[::4]] == [(2, 29), (2, 30)]
    assert len(paths) == 1 and paths[0].name == "era5_synthetic_2020-02.nc"


def test_int16_packing_round_trip(tmp_path):
    packed = _run(tmp_path / "packed", pack_int16=True)[0]
    plain = _run(tmp_path / "plain")[0]
    raw = xr.open_dataset(packed, mask_and_scale=False)
    decoded, reference = xr.open_dataset(packed), xr.open_dataset(plain)
    for name in UNITS:
        assert raw[name].dtype == np.int16 and raw[name].attrs["_FillValue"] == -32767
        scale = float(raw[name].attrs["scale_factor"])
        error = float(
            np.abs(decoded[name].astype(np.float64) - reference[name].astype(np.float64)).max()
        )
        tolerance = 0.5 * scale + 1e-6 * float(np.abs(reference[name]).max())
        assert error <= tolerance, name
        assert int(raw[name].max()) <= 32766 and int(raw[name].min()) >= -32766


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    def broken_write(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken_write)
    with pytest.raises(OSError, match="No space"):
        _run(tmp_path, spinup_days=0)
    assert list(tmp_path.iterdir()) == []


def test_library_rejects_bad_arguments(tmp_path):
    regional = Grid("regional", np.array([60.0, 50.0]), np.array([0.0, 10.0]))
    with pytest.raises(GridError, match="global grid"):
        synthesize(tmp_path, regional, progress=False)
    with pytest.raises(ConfigError, match="positive"):
        synthesize(tmp_path, GRID, days=0, progress=False)
    with pytest.raises(CalendarError, match="360_day"):
        synthesize(tmp_path, GRID, calendar="julian", progress=False)
    assert list(tmp_path.iterdir()) == []


# -- command line ---------------------------------------------------------------------------
def test_cli_writes_files(tmp_path, capsys):
    code = main(
        [
            "synth",
            str(tmp_path),
            "--grid",
            "16x32",
            "--days",
            "1",
            "--spinup-days",
            "1",
            "--seed",
            "2",
            "--start",
            "2021-06-01",
        ]
    )
    assert code == 0
    ds = xr.open_dataset(tmp_path / "era5_synthetic_2021-06.nc")
    assert ds.sizes == {"valid_time": 4, "pressure_level": 2, "latitude": 16, "longitude": 32}
    assert "era5_synthetic_2021-06.nc" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--calendar", "lunar", "calendar"),
        ("--grid", "abc", "grid"),
        ("--days", "-1", "positive"),
        ("--step", "6 hours", "step"),
    ],
)
def test_cli_bad_arguments_give_one_line_errors(tmp_path, capsys, option, value, words):
    code = main(["synth", str(tmp_path / "out"), option, value, "--spinup-days", "0"])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("forecast synth: error:") and words in err
    assert len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_a_year_is_steady_with_a_seasonal_cycle(tmp_path):
    """365 days (noleap): kinetic energy steady month by month, seasons in t2m and the jet."""
    paths = synthesize(
        tmp_path,
        GRID,
        start="2001-01-01",
        days=365,
        calendar="noleap",
        spinup_days=20,
        progress=False,
    )
    assert len(paths) == 12
    ds = xr.open_mfdataset(paths, combine="by_coords", decode_times=CFTIME).load()
    months = ds.valid_time.dt.month
    wind = ds.sel(pressure_level=500)
    energy = _area_mean(0.5 * (wind.u**2 + wind.v**2)).groupby(months).mean().values
    eddy = (
        _area_mean(0.5 * ((wind.u - wind.u.mean("longitude")) ** 2 + wind.v**2))
        .groupby(months)
        .mean()
        .values
    )
    assert energy.max() / energy.min() < 1.6
    assert eddy.max() / eddy.min() < 2.0 and eddy.min() > 5.0
    north = (
        ds.t2m.sel(latitude=slice(70, 40)).mean(("latitude", "longitude")).groupby(months).mean()
    )
    assert float(north.sel(month=7) - north.sel(month=1)) > 10.0
    jet = wind.u.sel(latitude=slice(80, 10)).mean("longitude").groupby(months).mean()
    jet_latitude = jet.latitude.values[jet.argmax("latitude").values]
    assert jet_latitude[6] > jet_latitude[0] + 3.0  # July jet further north than January's
