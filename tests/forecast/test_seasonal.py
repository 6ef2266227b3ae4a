"""The seasonal baseline: Fourier fit of the store's climatology, the anomaly stepper, round trips."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch
import zarr

from forecast.errors import DataError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.seasonal import SeasonalBaseline, fit_seasonal_cycle, fourier_basis
from forecast.steppers import BackboneStepper, stepper_from_config
from forecast.time import fraction_of_day_and_year

from .training.conftest import write_toy_store

CHANNELS = ["z500", "t850"]
GRID = Grid.equiangular(8, 16)
NORMALIZER = Normalizer(
    ("t850", "z500"),
    np.array([270.0, 5.4e4]),
    np.array([12.0, 3.0e3]),
    np.array([1.5, 250.0]),
)
HOURS = [0.0, 6.0, 12.0, 18.0]


def coefficients(harmonics: int = 2) -> np.ndarray:
    """Physical coefficients (2 h + 1, channel, lat, lon): z500 and t850 means with annual cycles."""
    rng = np.random.default_rng(0)
    table = rng.normal(size=(2 * harmonics + 1, 2, *GRID.shape))
    table[:, 0] *= 200.0
    table[0, 0] += 5.4e4
    table[:, 1] *= 3.0
    table[0, 1] += 270.0
    return table


def test_fit_recovers_a_known_seasonal_cycle():
    fraction = (np.arange(365) + 0.375) / 365
    values = (
        280.0
        + 10.0 * np.cos(2 * np.pi * fraction)
        - 2.0 * np.sin(4 * np.pi * fraction)
        + 0.5 * np.cos(6 * np.pi * fraction)
    )
    fitted = fit_seasonal_cycle(fraction, values[:, None] * [1.0, 2.0], harmonics=4)
    expected = np.zeros(9)
    expected[[0, 1, 4, 5]] = [280.0, 10.0, -2.0, 0.5]
    np.testing.assert_allclose(fitted[:, 0], expected, atol=1e-9)
    np.testing.assert_allclose(fitted[:, 1], 2 * expected, atol=1e-9)
    assert fourier_basis(fraction, 4).shape == (365, 9)
    with pytest.raises(DataError, match="cannot fit"):
        fit_seasonal_cycle(fraction[:5], values[:5], harmonics=4)


def test_store_seasonal_cycle_fits_the_daily_means_at_their_hours(tmp_path):
    from forecast.store import open_store, seasonal_cycle

    path = write_toy_store(tmp_path / "toy.zarr")  # climatology (366, 4, channel, 16, 32)
    clim = zarr.open_array(str(path), path="climatology", mode="r+")
    days = np.arange(1, 367)
    hours = np.array([0, 6, 12, 18])
    # each hour's value at its own time of year: the daily mean is the cycle at the mean hour
    fraction = (days[:, None] - 1 + hours[None, :] / 24.0) / 366
    values = np.zeros(clim.shape, dtype=np.float32)
    values[:, :, 0] = (5.5e4 + 400.0 * np.cos(2 * np.pi * fraction))[..., None, None]
    values[:, :, 1] = (275.0 + 6.0 * np.sin(2 * np.pi * fraction))[..., None, None]
    clim[...] = values
    table = seasonal_cycle(open_store(path), ["t850", "z500"], harmonics=2)
    assert table.shape == (5, 2, 16, 32)
    # the mean of the 4 hours of a cosine is the cosine at the mean hour times cos(pi/366)-ish
    # terms of order (2 pi / 366 / 4)**2: 1e-4 relative
    np.testing.assert_allclose(table[0, 0], 275.0, atol=1e-3)
    np.testing.assert_allclose(table[2, 0], 6.0, rtol=1e-3)
    np.testing.assert_allclose(table[1, 0], 0.0, atol=1e-3)
    np.testing.assert_allclose(table[0, 1], 5.5e4, rtol=1e-6)
    np.testing.assert_allclose(table[1, 1], 400.0, rtol=1e-3)
    np.testing.assert_allclose(table[3:], 0.0, atol=0.02)


def make_stepper(**kwargs) -> BackboneStepper:
    options = {"history": 2, "forcings": True, "residual": False, "seasonal": coefficients()}
    return BackboneStepper(
        "fno",
        {"embed_dim": 4, "num_layers": 1},
        CHANNELS,
        GRID,
        dt.timedelta(hours=6),
        NORMALIZER,
        **(options | kwargs),
    )


def climatology(times, diurnal=None) -> np.ndarray:
    """Physical climatology at ``times`` from the coefficients, by numpy: (batch, channel, lat, lon)."""
    _, year = fraction_of_day_and_year(times)
    state = np.einsum("bk,kchw->bchw", fourier_basis(year, 2), coefficients())
    if diurnal is not None:
        day, _ = fraction_of_day_and_year(times)
        state = state + diurnal[np.round(np.asarray(day) * 4).astype(int) % 4]
    return state


def test_a_silent_backbone_forecasts_the_climatology_and_sees_departures():
    diurnal = np.zeros((4, 2, *GRID.shape))
    diurnal[:, 1] = np.array([-2.0, -1.0, 3.0, 0.0])[:, None, None]  # t850 by hour
    stepper = make_stepper(diurnal=(HOURS, diurnal))
    for parameter in stepper.model.parameters():
        parameter.data.zero_()
    times = np.array(["2020-03-01T06", "2020-11-30T18"], "datetime64[ns]")
    state = torch.randn(2, 2, 2, *GRID.shape) * torch.tensor([300.0, 4.0])[:, None, None]
    state = state + torch.tensor([5.4e4, 270.0])[:, None, None]
    new = stepper.advance(state, times).numpy()
    later = times + np.timedelta64(6, "h")
    np.testing.assert_allclose(new, climatology(later, diurnal), rtol=1e-6, atol=1e-3)
    # what the backbone sees: each input state's departure from the climatology at its time
    forcings = stepper.forcings(times)
    assert stepper.forcing_names[-1] == "climatology" and "diurnal_change" not in forcings
    assert forcings["climatology"].shape == (2, 3, 2, *GRID.shape)
    inputs = stepper.backbone_inputs(stepper.normalize(state), forcings)[:, :4]
    std = np.array([3.0e3, 12.0])[None, :, None, None]
    earlier = times - np.timedelta64(6, "h")
    for k, at in enumerate((earlier, times)):
        departure = (state[:, k].numpy() - climatology(at, diurnal)) / std
        np.testing.assert_allclose(inputs[:, 2 * k : 2 * k + 2].numpy(), departure, atol=1e-4)


def test_seasonal_config_round_trip_and_checkpoint_buffer():
    stepper = make_stepper()
    config = stepper.config()
    assert config["seasonal_harmonics"] == 2
    rebuilt = stepper_from_config(config)
    rebuilt.load_state_dict(stepper.state_dict())
    times = np.array(["2021-07-01T00"], "datetime64[ns]")
    state = torch.full((1, 2, 2, *GRID.shape), 1.0) * torch.tensor([5.4e4, 270.0])[:, None, None]
    torch.testing.assert_close(rebuilt.advance(state, times), stepper.advance(state, times))
    assert "seasonal.coefficients" in stepper.state_dict()
    older = {k: v for k, v in config.items() if k != "seasonal_harmonics"} | {"residual": True}
    assert stepper_from_config(older).seasonal is None


def test_seasonal_baseline_errors():
    with pytest.raises(DataError, match="--no-residual"):
        make_stepper(residual=True)
    with pytest.raises(DataError, match="--no-residual"):
        make_stepper(forcings=False)
    with pytest.raises(DataError, match="expected"):
        make_stepper(seasonal=coefficients()[:, :1])
    with pytest.raises(DataError, match="shape"):
        SeasonalBaseline(np.zeros((4, 2, 8, 16)))
