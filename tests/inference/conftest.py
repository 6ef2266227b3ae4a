"""Tiny training stores (standard and 360_day calendars) and a tiny model for the inference tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.channels import channel_info
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.steppers import BackboneStepper
from forecast.store import open_store
from tests.forcing_stores import store_times, write_fields_store

CHANNELS = ["z500", "t850", "u10m", "t2m"]
MEANS = np.array([54000.0, 275.0, 0.0, 285.0])
STDS = np.array([3000.0, 15.0, 5.0, 20.0])
NLAT, NLON = 16, 32
STEP = dt.timedelta(hours=6)


def write_store(
    path: Path,
    calendar: str = "standard",
    start: str = "2020-01-01",
    periods: int = 12,
    channels=CHANNELS,
    nlat: int = NLAT,
    nlon: int = NLON,
    step_hours: int = 6,
    mean_factor: float = 1.0,
    units: dict | None = None,
    time_chunk: int = 1,
) -> Path:
    """A store with the layout of forecast.store: smooth fields drifting eastwards (``time_chunk`` times a chunk)."""
    grid = Grid.equiangular(nlat, nlon)
    units = units or {}
    times = store_times(start, periods, calendar, step_hours)
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    index = [CHANNELS.index(c) for c in channels]
    data = np.empty((periods, len(channels), nlat, nlon), dtype=np.float32)
    for t in range(periods):
        for k, c in enumerate(index):
            pattern = np.cos(lat) * np.sin(2 * lon - 0.3 * t + c) + 0.3 * np.sin(3 * lat) * np.cos(
                lon + 0.1 * t
            )
            data[t, k] = mean_factor * (MEANS[c] + STDS[c] * pattern)
    return write_fields_store(
        path,
        times,
        grid,
        data,
        tuple(channels),
        mean_factor * MEANS[index],
        STDS[index],
        calendar,
        step_hours,
        diff_std=STDS[index] * 0.2,
        units=[units.get(c, channel_info(c).units) for c in channels],
        time_chunk=time_chunk,
    )


def make_stepper(
    history: int = 1,
    seed: int = 0,
    channels=CHANNELS,
    nlat: int = NLAT,
    nlon: int = NLON,
    step: dt.timedelta = STEP,
    forcings: bool = True,
) -> BackboneStepper:
    """A tiny SFNO stepper with reproducible random weights (``forcings``: its time-of-day/year inputs)."""
    torch.manual_seed(seed)
    index = [CHANNELS.index(c) for c in channels]
    normalizer = Normalizer(tuple(channels), MEANS[index], STDS[index], STDS[index] * 0.2)
    stepper = BackboneStepper(
        "sfno",
        {"embed_dim": 8, "num_layers": 1},
        list(channels),
        Grid.equiangular(nlat, nlon),
        step,
        normalizer,
        history=history,
        forcings=forcings,
    )
    return stepper.eval()


@pytest.fixture(scope="session")
def store_path(tmp_path_factory) -> Path:
    return write_store(tmp_path_factory.mktemp("store") / "store.zarr")


@pytest.fixture(scope="session")
def store_360_path(tmp_path_factory) -> Path:
    return write_store(
        tmp_path_factory.mktemp("store360") / "store360.zarr",
        calendar="360_day",
        start="2000-02-29",
    )


@pytest.fixture()
def store(store_path) -> xr.Dataset:
    return open_store(store_path)


@pytest.fixture(scope="session")
def stepper() -> BackboneStepper:
    return make_stepper()


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(
    stepper,
    dataset: xr.Dataset,
    init_times: np.ndarray,
    steps: int,
    out: Path,
    *,
    perturbation: str = "none",
    amplitude="0.05",
    seed: int = 0,
    perturbation_options: dict | None = None,
    channels=None,
    output_grid: Grid | None = None,
    layout: str = "default",
    compression: str = "auto",
    show_progress: bool = False,
    log=lambda message: None,
    writer=None,
    **options,
):
    """``run_forecast`` with its collaborators built as ``forecast run`` builds them.

    ``stepper`` may be a :class:`~inference.members.MemberModels` (a
    multi-checkpoint ensemble); ``writer`` another writer.
    """
    from inference.ensemble import run_forecast
    from inference.initial import InitialStates
    from inference.members import MemberModels
    from inference.perturbations import build_perturbation, perturbation_spec
    from inference.request import RunRequest
    from inference.writers import writer_for

    models = MemberModels.of(stepper)  # one stepper, or the models of a multi-checkpoint run
    stepper = models.first
    writer = writer_for(out, layout, compression) if writer is None else writer
    initial = InitialStates(dataset, init_times, stepper)
    spec = perturbation_spec(perturbation, amplitude, stepper.channels, seed, perturbation_options)
    request = RunRequest.for_stepper(
        stepper,
        initial.labels,
        steps,
        channels=channels,
        output_grid=output_grid,
        perturbation=spec,
        layout=layout,
        compression=writer.compression,
        **options,
    )
    return run_forecast(
        models,
        initial,
        build_perturbation(spec, stepper),
        writer,
        request,
        show_progress=show_progress,
        log=log,
    )
