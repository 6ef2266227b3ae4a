"""Named forcing fields computed from valid times: local solar time and time of year.

A stepper's forcings travel as a mapping from a name to a tensor
(:data:`Forcings`), never as slices of one tensor, so that a model family can
add its own inputs (a diurnal baseline, a prescribed sea-surface temperature
read from a second store) without shifting anyone else's channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from forecast.grid import Grid
from forecast.time import fraction_of_day_and_year

#: Named inputs of one model step: name -> tensor whose first dim is the batch.
Forcings = Mapping[str, torch.Tensor]

#: The time forcings, in the order the backbone sees them after the state channels.
TIME_FORCINGS = ("cos_local_time", "sin_local_time", "cos_year", "sin_year")


def time_forcings(
    times: Sequence | np.ndarray, grid: Grid, device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """Cos/sin of local solar time and of the fraction of the calendar year.

    Parameters
    ----------
    times : sequence of datetime64 or cftime
        Shape ``(batch,)``: the valid time of each state.
    grid : Grid
        The grid the fields are laid out on.
    device : torch.device or str
        Where the fields are made.

    Returns
    -------
    dict of str to torch.Tensor
        One float32 field ``(batch, lat, lon)`` per name of :data:`TIME_FORCINGS`:
        local solar time is the UTC fraction of the day plus longitude / 360
        (so it varies along longitude); the fraction of the year follows the
        calendar of ``times`` (constant over the grid).
    """
    day_fraction, year_fraction = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
    longitude = torch.tensor(grid.longitude, dtype=torch.float64, device=device) / 360.0
    day = torch.as_tensor(np.asarray(day_fraction, dtype=np.float64), device=device)
    year = torch.as_tensor(np.asarray(year_fraction, dtype=np.float64), device=device)
    local = (2.0 * np.pi * (day.reshape(-1, 1, 1) + longitude.reshape(1, 1, -1))).expand(
        -1, grid.nlat, -1
    )  # (batch, lat, lon)
    annual = (2.0 * np.pi * year.reshape(-1, 1, 1)).expand(-1, grid.nlat, grid.nlon)
    fields = (torch.cos(local), torch.sin(local), torch.cos(annual), torch.sin(annual))
    return {
        name: field.to(torch.float32) for name, field in zip(TIME_FORCINGS, fields, strict=True)
    }


def stack_forcings(forcings: Forcings, names: Sequence[str]) -> torch.Tensor:
    """The fields ``names`` of ``forcings`` as channels: ``(batch, len(names), lat, lon)``."""
    return torch.stack([forcings[name] for name in names], dim=1)


def select_step(forcings: Forcings, index: int) -> dict[str, torch.Tensor]:
    """Step ``index`` of forcings laid out ``(step, batch, ...)``: each value ``(batch, ...)``."""
    return {name: value[index] for name, value in forcings.items()}
