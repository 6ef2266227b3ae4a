"""Climate products written on the fly equal numpy's means and histograms of the same series."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import xarray as xr

from forecast.grid import Grid
from forecast.time import parse_time, time_index
from inference.climate import ClimateWriter, HistogramSpec, product_path
from inference.initial import shift_times
from inference.writers import forecast_template

STEP = dt.timedelta(hours=6)
CHANNELS = ["t2m", "z500"]
GRID = Grid.equiangular(3, 4)


def _template(start, steps, members=2, calendar="noleap", chunk=1):
    return forecast_template(
        CHANNELS,
        GRID,
        np.asarray([start]),
        steps,
        STEP,
        members,
        calendar,
        {"model": "test"},
        chunk,
    )


def _series(steps, members, seed=0):
    """A known series: (lead, member, channel, lat, lon), float32, with a trend so that means differ."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(steps + 1, members, len(CHANNELS), *GRID.shape)).astype(np.float32)
    return values + np.arange(steps + 1, dtype=np.float32)[:, None, None, None, None] * 0.01


def _write(writer, template, series, member_chunks=None):
    writer.create(template)
    members = series.shape[1]
    chunks = member_chunks or [(0, members)]
    for start, stop in chunks:  # batches of members run one after the other, every lead
        for lead in range(series.shape[0]):
            writer.write(0, start, lead, series[lead, start:stop])
    writer.finish()


def _numpy_means(times, series, key):
    """Means over the states whose valid time has the same ``key(time)``, leads 0 .. steps-1."""
    keys = [key(t) for t in times[:-1]]
    groups = list(dict.fromkeys(keys))
    return groups, np.stack(
        [
            series[:-1][np.asarray([k == g for k in keys])].mean(axis=0, dtype=np.float64)
            for g in groups
        ]
    )


@pytest.mark.parametrize(
    ("calendar", "start", "steps"),
    [
        ("360_day", "2001-01-16T06", 4 * 100),  # a partial first January, 30-day months
        ("noleap", "2001-01-01T00", 4 * 365),  # one whole noleap year
        ("standard", "2003-12-20T12", 4 * 80),  # crosses a leap February (2004)
    ],
)
def test_period_means_equal_numpy(tmp_path, calendar, start, steps):
    init = parse_time(start, calendar)
    template = _template(init, steps, calendar=calendar)
    series = _series(steps, 2)
    out = tmp_path / "run.zarr"
    writer = ClimateWriter(out, reduce=["monthly", "seasonal", "annual", "time-mean"])
    _write(writer, template, series, member_chunks=[(0, 1), (1, 2)])
    times = np.asarray([shift_times(np.asarray([init]), k * STEP)[0] for k in range(steps + 1)])
    index = time_index(times)
    years, months = np.asarray(index.year), np.asarray(index.month)

    def season(k):
        year = years[k] + (months[k] == 12)
        return (int(year), int(months[k] % 12 // 3))

    keys = {
        "monthly": lambda k: (int(years[k]), int(months[k])),
        "seasonal": season,
        "annual": lambda k: int(years[k]),
        "time-mean": lambda k: 0,
    }
    for product, key in keys.items():
        ds = xr.open_zarr(product_path(out, product))
        groups, expected = _numpy_means(list(range(steps + 1)), series, key)
        assert ds.sizes["time"] == len(groups), product
        for k, channel in enumerate(CHANNELS):
            np.testing.assert_allclose(ds[channel].values, expected[:, :, k], rtol=2e-7, atol=1e-7)
        counts = [sum(key(j) == g for j in range(steps)) for g in groups]
        np.testing.assert_array_equal(ds["samples"].values, counts)


def test_cf_metadata_bounds_and_partial_periods(tmp_path):
    init = parse_time("2001-01-16T00", "360_day")
    steps = 4 * 60  # 16 Jan .. 16 Mar: partial January, whole February, partial March
    out = tmp_path / "run.nc"
    writer = ClimateWriter(out, reduce=["monthly"])
    _write(writer, _template(init, steps, calendar="360_day"), _series(steps, 2))
    ds = xr.open_dataset(
        product_path(out, "monthly"), decode_times=xr.coders.CFDatetimeCoder(use_cftime=True)
    )
    assert ds["t2m"].attrs["cell_methods"] == "time: mean"
    assert ds["time"].attrs["bounds"] == "time_bnds"
    bounds = ds["time_bnds"].values
    assert [b.strftime("%Y-%m-%d") for b in bounds[:, 0]] == [
        "2001-01-16",
        "2001-02-01",
        "2001-03-01",
    ]
    assert [b.strftime("%Y-%m-%d") for b in bounds[:, 1]] == [
        "2001-02-01",
        "2001-03-01",
        "2001-03-16",
    ]
    np.testing.assert_array_equal(ds["complete"].values, [0, 1, 0])
    np.testing.assert_array_equal(ds["samples"].values, [4 * 15, 4 * 30, 4 * 15])
    # the time of a mean is the middle of its bounds (360_day: February has 30 days)
    assert ds["time"].values[1].strftime("%Y-%m-%d %H") == "2001-02-16 00"
    assert ds.attrs["climate_product"] == "monthly" and ds.attrs["frequency"] == "mon"
    assert "samples" in ds.coords and "complete" in ds.coords


def test_histograms_equal_numpy(tmp_path):
    init = parse_time("2001-01-01", "noleap")
    steps = 40
    series = _series(steps, 3)
    low, high = np.asarray([-2.0, -1.5]), np.asarray([2.0, 1.5])
    out = tmp_path / "run.zarr"
    writer = ClimateWriter(out, histograms=HistogramSpec(8, low, high))
    _write(writer, _template(init, steps, members=3), series, member_chunks=[(0, 2), (2, 3)])
    ds = xr.open_zarr(product_path(out, "histograms"))
    for k, channel in enumerate(CHANNELS):
        edges = np.linspace(low[k], high[k], 9)
        np.testing.assert_allclose(ds[f"{channel}_bin"].values, 0.5 * (edges[1:] + edges[:-1]))
        for member in range(3):
            for row in range(GRID.nlat):
                values = series[:-1, member, k, row].ravel()
                expected, _ = np.histogram(values, bins=edges)
                np.testing.assert_array_equal(ds[channel].values[0, member, row], expected)
                assert int(ds[f"{channel}_below"][0, member, row]) == int((values < low[k]).sum())
                assert int(ds[f"{channel}_above"][0, member, row]) == int((values > high[k]).sum())
