"""Ingestion: layouts, orientation, statistics against numpy, calendars, append, bad input."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.cli.main import main
from forecast.errors import CalendarError, ConfigError, DataError, GridError
from forecast.grid import Grid
from forecast.store import open_store
from pipelines.ingest import ingest
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


@pytest.fixture
def two_months(tmp_path: Path) -> list[Path]:
    """Two monthly files in the new CDS layout, 6-hourly."""
    times = hours("2020-01-25", 4 * 12)  # 25 Jan .. 5 Feb
    ds = era5_like(times)
    jan = ds.isel(valid_time=ds.valid_time.dt.month == 1)
    feb = ds.isel(valid_time=ds.valid_time.dt.month == 2)
    return [
        write_netcdf(jan, tmp_path / "era5_2020-01.nc"),
        write_netcdf(feb, tmp_path / "era5_2020-02.nc"),
    ]


def test_new_cds_layout_values_survive_and_orientation(
    tmp_path: Path, two_months: list[Path]
) -> None:
    out = tmp_path / "store.zarr"
    report = ingest([str(tmp_path / "era5_2020-*.nc")], out, progress=False)
    store = open_store(out)
    assert report.channels == ["z500", "z850", "u500", "u850", "v500", "v850", "t2m", "msl"]
    assert store.sizes["time"] == 48 and store.attrs["time_step"] == "6h"
    assert store["latitude"].values[0] == 90.0 and np.all(np.diff(store["latitude"].values) < 0)
    source = xr.open_mfdataset([str(p) for p in two_months])
    np.testing.assert_array_equal(
        store["data"].sel(channel="z850").values, source["z"].sel(pressure_level=850).values
    )
    np.testing.assert_array_equal(store["data"].sel(channel="msl").values, source["msl"].values)
    assert store["data"].dtype == np.float32
    assert store["data"].encoding["chunks"] == (1, 8, 19, 36)
    assert _leftovers(tmp_path) == []


def test_old_layout_flipped_latitude_and_negative_longitude(tmp_path: Path) -> None:
    lat = np.linspace(-90, 90, 19)
    lon = np.arange(-180, 180, 10.0)
    ds = era5_like(hours("2021-03-01", 8), lat=lat, lon=lon, layout="old")
    ds["msl"] = ds["msl"] / 100.0
    ds["msl"].attrs["units"] = "hPa"
    write_netcdf(ds, tmp_path / "old.nc")
    out = tmp_path / "old.zarr"
    ingest([tmp_path / "old.nc"], out, channels=["msl", "z500"], progress=False)
    store = open_store(out)
    assert np.all(np.diff(store["longitude"].values) > 0) and store["longitude"].values[0] == 0.0
    assert store["latitude"].values[0] == 90.0
    # The point (lat 40N, lon 170W) moves to (40N, 190E); hPa become Pa.
    expected = float(ds["msl"].sel(latitude=40.0, longitude=-170.0).isel(time=3)) * 100.0
    got = float(store["data"].sel(channel="msl", latitude=40.0, longitude=190.0).isel(time=3))
    assert got == pytest.approx(expected, rel=1e-6)


def test_weatherbench_zarr_long_names(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 6), lat=np.linspace(-90, 90, 19), layout="old")
    wb2 = xr.Dataset(
        {
            "geopotential": ds["z"],
            "2m_temperature": ds["t2m"],
        }
    )
    wb2.to_zarr(tmp_path / "wb2.zarr", zarr_format=2)
    out = tmp_path / "s.zarr"
    report = ingest([tmp_path / "wb2.zarr"], out, progress=False)
    assert report.channels == ["z500", "z850", "t2m"]
    store = open_store(out)
    np.testing.assert_array_equal(
        store["data"].sel(channel="t2m").values, ds["t2m"].values[:, ::-1, :]
    )


def test_statistics_match_numpy(tmp_path: Path, two_months: list[Path]) -> None:
    out = tmp_path / "store.zarr"
    ingest([str(p) for p in two_months], out, channels=["z500", "t2m"], progress=False)
    store = open_store(out)
    data = store["data"].values.astype(np.float64)  # (time, channel, lat, lon)
    w = Grid.equiangular(19, 36).area_weights()
    w = w[None, None, :, None] / (w.sum() * 36)
    mean = (data * w).sum(axis=(2, 3)).mean(axis=0)
    std = np.sqrt(((data - mean[None, :, None, None]) ** 2 * w).sum(axis=(2, 3)).mean(axis=0))
    diff = np.diff(data, axis=0)
    diff_mean = (diff * w).sum(axis=(2, 3)).mean(axis=0)
    diff_std = np.sqrt(
        ((diff - diff_mean[None, :, None, None]) ** 2 * w).sum(axis=(2, 3)).mean(axis=0)
    )
    np.testing.assert_allclose(
        store["mean"].values, mean, rtol=1e-7
    )  # float32 products per field, see pipelines.statistics
    np.testing.assert_allclose(store["std"].values, std, rtol=1e-5)
    np.testing.assert_allclose(store["diff_std"].values, diff_std, rtol=1e-5)
    # Climatology at (1 Feb, 06 UTC) with a 5-day window: mean of the 06 UTC fields of 30 Jan .. 3 Feb.
    out5 = tmp_path / "clim5.zarr"
    ingest(
        [str(p) for p in two_months],
        out5,
        channels=["z500", "t2m"],
        climatology_window_days=5,
        progress=False,
    )
    clim = open_store(out5)["climatology"].sel(dayofyear=32, hour=6).values
    times = store["time"].to_index()
    pick = (times.hour == 6) & (times >= "2020-01-30") & (times < "2020-02-04")
    np.testing.assert_allclose(clim, data[pick].mean(axis=0), rtol=1e-6)
    # A day of year with no data in its window is NaN.
    assert np.isnan(open_store(out5)["climatology"].sel(dayofyear=200, hour=0).values).all()


@pytest.mark.parametrize("cutting", ["split chunks", "whole chunks"])
def test_block_size_does_not_change_the_store(
    tmp_path: Path, two_months: list[Path], monkeypatch: pytest.MonkeyPatch, cutting: str
) -> None:
    """One block per file, against many: 3-step pieces of each file's single chunk, or 8-step
    source chunks, one per block; the blocks never straddle the two files' chunks."""
    from pipelines import graph

    a, b = tmp_path / "a.zarr", tmp_path / "b.zarr"
    ingest([str(p) for p in two_months], a, progress=False)
    step_bytes = 8 * 19 * 36 * 4  # 8 channels on the 19 x 36 grid
    if cutting == "split chunks":
        monkeypatch.setattr(graph, "BLOCK_BYTES", 3 * step_bytes)
    else:
        from pipelines import sources

        monkeypatch.setattr(
            sources, "CHUNK_BYTES", 8 * 2 * 19 * 36 * 4
        )  # 8 steps of a two-level variable
        monkeypatch.setattr(graph, "BLOCK_BYTES", 8 * step_bytes)
    blocks: list[tuple[int, int]] = []
    bounds = graph.block_bounds
    monkeypatch.setattr(
        graph,
        "block_bounds",
        lambda chunks, step_bytes, breaks=(): (
            blocks.extend(bounds(chunks, step_bytes, breaks)) or bounds(chunks, step_bytes, breaks)
        ),
    )
    ingest([str(p) for p in two_months], b, progress=False)
    # January has 28 steps, February 20: the blocks never straddle the two files' chunks
    expected = [(s, min(s + 3, 28)) for s in range(0, 28, 3)] + [
        (s, min(s + 3, 48)) for s in range(28, 48, 3)
    ]
    if cutting == "whole chunks":
        expected = [(0, 8), (8, 16), (16, 24), (24, 28), (28, 36), (36, 44), (44, 48)]
    assert blocks == expected
    sa, sb = open_store(a), open_store(b)
    np.testing.assert_array_equal(sa["data"].values, sb["data"].values)
    for name in ("mean", "std", "diff_std"):
        np.testing.assert_allclose(sa[name].values, sb[name].values, rtol=1e-12)
    np.testing.assert_allclose(sa["climatology"].values, sb["climatology"].values, rtol=1e-6)


def test_smoothing_tasks_sizes_do_not_change_the_climatology(
    tmp_path: Path, two_months: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows reread instead of kept (fields over SMOOTH_BYTES): the same bytes; 3-day tasks instead
    of 64-day ones: the same values within one float32 ulp (each task's float64 running sum adds
    in its own order, so a result near a rounding boundary may round the other way)."""
    from pipelines import graph

    files = [str(p) for p in two_months]
    kept, reread, short = tmp_path / "kept.zarr", tmp_path / "reread.zarr", tmp_path / "short.zarr"
    ingest(files, kept, climatology_window_days=5, progress=False)
    monkeypatch.setattr(graph, "SMOOTH_BYTES", 1)
    ingest(files, reread, climatology_window_days=5, progress=False)
    monkeypatch.setattr(graph, "SMOOTH_DAYS", 3)
    ingest(files, short, climatology_window_days=5, progress=False)
    ck, cr, cs = (open_store(p)["climatology"].values for p in (kept, reread, short))
    assert np.isfinite(ck).any()
    np.testing.assert_array_equal(ck, cr)
    assert np.array_equal(np.isnan(cs), np.isnan(ck))
    assert (np.nan_to_num(np.abs(cs - ck)) <= np.nan_to_num(np.spacing(np.abs(ck)))).all()


def test_a_climatology_over_two_years_equals_the_window_mean_of_the_store(tmp_path: Path) -> None:
    """400 days of a 360_day calendar at 00 UTC, so 40 days of year have a step in each of two years: the store's climatology is the brute-force window mean of its own data (within one float32
    ulp: the bin means and the result are each rounded once), and an append that recomputes the
    statistics writes the same bytes as one ingest of everything."""
    from pipelines import graph

    times = np.asarray(
        xr.date_range("2001-11-01", periods=400, freq="24h", calendar="360_day", use_cftime=True)
    )
    ds = era5_like(times, lat=np.linspace(90, -90, 7), lon=np.arange(0, 360, 30.0))
    write_netcdf(ds.isel(valid_time=slice(0, 250)), tmp_path / "a.nc")
    write_netcdf(ds.isel(valid_time=slice(250, None)), tmp_path / "b.nc")
    whole, part = tmp_path / "whole.zarr", tmp_path / "part.zarr"
    built: list = []
    build = graph.build_pass
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(graph, "BLOCK_BYTES", 20 * 8 * 7 * 12 * 4)  # 20 steps: 20 blocks
        patch.setattr(
            "pipelines.ingest.build_pass",
            lambda *a, **k: (built.append(s) or s for s in build(*a, **k)),
        )
        ingest(
            [tmp_path / "a.nc", tmp_path / "b.nc"], whole, climatology_window_days=3, progress=False
        )
    # no block feeds a task beyond its write, moments, tendency and last step: nothing a block gives
    # the climatology waits in memory for the next year's steps
    assert len(built) == 1  # one segment
    tasks = built[0].moments.dask
    layer = tasks.layers[built[0].moments.key[0]]
    users: dict = {}
    for key, dependencies in tasks.get_all_dependencies().items():
        if key in layer:
            for block in dependencies - set(layer):
                users.setdefault(block, []).append(layer[key][0].__name__)
    assert len(users) >= 20
    assert all(
        sorted(u) == ["_write", "last_step", "moment_partial", "tendency_partial"]
        for u in users.values()
    )

    store = open_store(whole)
    data = store["data"].values.astype(np.float64)
    doy = np.array([t.dayofyr for t in times])
    hour = np.array([t.hour for t in times])
    expected = np.full(store["climatology"].shape, np.nan)
    for d in np.unique(doy):
        for h_index, h in enumerate(store["hour"].values):
            near = (np.abs((doy - d + 180) % 360 - 180) <= 1) & (hour == h)
            expected[d - 1, h_index] = data[near].mean(axis=0)
    assert np.bincount(doy).max() == 2  # two years
    climatology = store["climatology"].values
    np.testing.assert_array_equal(np.isnan(climatology), np.isnan(expected))
    for c in range(data.shape[1]):
        ulp = np.spacing(np.float32(np.nanmax(np.abs(expected[:, :, c]))))
        np.testing.assert_allclose(climatology[:, :, c], expected[:, :, c], rtol=0, atol=ulp)

    ingest([tmp_path / "a.nc"], part, climatology_window_days=3, progress=False)
    with pytest.raises(ConfigError, match="smoothed over 3 days.*--recompute-statistics"):
        ingest([tmp_path / "b.nc"], part, append=True, climatology_window_days=5, progress=False)
    assert open_store(part).sizes["time"] == 250
    # the append keeps the store's window (it used to smooth with the default 31 days)
    ingest([tmp_path / "b.nc"], part, append=True, recompute_statistics=True, progress=False)
    np.testing.assert_array_equal(open_store(part)["climatology"].values, climatology)
    assert open_store(part).attrs["climatology_window_days"] == 3


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_cftime_calendar_survives(tmp_path: Path, calendar: str) -> None:
    times = xr.date_range("2001-02-27", periods=16, freq="6h", calendar=calendar, use_cftime=True)
    ds = era5_like(np.asarray(times))
    write_netcdf(ds, tmp_path / "clim.nc")
    out = tmp_path / "clim.zarr"
    ingest([tmp_path / "clim.nc"], out, progress=False)
    store = open_store(out)
    decoded = store["time"].values
    assert decoded[0].calendar == calendar
    assert store.attrs["calendar"] == calendar
    # noleap: 28 Feb is followed by 1 Mar; 360_day: by 29 and 30 Feb.
    days = [(t.month, t.day) for t in decoded[::4]]
    assert days == (
        [(2, 27), (2, 28), (3, 1), (3, 2)]
        if calendar == "noleap"
        else [(2, 27), (2, 28), (2, 29), (2, 30)]
    )
    assert store.sizes["dayofyear"] == (365 if calendar == "noleap" else 360)


def test_regrid_to_gaussian_grid_and_select_times(tmp_path: Path, two_months: list[Path]) -> None:
    out = tmp_path / "g.zarr"
    report = ingest(
        [str(p) for p in two_months],
        out,
        grid="16x32",
        grid_kind="legendre-gauss",
        start="2020-01-28",
        end="2020-02-02T12",
        step="12h",
        progress=False,
    )
    store = open_store(out)
    assert report.regrid_method.startswith("torch-harmonics")
    assert store.attrs["grid_kind"] == "legendre-gauss" and store.sizes["latitude"] == 16
    assert store.attrs["time_step"] == "12h" and store.sizes["time"] == 12
    assert str(store["time"].values[0])[:13] == "2020-01-28T00"


def test_append_extends_and_keeps_statistics(tmp_path: Path, two_months: list[Path]) -> None:
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    ingest([str(p) for p in two_months], full, progress=False)
    ingest([two_months[0]], part, progress=False)
    before = open_store(part)["std"].values.copy()
    ingest([two_months[1]], part, append=True, progress=False)
    sp, sf = open_store(part), open_store(full)
    np.testing.assert_array_equal(sp["data"].values, sf["data"].values)
    np.testing.assert_array_equal(sp["time"].values, sf["time"].values)
    np.testing.assert_array_equal(sp["std"].values, before)
    assert sp.attrs["store_format_version"] == 1 and "era5_2020-02.nc" in sp.attrs["sources"]
    with pytest.raises(DataError, match="no times after"):
        ingest([two_months[1]], part, append=True, progress=False)


@pytest.mark.parametrize("block_bytes", [None, 2**40], ids=["default-blocks", "one-block"])
def test_append_recompute_statistics(
    tmp_path: Path, two_months: list[Path], monkeypatch: pytest.MonkeyPatch, block_bytes
) -> None:
    full, part = tmp_path / "full.zarr", tmp_path / "part.zarr"
    ingest([str(p) for p in two_months], full, progress=False)
    ingest([two_months[0]], part, progress=False)
    if block_bytes:  # old and new steps would fit one block: it used to be read back, never written
        monkeypatch.setattr("pipelines.graph.BLOCK_BYTES", block_bytes)
    ingest([two_months[1]], part, append=True, recompute_statistics=True, progress=False)
    sp, sf = open_store(part), open_store(full)
    np.testing.assert_array_equal(sp["data"].values, sf["data"].values)
    for name in ("mean", "std", "diff_std"):
        np.testing.assert_allclose(sp[name].values, sf[name].values, rtol=1e-10)
    np.testing.assert_allclose(sp["climatology"].values, sf["climatology"].values, rtol=1e-6)
    assert sp.attrs["statistics_end"] == sf.attrs["statistics_end"]


def test_append_with_a_gap_is_refused_and_store_unchanged(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 20))
    write_netcdf(ds.isel(valid_time=slice(0, 8)), tmp_path / "a.nc")
    write_netcdf(ds.isel(valid_time=slice(10, 20)), tmp_path / "b.nc")
    out = tmp_path / "s.zarr"
    ingest([tmp_path / "a.nc"], out, progress=False)
    with pytest.raises(CalendarError, match="not one step"):
        ingest([tmp_path / "b.nc"], out, append=True, progress=False)
    assert open_store(out).sizes["time"] == 8


# -- bad input: one clear error, no partial store ------------------------------------------


def _assert_clean(directory: Path, out: Path) -> None:
    assert not out.exists()
    assert _leftovers(directory) == []


def test_missing_channel_lists_available(tmp_path: Path, two_months: list[Path]) -> None:
    out = tmp_path / "s.zarr"
    with pytest.raises(DataError, match=r"t850 not in the sources.*available: z500, z850, u500"):
        ingest([two_months[0]], out, channels=["z500", "t850"], progress=False)
    _assert_clean(tmp_path, out)


def test_irregular_times_name_the_file(tmp_path: Path) -> None:
    times = np.concatenate(
        [hours("2020-01-01", 4), hours("2020-01-02T06", 4)]
    )  # 2 Jan 00 UTC missing
    write_netcdf(era5_like(times), tmp_path / "gappy.nc")
    out = tmp_path / "s.zarr"
    with pytest.raises(
        CalendarError,
        match=r"gappy.nc: times are not regular at step 6h: 2020-01-01T18:00 is followed by 2020-01-02T06:00",
    ):
        ingest([tmp_path / "gappy.nc"], out, step="6h", progress=False)
    _assert_clean(tmp_path, out)


def test_nan_names_file_channel_and_time(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 8))
    ds["t2m"][5, 3, 4] = np.nan
    write_netcdf(ds.isel(valid_time=slice(0, 4)), tmp_path / "ok.nc")
    write_netcdf(ds.isel(valid_time=slice(4, 8)), tmp_path / "bad.nc")
    out = tmp_path / "s.zarr"
    with pytest.raises(
        DataError, match=r"bad.nc: 1 NaN/inf value\(s\) in channel t2m at 2020-01-02T06:00"
    ):
        ingest([tmp_path / "ok.nc", tmp_path / "bad.nc"], out, progress=False)
    _assert_clean(tmp_path, out)


def test_overlapping_sources_that_disagree(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 8))
    write_netcdf(ds.isel(valid_time=slice(0, 5)), tmp_path / "a.nc")
    other = ds.isel(valid_time=slice(3, 8)).copy(deep=True)
    write_netcdf(other, tmp_path / "b_same.nc")
    out = tmp_path / "s.zarr"
    ingest(
        [tmp_path / "a.nc", tmp_path / "b_same.nc"], out, progress=False
    )  # agreeing overlap is fine
    assert open_store(out).sizes["time"] == 8
    other["z"] = other["z"] + 1.0
    write_netcdf(other, tmp_path / "c_diff.nc")
    out2 = tmp_path / "s2.zarr"
    with pytest.raises(
        DataError,
        match=r"c_diff.nc: variable z disagrees with another source over 2 overlapping time\(s\) from 2020-01-01T18:00",
    ):
        ingest([tmp_path / "a.nc", tmp_path / "c_diff.nc"], out2, progress=False)
    _assert_clean(tmp_path, out2)


def test_regional_to_global_is_refused(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 4), lat=np.linspace(60, 30, 7), lon=np.arange(0, 60, 10.0))
    write_netcdf(ds, tmp_path / "region.nc")
    out = tmp_path / "s.zarr"
    with pytest.raises(
        GridError, match=r"region.nc: the source grid is regional .* cannot become the global grid"
    ):
        ingest([tmp_path / "region.nc"], out, grid="1.0deg", progress=False)
    _assert_clean(tmp_path, out)


def test_unknown_calendar(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 4))
    ds = ds.assign_coords(
        valid_time=(
            "valid_time",
            np.arange(4) * 6,
            {"units": "hours since 2020-01-01", "calendar": "martian"},
        )
    )
    ds.to_netcdf(tmp_path / "mars.nc")
    with pytest.raises(CalendarError, match=r"mars.nc: cannot decode times"):
        ingest([tmp_path / "mars.nc"], tmp_path / "s.zarr", progress=False)


def test_unreadable_file(tmp_path: Path) -> None:
    whole = write_netcdf(era5_like(hours("2020-01-01", 4)), tmp_path / "whole.nc").read_bytes()
    bad = tmp_path / "truncated.nc"
    bad.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(DataError, match=r"truncated.nc: cannot read the file"):
        ingest([bad], tmp_path / "s.zarr", progress=False)


def test_ensemble_source_needs_member(tmp_path: Path) -> None:
    ds = era5_like(hours("2020-01-01", 4)).expand_dims(number=[0, 1, 2])
    write_netcdf(ds, tmp_path / "ens.nc")
    with pytest.raises(
        DataError,
        match=r"ens.nc: the source is an ensemble with members \[0, 1, 2\]; choose one with --member N",
    ):
        ingest([tmp_path / "ens.nc"], tmp_path / "s.zarr", progress=False)
    ingest([tmp_path / "ens.nc"], tmp_path / "s.zarr", member=2, progress=False)
    np.testing.assert_array_equal(
        open_store(tmp_path / "s.zarr")["data"].sel(channel="t2m").values,
        ds["t2m"].sel(number=2).values,
    )


def test_existing_store_is_not_overwritten(tmp_path: Path, two_months: list[Path]) -> None:
    out = tmp_path / "s.zarr"
    ingest([two_months[0]], out, progress=False)
    with pytest.raises(DataError, match="already exists; use --append"):
        ingest([two_months[1]], out, progress=False)
    ingest([two_months[1]], out, overwrite=True, progress=False)
    assert str(open_store(out)["time"].values[0])[:10] == "2020-02-01"


# -- command line ---------------------------------------------------------------------------


def test_cli_config_file_and_one_line_error(
    tmp_path: Path, two_months: list[Path], capsys: pytest.CaptureFixture
) -> None:
    config = tmp_path / "ingest.yaml"
    config.write_text(
        f"sources: ['{two_months[0]}']\nout: {tmp_path / 'c.zarr'}\nchannels: [z500, t2m]\nno-progress: true\n"
    )
    assert main(["ingest", "--config", str(config)]) == 0
    assert open_store(tmp_path / "c.zarr")["channel"].values.tolist() == ["z500", "t2m"]
    code = main(
        [
            "ingest",
            str(two_months[0]),
            "--out",
            str(tmp_path / "d.zarr"),
            "--channels",
            "q700",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "q700 not in the sources" in err and "Traceback" not in err
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("sauces: [x]\n")
    assert main(["ingest", "--config", str(bad_key), "x", "--out", "y"]) == 1
    assert "unknown key 'sauces'" in capsys.readouterr().err


def test_missing_file_is_a_clean_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["ingest", str(tmp_path / "nope_*.nc"), "--out", str(tmp_path / "s.zarr")])
    assert code == 1
    assert "nope_*.nc: no such file or directory" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "s.zarr")


def _fill_disk_after(monkeypatch: pytest.MonkeyPatch, blocks: int) -> None:
    """Make the store's data writes (the graph's write tasks) fail with ENOSPC from block ``blocks`` on (blocks of 3 steps)."""
    from pipelines import graph

    real = graph._write

    def write(target, start: int, values: np.ndarray) -> int:
        if start >= 3 * blocks:
            raise OSError(28, "No space left on device", f"{target.store_path}/c.{start}.0.0.0")
        return real(target, start, values)

    monkeypatch.setattr(graph, "BLOCK_BYTES", 3 * 8 * 19 * 36 * 4)
    monkeypatch.setattr(graph, "_write", write)


def test_full_disk_is_one_line_and_leaves_no_store(
    tmp_path: Path,
    two_months: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    _fill_disk_after(monkeypatch, blocks=2)
    out = tmp_path / "s.zarr"
    code = main(["ingest", *map(str, two_months), "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "No space left on device" in err and "free some disk space" in err
    assert int(re.search(r"data/c\.(\d+)\.0\.0\.0: No space", err).group(1)) in range(
        6, 48, 3
    )  # a failed block's first chunk
    _assert_clean(
        tmp_path, out
    )  # neither the store nor its temporary copy (or the climatology sums) is left


def test_full_disk_during_append_rolls_the_store_back(
    tmp_path: Path, two_months: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "s.zarr"
    ingest([two_months[0]], out, progress=False)
    before = open_store(out)
    times, data = before["time"].values.copy(), before["data"].values.copy()
    _fill_disk_after(monkeypatch, blocks=1)
    with pytest.raises(OSError, match="No space left"):
        ingest([two_months[1]], out, append=True, progress=False)
    after = open_store(out)
    np.testing.assert_array_equal(after["time"].values, times)
    np.testing.assert_array_equal(after["data"].values, data)
