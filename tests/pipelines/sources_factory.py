"""Small hand-made sources in the layouts that ingestion reads (CDS NetCDF old/new, WeatherBench2 Zarr)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

LEVELS = (500.0, 850.0)


def smooth_field(lat: np.ndarray, lon: np.ndarray, phase: float = 0.0) -> np.ndarray:
    """A smooth field on the sphere, shape (lat, lon): low-degree spherical harmonics."""
    la, lo = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    return (
        np.sin(la)
        + 0.5 * np.cos(la) ** 2 * np.cos(2 * lo + phase)
        + 0.3 * np.cos(la) * np.sin(la) * np.sin(lo - phase)
    )


def era5_like(
    times,
    lat: np.ndarray | None = None,
    lon: np.ndarray | None = None,
    layout: str = "new",
    seed: int = 0,
) -> xr.Dataset:
    """ERA5-style dataset with z, u, v on two levels and t2m, msl; values are smooth plus noise."""
    lat = np.linspace(90, -90, 19) if lat is None else lat
    lon = np.arange(0, 360, 10.0) if lon is None else lon
    rng = np.random.default_rng(seed)
    nt = len(times)
    phase = np.arange(nt) * 0.3
    base = np.stack([smooth_field(lat, lon, p) for p in phase])  # (time, lat, lon)
    noise = lambda: rng.standard_normal((nt, len(lat), len(lon))).astype(np.float32) * 0.1  # noqa: E731
    time_dim = "valid_time" if layout == "new" else "time"
    level_dim = "pressure_level" if layout == "new" else "level"
    level_fields = {
        "z": (
            np.stack([5.5e4 + 1e3 * base + noise(), 1.5e4 + 5e2 * base + noise()], axis=1),
            "m**2 s**-2",
            "Geopotential",
        ),
        "u": (
            np.stack([10 * base + noise(), 5 * base + noise()], axis=1),
            "m s**-1",
            "U component of wind",
        ),
        "v": (
            np.stack([-8 * base + noise(), 3 * base + noise()], axis=1),
            "m s**-1",
            "V component of wind",
        ),
    }
    single_fields = {
        "t2m": (280 + 15 * base + noise(), "K", "2 metre temperature"),
        "msl": (101325 + 1500 * base + noise(), "Pa", "Mean sea level pressure"),
    }
    data_vars = {}
    for name, (values, units, long_name) in level_fields.items():
        data_vars[name] = (
            (time_dim, level_dim, "latitude", "longitude"),
            values.astype(np.float32),
            {"units": units, "long_name": long_name},
        )
    for name, (values, units, long_name) in single_fields.items():
        data_vars[name] = (
            (time_dim, "latitude", "longitude"),
            values.astype(np.float32),
            {"units": units, "long_name": long_name},
        )
    return xr.Dataset(
        data_vars,
        coords={
            time_dim: (time_dim, np.asarray(times)),
            level_dim: (level_dim, np.asarray(LEVELS), {"units": "hPa"}),
            "latitude": ("latitude", lat, {"units": "degrees_north"}),
            "longitude": ("longitude", lon, {"units": "degrees_east"}),
        },
        attrs={"Conventions": "CF-1.7"},
    )


def hours(start: str, count: int, step: str = "6h") -> np.ndarray:
    """``count`` standard-calendar times from ``start`` every ``step``."""
    return pd.date_range(start, periods=count, freq=step).values


def write_netcdf(ds: xr.Dataset, path: Path) -> Path:
    """Write a dataset as NetCDF and return the path."""
    ds.to_netcdf(path)
    return path
