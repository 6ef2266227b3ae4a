"""forecast.time: the NumPy path of the cyclic time fractions against pandas, and cftime calendars."""

from __future__ import annotations

import datetime as dt

import cftime
import numpy as np
import pandas as pd
import pytest

from forecast.errors import CalendarError
from forecast.time import (
    canonical_calendar,
    check_regular,
    day_of_year_and_hour,
    format_step,
    format_time,
    fraction_of_day_and_year,
    parse_step,
    parse_time,
    time_calendar,
    time_range,
)


def test_datetime64_fractions_match_pandas_across_centuries_and_leap_years():
    rng = np.random.default_rng(0)
    seconds = rng.integers(0, 250 * 365 * 86400, size=5000).astype("timedelta64[s]")
    times = (np.datetime64("1890-01-01") + seconds).astype("datetime64[ns]")
    edges = [
        "2000-02-29T23:59:59",
        "2100-03-01T00:00",
        "1900-12-31T18:00",
        "1969-12-31T23:30",
        "2021-01-01T00:00",
    ]
    times = np.concatenate([times, np.array(edges, dtype="datetime64[ns]")])
    day, year = fraction_of_day_and_year(times)
    index = pd.DatetimeIndex(times)
    expected_day = (index.hour.to_numpy() + index.minute.to_numpy() / 60.0) / 24.0
    expected_year = (index.day_of_year.to_numpy() - 1 + expected_day) / np.where(
        index.is_leap_year, 366.0, 365.0
    )
    np.testing.assert_allclose(day, expected_day, rtol=0, atol=1e-12)
    np.testing.assert_allclose(year, expected_year, rtol=0, atol=1e-12)
    # 31 Dec 2020 18:00 of a leap year, and 1 Jan 1900 (not a leap year) at 06:00
    day, year = fraction_of_day_and_year(
        np.array(["2020-12-31T18:00", "1900-01-01T06:00"], "datetime64[ns]")
    )
    np.testing.assert_allclose(day, [0.75, 0.25])
    np.testing.assert_allclose(year, [(365 + 0.75) / 366, 0.25 / 365])


def test_cftime_calendars_use_their_year_length():
    times = np.array(
        [
            cftime.datetime(2001, 12, 30, 12, calendar="360_day"),
            cftime.datetime(2001, 3, 1, 0, calendar="noleap"),
        ]
    )
    day, year = fraction_of_day_and_year(times[:1])
    np.testing.assert_allclose(day, [0.5])
    np.testing.assert_allclose(year, [(359 + 0.5) / 360])
    day, year = fraction_of_day_and_year(times[1:])
    np.testing.assert_allclose(year, [59 / 365])


# -- edge cases of parsing, formatting, ranges and regularity -----------------------------------


@pytest.mark.parametrize(
    ("text", "step"),
    [("6h", dt.timedelta(hours=6)), (" 30min ", dt.timedelta(minutes=30)), ("1D", dt.timedelta(days=1)),
     ("90m", dt.timedelta(minutes=90)), (np.timedelta64(3, "h"), dt.timedelta(hours=3))],
)  # fmt: skip
def test_parse_step(text, step):
    assert parse_step(text) == step


@pytest.mark.parametrize("bad", ["6 hours", "h", "-6h", "0h", "1.5h", ""])
def test_parse_step_errors(bad):
    with pytest.raises(CalendarError, match="time step"):
        parse_step(bad)


def test_format_step_picks_the_largest_whole_unit():
    assert [format_step(dt.timedelta(minutes=m)) for m in (1440, 2880, 360, 90, 30)] == [
        "1d", "2d", "6h", "90min", "30min",
    ]  # fmt: skip
    for text in ("6h", "1d", "45min"):
        assert format_step(parse_step(text)) == text


def test_parse_time_in_each_calendar_and_its_errors():
    assert parse_time("2020-02-29T06") == np.datetime64("2020-02-29T06:00", "ns")
    assert parse_time(" 2020-01-01 06:30 ") == np.datetime64("2020-01-01T06:30", "ns")
    assert parse_time("2020-01-01T00:00Z") == np.datetime64("2020-01-01", "ns")
    assert parse_time("2001-02-30", "360_day") == cftime.Datetime360Day(2001, 2, 30)
    with pytest.raises(CalendarError, match=r"invalid date '2021-02-29' in the standard calendar"):
        parse_time("2021-02-29")
    with pytest.raises(CalendarError, match="invalid date '2020-02-29' in the noleap calendar"):
        parse_time("2020-02-29", "noleap")
    with pytest.raises(CalendarError, match="cannot parse time 'yesterday'"):
        parse_time("yesterday")
    with pytest.raises(CalendarError, match=r"unknown calendar 'lunar'; use one of"):
        parse_time("2020-01-01", "lunar")


def test_calendar_names_and_kinds():
    assert canonical_calendar(None) == "standard"
    assert canonical_calendar("Gregorian") == "standard"
    assert canonical_calendar("365_day") == "noleap"
    assert time_calendar(np.array([], dtype="datetime64[ns]")) == "standard"
    assert time_calendar([cftime.datetime(2000, 1, 1, calendar="360_day")]) == "360_day"
    assert time_calendar([dt.datetime(2000, 1, 1)]) == "standard"
    with pytest.raises(CalendarError, match="neither datetime64 nor cftime"):
        time_calendar(np.array(["2020"], dtype=object))


def test_format_time_is_iso_to_the_minute_in_both_kinds():
    assert format_time(np.datetime64("2020-01-01T06:30:59")) == "2020-01-01T06:30"
    assert format_time(cftime.Datetime360Day(2000, 2, 30, 18)) == "2000-02-30T18:00"


def test_time_range_is_inclusive_and_follows_the_calendar():
    standard = time_range(
        parse_time("2020-02-28"), parse_time("2020-03-01"), dt.timedelta(days=1), "standard"
    )
    assert len(standard) == 3  # 28, 29 February and 1 March of a leap year
    noleap = time_range(
        parse_time("2020-02-28", "noleap"),
        parse_time("2020-03-01", "noleap"),
        dt.timedelta(days=1),
        "noleap",
    )
    assert len(noleap) == 2
    days360 = time_range(
        parse_time("2000-02-29", "360_day"),
        parse_time("2000-03-01", "360_day"),
        dt.timedelta(days=1),
        "360_day",
    )
    assert [t.day for t in days360] == [29, 30, 1]


def test_check_regular_names_the_first_gap():
    times = np.array(["2020-01-01T00", "2020-01-01T06", "2020-01-01T18"], dtype="datetime64[ns]")
    check_regular(times[:2], dt.timedelta(hours=6))
    check_regular(times[:1], dt.timedelta(hours=6))  # one time: nothing to check
    with pytest.raises(
        CalendarError, match=r"2020-01-01T06:00 is followed by 2020-01-01T18:00 \(1 irregular gap"
    ):
        check_regular(times, dt.timedelta(hours=6))


def test_day_of_year_and_hour_in_the_360_day_calendar():
    times = [cftime.Datetime360Day(2000, 12, 30, 18), cftime.Datetime360Day(2000, 1, 1, 0)]
    doy, hour = day_of_year_and_hour(times)
    assert doy.tolist() == [360, 1] and hour.tolist() == [18, 0]
