"""CF metadata shared by every output layout: attributes, vertical and grid coordinates, encodings.

What the CF checkers (``cfchecks``, the IOOS ``compliance-checker``) and
CF-aware readers (Iris, cf_xarray, CDO, NCO) need from a forecast file, in
one place, so that the layouts differ only in how they arrange the data:

- :data:`CONVENTIONS`: the CF version the encoding needs (CF-1.8: char-array
  string labels, ``int32`` times, no unsigned or 64-bit integers);
- :func:`channel_attrs` and :func:`vertical_coordinate`: units, names and
  the scalar vertical coordinate (pressure for ``z500``, height 2 m for
  ``t2m``) that tells channels of the same quantity apart;
- :func:`grid_coordinates`: latitude and longitude with ``axis`` and cell
  bounds clipped at the poles;
- :data:`TIME_DTYPE` and :data:`NO_FILL`: encodings without 64-bit times and
  without ``_FillValue`` on coordinates.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import numpy as np
import xarray as xr

from forecast import __version__
from forecast.channels import channel_info
from forecast.errors import DataError
from forecast.grid import Grid

#: CF conventions version the outputs follow (and that both CF checkers know).
CONVENTIONS = "CF-1.8"

#: Integer type of encoded times: CF-1.8 lists no 64-bit integer type (CF-1.9 added them).
TIME_DTYPE = "int32"

#: Encoding that keeps xarray from writing a ``_FillValue`` (CF: none on coordinates).
NO_FILL = {"_FillValue": None}

#: Height above the surface (m) of screen-level and 10 m channels.
SCREEN_HEIGHTS: dict[str, int] = {"t2m": 2, "d2m": 2, "u10m": 10, "v10m": 10}

#: Name of the bounds dimension (two bounds per cell).
BOUNDS_DIM = "bnds"


def channel_attrs(channel: str) -> dict[str, str]:
    """CF attributes of a channel (``units``, ``long_name``, ``standard_name`` where CF has one)."""
    try:
        return channel_info(channel).attrs()
    except DataError:
        return {"long_name": channel, "units": "1"}


def channel_level(channel: str) -> int | None:
    """Pressure level (hPa) of a channel, or None for single-level and unknown channels."""
    try:
        return channel_info(channel).level
    except DataError:
        return None


def pressure_attrs() -> dict[str, str]:
    """Attributes of a pressure coordinate in hPa."""
    return {
        "standard_name": "air_pressure",
        "long_name": "pressure",
        "units": "hPa",
        "positive": "down",
        "axis": "Z",
    }


def height_attrs() -> dict[str, str]:
    """Attributes of a height-above-surface coordinate in m."""
    return {
        "standard_name": "height",
        "long_name": "height above the surface",
        "units": "m",
        "positive": "up",
        "axis": "Z",
    }


def vertical_coordinate(channel: str) -> tuple[str, xr.Variable] | None:
    """The scalar vertical coordinate of a channel: name and variable, or None.

    ``z500`` -> ``pressure_500`` (500 hPa); ``t2m`` -> ``height_2m`` (2 m);
    ``msl``, ``tcwv`` and unknown channels have none.
    """
    level = channel_level(channel)
    if level is not None:
        return f"pressure_{level}", xr.Variable((), np.float32(level), attrs=pressure_attrs())
    if channel in SCREEN_HEIGHTS:
        height = SCREEN_HEIGHTS[channel]
        return f"height_{height}m", xr.Variable((), np.float32(height), attrs=height_attrs())
    return None


def vertical_coordinates(channels: Iterable[str]) -> dict[str, xr.Variable]:
    """The scalar vertical coordinates of ``channels``, each once, by name."""
    found: dict[str, xr.Variable] = {}
    for channel in channels:
        coordinate = vertical_coordinate(channel)
        if coordinate is not None:
            found.setdefault(*coordinate)
    return found


def cell_bounds(centres: np.ndarray, low: float, high: float) -> np.ndarray:
    """Bounds half-way between neighbouring centres, the outer ones clipped to ``[low, high]``.

    Parameters
    ----------
    centres : numpy.ndarray
        Shape ``(n,)``, monotonic.
    low, high : float
        The range the bounds are clipped to (``-90, 90`` for latitude).

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2)``, float64: each cell's bounds in the order of ``centres``.
    """
    centres = np.asarray(centres, dtype=np.float64)
    middle = 0.5 * (centres[:-1] + centres[1:])
    first = centres[0] - (middle[0] - centres[0])
    last = centres[-1] + (centres[-1] - middle[-1])
    edges = np.clip(np.concatenate([[first], middle, [last]]), low, high)
    return np.stack([edges[:-1], edges[1:]], axis=1)


def grid_coordinates(grid: Grid, ascending_latitude: bool = False) -> dict[str, xr.Variable]:
    """``latitude``, ``longitude`` and their bounds, CF-annotated.

    Parameters
    ----------
    grid : Grid
        The output grid (latitude descending).
    ascending_latitude : bool
        Write latitude south to north (WeatherBench2's orientation).

    Returns
    -------
    dict of str to xarray.Variable
        ``latitude``, ``longitude`` (float64, degrees, ``axis`` Y/X, ``bounds``)
        and ``latitude_bnds``, ``longitude_bnds`` of shape ``(n, 2)``;
        latitude bounds are clipped at +-90 degrees.
    """
    latitude = grid.latitude[::-1] if ascending_latitude else grid.latitude
    longitude = grid.longitude
    return {
        "latitude": xr.Variable(
            "latitude",
            latitude,
            attrs={
                "standard_name": "latitude",
                "long_name": "latitude",
                "units": "degrees_north",
                "axis": "Y",
                "bounds": "latitude_bnds",
            },
        ),
        "longitude": xr.Variable(
            "longitude",
            longitude,
            attrs={
                "standard_name": "longitude",
                "long_name": "longitude",
                "units": "degrees_east",
                "axis": "X",
                "bounds": "longitude_bnds",
            },
        ),
        "latitude_bnds": xr.Variable(("latitude", BOUNDS_DIM), cell_bounds(latitude, -90.0, 90.0)),
        "longitude_bnds": xr.Variable(
            ("longitude", BOUNDS_DIM), cell_bounds(longitude, -360.0, 720.0)
        ),
    }


def member_coordinate(members: int, name: str = "member") -> xr.Variable:
    """The ensemble member coordinate: int32 ``0..members-1``, ``realization``, units ``1``."""
    return xr.Variable(
        name,
        np.arange(members, dtype=np.int32),
        attrs={"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
    )


def history_line(action: str, now: dt.datetime | None = None) -> str:
    """A CF ``history`` entry: ``2024-01-01T00:00:00Z forecast 0.1.0: forecast run``."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now:%Y-%m-%dT%H:%M:%SZ} forecast {__version__}: {action}"


def time_unit(step: dt.timedelta) -> str:
    """``"hours"`` when the step is whole hours, else ``"minutes"``."""
    return "hours" if step.total_seconds() % 3600 == 0 else "minutes"
