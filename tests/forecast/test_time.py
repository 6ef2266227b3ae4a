"""forecast.time: the NumPy path of the cyclic time fractions against pandas, and cftime calendars."""

from __future__ import annotations

import cftime
import numpy as np
import pandas as pd

from forecast.time import fraction_of_day_and_year


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
