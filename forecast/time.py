"""Time steps, calendars and time parsing.

Stores keep the calendar of their source: ``standard`` times are
``numpy.datetime64``; ``noleap``, ``360_day`` and the other CF calendars are
``cftime`` objects. This module converts between text, both kinds of time,
and steps.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import cftime
import numpy as np
import pandas as pd

from forecast.errors import CalendarError

#: CF calendars we accept, mapped to their canonical name.
CALENDARS = {
    "standard": "standard",
    "gregorian": "standard",
    "proleptic_gregorian": "proleptic_gregorian",
    "noleap": "noleap",
    "365_day": "noleap",
    "all_leap": "all_leap",
    "366_day": "all_leap",
    "360_day": "360_day",
    "julian": "julian",
}

_STEP = re.compile(r"^\s*(\d+)\s*(min|m|h|d)\s*$", re.IGNORECASE)
_STEP_UNITS = {"min": "minutes", "m": "minutes", "h": "hours", "d": "days"}


def canonical_calendar(name: str | None) -> str:
    """Return the canonical name of a CF calendar (``None`` means standard).

    Raises
    ------
    CalendarError
        If the calendar is unknown.
    """
    if name is None:
        return "standard"
    key = str(name).strip().lower()
    if key not in CALENDARS:
        raise CalendarError(
            f"unknown calendar {name!r}",
            hint=f"use one of {', '.join(sorted(set(CALENDARS.values())))}",
        )
    return CALENDARS[key]


def uses_cftime(calendar: str) -> bool:
    """Whether times of this calendar are held as cftime objects (all but standard)."""
    return canonical_calendar(calendar) != "standard"


def parse_step(text: str | dt.timedelta | np.timedelta64) -> dt.timedelta:
    """Parse a time step such as ``"6h"``, ``"30min"``, ``"1d"``.

    Returns
    -------
    datetime.timedelta
        A positive step.
    """
    if isinstance(text, dt.timedelta):
        step = text
    elif isinstance(text, np.timedelta64):
        step = pd.Timedelta(text).to_pytimedelta()
    else:
        match = _STEP.match(str(text))
        if not match:
            raise CalendarError(
                f"cannot parse time step {text!r}", hint="write e.g. 6h, 30min or 1d"
            )
        step = dt.timedelta(**{_STEP_UNITS[match.group(2).lower()]: int(match.group(1))})
    if step <= dt.timedelta(0):
        raise CalendarError(f"time step {text!r} must be positive")
    return step


def format_step(step: dt.timedelta) -> str:
    """Format a step as the shortest of ``"6h"``, ``"1d"``, ``"30min"``."""
    seconds = int(step.total_seconds())
    if seconds % 86400 == 0:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}min"


def parse_time(text: str, calendar: str = "standard"):
    """Parse an ISO-like time (``2020-01-01``, ``2020-01-01T06``, ``2020-01-01 06:00``).

    Returns
    -------
    numpy.datetime64 or cftime.datetime
        ``datetime64[ns]`` for the standard calendar, a cftime datetime otherwise.
    """
    calendar = canonical_calendar(calendar)
    match = re.fullmatch(
        r"\s*(-?\d{1,4})-(\d{1,2})-(\d{1,2})(?:[T ](\d{1,2})(?::(\d{2}))?(?::(\d{2}))?)?Z?\s*",
        str(text),
    )
    if not match:
        raise CalendarError(
            f"cannot parse time {text!r}", hint="write e.g. 2020-01-01 or 2020-01-01T06:00"
        )
    parts = [int(p) if p else 0 for p in match.groups()]
    try:
        if calendar == "standard":
            return np.datetime64(dt.datetime(*parts), "ns")  # type: ignore[call-overload,arg-type]
        return cftime.datetime(*parts, calendar=calendar)
    except ValueError as err:
        raise CalendarError(f"invalid date {text!r} in the {calendar} calendar ({err})") from err


def format_time(value) -> str:
    """ISO text of a datetime64 or cftime time, to the minute."""
    if isinstance(value, cftime.datetime):
        return value.strftime("%Y-%m-%dT%H:%M")
    return pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M")


def time_calendar(times: Sequence | np.ndarray | pd.Index) -> str:
    """The calendar of an array of times (datetime64 or cftime)."""
    values = np.asarray(times)
    if values.size == 0 or np.issubdtype(values.dtype, np.datetime64):
        return "standard"
    first = values.flat[0]
    if isinstance(first, cftime.datetime):
        return canonical_calendar(first.calendar or "standard")
    if isinstance(first, (dt.datetime, pd.Timestamp)):
        return "standard"
    raise CalendarError(f"times of type {type(first).__name__} are neither datetime64 nor cftime")


def time_index(times) -> pd.Index:
    """A pandas index of times: DatetimeIndex or xarray's CFTimeIndex."""
    import xarray as xr

    values = np.asarray(times)
    if np.issubdtype(values.dtype, np.datetime64):
        return pd.DatetimeIndex(values)
    if values.size and not isinstance(values.flat[0], cftime.datetime):
        return pd.DatetimeIndex(values)
    return xr.CFTimeIndex(values)


def time_range(start, end, step: dt.timedelta, calendar: str) -> np.ndarray:
    """Times from ``start`` to ``end`` inclusive every ``step``, in the given calendar."""
    import xarray as xr

    calendar = canonical_calendar(calendar)
    freq = pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr
    if calendar == "standard":
        return pd.date_range(pd.Timestamp(start), pd.Timestamp(end), freq=freq).values
    return np.asarray(xr.date_range(start, end, freq=freq, calendar=calendar, use_cftime=True))


def check_regular(times, step: dt.timedelta) -> None:
    """Raise if times are not strictly increasing at exactly ``step``.

    Raises
    ------
    CalendarError
        Names the first offending pair of times.
    """
    index = time_index(times)
    if len(index) < 2:
        return
    deltas = np.asarray([(index[i + 1] - index[i]) for i in range(len(index) - 1)], dtype=object)
    wanted = pd.Timedelta(step)
    bad = [i for i, d in enumerate(deltas) if pd.Timedelta(d) != wanted]
    if bad:
        i = bad[0]
        raise CalendarError(
            f"times are not regular at step {format_step(step)}: {format_time(index[i])} is followed by "
            f"{format_time(index[i + 1])} ({len(bad)} irregular gap(s))",
            hint="fill the missing times or choose a --step that the data has",
        )


def day_of_year_and_hour(times) -> tuple[np.ndarray, np.ndarray]:
    """Day of year (1-based) and hour of each time, in its own calendar."""
    index = time_index(times)
    return np.asarray(_day_of_year(index)), np.asarray(index.hour)


def _day_of_year(index: pd.Index) -> np.ndarray:
    if isinstance(index, pd.DatetimeIndex):
        return np.asarray(index.day_of_year)
    return np.asarray(index.dayofyear)


def fraction_of_day_and_year(times) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of the day and of the year of each time (for cyclic forcings).

    The year length is that of the calendar (360, 365 or 366 days). Called
    for every training and inference step, so datetime64 times take a NumPy
    path (about 50x faster than through a pandas index, same values).
    """
    values = np.asarray(times)
    if np.issubdtype(values.dtype, np.datetime64):
        return _fraction_of_day_and_year_datetime64(values)
    index = time_index(values)
    day = (np.asarray(index.hour) + np.asarray(index.minute) / 60.0) / 24.0
    if isinstance(index, pd.DatetimeIndex):
        days_in_year = np.where(index.is_leap_year, 366.0, 365.0)
    else:
        days_in_year = np.asarray(
            [t.daysinyear if hasattr(t, "daysinyear") else _days_in_year(t) for t in index]
        )
    year = (_day_of_year(index) - 1 + day) / days_in_year
    return day, year


def _fraction_of_day_and_year_datetime64(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`fraction_of_day_and_year` for proleptic Gregorian datetime64 values."""
    minutes = values.astype("datetime64[m]")
    days = minutes.astype("datetime64[D]")
    day = (minutes - days).astype(np.int64) / 1440.0  # whole minutes, as the pandas path
    years = days.astype("datetime64[Y]")
    day_of_year = (days - years.astype("datetime64[D]")).astype(np.int64)  # 0-based
    year_number = years.astype(np.int64) + 1970
    leap = (year_number % 4 == 0) & ((year_number % 100 != 0) | (year_number % 400 == 0))
    year = (day_of_year + day) / np.where(leap, 366.0, 365.0)
    return day, year


def _days_in_year(value: cftime.datetime) -> float:
    start = cftime.datetime(value.year, 1, 1, calendar=value.calendar)
    end = cftime.datetime(value.year + 1, 1, 1, calendar=value.calendar)
    return (end - start).days


def shift_times(times: np.ndarray, delta: dt.timedelta) -> np.ndarray:
    """Add ``delta`` to each of ``times`` (datetime64 or cftime), keeping the kind.

    Parameters
    ----------
    times : numpy.ndarray
        Shape ``(n,)``, ``datetime64[ns]`` or an object array of cftime datetimes.
    delta : datetime.timedelta
        May be negative.
    """
    times = np.asarray(times)
    if np.issubdtype(times.dtype, np.datetime64):
        return times + np.timedelta64(int(delta.total_seconds() * 1e9), "ns")
    return np.asarray([t + delta for t in times], dtype=object)
