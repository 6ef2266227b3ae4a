"""Calendar periods of climate runs (forecast.periods) and their mergeable accumulators (forecast.accumulators)."""

from __future__ import annotations

import datetime as dt
import itertools

import numpy as np
import pytest
import torch

from forecast.accumulators import Histogram, MeanSum
from forecast.errors import CalendarError
from forecast.periods import calendar_time, period_kind, run_periods, steps_for_length

SIX_HOURS = dt.timedelta(hours=6)


def test_seasons_of_a_noleap_year_from_mid_january():
    start = calendar_time("noleap", 2001, 1, 15)
    steps = 365 * 4
    periods = run_periods(period_kind("seasonal"), start, steps, SIX_HOURS)
    assert [p.label for p in periods] == [
        "2001-DJF",
        "2001-MAM",
        "2001-JJA",
        "2001-SON",
        "2002-DJF",
    ]
    assert [p.complete for p in periods] == [False, True, True, True, False]
    # DJF opens in December of the year before; the partial first season is clipped to the run
    assert periods[0].nominal_start == calendar_time("noleap", 2000, 12, 1)
    assert periods[0].start == start
    # days: Jan 15 .. Feb 28 = 45; MAM 92, JJA 92, SON 91; Dec 1 .. Jan 15 (exclusive) = 45
    assert [p.samples for p in periods] == [4 * d for d in (45, 92, 92, 91, 45)]
    assert sum(p.samples for p in periods) == steps
    assert periods[-1].end == calendar_time("noleap", 2002, 1, 15)
    # consecutive periods share their bounds; leads are contiguous
    for before, after in itertools.pairwise(periods):
        assert before.end == after.start
        assert before.stop_lead == after.first_lead


@pytest.mark.parametrize(
    ("calendar", "year", "february"),
    [("360_day", 2001, 30), ("noleap", 2004, 28), ("standard", 2004, 29), ("standard", 2001, 28)],
)
def test_months_have_their_calendar_length(calendar, year, february):
    start = calendar_time(calendar, year, 1, 1)
    steps = steps_for_length("1y", start, SIX_HOURS)
    periods = run_periods(period_kind("monthly"), start, steps, SIX_HOURS)
    assert len(periods) == 12 and all(p.complete for p in periods)
    assert periods[1].samples == 4 * february
    days = 360 if calendar == "360_day" else 365 + (calendar == "standard" and year % 4 == 0)
    assert steps == 4 * days
    annual = run_periods(period_kind("annual"), start, steps, SIX_HOURS)
    assert [(p.label, p.samples, p.complete) for p in annual] == [(f"{year}", steps, True)]


def test_time_mean_is_one_period_of_the_whole_run():
    start = calendar_time("noleap", 2001, 3, 2, 6)
    (period,) = run_periods(period_kind("time-mean"), start, 10, SIX_HOURS)
    assert (period.first_lead, period.stop_lead, period.complete) == (0, 10, True)
    assert period.end == calendar_time("noleap", 2001, 3, 4, 18)


def test_length_errors_are_calendar_errors():
    start = calendar_time("standard", 2001, 1, 31)
    with pytest.raises(CalendarError):
        steps_for_length("1mo", start, SIX_HOURS)  # 31 February does not exist
    with pytest.raises(CalendarError, match="whole number"):
        steps_for_length("5h", start, SIX_HOURS)
    with pytest.raises(CalendarError, match="is not one of"):
        period_kind("weekly")


def test_merged_sums_are_the_mean_and_survive_a_restart():
    rng = np.random.default_rng(0)
    fields = rng.normal(size=(10, 2, 3, 4)).astype(np.float32)
    months = [MeanSum((2, 3, 4)), MeanSum((2, 3, 4))]
    for index, field in enumerate(fields):
        months[index // 6].add(field)
    year = MeanSum((2, 3, 4))
    for month in months:
        year.merge(month)
    assert year.count == 10
    np.testing.assert_allclose(year.mean(), fields.astype(np.float64).mean(axis=0), rtol=1e-6)
    restored = MeanSum((2, 3, 4))
    restored.load_state(year.state())
    assert np.array_equal(restored.total, year.total) and restored.count == 10
    with pytest.raises(ValueError, match="cannot restore"):
        MeanSum((1, 3, 4)).load_state(year.state())
    assert np.isnan(MeanSum((1,)).mean()).all()


def test_merged_histograms_equal_numpy():
    rng = np.random.default_rng(1)
    low, high, bins = np.array([-1.0, 0.0]), np.array([1.0, 10.0]), 8
    blocks = [
        rng.normal(size=(1, 2, 3, 5)) * np.array([0.8, 6.0])[None, :, None, None] for _ in range(4)
    ]
    halves = [Histogram(low, high, bins, (1, 2, 3)), Histogram(low, high, bins, (1, 2, 3))]
    for index, block in enumerate(blocks):
        halves[index % 2].add(block)
    total = halves[0]
    total.merge(halves[1])
    values = np.concatenate(blocks, axis=3)  # (1, channel, lat, lon * 4)
    for channel in range(2):
        for row in range(3):
            series = values[0, channel, row]
            expected, _ = np.histogram(series, bins=bins, range=(low[channel], high[channel]))
            assert np.array_equal(total.counts[0, channel, row], expected)
            assert total.below[0, channel, row] == (series < low[channel]).sum()
            assert total.above[0, channel, row] == (series > high[channel]).sum()
    restored = Histogram(low, high, bins, (1, 2, 3))
    restored.load_state({k: torch.as_tensor(v) for k, v in total.state().items()})
    assert np.array_equal(restored.counts, total.counts)
    with pytest.raises(ValueError, match="other bins"):
        total.merge(Histogram(low, high + 1, bins, (1, 2, 3)))
