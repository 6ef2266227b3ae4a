"""The lead-time iterator, init-time parsing and the checks made before any compute."""

from __future__ import annotations

import datetime as dt

import cftime
import numpy as np
import pytest
import torch

from forecast.errors import CalendarError, CheckpointError, DataError
from forecast.store import open_store
from inference.initial import (
    available_init_times,
    check_init_times,
    check_store_matches,
    load_initial_state,
    parse_init_spec,
    shift_times,
)
from inference.rollout import BlowUpGuard, rollout
from tests.inference.conftest import CHANNELS, make_stepper, write_store


def test_rollout_yields_initial_condition_then_steps_with_valid_times(store, stepper):
    init = parse_init_spec("2020-01-01T06", "standard")
    state = load_initial_state(store, CHANNELS, init, 1)
    leads = list(rollout(stepper, state, init, 3))
    assert [s.lead for s in leads] == [0, 1, 2, 3]
    assert torch.equal(leads[0].state, state[:, -1])
    assert leads[3].valid_time[0] == np.datetime64("2020-01-01T00:00") + np.timedelta64(24, "h")
    # each step is the model applied to the previous state at the previous valid time
    expected = stepper.advance(leads[1].state[:, None], leads[1].valid_time)
    torch.testing.assert_close(leads[2].state, expected)


def test_rollout_keeps_history_window_and_360_day_calendar(store_360_path):
    ds = open_store(store_360_path)
    stepper = make_stepper(history=2)
    init = parse_init_spec("2000-02-30T00", "360_day")
    state = load_initial_state(ds, CHANNELS, init, 2)
    assert state.shape == (1, 2, 4, 16, 32)
    # oldest first: the history slice 6 h before the init
    np.testing.assert_array_equal(
        state[0, 0].numpy(), ds["data"].sel(time=cftime.Datetime360Day(2000, 2, 29, 18)).values
    )
    leads = list(rollout(stepper, state, init, 4))
    assert leads[-1].valid_time[0] == cftime.Datetime360Day(2000, 3, 1, 0)
    assert all(torch.isfinite(s.state).all() for s in leads)


def test_shift_times_both_kinds():
    standard = np.array(["2020-02-28T18"], dtype="datetime64[ns]")
    assert shift_times(standard, dt.timedelta(hours=12))[0] == np.datetime64("2020-02-29T06")
    days360 = np.array([cftime.Datetime360Day(2000, 2, 30, 18)], dtype=object)
    assert shift_times(days360, dt.timedelta(hours=6))[0] == cftime.Datetime360Day(2000, 3, 1, 0)


def test_parse_init_spec_range_and_errors():
    times = parse_init_spec("2020-01-01T00/2020-01-02T00/12h", "standard")
    assert list(times) == list(
        np.array(["2020-01-01T00", "2020-01-01T12", "2020-01-02T00"], dtype="datetime64[ns]")
    )
    with pytest.raises(CalendarError, match="ends before it starts"):
        parse_init_spec("2020-01-02/2020-01-01/6h", "standard")
    with pytest.raises(CalendarError, match="cannot parse --init"):
        parse_init_spec("2020-01-01/2020-01-02", "standard")


def test_available_init_times_need_history(store):
    assert len(available_init_times(store, 1)) == 12
    available = available_init_times(store, 3)
    assert available[0] == np.datetime64("2020-01-01T12")


def test_missing_init_and_history_times_are_listed(store):
    with pytest.raises(
        DataError,
        match=r"initial time\(s\) 2020-02-01T00:00 not in the store.*covers 2020-01-01T00:00 to 2020-01-03T18:00 every 6h",
    ):
        check_init_times(store, parse_init_spec("2020-02-01", "standard"), 1)
    with pytest.raises(
        DataError, match=r"history time\(s\) 2019-12-31T18:00 not in the store \(the model needs 2"
    ):
        check_init_times(store, parse_init_spec("2020-01-01T00", "standard"), 2)


def test_store_checkpoint_mismatches_are_all_listed(tmp_path, stepper):
    ds = open_store(
        write_store(
            tmp_path / "bad.zarr", channels=["t850", "u10m", "t2m"], nlat=8, nlon=16, step_hours=12
        )
    )
    with pytest.raises(CheckpointError) as info:
        check_store_matches(ds, stepper.channels, stepper.grid, stepper.step, stepper.normalizer)
    message = str(info.value)
    assert "store lacks channel(s) z500" in message
    assert "store grid is equiangular 8x16, checkpoint grid is equiangular 16x32" in message
    assert "store step is 12h, checkpoint step is 6h" in message


def test_units_mismatch_recorded_in_store(tmp_path, stepper):
    ds = open_store(write_store(tmp_path / "units.zarr", units={"z500": "m"}))
    with pytest.raises(
        CheckpointError, match=r"units differ for z500 \(store m, model m\*\*2 s\*\*-2\)"
    ):
        check_store_matches(ds, stepper.channels, stepper.grid, stepper.step, stepper.normalizer)


def test_units_mismatch_is_caught_by_statistics(tmp_path, stepper):
    ds = open_store(write_store(tmp_path / "units.zarr", mean_factor=1 / 9.80665))
    with pytest.raises(
        CheckpointError, match=r"statistics disagree for z500 .*t850 .*are the units the same"
    ):
        check_store_matches(ds, stepper.channels, stepper.grid, stepper.step, stepper.normalizer)


def test_blowup_guard_reports_member_step_channel_once():
    guard = BlowUpGuard(["a", "b"], np.array([0.0, -1.0]), np.array([10.0, 1.0]))
    state = torch.ones(3, 2, 4, 4)
    state[1, 1, 2, 2] = float("nan")
    state[2, 1, 0, 0] = 5.0
    found = guard.check(state, ["t0"] * 3, [0, 1, 2], lead=4)
    assert [(b.member, b.lead, b.channel) for b in found] == [(1, 4, "b"), (2, 4, "b")]
    assert found[0].reason == "non-finite" and "above 1" in found[1].reason
    assert guard.check(state, ["t0"] * 3, [0, 1, 2], lead=5) == []


def test_blowup_guard_finds_a_global_mean_out_of_the_climate_not_a_storm():
    """Area-weighted global means more than 3 stds from the channel's mean; one extreme cell is not that."""
    weights = np.cos(np.deg2rad(np.linspace(-84.375, 84.375, 16)))
    climate = (np.array([0.0, 10.0]), np.array([1.0, 2.0]), weights)
    guard = BlowUpGuard(["a", "b"], np.array([-50.0, -90.0]), np.array([50.0, 110.0]), climate)
    state = torch.zeros(3, 2, 16, 32)
    state[:, 1] = 10.0
    state[0, 0] = 2.9  # member 0: a 2.9 stds off everywhere: inside
    state[1, 1] = 10.0 - 3.2 * 2.0  # member 1: b 3.2 stds low everywhere
    state[2, 0, 8, 5] = -45.0  # member 2: a 45-std storm in one cell
    found = guard.check(state, ["t0"] * 3, [0, 1, 2], lead=9)
    assert [(b.member, b.lead, b.channel) for b in found] == [(1, 9, "b")]
    assert found[0].reason == "global mean 3.6 is 3.2 stds from its mean 10"
    assert found[0].describe() == (
        "member 1 of the forecast from t0 left the climate at lead 9 in b "
        "(global mean 3.6 is 3.2 stds from its mean 10)"
    )
    assert (
        BlowUpGuard(["a", "b"], guard.lower, guard.upper).check(state, ["t0"] * 3, [0, 1, 2], 9)
        == []
    )
