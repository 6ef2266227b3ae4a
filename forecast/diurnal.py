"""The climatological diurnal cycle as a baseline for a residual step.

A 6-hourly autoregressive model would otherwise re-create the sun's clockwork
(a 4 K cycle of t2m) at every step, to within a fraction of its amplitude. A
:class:`DiurnalBaseline` holds the mean hour-of-day anomaly of each channel
(from the store's climatology, :func:`forecast.store.diurnal_cycle`) and gives
the change of that anomaly over one step, which the stepper adds to the last
state before the backbone's tendency. Its table is a persistent buffer, so a
stepper's ``state_dict()`` carries it into checkpoints as it carries weights.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from forecast.errors import DataError
from forecast.time import fraction_of_day_and_year


class DiurnalBaseline(nn.Module):
    """Hour-of-day anomalies of each channel, interpolated cyclically between their hours.

    Parameters
    ----------
    hours : sequence of float
        Hours of day (UTC) of the table, at least two, ascending, in [0, 24).
    table : numpy.ndarray
        Shape ``(hour, channel, lat, lon)``: anomalies from the daily mean in
        normalised units (physical anomaly / channel std).

    Raises
    ------
    DataError
        Misordered hours, or NaN in the table.
    """

    table: torch.Tensor

    def __init__(self, hours: Sequence[float] | np.ndarray, table: np.ndarray):
        super().__init__()
        hours_array = np.asarray(hours, dtype=np.float64).ravel()
        if (
            len(hours_array) < 2
            or np.any(np.diff(hours_array) <= 0)
            or hours_array[0] < 0
            or hours_array[-1] >= 24
        ):
            raise DataError(
                f"diurnal hours must be at least two ascending hours in [0, 24), got {hours_array.tolist()}"
            )
        table = np.asarray(table)
        if table.ndim != 4 or table.shape[0] != len(hours_array):
            raise DataError(
                f"diurnal table has shape {table.shape}, expected ({len(hours_array)}, channel, lat, lon)"
            )
        if not np.isfinite(table).all():
            raise DataError(
                "the diurnal table has NaN values",
                hint="the store's climatology must cover every grid point at every hour",
            )
        self.hours: tuple[float, ...] = tuple(float(h) for h in hours_array)
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    @classmethod
    def from_physical(
        cls, hours: Sequence[float] | np.ndarray, table: np.ndarray, std: np.ndarray
    ) -> DiurnalBaseline:
        """From anomalies in physical units ``(hour, channel, lat, lon)`` and each channel's std."""
        scaled = np.asarray(table, dtype=np.float64) / np.asarray(std)[None, :, None, None]
        return cls(hours, scaled)

    def at_hours(self, hour: np.ndarray) -> torch.Tensor:
        """Anomalies at hours of day ``hour`` (shape ``(batch,)``): ``(batch, channel, lat, lon)``."""
        hours = np.asarray(self.hours)
        # hours after the first table hour; the first comes again 24 h later
        offsets = np.append(hours - hours[0], 24.0)
        since = np.mod(hour - hours[0], 24.0)
        upper = np.clip(np.searchsorted(offsets, since, side="right"), 1, len(hours))
        lower = upper - 1
        weight = (since - offsets[lower]) / (offsets[upper] - offsets[lower])
        table = self.table
        low = table[torch.as_tensor(lower, device=table.device)]
        high = table[torch.as_tensor(upper % len(hours), device=table.device)]
        w = torch.as_tensor(weight, dtype=table.dtype, device=table.device).reshape(-1, 1, 1, 1)
        return low + w * (high - low)

    def anomaly(self, times: Sequence | np.ndarray) -> torch.Tensor:
        """Normalised anomaly at valid times ``times``: ``(batch, channel, lat, lon)``."""
        day, _ = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
        return self.at_hours(np.asarray(day, dtype=np.float64) * 24.0)

    def change(self, times: Sequence | np.ndarray, step: dt.timedelta) -> torch.Tensor:
        """Change of the anomaly from ``times`` to ``times + step``: ``(batch, channel, lat, lon)``."""
        day, _ = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
        hour = np.asarray(day, dtype=np.float64).ravel() * 24.0
        later = hour + step.total_seconds() / 3600.0
        return self.at_hours(later) - self.at_hours(hour)

    def extra_repr(self) -> str:
        return f"hours={list(self.hours)}, channels={self.table.shape[1]}"


def diurnal_baseline(
    hours: Sequence[float] | np.ndarray,
    table: np.ndarray,
    std: np.ndarray,
    channels: int,
    grid_shape: tuple[int, int],
) -> DiurnalBaseline:
    """A stepper's :class:`DiurnalBaseline` from physical anomalies, their shape checked.

    Parameters
    ----------
    hours : sequence of float
        Hours of day (UTC) of the table.
    table : numpy.ndarray
        ``(hour, channel, lat, lon)`` anomalies in physical units
        (:func:`forecast.store.diurnal_cycle`).
    std : numpy.ndarray
        ``(channel,)``: the stepper's normalisation.
    channels : int
        Channels of the stepper's state.
    grid_shape : (int, int)
        ``(lat, lon)`` of the stepper's grid.

    Raises
    ------
    DataError
        A table of another shape than ``(len(hours), channels, *grid_shape)``.
    """
    expected = (len(np.ravel(hours)), channels, *grid_shape)
    if np.shape(table) != expected:
        raise DataError(f"diurnal table has shape {np.shape(table)}, expected {expected}")
    return DiurnalBaseline.from_physical(hours, table, std)
