"""The climatological seasonal cycle as a baseline: a stepper that forecasts departures from it.

A small emulator trained on a few years does not find the climate's zonal
means to the accuracy a climate run needs: free-running, its jets settle a
few tenths of a standard deviation away from the reference's (10-20 times
the natural floor of a 10-year mean, docs/performance.md "Climate runs").
A :class:`SeasonalBaseline` holds the store's daily-mean climatology as a
truncated Fourier series in the fraction of the year (the mean and
``harmonics`` annual harmonics per channel and grid point, fitted by least
squares); with it, a non-residual stepper sees the departures of its input
states from the climatology and predicts the departure of the next state
(an anomaly model, as statistical forecasts of anomalies are made). The
model's climate is then the training climatology plus the mean of the
anomalies it generates. Its coefficients are a persistent buffer, so a
checkpoint carries them as it carries weights.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from forecast.diurnal import DiurnalBaseline
from forecast.errors import DataError
from forecast.time import fraction_of_day_and_year, shift_times

__all__ = [
    "SeasonalBaseline",
    "climatology",
    "climatology_at_offsets",
    "fit_seasonal_cycle",
    "fourier_basis",
    "seasonal_baseline",
]


def fourier_basis(year_fraction: np.ndarray, harmonics: int) -> np.ndarray:
    """Functions ``1, cos(2 pi k f), sin(2 pi k f)`` (k = 1 .. harmonics) of the year fraction f.

    Parameters
    ----------
    year_fraction : numpy.ndarray
        Shape ``(n,)``, fractions of the year in [0, 1).
    harmonics : int
        Number of annual harmonics (0: the mean only).

    Returns
    -------
    numpy.ndarray
        ``(n, 2 * harmonics + 1)`` float64.
    """
    fraction = np.asarray(year_fraction, dtype=np.float64).ravel()
    columns = [np.ones_like(fraction)]
    for k in range(1, harmonics + 1):
        angle = 2.0 * np.pi * k * fraction
        columns += [np.cos(angle), np.sin(angle)]
    return np.stack(columns, axis=1)


def fit_seasonal_cycle(year_fraction: np.ndarray, values: np.ndarray, harmonics: int) -> np.ndarray:
    """Least-squares Fourier coefficients of a seasonal cycle.

    Parameters
    ----------
    year_fraction : numpy.ndarray
        Shape ``(n,)``: when each value is valid, as a fraction of the year.
    values : numpy.ndarray
        Shape ``(n, ...)``: e.g. daily means ``(day, channel, lat, lon)``.
    harmonics : int
        Annual harmonics to fit; needs ``n >= 2 * harmonics + 1``.

    Returns
    -------
    numpy.ndarray
        ``(2 * harmonics + 1, ...)`` float64, in the units of ``values``
        (the mean first, then cos/sin of each harmonic).

    Raises
    ------
    DataError
        Too few values for the harmonics, or non-finite values.
    """
    basis = fourier_basis(year_fraction, harmonics)
    values = np.asarray(values, dtype=np.float64)
    if len(values) != len(basis) or len(basis) < basis.shape[1]:
        raise DataError(
            f"{len(values)} values at {len(basis)} times cannot fit {harmonics} annual harmonics",
            hint="use fewer harmonics or a climatology covering more days of the year",
        )
    if not np.isfinite(values).all():
        raise DataError(
            "the climatology has NaN values",
            hint="the store's climatology must cover every grid point on its days",
        )
    flat = values.reshape(len(values), -1)
    coefficients, *_ = np.linalg.lstsq(basis, flat, rcond=None)
    return coefficients.reshape(basis.shape[1], *values.shape[1:])


class SeasonalBaseline(nn.Module):
    """Daily-mean climatology of each channel as a Fourier series in the fraction of the year.

    Parameters
    ----------
    coefficients : numpy.ndarray
        Shape ``(2 * harmonics + 1, channel, lat, lon)`` in normalised units
        (``(value - mean) / std``): the mean, then cos/sin of each harmonic
        (:func:`fit_seasonal_cycle`).

    Raises
    ------
    DataError
        An even number of coefficients, or NaN.
    """

    coefficients: torch.Tensor

    def __init__(self, coefficients: np.ndarray):
        super().__init__()
        coefficients = np.asarray(coefficients)
        if coefficients.ndim != 4 or coefficients.shape[0] % 2 != 1:
            raise DataError(
                f"seasonal coefficients have shape {coefficients.shape}, "
                "expected (2 * harmonics + 1, channel, lat, lon)"
            )
        if not np.isfinite(coefficients).all():
            raise DataError("the seasonal coefficients have NaN values")
        self.register_buffer("coefficients", torch.as_tensor(coefficients, dtype=torch.float32))

    @classmethod
    def from_physical(
        cls, coefficients: np.ndarray, mean: np.ndarray, std: np.ndarray
    ) -> SeasonalBaseline:
        """From coefficients in physical units and each channel's mean and std."""
        scaled = np.asarray(coefficients, dtype=np.float64) / np.asarray(std)[None, :, None, None]
        scaled[0] -= (np.asarray(mean) / np.asarray(std))[:, None, None]
        return cls(scaled)

    @property
    def harmonics(self) -> int:
        """Number of annual harmonics."""
        return (self.coefficients.shape[0] - 1) // 2

    def at_fractions(self, year_fraction: np.ndarray) -> torch.Tensor:
        """Normalised climatology at year fractions ``(batch,)``: ``(batch, channel, lat, lon)``."""
        basis = torch.as_tensor(
            fourier_basis(year_fraction, self.harmonics),
            dtype=self.coefficients.dtype,
            device=self.coefficients.device,
        )
        return torch.einsum("bk,kchw->bchw", basis, self.coefficients)

    def state(self, times: Sequence | np.ndarray) -> torch.Tensor:
        """Normalised climatology at valid times ``times``: ``(batch, channel, lat, lon)``."""
        _, year = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
        return self.at_fractions(np.asarray(year, dtype=np.float64))

    def extra_repr(self) -> str:
        return f"harmonics={self.harmonics}, channels={self.coefficients.shape[1]}"


def seasonal_baseline(
    coefficients: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    channels: int,
    grid_shape: tuple[int, int],
) -> SeasonalBaseline:
    """A stepper's :class:`SeasonalBaseline` from physical coefficients, their shape checked.

    Parameters
    ----------
    coefficients : numpy.ndarray
        ``(2 * harmonics + 1, channel, lat, lon)`` in physical units
        (:func:`forecast.store.seasonal_cycle`).
    mean, std : numpy.ndarray
        ``(channel,)``: the stepper's normalisation.
    channels : int
        Channels of the stepper's state.
    grid_shape : (int, int)
        ``(lat, lon)`` of the stepper's grid.

    Raises
    ------
    DataError
        Coefficients of another shape than the state's.
    """
    shape = np.shape(coefficients)
    if len(shape) != 4 or shape[1:] != (channels, *grid_shape):
        raise DataError(
            f"seasonal coefficients have shape {shape}, "
            f"expected (2 * harmonics + 1, {channels}, {grid_shape[0]}, {grid_shape[1]})"
        )
    return SeasonalBaseline.from_physical(coefficients, mean, std)


def climatology(
    seasonal: SeasonalBaseline, diurnal: DiurnalBaseline | None, times: Sequence | np.ndarray
) -> torch.Tensor:
    """Normalised climatology at ``times``: the seasonal cycle plus, with ``diurnal``, the hour-of-day anomaly.

    Returns
    -------
    torch.Tensor
        ``(batch, channel, lat, lon)`` on the device of ``seasonal``.
    """
    day, year = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
    state = seasonal.at_fractions(np.asarray(year, dtype=np.float64))
    if diurnal is not None:
        hours = np.asarray(day, dtype=np.float64) * 24.0
        state = state + diurnal.at_hours(hours).to(state.device)
    return state


def climatology_at_offsets(
    seasonal: SeasonalBaseline,
    diurnal: DiurnalBaseline | None,
    times: Sequence | np.ndarray,
    step: dt.timedelta,
    offsets: Sequence[int],
) -> torch.Tensor:
    """:func:`climatology` at ``times + k * step`` for each ``k`` of ``offsets``, in one calendar pass.

    Parameters
    ----------
    times : sequence of datetime64 or cftime
        ``(batch,)`` valid times (of each row's latest state).
    step : datetime.timedelta
        The store's time step.
    offsets : sequence of int
        Steps from ``times`` (e.g. ``1 - history .. 1``: a step's inputs and output).

    Returns
    -------
    torch.Tensor
        ``(batch, len(offsets), channel, lat, lon)``, normalised.
    """
    values = np.atleast_1d(np.asarray(times))
    offsets = list(offsets)
    shifted = np.concatenate([shift_times(values, k * step) for k in offsets])
    state = climatology(seasonal, diurnal, shifted)
    return state.reshape(len(offsets), len(values), *state.shape[1:]).transpose(0, 1)
