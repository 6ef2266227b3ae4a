"""Initial conditions: which init times, whether the store can serve them, and loading them.

Everything here runs before any model compute, so that a mismatch between the
store and the checkpoint (channels, grid, step, units) or a missing initial
time is a one-line error that lists what is missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch
import xarray as xr

from forecast.channels import channel_info
from forecast.dims import CHANNEL, TIME
from forecast.errors import CalendarError, CheckpointError, ConfigError, DataError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.stepper import Stepper
from forecast.store import store_calendar, store_channels, store_grid, store_step
from forecast.time import (
    format_step,
    format_time,
    parse_step,
    parse_time,
    shift_times,
    time_index,
    time_range,
)

#: How many missing times an error message lists before it summarises.
_LIST_AT_MOST = 5


def _list_times(times: Sequence) -> str:
    shown = [format_time(t) for t in list(times)[:_LIST_AT_MOST]]
    more = len(times) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def parse_init_spec(spec: str, calendar: str) -> np.ndarray:
    """Parse ``TIME`` or ``START/END/STEP`` into an array of init times.

    ``latest`` is resolved elsewhere (it depends on the output location), see
    :func:`inference.schedule.resolve_latest`.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_init,)``, in the store's calendar (datetime64 or cftime).
    """
    parts = [p.strip() for p in str(spec).split("/")]
    if len(parts) == 1:
        return np.asarray([parse_time(parts[0], calendar)])
    if len(parts) != 3:
        raise CalendarError(
            f"cannot parse --init {spec!r}",
            hint="write TIME, START/END/STEP (e.g. 2020-01-01T00/2020-03-01T00/12h) or latest",
        )
    start, end = parse_time(parts[0], calendar), parse_time(parts[1], calendar)
    if end < start:
        raise CalendarError(f"--init {spec!r} ends before it starts")
    return np.asarray(time_range(start, end, parse_step(parts[2]), calendar))


def run_valid_times(
    init_times: np.ndarray, steps: int, step: dt.timedelta, calendar: str
) -> np.ndarray:
    """Every valid time of a run: each init time through its last lead, once each, sorted.

    Parameters
    ----------
    init_times : numpy.ndarray
        Shape ``(init,)``, in ``calendar``.
    steps : int
        Model steps per forecast (leads ``0 .. steps``).
    step : datetime.timedelta
        The model step.
    calendar : str
        The calendar of the times (cftime-exact for noleap and 360_day).

    Returns
    -------
    numpy.ndarray
        Shape ``(time,)``, datetime64 or cftime as ``init_times``.
    """
    spans = [
        time_range(init, shift_times(np.asarray([init]), steps * step)[0], step, calendar)
        for init in np.asarray(init_times)
    ]
    values = np.concatenate(spans)
    return np.asarray(time_index(values).unique().sort_values())


def available_init_times(ds: xr.Dataset, history: int) -> np.ndarray:
    """Store times that can start a forecast: those with ``history - 1`` earlier steps present."""
    values = np.asarray(ds[TIME].values)
    step = store_step(ds)
    index = time_index(values)
    usable = np.ones(len(values), dtype=bool)
    for k in range(1, history):
        usable &= index.get_indexer(time_index(shift_times(values, -k * step))) >= 0
    return values[usable]


def check_store_matches(
    ds: xr.Dataset,
    channels: Sequence[str],
    grid: Grid,
    step: dt.timedelta,
    normalizer: Normalizer | None = None,
    units: dict[str, str] | None = None,
) -> None:
    """Check that a store can feed a model of these channels, grid, step and units.

    Parameters
    ----------
    ds : xarray.Dataset
        The training store (see :mod:`forecast.store`).
    channels, grid, step
        What the checkpoint was trained on.
    normalizer : Normalizer, optional
        The checkpoint's statistics. A store mean that differs from it by more
        than 5 standard deviations points to other units (e.g. geopotential
        height in m against geopotential in m**2 s**-2).
    units : dict, optional
        Units per channel the model was trained in (default: the canonical
        units of :mod:`forecast.channels`), compared with the store's
        ``channel_units`` when it has them.

    Raises
    ------
    CheckpointError
        Listing every mismatch at once.
    """
    problems = []
    have = store_channels(ds)
    missing = [c for c in channels if c not in have]
    if missing:
        problems.append(f"store lacks channel(s) {', '.join(missing)} (it has {', '.join(have)})")
    sgrid = store_grid(ds)
    if not sgrid.same_as(grid):
        problems.append(f"store grid is {sgrid.describe()}, checkpoint grid is {grid.describe()}")
    sstep = store_step(ds)
    if sstep != step:
        problems.append(
            f"store step is {format_step(sstep)}, checkpoint step is {format_step(step)}"
        )
    present = [c for c in channels if c in have]
    store_units = _store_units(ds)
    expected = {c: (units or {}).get(c) or _canonical_units(c) for c in present}
    bad = [
        f"{c} (store {store_units[c]}, model {expected[c]})"
        for c in present
        if c in store_units and expected[c] and store_units[c] != expected[c]
    ]
    if bad:
        problems.append(f"units differ for {', '.join(bad)}")
    if normalizer is not None and present and not missing:
        smean = ds["mean"].sel(channel=list(channels)).values.astype(np.float64)
        index = [normalizer.channels.index(c) for c in channels]
        offset = np.abs(smean - normalizer.mean[index]) / normalizer.std[index]
        bad = [
            f"{c} (store mean {m:.4g}, checkpoint mean {normalizer.mean[i]:.4g})"
            for c, m, o, i in zip(channels, smean, offset, index, strict=True)
            if o > 5
        ]
        if bad:
            problems.append(
                f"store and checkpoint statistics disagree for {', '.join(bad)}; are the units the same?"
            )
    if problems:
        raise CheckpointError(
            "checkpoint does not match the store: " + "; ".join(problems),
            hint="use a store ingested like the training data, or the checkpoint trained on this store",
        )


def _store_units(ds: xr.Dataset) -> dict[str, str]:
    """Units per channel as the store records them (``channel_units(channel)``), if it does."""
    for name in ("channel_units", "units"):
        if name in ds.variables and ds[name].dims == (CHANNEL,):
            return {c: str(u) for c, u in zip(store_channels(ds), ds[name].values, strict=True)}
    return {}


def _canonical_units(channel: str) -> str | None:
    try:
        return channel_info(channel).units
    except DataError:
        return None


def check_init_times(ds: xr.Dataset, init_times: np.ndarray, history: int) -> None:
    """Raise unless every init time and its ``history - 1`` predecessors are in the store.

    Raises
    ------
    DataError
        Listing the missing times (the first few, and how many).
    """
    step = store_step(ds)
    index = time_index(ds[TIME].values)
    init_times = np.asarray(init_times)
    missing_init = list(init_times[index.get_indexer(time_index(init_times)) < 0])
    earlier = [shift_times(init_times, -k * step) for k in range(1, history)]
    needed = np.concatenate(earlier) if earlier else init_times[:0]
    missing_history = list(needed[index.get_indexer(time_index(needed)) < 0]) if len(needed) else []
    missing_history = [
        t
        for i, t in enumerate(missing_history)
        if t not in missing_history[:i] and t not in missing_init
    ]
    problems = []
    if missing_init:
        problems.append(f"initial time(s) {_list_times(missing_init)} not in the store")
    if missing_history:
        problems.append(
            f"history time(s) {_list_times(missing_history)} not in the store (the model needs {history} consecutive step(s))"
        )
    if problems:
        span = (
            f"{format_time(index[0])} to {format_time(index[-1])} every {format_step(step)}"
            if len(index)
            else "no times"
        )
        raise DataError("; ".join(problems), hint=f"the store covers {span}")


def load_initial_state(
    ds: xr.Dataset, channels: Sequence[str], init_times: np.ndarray, history: int
) -> torch.Tensor:
    """Read the states that start forecasts at ``init_times``.

    Returns
    -------
    torch.Tensor
        Shape ``(n_init, history, channel, lat, lon)``, float32, physical units;
        the last history slice is valid at the init time.
    """
    step = store_step(ds)
    wanted = [shift_times(np.asarray(init_times), -k * step) for k in range(history - 1, -1, -1)]
    times = np.stack(wanted, axis=1).reshape(-1)  # (n_init * history,)
    index = time_index(ds[TIME].values)
    positions = index.get_indexer(time_index(times))
    if (positions < 0).any():
        check_init_times(ds, init_times, history)
    values = (
        ds["data"]
        .sel(channel=list(channels))
        .isel(time=xr.DataArray(positions, dims="sample"))
        .values
    )
    values = values.reshape(len(init_times), history, len(channels), *values.shape[-2:])
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


class InitialStates:
    """The initial conditions of a run: its init times, checked against a store, and their states.

    Parameters
    ----------
    store : xarray.Dataset
        The training store (:func:`forecast.store.open_store`).
    init_times : numpy.ndarray
        Shape ``(time,)``, in the store's calendar.
    stepper : Stepper
        The model the states feed: its channels, grid, step, statistics and history.

    Raises
    ------
    CheckpointError
        The store does not match the model (channels, grid, step, units).
    DataError
        An init time, or one of the history times before it, is not in the store.

    Attributes
    ----------
    times : numpy.ndarray
        The init times.
    labels : tuple of str
        Their ISO text (``format_time``), as manifests and seeds use it.
    calendar : str
        The store's calendar.
    """

    def __init__(self, store: xr.Dataset, init_times: np.ndarray, stepper: Stepper):
        self.store = store
        self.times = np.asarray(init_times)
        if len(self.times) == 0:
            raise ConfigError("no initial times to forecast from")
        self.channels = list(stepper.channels)
        self.history = int(stepper.history)
        check_store_matches(store, self.channels, stepper.grid, stepper.step, stepper.normalizer)
        check_init_times(store, self.times, self.history)
        self.labels = tuple(format_time(t) for t in self.times)
        self.calendar = store_calendar(store)

    def __len__(self) -> int:
        return len(self.times)

    def load(self, index: np.ndarray) -> torch.Tensor:
        """States that start the forecasts of init times ``times[index]``.

        Returns
        -------
        torch.Tensor
            Shape ``(len(index), history, channel, lat, lon)``, float32, physical units.
        """
        return load_initial_state(self.store, self.channels, self.times[index], self.history)
