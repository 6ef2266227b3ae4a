"""The forecast output layout (see ../shared/DESIGN.md, "Forecast output").

Dims ``time`` (initialisation), ``lead_time`` (timedelta; lead 0 is the
initial condition), ``member``, ``latitude``, ``longitude``; coordinate
``valid_time(time, lead_time)`` in the store's calendar; one float32 variable
per channel with CF attributes; global attributes naming the model, the
checkpoint digest, the perturbation, the source store, the software version
and the creation time. Both writers start from :func:`forecast_template`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import xarray as xr

from forecast import __version__
from forecast.channels import channel_info
from forecast.dims import FORECAST
from forecast.errors import DataError
from forecast.grid import Grid
from forecast.time import canonical_calendar, format_time
from inference.initial import shift_times

#: CF conventions version the output follows.
CONVENTIONS = "CF-1.8"


def channel_attrs(channel: str) -> dict[str, str]:
    """CF attributes of a channel (``units``, ``long_name``, ``standard_name`` where CF has one)."""
    try:
        return channel_info(channel).attrs()
    except DataError:
        return {"long_name": channel, "units": "1"}


def lead_times(steps: int, step: dt.timedelta) -> np.ndarray:
    """Lead times ``0, step, ..., steps * step`` as ``timedelta64[ns]``, shape ``(steps + 1,)``."""
    return np.arange(steps + 1) * np.timedelta64(int(step.total_seconds()), "s").astype(
        "timedelta64[ns]"
    )


def _time_unit(step: dt.timedelta) -> str:
    return "hours" if step.total_seconds() % 3600 == 0 else "minutes"


def forecast_template(
    channels: Sequence[str],
    grid: Grid,
    init_times: np.ndarray,
    steps: int,
    step: dt.timedelta,
    members: int,
    calendar: str,
    attrs: dict[str, str | int | float],
    member_chunk: int = 1,
) -> xr.Dataset:
    """An empty forecast dataset: coordinates, attributes and NaN placeholders for the data.

    Parameters
    ----------
    channels : sequence of str
        Variables to write, in order.
    grid : Grid
        Output grid.
    init_times : numpy.ndarray
        Shape ``(time,)``, datetime64 or cftime in ``calendar``.
    steps : int
        Number of model steps; there are ``steps + 1`` lead times.
    step : datetime.timedelta
        Model step.
    members : int
        Ensemble size.
    calendar : str
        The store's calendar, written on ``time`` and ``valid_time``.
    attrs : dict
        Global attributes (model, checkpoint digest, perturbation, store ...),
        to which ``Conventions``, ``software_version`` and ``creation_time`` are added.
    member_chunk : int
        Members per chunk (chunks are ``(1, 1, member_chunk, lat, lon)``).

    Returns
    -------
    xarray.Dataset
        With ``encoding`` set on the time coordinates so that both formats
        write the same units and calendar.
    """
    calendar = canonical_calendar(calendar)
    init_times = np.asarray(init_times)
    leads = lead_times(steps, step)
    valid = np.stack([shift_times(init_times, (lead * step)) for lead in range(steps + 1)], axis=1)
    shape = (len(init_times), steps + 1, members, grid.nlat, grid.nlon)
    dims = FORECAST
    # Placeholders that take no memory (a broadcast NaN): writers create the variables natively.
    empty = np.broadcast_to(np.float32(np.nan), shape)
    data_vars = {c: xr.Variable(dims, empty, attrs=channel_attrs(c)) for c in channels}
    coords = {
        "time": xr.Variable(
            "time",
            init_times,
            attrs={"standard_name": "forecast_reference_time", "long_name": "initialisation time"},
        ),
        "lead_time": xr.Variable(
            "lead_time",
            leads,
            attrs={"standard_name": "forecast_period", "long_name": "time since initialisation"},
        ),
        "member": xr.Variable(
            "member",
            np.arange(members, dtype=np.int32),
            attrs={"standard_name": "realization", "long_name": "ensemble member"},
        ),
        "latitude": xr.Variable(
            "latitude",
            grid.latitude,
            attrs={"standard_name": "latitude", "units": "degrees_north", "long_name": "latitude"},
        ),
        "longitude": xr.Variable(
            "longitude",
            grid.longitude,
            attrs={"standard_name": "longitude", "units": "degrees_east", "long_name": "longitude"},
        ),
        "valid_time": xr.Variable(
            ("time", "lead_time"),
            valid,
            attrs={"standard_name": "time", "long_name": "time at which the forecast is valid"},
        ),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs = {
        "Conventions": CONVENTIONS,
        **{k: v for k, v in attrs.items() if v is not None},
        "calendar": calendar,
        "grid": grid.describe(),
        "software_version": f"forecast {__version__}",
        "creation_time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    unit = _time_unit(step)
    since = f"{unit} since {format_time(init_times[0]).replace('T', ' ')}:00"
    for name in ("time", "valid_time"):
        ds[name].encoding = {"units": since, "calendar": calendar, "dtype": "int64"}
    ds["lead_time"].encoding = {"units": unit, "dtype": "int64"}
    for c in channels:
        ds[c].encoding = {
            "_FillValue": np.float32(np.nan),
            "dtype": "float32",
            "chunks": (1, 1, member_chunk, grid.nlat, grid.nlon),
        }
    return ds
