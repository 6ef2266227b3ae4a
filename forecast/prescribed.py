"""Prescribed forcing fields (sea-surface temperature, sea ice) read from a forcing store.

A *forcing store* is an ordinary training store (:mod:`forecast.store`, as
``forecast ingest`` writes it) whose channels are the prescribed variables
(e.g. ``sst``), on the model's grid and in the run's calendar. A stepper
trained with prescribed forcings records their names and statistics (a
:class:`~forecast.normalize.Normalizer`) in its checkpoint; at training and
at run time :func:`connect_forcing_store` opens the store, checks it (every
variable present, the same grid, the same calendar, every valid time the
work needs present) before any compute, and hands it to the stepper, whose
``forcings(times)`` then reads the fields of exactly those valid times.

Reads are lazy: each call reads the chunks of the times asked for (one time
step per chunk in a store of ours), so a decade-long run holds one step's
fields at a time, never the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from forecast.errors import CalendarError, ConfigError, DataError, GridError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.store import open_store, store_calendar, store_channels, store_grid, store_step
from forecast.time import format_step, format_time, time_index

__all__ = [
    "ForcingStore",
    "connect_forcing_store",
    "forcing_statistics",
    "normalise_fields",
]

#: The fix named when a forcing store lacks a time a run needs.
COVERAGE_HINT = (
    "extend the forcing store over the whole period (forecast ingest ... --append), "
    "or shorten the run (--steps/--length) or move --init"
)
#: The fix named when a forcing store lacks a time of the training store.
TRAINING_COVERAGE_HINT = (
    "extend the forcing store over every time of --data (forecast ingest ... --append), "
    "or train on a store of the period the forcing store covers"
)


class ForcingStore:
    """The prescribed variables ``names`` of a forcing store, checked against a model and a calendar.

    Parameters
    ----------
    location : str or Path
        The forcing store (a path or an fsspec URL).
    names : sequence of str
        Variables (channel ids of the store) the model takes, in its order.
    grid : Grid
        The model's grid; the store must be on it.
    calendar : str
        The calendar of the run's (or the training store's) times; the
        store's must be the same.

    Raises
    ------
    FileNotFoundError
        No store at ``location``.
    DataError, GridError, CalendarError
        Not a store of ours, a variable missing, another grid, another calendar;
        each naming the store and the fix.
    """

    def __init__(self, location: str | Path, names: Sequence[str], grid: Grid, calendar: str):
        self.location = str(location)
        self.names = tuple(str(n) for n in names)
        self.dataset = open_store(location)
        have = store_channels(self.dataset)
        missing = [n for n in self.names if n not in have]
        if missing:
            raise DataError(
                f"forcing store lacks variable(s) {', '.join(missing)} (it has {', '.join(have)})",
                path=self.location,
                hint=f"ingest a forcing store with --channels {','.join(self.names)}",
            )
        theirs = store_grid(self.dataset)
        if not theirs.same_as(grid):
            raise GridError(
                f"forcing store is on {theirs.describe()}, the model on {grid.describe()}",
                path=self.location,
                hint=f"ingest the forcing store on the model grid (forecast ingest ... --grid {grid.nlat}x{grid.nlon})",
            )
        self.calendar = store_calendar(self.dataset)
        if self.calendar != calendar:
            raise CalendarError(
                f"forcing store is in the {self.calendar} calendar, the run in the {calendar} calendar",
                path=self.location,
                hint=f"use a forcing store in the {calendar} calendar",
            )
        self.index = time_index(self.dataset["time"].values)
        self._fields = self.dataset["data"].sel(channel=list(self.names))

    def statistics(self) -> Normalizer:
        """Mean and std of the variables (from the store), for the stepper's normalisation."""
        return forcing_statistics(self.dataset, self.names)

    def positions(self, times: Sequence | np.ndarray) -> np.ndarray:
        """Store index of each of ``times`` (exact match), ``-1`` where absent."""
        values = np.atleast_1d(np.asarray(times))
        return np.asarray(self.index.get_indexer(time_index(values)), dtype=np.int64)

    def check_covers(
        self, times: Sequence | np.ndarray, what: str = "the run", hint: str = COVERAGE_HINT
    ) -> None:
        """Raise unless every one of ``times`` is a time of the store.

        Raises
        ------
        DataError
            Naming the store, the first missing time, what the store covers and the fix.
        """
        values = np.atleast_1d(np.asarray(times))
        if values.size == 0:
            return
        absent = self.positions(values) < 0
        if not absent.any():
            return
        first = min(values[absent])
        count = int(absent.sum())
        index = self.index
        span = (
            f"{format_time(index[0])} to {format_time(index[-1])} every {format_step(store_step(self.dataset))}"
            if len(index)
            else "no times"
        )
        raise DataError(
            f"forcing store does not cover {what}: first missing time {format_time(first)} "
            f"({count} of {values.size} valid times missing; it covers {span})",
            path=self.location,
            hint=hint,
        )

    def read(self, times: Sequence | np.ndarray) -> np.ndarray:
        """The fields at ``times``, read lazily (only the chunks of those times).

        Parameters
        ----------
        times : sequence of datetime64 or cftime
            Shape ``(batch,)``, in the store's calendar.

        Returns
        -------
        numpy.ndarray
            ``(batch, len(names), lat, lon)`` float32, physical units.

        Raises
        ------
        DataError
            A time the store does not hold (as :meth:`check_covers`).
        """
        values = np.atleast_1d(np.asarray(times))
        positions = self.positions(values)
        if (positions < 0).any():
            self.check_covers(values)
        unique, inverse = np.unique(positions, return_inverse=True)
        block = self._fields.isel(time=xr.DataArray(unique, dims="sample")).values
        return np.ascontiguousarray(block[inverse.reshape(-1)], dtype=np.float32)


def forcing_statistics(dataset: xr.Dataset, names: Sequence[str]) -> Normalizer:
    """Mean/std (and tendency std) of the prescribed variables ``names`` of a forcing store.

    Raises
    ------
    DataError
        A variable whose std is not positive (a constant field gives the model nothing).
    """
    statistics = Normalizer.from_store(dataset, list(names))
    flat = [n for n, s in zip(statistics.channels, statistics.std, strict=True) if not s > 0]
    if flat:
        raise DataError(
            f"prescribed forcing(s) {', '.join(flat)} have std 0 in the forcing store",
            hint="a constant field carries no information; drop it from --forcing-vars",
        )
    # the tendency std is not used for forcings; keep it positive for Normalizer's users
    diff_std = np.where(statistics.diff_std > 0, statistics.diff_std, statistics.std)
    return Normalizer(statistics.channels, statistics.mean, statistics.std, diff_std)


def normalise_fields(fields: np.ndarray, statistics: Normalizer) -> np.ndarray:
    """``(batch, name, lat, lon)`` physical fields -> ``(field - mean) / std``, float32."""
    mean = statistics.mean.reshape(1, -1, 1, 1)
    std = statistics.std.reshape(1, -1, 1, 1)
    return ((fields - mean) / std).astype(np.float32)


def connect_forcing_store(
    stepper,
    location: str | Path | None,
    calendar: str,
    times: Sequence | np.ndarray,
    *,
    model: str,
    flag: str = "--forcing-store",
    what: str = "the run",
    hint: str = COVERAGE_HINT,
) -> ForcingStore | None:
    """Open and check the forcing store ``stepper`` needs, and hand it to the stepper.

    Everything here happens before any model compute.

    Parameters
    ----------
    stepper : Stepper
        Has ``prescribed_names`` and ``use_forcing_store(store)``.
    location : str or Path, optional
        The forcing store given (``--forcing-store``), or None.
    calendar : str
        The calendar of ``times``.
    times : sequence of datetime64 or cftime
        Every valid time the work reads forcings at (a run: lead 0 through the
        last lead of every init time; training: the store's times).
    model : str
        Names the checkpoint (or the model) in messages.
    flag : str
        The option that names the forcing store, for messages.
    what : str
        What ``times`` are, for the coverage message (``"the run"``).
    hint : str
        The fix a coverage error names.

    Returns
    -------
    ForcingStore or None
        None when the stepper takes no prescribed forcings.

    Raises
    ------
    ConfigError
        The stepper needs prescribed forcings and no store is given, or a
        store is given to a stepper that takes none.
    DataError, GridError, CalendarError
        As :class:`ForcingStore` and :meth:`ForcingStore.check_covers`.
    """
    names = tuple(getattr(stepper, "prescribed_names", ()))
    if not names:
        if location is not None:
            raise ConfigError(
                f"{model} takes no prescribed forcings, but {flag} {location} was given",
                hint=f"drop {flag}, or use a model trained with --forcing-vars",
            )
        return None
    if location is None:
        raise ConfigError(
            f"{model} was trained with the prescribed forcing(s) {', '.join(names)}, "
            f"but no {flag} was given",
            hint=f"add {flag} STORE.zarr holding {', '.join(names)} over the whole period",
        )
    store = ForcingStore(location, names, stepper.grid, calendar)
    store.check_covers(times, what, hint)
    stepper.use_forcing_store(store)
    return store
