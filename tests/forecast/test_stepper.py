"""Stepper: normalisation, residual step, forcings, history, and the checks at entry."""

from __future__ import annotations

import datetime as dt

import cftime
import numpy as np
import pytest
import torch

from forecast.errors import ConfigError, DataError, GridError
from forecast.forcings import TIME_FORCINGS
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.stepper import Stepper, TrainableStepper
from forecast.steppers import BackboneStepper, stepper_from_config

CHANNELS = ["z500", "t850"]
GRID = Grid.equiangular(8, 16)
NORMALIZER = Normalizer(
    ("t850", "z500", "q700"),
    np.array([270.0, 5.4e4, 0.003]),
    np.array([12.0, 3.0e3, 0.002]),
    np.array([1.5, 250.0, 0.001]),
)
SIX_HOURS = dt.timedelta(hours=6)


class Constant(torch.nn.Module):
    """A backbone that always predicts ``value`` in every output channel."""

    def __init__(self, out_channels: int, value: float):
        super().__init__()
        self.out_channels, self.value = out_channels, value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], self.out_channels, *x.shape[-2:]), self.value)


def make_stepper(**kwargs) -> BackboneStepper:
    options = {"history": 1, "forcings": True, "residual": True} | kwargs
    return BackboneStepper(
        "fno", {"embed_dim": 4, "num_layers": 1}, CHANNELS, GRID, SIX_HOURS, NORMALIZER, **options
    )


def physical_state(batch: int = 2, history: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(batch, history, 2, *GRID.shape, generator=generator)
    return torch.stack([5.4e4 + 3e3 * noise[:, :, 0], 270.0 + 12.0 * noise[:, :, 1]], dim=2)


def test_attributes_and_normaliser_selection():
    stepper = make_stepper(history=2)
    assert stepper.channels == tuple(CHANNELS) and stepper.grid == GRID and stepper.history == 2
    assert stepper.step == SIX_HOURS and stepper.step.total_seconds() == 21600
    assert stepper.normalizer.channels == ("z500", "t850")
    np.testing.assert_allclose(stepper.normalizer.mean, [5.4e4, 270.0])
    # backbone input: 2 states x 2 channels + 4 forcings
    assert stepper.model.lift.in_channels == 8
    assert stepper.forcing_names == TIME_FORCINGS
    assert isinstance(stepper, Stepper) and isinstance(stepper, TrainableStepper)


def test_residual_step_adds_scaled_tendency():
    stepper = make_stepper()
    stepper.model = Constant(2, 1.0)  # one unit of normalised tendency
    state = physical_state()
    times = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
    out = stepper.advance(state, times)
    assert out.shape == (2, 2, *GRID.shape)
    # one normalised tendency unit is diff_std in physical units
    torch.testing.assert_close(
        out - state[:, -1],
        torch.tensor([250.0, 1.5]).reshape(1, 2, 1, 1).expand_as(out),
        rtol=0,
        atol=0.02,
    )


def test_full_state_mode_predicts_the_state():
    stepper = make_stepper(residual=False)
    stepper.model = Constant(2, 0.0)
    out = stepper.advance(physical_state(), np.array(["2020-01-01"] * 2, dtype="datetime64[ns]"))
    torch.testing.assert_close(out, torch.tensor([5.4e4, 270.0]).reshape(1, 2, 1, 1).expand_as(out))


def test_forward_normalized_history_and_gradients():
    stepper = make_stepper(history=3)
    x = torch.randn(2, 3, 2, *GRID.shape, requires_grad=True)
    forcings = stepper.forcings(
        np.array(["2020-03-01T12", "2020-09-01T18"], dtype="datetime64[ns]")
    )
    y = stepper.forward_normalized(x, forcings)
    assert y.shape == (2, 2, *GRID.shape)
    y.sum().backward()
    assert (
        x.grad[:, -1].abs().sum() > x.grad[:, 0].abs().sum() > 0
    )  # residual path goes through the last state
    with pytest.raises(DataError, match="needs the forcing\\(s\\) cos_local_time, sin_local_time"):
        stepper.forward_normalized(x)
    with pytest.raises(DataError, match="forcing 'cos_year' has shape"):
        stepper.forward_normalized(x, {**forcings, "cos_year": forcings["cos_year"][:1]})


def test_forcing_values_local_time_and_year():
    stepper = make_stepper()
    forcings = stepper.forcings(
        np.array(["2021-01-01T00:00", "2021-01-01T12:00"], dtype="datetime64[ns]")
    )
    assert list(forcings) == list(TIME_FORCINGS)
    assert all(field.shape == (2, *GRID.shape) for field in forcings.values())
    lon = torch.as_tensor(GRID.longitude, dtype=torch.float32)
    # midnight UTC: local solar time is longitude / 360 of a day
    cos_local, sin_local = forcings["cos_local_time"], forcings["sin_local_time"]
    torch.testing.assert_close(cos_local[0, 3], torch.cos(torch.deg2rad(lon)), atol=1e-6, rtol=0)
    torch.testing.assert_close(sin_local[0, 3], torch.sin(torch.deg2rad(lon)), atol=1e-6, rtol=0)
    # noon UTC at longitude 0: cos = -1
    assert cos_local[1, 0, 0].item() == pytest.approx(-1.0)
    # 1 January 00:00: start of the year
    assert forcings["cos_year"][0].unique().tolist() == [1.0]
    assert forcings["sin_year"][0].abs().max() < 1e-6


def test_forcing_cftime_360_day_calendar():
    stepper = make_stepper()
    times = [cftime.datetime(2001, 7, 1, 0, calendar="360_day")]  # day 181 of 360: half the year
    forcings = stepper.forcings(times)
    assert forcings["cos_year"][0, 0, 0].item() == pytest.approx(-1.0, abs=1e-6)
    assert forcings["sin_year"][0, 0, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_without_forcings():
    stepper = make_stepper(forcings=False)
    assert stepper.forcings(np.array(["2020-01-01"], dtype="datetime64[ns]")) == {}
    assert stepper.forcing_names == ()
    assert stepper.model.lift.in_channels == 2
    out = stepper.advance(
        physical_state(1)[:, 0], np.array(["2020-01-01"], dtype="datetime64[ns]")
    )  # 4-D with history 1
    assert out.shape == (1, 2, *GRID.shape)


@pytest.mark.parametrize(
    ("state", "pattern"),
    [
        (
            torch.zeros(1, 1, 3, 8, 16),
            r"expected \(batch, history, channel, lat, lon\) = \(batch, 1, 2, 8, 16\)",
        ),
        (torch.zeros(1, 1, 2, 16, 8), r"shape \(1, 1, 2, 16, 8\)"),
        (torch.zeros(1, 2, 8, 16, 1), r"expected"),
    ],
)
def test_step_checks_shape(state, pattern):
    with pytest.raises(DataError, match=pattern):
        make_stepper().advance(state, np.array(["2020-01-01"], dtype="datetime64[ns]"))


def test_step_checks_coordinates_times_and_values():
    stepper = make_stepper()
    state = physical_state(2)
    times = np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[ns]")
    with pytest.raises(DataError, match=r"missing z500"):
        stepper.advance(state, times, channels=["t850", "q700"])
    with pytest.raises(DataError, match=r"another order"):
        stepper.advance(state, times, channels=["t850", "z500"])
    with pytest.raises(
        GridError, match=r"state is on legendre-gauss 8x16, the model on equiangular 8x16"
    ):
        stepper.advance(state, times, grid=Grid.legendre_gauss(8, 16))
    with pytest.raises(DataError, match=r"got 3 valid times for a batch of 2"):
        stepper.advance(state, np.array(["2020-01-01"] * 3, dtype="datetime64[ns]"))
    state[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        stepper.advance(state, times)
    # an ensemble run steps a blown-up member on (the blow-up guard reports it)
    assert torch.isnan(stepper.advance(state, times, check_finite=False)[0]).any()
    assert torch.isfinite(stepper.advance(state, times, check_finite=False)[1]).all()
    # the right coordinates pass, and one time serves the whole batch
    assert stepper.advance(physical_state(2), times[:1], channels=CHANNELS, grid=GRID).shape == (
        2,
        2,
        8,
        16,
    )


def test_constructor_errors():
    with pytest.raises(DataError, match="no statistics for msl"):
        BackboneStepper("fno", {}, ["z500", "msl"], GRID, SIX_HOURS, NORMALIZER)
    with pytest.raises(ConfigError, match="unknown model"):
        BackboneStepper("transformer", {}, CHANNELS, GRID, SIX_HOURS, NORMALIZER)
    with pytest.raises(DataError, match="history must be at least 1"):
        make_stepper(history=0)


def test_sfno_stepper_on_regional_grid_is_an_error_and_afno_works():
    regional = Grid("regional", 50.0 - np.arange(12), np.arange(20.0))
    with pytest.raises(GridError, match="afno or fno"):
        BackboneStepper("sfno", {}, CHANNELS, regional, SIX_HOURS, NORMALIZER)
    stepper = BackboneStepper(
        "afno",
        {"embed_dim": 8, "depth": 1, "num_blocks": 2, "patch_size": 4},
        CHANNELS,
        regional,
        SIX_HOURS,
        NORMALIZER,
    )
    state = torch.stack(
        [torch.full((1, 1, 12, 20), 5.4e4), torch.full((1, 1, 12, 20), 270.0)], dim=2
    )
    out = stepper.advance(state, np.array(["2020-05-05T06"], dtype="datetime64[ns]"))
    assert out.shape == (1, 2, 12, 20) and torch.isfinite(out).all()
    assert abs(out[:, 1].mean().item() - 270.0) < 12.0  # residual: within a few tendency scales


# -- the diurnal baseline ---------------------------------------------------------------------

HOURS = [0.0, 6.0, 12.0, 18.0]


def diurnal_table() -> np.ndarray:
    """Hour-of-day anomalies (hour, channel, lat, lon): a sine in local hour for t850, zero for z500."""
    table = np.zeros((4, 2, *GRID.shape))
    for i, hour in enumerate(HOURS):
        local = hour + GRID.longitude / 15.0
        table[i, 1] = 3.0 * np.cos(2 * np.pi * (local - 14.0) / 24.0)[None, :]
    return table


def test_diurnal_anomaly_interpolates_cyclically():
    table = diurnal_table()
    stepper = make_stepper(diurnal=(HOURS, table))
    std = np.array([3.0e3, 12.0])[None, :, None, None]
    times = np.array(
        ["2020-03-01T00", "2020-03-01T03", "2020-03-01T18", "2020-03-01T21"], "datetime64[ns]"
    )
    got = stepper.diurnal.anomaly(times).numpy() * std
    np.testing.assert_allclose(got[0], table[0], atol=1e-5)
    np.testing.assert_allclose(got[1], 0.5 * (table[0] + table[1]), atol=1e-5)
    np.testing.assert_allclose(got[2], table[3], atol=1e-5)
    np.testing.assert_allclose(got[3], 0.5 * (table[3] + table[0]), atol=1e-5)  # over midnight


def test_diurnal_table_hours_not_starting_at_midnight():
    stepper = make_stepper(diurnal=([3.0, 9.0, 15.0, 21.0], diurnal_table()))
    table = stepper.diurnal.table.numpy()
    one_am = stepper.diurnal.anomaly(np.array(["2020-03-01T01"], "datetime64[ns]")).numpy()[0]
    # 1 h lies between 21 h of the day before (weight 2/6) and 3 h (weight 4/6)
    np.testing.assert_allclose(one_am, table[3] * (2 / 6) + table[0] * (4 / 6), atol=1e-6)


def test_diurnal_baseline_carries_the_cycle_when_the_backbone_predicts_nothing():
    table = diurnal_table()
    stepper = make_stepper(diurnal=(HOURS, table))
    stepper.model = Constant(2, 0.0)
    state = physical_state()
    times = np.array(["2020-03-01T06", "2020-03-01T18"], "datetime64[ns]")
    new = stepper.advance(state, times)
    expected = state[:, 0].numpy().astype(np.float64)
    expected[0] += table[2] - table[1]  # 06 h -> 12 h
    expected[1] += table[0] - table[3]  # 18 h -> 00 h of the next day
    np.testing.assert_allclose(new.numpy(), expected, rtol=1e-5, atol=1e-3)
    # the change travels as its own named input, beside the four time forcings
    forcings = stepper.forcings(times)
    assert stepper.forcing_names == (*TIME_FORCINGS, "diurnal_change")
    assert forcings["diurnal_change"].shape == (2, 2, *GRID.shape)
    # the table is a persistent buffer: state_dict() carries it as it carries the weights
    assert "diurnal.table" in stepper.state_dict()
    assert not any(name in stepper.state_dict() for name in ("mean", "std", "tendency_scale"))


def test_diurnal_baseline_errors():
    with pytest.raises(DataError, match="needs time forcings and residual"):
        make_stepper(forcings=False, diurnal=(HOURS, diurnal_table()))
    with pytest.raises(DataError, match="expected"):
        make_stepper(diurnal=(HOURS, diurnal_table()[:, :1]))
    with pytest.raises(DataError, match="ascending"):
        make_stepper(diurnal=([0.0, 12.0, 6.0, 18.0], diurnal_table()))
    bad = diurnal_table()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        make_stepper(diurnal=(HOURS, bad))


def test_diurnal_config_round_trip():
    stepper = make_stepper(diurnal=(HOURS, diurnal_table()))
    config = stepper.config()
    assert config["diurnal_hours"] == HOURS
    assert config["stepper"] == "backbone"
    rebuilt = stepper_from_config(config)
    assert isinstance(rebuilt, BackboneStepper) and rebuilt.diurnal.hours == tuple(HOURS)
    assert rebuilt.diurnal.table.shape == stepper.diurnal.table.shape
    assert float(rebuilt.diurnal.table.abs().max()) == 0.0  # the checkpoint fills it
    older = {
        k: v for k, v in make_stepper().config().items() if k not in ("diurnal_hours", "stepper")
    }
    assert stepper_from_config(older).diurnal is None


def test_rollout_forcings_are_each_steps_forcing():
    from forecast.training.rollout import rollout_forcings

    stepper = make_stepper(history=2, diurnal=(HOURS, diurnal_table()))
    times = np.arange(
        np.datetime64("2020-01-01T00"), np.datetime64("2020-01-10T00"), np.timedelta64(6, "h")
    ).astype("datetime64[ns]")
    starts = np.array([0, 5, 11])
    got = rollout_forcings(stepper, times, starts, 4, torch.device("cpu"))
    assert got["cos_year"].shape == (4, 3, *GRID.shape)
    assert got["diurnal_change"].shape == (4, 3, 2, *GRID.shape)
    for k in range(4):  # step k advances the state valid at times[start + history - 1 + k]
        expected = stepper.forcings(times[starts + 1 + k])
        for name in stepper.forcing_names:
            torch.testing.assert_close(got[name][k], expected[name])
