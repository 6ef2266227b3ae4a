"""Tiny training stores and forecasts in the exact layouts of docs (store, forecast output)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# cartopy (pyproj) is imported before any test does NetCDF I/O: loading pyproj after
# netCDF4 has written a file aborts the interpreter at exit (see forecast.scoring.plots)
import cartopy.crs  # noqa: F401
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from forecast.channels import channel_info
from forecast.grid import Grid
from forecast.time import day_of_year_and_hour, time_range

CHANNELS = ("z500", "t850")
BASE = {"z500": 54000.0, "t850": 270.0, "u250": 15.0, "v250": 0.0, "t2m": 285.0, "msl": 101000.0}
AMPLITUDE = {"z500": 800.0, "t850": 8.0, "u250": 12.0, "v250": 10.0, "t2m": 10.0, "msl": 900.0}


def truth_fields(grid: Grid, times: np.ndarray, channels=CHANNELS, seed: int = 0) -> xr.DataArray:
    """Smooth evolving fields (time, channel, latitude, longitude), float32, with a daily cycle."""
    rng = np.random.default_rng(seed)
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    _, hour = day_of_year_and_hour(times)
    data = np.empty((len(times), len(channels), grid.nlat, grid.nlon), dtype=np.float32)
    for c, name in enumerate(channels):
        phase = rng.uniform(0, 2 * np.pi)
        for t in range(len(times)):
            wave = np.cos(lat) ** 2 * np.sin(3 * lon + phase + 0.3 * t) + 0.5 * np.sin(
                2 * lat
            ) * np.cos(lon - 0.1 * t)
            cycle = 0.2 * np.cos(2 * np.pi * hour[t] / 24.0 + lon)
            noise = 0.05 * rng.standard_normal((grid.nlat, grid.nlon))
            data[t, c] = BASE[name] + AMPLITUDE[name] * (wave + cycle + noise)
    return xr.DataArray(
        data,
        dims=("time", "channel", "latitude", "longitude"),
        coords={
            "time": times,
            "channel": list(channels),
            "latitude": grid.latitude,
            "longitude": grid.longitude,
        },
    )


def write_store(
    path: Path, truth: xr.DataArray, grid: Grid, calendar: str = "standard", step: str = "6h"
) -> Path:
    """Write ``truth`` as a training store (exact layout of forecast/store.py)."""
    channels = [str(c) for c in truth["channel"].values]
    mean = truth.mean(("time", "latitude", "longitude")).astype(np.float32)
    std = truth.std(("time", "latitude", "longitude")).astype(np.float32)
    diff_std = truth.diff("time").std(("time", "latitude", "longitude")).astype(np.float32)
    days = 360 if calendar == "360_day" else 366
    # climatology: the mean over all times, minus a smooth offset (so anomalies are not zero)
    lat = np.deg2rad(grid.latitude)[:, None]
    base = truth.mean("time").values - 0.3 * np.array([AMPLITUDE[c] for c in channels])[
        :, None, None
    ] * np.cos(lat)
    clim = np.broadcast_to(base, (days, 4, len(channels), grid.nlat, grid.nlon)).astype(np.float32)
    ds = xr.Dataset(
        {
            "data": truth,
            "mean": mean,
            "std": std,
            "diff_std": diff_std,
            "climatology": (("dayofyear", "hour", "channel", "latitude", "longitude"), clim),
        },
        coords={"dayofyear": np.arange(1, days + 1), "hour": [0, 6, 12, 18]},
    )
    ds.attrs = {
        "store_format_version": 1,
        "grid_kind": grid.kind,
        "grid_nlat": grid.nlat,
        "grid_nlon": grid.nlon,
        "time_step": step,
        "calendar": calendar,
        "statistics_start": "start",
        "statistics_end": "end",
        "sources": "tests",
        "software_version": "test",
    }
    encoding = {"time": {"units": "hours since 2000-01-01", "calendar": calendar}}
    ds.chunk({"time": 1}).to_zarr(path, mode="w", encoding=encoding, consolidated=True)
    return path


def make_forecast(
    truth: xr.DataArray,
    init_indices: list[int],
    n_leads: int,
    members: int | None,
    noise: float = 0.0,
    offset: float = 0.0,
    seed: int = 1,
    lead_step: int = 1,
) -> xr.Dataset:
    """A forecast in the output layout whose member k = truth at valid time + noise + offset.

    Leads run past the end of ``truth`` are filled from the last time (to test missing truth).
    """
    rng = np.random.default_rng(seed)
    times = truth["time"].values
    step = pd.Timedelta(times[1] - times[0])
    leads = np.array(
        [pd.Timedelta(step * lead_step * k).to_timedelta64() for k in range(n_leads)],
        dtype="timedelta64[ns]",
    )
    n_members = members or 1
    data_vars = {}
    for channel in truth["channel"].values:
        values = np.empty(
            (
                len(init_indices),
                n_leads,
                n_members,
                truth.sizes["latitude"],
                truth.sizes["longitude"],
            ),
            np.float32,
        )
        for i, t0 in enumerate(init_indices):
            for k in range(n_leads):
                source = min(t0 + k * lead_step, len(times) - 1)
                field = truth.sel(channel=channel).values[source]
                scale = AMPLITUDE[str(channel)]
                values[i, k] = (
                    field + offset * scale + noise * scale * rng.standard_normal(values.shape[2:])
                )
        dims = ("time", "lead_time", "member", "latitude", "longitude")
        array = values if members else values[:, :, 0]
        data_vars[str(channel)] = (
            dims if members else dims[:2] + dims[3:],
            array,
            channel_info(str(channel)).attrs(),
        )
    init_times = times[init_indices]
    if np.issubdtype(times.dtype, np.datetime64):
        valid = init_times[:, None] + leads[None, :]
    else:
        valid = np.array(
            [[t + pd.Timedelta(lead).to_pytimedelta() for lead in leads] for t in init_times],
            dtype=object,
        )
    coords = {
        "time": init_times,
        "lead_time": leads,
        "latitude": truth["latitude"].values,
        "longitude": truth["longitude"].values,
        "valid_time": (("time", "lead_time"), valid),
    }
    if members:
        coords["member"] = np.arange(members)
    return xr.Dataset(data_vars, coords=coords, attrs={"Conventions": "CF-1.8", "model": "test"})


@pytest.fixture
def tiny_store(tmp_path) -> Callable[..., tuple[Path, xr.DataArray, Grid]]:
    """Factory: ``tiny_store(kind="equiangular", calendar="standard", n_times=12)`` -> (path, truth, grid)."""

    def build(
        kind: str = "equiangular",
        calendar: str = "standard",
        n_times: int = 12,
        shape=(9, 16),
        channels=CHANNELS,
    ):
        if kind == "regional":  # a limited area: 60N-30N, 0-40E
            grid = Grid(
                "regional", np.linspace(60.0, 30.0, shape[0]), np.linspace(0.0, 40.0, shape[1])
            )
        else:
            grid = Grid.from_kind(kind, *shape)
        start = "2020-01-01" if calendar == "standard" else "2001-02-27"
        import cftime

        if calendar == "standard":
            times = time_range(
                pd.Timestamp(start),
                pd.Timestamp(start) + pd.Timedelta(hours=6 * (n_times - 1)),
                pd.Timedelta(hours=6).to_pytimedelta(),
                calendar,
            )
        else:
            first = cftime.datetime(2001, 2, 27, calendar=calendar)
            times = np.array(
                [first + pd.Timedelta(hours=6 * k).to_pytimedelta() for k in range(n_times)],
                dtype=object,
            )
        truth = truth_fields(grid, times, channels)
        path = write_store(
            tmp_path / f"store-{kind}-{calendar}.zarr", truth, grid, calendar=calendar
        )
        return path, truth, grid

    return build
