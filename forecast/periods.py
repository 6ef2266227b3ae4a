"""Calendar periods of a climate run: months, seasons, years and the whole run, exact in any calendar.

A run's states are valid at ``start + k * step``; a reduction over a period
averages the states valid in ``[period start, period end)``, so each state
stands for the step that follows it (a left Riemann sum of the time mean).
The state valid at the run's end closes the last step and is not averaged.
A period the run covers only in part is *partial*; its bounds are clipped to
the run.

Period boundaries come from the calendar of the times themselves: cftime
for ``noleap``, ``360_day`` and the other CF calendars (a 360_day February
has 30 days, a noleap year 365), ``numpy.datetime64`` for the standard one.
:data:`PERIOD_KINDS` maps the names of ``--reduce`` to their kinds.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cftime
import numpy as np
import pandas as pd

from forecast.errors import CalendarError
from forecast.time import canonical_calendar, format_step, format_time, time_calendar


def calendar_time(calendar: str, year: int, month: int, day: int = 1, hour: int = 0):
    """A time of ``calendar``: ``datetime64[ns]`` for standard, cftime otherwise.

    Raises
    ------
    CalendarError
        For a date the calendar does not have (31 April, 30 February outside 360_day).
    """
    calendar = canonical_calendar(calendar)
    try:
        if calendar == "standard":
            return np.datetime64(dt.datetime(year, month, day, hour), "ns")
        return cftime.datetime(year, month, day, hour, calendar=calendar)
    except ValueError as err:
        raise CalendarError(
            f"{year:04d}-{month:02d}-{day:02d} is not a date of the {calendar} calendar ({err})"
        ) from err


def year_month(time) -> tuple[int, int]:
    """Year and month of a datetime64 or cftime time."""
    if isinstance(time, cftime.datetime):
        return int(time.year), int(time.month)
    stamp = pd.Timestamp(time)
    return int(stamp.year), int(stamp.month)


def seconds_between(start, end) -> float:
    """``end - start`` in seconds, for two times of one calendar (datetime64 or cftime)."""
    delta = end - start
    if isinstance(delta, np.timedelta64):
        return float(delta / np.timedelta64(1, "s"))
    return float(delta.total_seconds())


def shift_time(time, seconds: float):
    """``time`` moved by ``seconds`` (whole seconds), keeping its kind."""
    if isinstance(time, cftime.datetime):
        return time + dt.timedelta(seconds=seconds)
    return np.datetime64(time, "ns") + np.timedelta64(int(round(seconds * 1e9)), "ns")


@dataclass(frozen=True)
class PeriodKind:
    """How a calendar divides into periods of one kind.

    Attributes
    ----------
    name : str
        The ``--reduce`` name.
    frequency : str
        The CF/CMIP ``frequency`` attribute of its output (``mon``, ``sem``, ``yr``, ``fx``).
    months : int
        Length in months (0 for the whole run).
    """

    name: str
    frequency: str
    months: int

    def first_month(self, year: int, month: int) -> tuple[int, int]:
        """Year and month that start the period holding ``year``-``month``."""
        if self.months == 1:
            return year, month
        if self.months == 12:
            return year, 1
        # seasons DJF, MAM, JJA, SON: December opens the next year's DJF
        first = month - (month % 3)
        return (year - 1, 12) if first == 0 else (year, first)

    def bounds(self, year: int, month: int, calendar: str) -> tuple:
        """Nominal start and end (exclusive) of the period that starts ``year``-``month``."""
        end_year, end_month = divmod((month - 1) + self.months, 12)
        return (
            calendar_time(calendar, year, month),
            calendar_time(calendar, year + end_year, end_month + 1),
        )


#: ``--reduce`` name -> period kind (``time-mean`` is the whole run).
PERIOD_KINDS: dict[str, PeriodKind] = {
    "monthly": PeriodKind("monthly", "mon", 1),
    "seasonal": PeriodKind("seasonal", "sem", 3),
    "annual": PeriodKind("annual", "yr", 12),
    "time-mean": PeriodKind("time-mean", "fx", 0),
}

#: Season names by first month.
SEASON_NAMES = {12: "DJF", 3: "MAM", 6: "JJA", 9: "SON"}


def period_kind(name: str) -> PeriodKind:
    """The period kind called ``name``.

    Raises
    ------
    CalendarError
        For a name not in :data:`PERIOD_KINDS`.
    """
    if name not in PERIOD_KINDS:
        raise CalendarError(
            f"--reduce {name!r} is not one of {', '.join(PERIOD_KINDS)}",
            hint="e.g. --reduce monthly,annual",
        )
    return PERIOD_KINDS[name]


@dataclass(frozen=True)
class Period:
    """One period of a run.

    Attributes
    ----------
    start, end : datetime64 or cftime
        The period's bounds, clipped to the run (``end`` exclusive).
    nominal_start, nominal_end
        The calendar period's own bounds.
    first_lead, stop_lead : int
        The leads whose states are averaged: ``first_lead <= lead < stop_lead``.
    label : str
        ``2001-02``, ``2001-DJF``, ``2001`` or ``START/END``.
    """

    start: object
    end: object
    nominal_start: object
    nominal_end: object
    first_lead: int
    stop_lead: int
    label: str

    @property
    def complete(self) -> bool:
        """Whether the run covers the whole calendar period."""
        return self.start == self.nominal_start and self.end == self.nominal_end

    @property
    def samples(self) -> int:
        """Number of states averaged."""
        return self.stop_lead - self.first_lead

    @property
    def middle(self):
        """Half-way between :attr:`start` and :attr:`end` (the CF time of a mean)."""
        return shift_time(self.start, seconds_between(self.start, self.end) / 2.0)


def _label(kind: PeriodKind, year: int, month: int) -> str:
    if kind.months == 1:
        return f"{year:04d}-{month:02d}"
    if kind.months == 3:
        return f"{year + (month == 12):04d}-{SEASON_NAMES[month]}"
    return f"{year:04d}"


def _lead_at_or_after(start, step_seconds: float, time) -> int:
    """The first lead ``k`` with ``start + k * step >= time``."""
    return int(np.ceil(seconds_between(start, time) / step_seconds - 1e-9))


def run_periods(kind: PeriodKind, start, steps: int, step: dt.timedelta) -> list[Period]:
    """The periods of ``kind`` that a run from ``start`` over ``steps`` steps touches.

    Parameters
    ----------
    kind : PeriodKind
    start : datetime64 or cftime
        Valid time of lead 0; its calendar is the run's.
    steps : int
        The run ends at ``start + steps * step``; leads ``0 .. steps - 1`` are averaged.
    step : datetime.timedelta

    Returns
    -------
    list of Period
        In time order; each holds at least one averaged state.
    """
    if steps < 1:
        raise CalendarError(f"a run of {steps} steps has no period to average")
    calendar = time_calendar([start])
    step_seconds = step.total_seconds()
    end = shift_time(start, steps * step_seconds)
    if kind.months == 0:
        text = f"{format_time(start)}/{format_time(end)}"
        return [Period(start, end, start, end, 0, steps, text)]
    periods = []
    year, month = kind.first_month(*year_month(start))
    while True:
        nominal_start, nominal_end = kind.bounds(year, month, calendar)
        if seconds_between(end, nominal_start) >= 0:
            break
        first = max(0, _lead_at_or_after(start, step_seconds, nominal_start))
        stop = min(steps, _lead_at_or_after(start, step_seconds, nominal_end))
        if stop > first:
            clipped_start = start if seconds_between(nominal_start, start) > 0 else nominal_start
            clipped_end = end if seconds_between(end, nominal_end) > 0 else nominal_end
            periods.append(
                Period(
                    clipped_start,
                    clipped_end,
                    nominal_start,
                    nominal_end,
                    first,
                    stop,
                    _label(kind, year, month),
                )
            )
        year, month = (year + (month + kind.months - 1) // 12, (month + kind.months - 1) % 12 + 1)
    return periods


def lead_periods(periods: Sequence[Period], steps: int) -> np.ndarray:
    """Index into ``periods`` of each averaged lead, shape ``(steps,)`` (int32)."""
    index = np.full(steps, -1, dtype=np.int32)
    for number, period in enumerate(periods):
        index[period.first_lead : period.stop_lead] = number
    if (index < 0).any():
        raise ValueError("the periods do not cover every averaged lead")
    return index


_LENGTH = re.compile(r"^\s*(\d+)\s*(y|mo|w|d|h|min)\s*$", re.IGNORECASE)


def add_months(time, months: int):
    """``time`` moved by whole calendar months, day and hour kept.

    Raises
    ------
    CalendarError
        When the day does not exist in the target month (31 January + 1 month).
    """
    year, month = year_month(time)
    total = (month - 1) + months
    target_year, target_month = year + total // 12, total % 12 + 1
    if isinstance(time, cftime.datetime):
        day, hour, minute = time.day, time.hour, time.minute
    else:
        stamp = pd.Timestamp(time)
        day, hour, minute = stamp.day, stamp.hour, stamp.minute
    moved = calendar_time(time_calendar([time]), target_year, target_month, day, hour)
    return shift_time(moved, minute * 60.0)


def steps_for_length(text: str, start, step: dt.timedelta) -> int:
    """Model steps that advance ``start`` by ``text`` (``10y``, ``18mo``, ``90d``, ``12h``) exactly.

    Years and months follow the calendar of ``start`` (10 noleap years are
    3650 days, 10 360_day years 3600).

    Raises
    ------
    CalendarError
        Unparsable text, or a length that is not a whole number of steps.
    """
    match = _LENGTH.match(str(text))
    if not match:
        raise CalendarError(
            f"cannot parse --length {text!r}", hint="write e.g. 10y, 18mo, 90d or 12h"
        )
    count, unit = int(match.group(1)), match.group(2).lower()
    if unit in ("y", "mo"):
        end = add_months(start, count * (12 if unit == "y" else 1))
        seconds = seconds_between(start, end)
    else:
        seconds = count * {"w": 7 * 86400, "d": 86400, "h": 3600, "min": 60}[unit]
    steps, remainder = divmod(seconds, step.total_seconds())
    if remainder or steps < 1:
        raise CalendarError(
            f"--length {text} from {format_time(start)} is not a whole number of {format_step(step)} steps",
            hint="choose a length that is a multiple of the model step",
        )
    return int(steps)
