"""Forcing stores for the tests: the store layout of forecast.store holding an SST-like field."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from forecast.grid import Grid
from forecast.store import STORE_FORMAT_VERSION
from pipelines.synthetic_forcing import sst_field


def store_times(start: str, periods: int, calendar: str = "standard", step_hours: int = 6):
    """``periods`` times every ``step_hours`` from ``start`` in ``calendar``."""
    if calendar == "standard":
        return pd.date_range(start, periods=periods, freq=f"{step_hours}h").values
    return xr.date_range(
        start, periods=periods, freq=f"{step_hours}h", calendar=calendar, use_cftime=True
    ).values


def write_forcing_store(
    path: Path,
    start: str = "2020-01-01",
    periods: int = 12,
    calendar: str = "standard",
    nlat: int = 16,
    nlon: int = 32,
    seed: int = 0,
    names: tuple[str, ...] = ("sst",),
    step_hours: int = 6,
    times=None,
) -> Path:
    """A forcing store of :func:`pipelines.synthetic_forcing.sst_field` (each name its own seed).

    ``times`` (if given) replaces ``start``/``periods``/``calendar`` (e.g. a store with a gap).
    Statistics: mean 290 K, std 10 K.
    """
    grid = Grid.equiangular(nlat, nlon)
    if times is None:
        times = store_times(start, periods, calendar, step_hours)
    data = np.stack([sst_field(times, grid, seed + k) for k in range(len(names))], axis=1)
    return write_fields_store(path, times, grid, data, names, 290.0, 10.0, calendar, step_hours)


def write_fields_store(
    path: Path,
    times,
    grid: Grid,
    data: np.ndarray,
    names: tuple[str, ...],
    mean: float | np.ndarray,
    std: float | np.ndarray,
    calendar: str = "standard",
    step_hours: int = 6,
    diff_std: float | np.ndarray | None = None,
    units: list[str] | None = None,
    time_chunk: int = 1,
) -> Path:
    """A store of forecast.store's layout holding ``data`` ``(time, name, lat, lon)``.

    ``mean``/``std``/``diff_std`` per name (or one for all; ``diff_std``
    defaults to ``std / 4``); ``units`` per name, if given, become
    ``channel_units``; ``time_chunk`` times a chunk.
    """
    n = len(names)
    mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), (n,))
    std = np.broadcast_to(np.asarray(std, dtype=np.float64), (n,))
    diff = std / 4.0 if diff_std is None else np.broadcast_to(np.asarray(diff_std), (n,))
    extra = {} if units is None else {"channel_units": ("channel", np.asarray(units, dtype=object))}
    ds = xr.Dataset(
        {
            "data": (("time", "channel", "latitude", "longitude"), data.astype(np.float32)),
            "mean": ("channel", mean.copy()),
            "std": ("channel", std.copy()),
            "diff_std": ("channel", np.array(diff, dtype=np.float64)),
            **extra,
            "climatology": (
                ("dayofyear", "hour", "channel", "latitude", "longitude"),
                np.zeros((2, 1, n, grid.nlat, grid.nlon), np.float32),
            ),
        },
        coords={
            "time": times,
            "channel": list(names),
            "latitude": grid.latitude,
            "longitude": grid.longitude,
            "dayofyear": [1, 2],
            "hour": [0],
        },
        attrs={
            "store_format_version": STORE_FORMAT_VERSION,
            "grid_kind": grid.kind,
            "time_step": f"{step_hours}h",
            "calendar": calendar,
            "statistics_start": str(times[0]),
            "statistics_end": str(times[-1]),
            "sources": "tests",
            "software_version": "test",
        },
    )
    ds["data"].encoding = {"chunks": (time_chunk, n, grid.nlat, grid.nlon)}
    if calendar != "standard":
        ds["time"].encoding = {"units": "hours since 2000-01-01", "calendar": calendar}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", consolidated=True, zarr_format=3)
    return path
