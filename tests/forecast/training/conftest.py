"""Fixtures for the training tests: tiny training stores with a learnable toy problem."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from forecast.grid import Grid

CHANNELS = ("z500", "t850")


def toy_diurnal(hour: float, longitude: np.ndarray, amplitude: float) -> np.ndarray:
    """The toy store's t2m diurnal cycle at a UTC hour, per longitude (peak at 14 h local)."""
    return (amplitude * np.cos(2 * np.pi * (hour + longitude / 15.0 - 14.0) / 24.0))[None, :]


def write_toy_store(
    path: Path,
    nlat: int = 16,
    nlon: int = 32,
    n_time: int = 96,
    channels: tuple[str, ...] = CHANNELS,
    start: str = "2020-01-01",
    step_hours: int = 6,
    period_days: float = 10.0,
    diurnal_amplitude: float = 0.0,
) -> Path:
    """Write a training store whose fields are spherical-harmonic patterns rotating eastward.

    Each channel is ``mean + amplitude * Y(lat, lon - omega * t)`` with a low-order
    pattern ``Y`` that rotates once every ``period_days`` (a different phase per
    channel), so the next state is a smooth function of the current one.
    """
    grid = Grid.equiangular(nlat, nlon)
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    times = pd.date_range(start, periods=n_time, freq=f"{step_hours}h")
    hours = np.arange(n_time) * step_hours
    means = {"z500": 55000.0, "t850": 275.0, "t2m": 285.0, "u10m": 0.0}
    amps = {"z500": 800.0, "t850": 8.0, "t2m": 10.0, "u10m": 5.0}
    data = np.empty((n_time, len(channels), nlat, nlon), dtype=np.float32)
    for i, channel in enumerate(channels):
        omega = 2 * np.pi / (period_days * 24.0) * (1.0 + 0.3 * i)
        for t, hour in enumerate(hours):
            shifted = lon - omega * hour - 0.7 * i
            pattern = np.cos(lat) ** 2 * np.cos(2 * shifted) + 0.6 * np.sin(lat) * np.cos(
                lat
            ) * np.sin(shifted)
            data[t, i] = means.get(channel, 0.0) + amps.get(channel, 1.0) * pattern
    diurnal_channel = channels.index("t2m") if diurnal_amplitude and "t2m" in channels else None
    if diurnal_channel is not None:  # a diurnal cycle in t2m that the climatology holds exactly
        for t, hour in enumerate(hours):
            data[t, diurnal_channel] += toy_diurnal(hour % 24, grid.longitude, diurnal_amplitude)
    weights = grid.area_weights()[None, :, None]
    mean = (data * weights).mean(axis=(0, 2, 3))
    std = np.sqrt((((data - mean[None, :, None, None]) ** 2) * weights).mean(axis=(0, 2, 3)))
    diff = np.diff(data, axis=0)
    diff_std = np.sqrt(((diff**2) * weights).mean(axis=(0, 2, 3)))
    hours_of_day = np.array([0, 6, 12, 18])
    climatology = np.broadcast_to(data.mean(axis=0), (366, 4, *data.shape[1:])).astype(np.float32)
    if diurnal_channel is not None:
        climatology = climatology.copy()
        for h, hour in enumerate(hours_of_day):
            climatology[:, h, diurnal_channel] += toy_diurnal(
                hour, grid.longitude, diurnal_amplitude
            )
    ds = xr.Dataset(
        {
            "data": (("time", "channel", "latitude", "longitude"), data),
            "mean": (("channel",), mean.astype(np.float64)),
            "std": (("channel",), std.astype(np.float64)),
            "diff_std": (("channel",), diff_std.astype(np.float64)),
            "climatology": (("dayofyear", "hour", "channel", "latitude", "longitude"), climatology),
        },
        coords={
            "time": times,
            "channel": np.array(channels, dtype=object),
            "latitude": grid.latitude,
            "longitude": grid.longitude,
            "dayofyear": np.arange(1, 367),
            "hour": hours_of_day,
        },
        attrs={
            "store_format_version": 1,
            "grid_kind": grid.kind,
            "time_step": f"{step_hours}h",
            "calendar": "standard",
            "statistics_start": str(times[0]),
            "statistics_end": str(times[-1]),
            "sources": "toy rotating pattern",
            "software_version": "test",
        },
    )
    ds = ds.chunk({"time": 1, "dayofyear": 61})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated metadata is not (yet) in the Zarr v3 spec
        ds.to_zarr(path, mode="w", consolidated=True)
    return path


@pytest.fixture(scope="session")
def toy_store(tmp_path_factory) -> Path:
    """A 16x32 store of 96 six-hourly steps (24 days) with channels z500 and t850."""
    return write_toy_store(tmp_path_factory.mktemp("store") / "toy.zarr")


@pytest.fixture(scope="session")
def short_store(tmp_path_factory) -> Path:
    """A store of only 3 time steps."""
    return write_toy_store(tmp_path_factory.mktemp("short") / "short.zarr", n_time=3)


@pytest.fixture
def zonal_parts(monkeypatch) -> list:
    """Every per-channel zonal-mean error the trainer computes, recorded as it is computed."""
    import forecast.training.trainer as trainer_module

    parts: list = []
    original = trainer_module.per_channel_zonal_mse

    def recording(prediction, target, latitude_weights):
        parts.append(original(prediction, target, latitude_weights).detach().clone())
        return parts[-1]

    monkeypatch.setattr(trainer_module, "per_channel_zonal_mse", recording)
    return parts
