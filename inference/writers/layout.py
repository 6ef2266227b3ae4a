"""The forecast output layout (see ../shared/DESIGN.md, "Forecast output"), and layouts in general.

The *template* (:func:`forecast_template`) is the default layout: dims
``time`` (initialisation), ``lead_time`` (timedelta; lead 0 is the initial
condition), ``member``, ``latitude``, ``longitude``; coordinate
``valid_time(time, lead_time)`` in the store's calendar; one float32
variable per channel with CF attributes and its scalar vertical coordinate;
latitude and longitude bounds; global attributes naming the model, the
checkpoint digest, the perturbation, the source store, the software
version, the creation time and the history.

A :class:`Layout` rearranges the template for other tools (WeatherBench2:
:mod:`inference.writers.wb2`) and says where each channel of a written block
goes (:class:`Arrangement`); :mod:`forecast.scoring.layouts` reads each
layout back into the template's, which is what ``forecast score`` scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast import __version__
from forecast.grid import Grid
from forecast.time import canonical_calendar, format_time
from inference.initial import shift_times
from inference.writers.cf import (
    CONVENTIONS,
    NO_FILL,
    TIME_DTYPE,
    channel_attrs,
    grid_coordinates,
    history_line,
    member_coordinate,
    time_unit,
    vertical_coordinate,
    vertical_coordinates,
)

__all__ = [
    "CONVENTIONS",
    "DEFAULT",
    "Arrangement",
    "DefaultLayout",
    "Layout",
    "Target",
    "channel_attrs",
    "forecast_template",
    "lead_times",
]


def lead_times(steps: int, step: dt.timedelta) -> np.ndarray:
    """Lead times ``0, step, ..., steps * step`` as ``timedelta64[ns]``, shape ``(steps + 1,)``."""
    return np.arange(steps + 1) * np.timedelta64(int(step.total_seconds()), "s").astype(
        "timedelta64[ns]"
    )


def channel_coordinates(channel: str) -> str:
    """The ``coordinates`` attribute of a channel variable: ``valid_time`` and its vertical one."""
    vertical = vertical_coordinate(channel)
    return "valid_time" if vertical is None else f"valid_time {vertical[0]}"


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
    member_checkpoints: np.ndarray | None = None,
) -> xr.Dataset:
    """An empty forecast dataset: coordinates, attributes and NaN placeholders for the data.

    Parameters
    ----------
    channels : sequence of str
        Variables to write, in the order of the channels of the blocks
        handed to the writers.
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
        to which ``Conventions``, ``software_version``, ``creation_time`` and
        ``history`` are added.
    member_chunk : int
        Members per chunk (chunks are ``(1, 1, member_chunk, lat, lon)``).
    member_checkpoints : numpy.ndarray, optional
        Shape ``(members,)``: the checkpoint each member ran (a multi-checkpoint
        ensemble), written as the ``checkpoint`` coordinate on ``member``.

    Returns
    -------
    xarray.Dataset
        With ``encoding`` set on every variable so that both formats write
        the same units, calendar and types: ``int32`` times, no
        ``_FillValue`` on coordinates, NaN as the data's ``_FillValue``.
    """
    calendar = canonical_calendar(calendar)
    init_times = np.asarray(init_times)
    leads = lead_times(steps, step)
    valid = np.stack([shift_times(init_times, (lead * step)) for lead in range(steps + 1)], axis=1)
    shape = (len(init_times), steps + 1, members, grid.nlat, grid.nlon)
    dims = ("time", "lead_time", "member", "latitude", "longitude")
    # Placeholders that take no memory (a broadcast NaN): writers create the variables natively.
    empty = np.broadcast_to(np.float32(np.nan), shape)
    data_vars = {c: xr.Variable(dims, empty, attrs=channel_attrs(c)) for c in channels}
    coords = {
        "time": xr.Variable(
            "time",
            init_times,
            attrs={
                "standard_name": "forecast_reference_time",
                "long_name": "initialisation time",
                "axis": "T",
            },
        ),
        "lead_time": xr.Variable(
            "lead_time",
            leads,
            attrs={"standard_name": "forecast_period", "long_name": "time since initialisation"},
        ),
        "member": member_coordinate(members),
        **grid_coordinates(grid),
        "valid_time": xr.Variable(
            ("time", "lead_time"),
            valid,
            attrs={"standard_name": "time", "long_name": "time at which the forecast is valid"},
        ),
        **vertical_coordinates(channels),
    }
    if member_checkpoints is not None:
        coords["checkpoint"] = xr.Variable(
            "member",
            np.asarray(member_checkpoints, dtype=np.int32),
            attrs={
                "long_name": "checkpoint the member ran: its position among the checkpoints "
                "given, whose SHA-256 digests the checkpoint_digest attribute lists in order",
                "units": "1",
            },
        )
    ds = xr.Dataset(data_vars, coords=coords)
    now = dt.datetime.now(dt.UTC)
    ds.attrs = {
        "Conventions": CONVENTIONS,
        **{k: v for k, v in attrs.items() if v is not None},
        "calendar": calendar,
        "grid": grid.describe(),
        "software_version": f"forecast {__version__}",
        "creation_time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "history": history_line("forecast run", now),
    }
    unit = time_unit(step)
    since = f"{unit} since {format_time(init_times[0]).replace('T', ' ')}:00"
    for name in ("time", "valid_time"):
        ds[name].encoding = {"units": since, "calendar": calendar, "dtype": TIME_DTYPE}
    ds["lead_time"].encoding = {"units": unit, "dtype": TIME_DTYPE}
    for coordinate in ds.coords:
        if ds[coordinate].dtype.kind == "f":
            ds[coordinate].encoding = dict(NO_FILL)
    for c in channels:
        ds[c].encoding = {
            "_FillValue": np.float32(np.nan),
            "dtype": "float32",
            "chunks": (1, 1, member_chunk, grid.nlat, grid.nlon),
            "coordinates": channel_coordinates(c)
            + (" checkpoint" if member_checkpoints is not None else ""),
        }
    return ds


@dataclass(frozen=True)
class Target:
    """Where one channel of a block is written.

    Attributes
    ----------
    variable : str
        The variable in the output.
    level : int or None
        Index along the variable's ``level`` dim, or None when it has none.
    """

    variable: str
    level: int | None = None


@dataclass(frozen=True)
class Arrangement:
    """A layout applied to a template: the dataset to create and where blocks go.

    Attributes
    ----------
    dataset : xarray.Dataset
        Coordinates, attributes and NaN placeholders of the output, with the
        ``encoding`` of each variable (``chunks``, ``coordinates`` ...).
    targets : list of Target
        One per channel of the template, in the order of the blocks' channels.
    member_dim : str or None
        Name of the member dim of the data variables (None: one member, no dim).
    flip_latitude : bool
        Whether blocks (latitude descending) are written upside down.
    """

    dataset: xr.Dataset
    targets: list[Target]
    member_dim: str | None = "member"
    flip_latitude: bool = False

    @property
    def variables(self) -> list[str]:
        """The data variables of the output, each once."""
        return list(dict.fromkeys(t.variable for t in self.targets))

    def index(self, target: Target, init_index: int, lead: int, members: slice) -> tuple:
        """The index into ``target.variable`` of a block at one init and lead."""
        index: tuple = (init_index, lead)
        if self.member_dim is not None:
            index += (members,)
        if target.level is not None:
            index += (target.level,)
        return index

    def field(self, block: np.ndarray, channel: int) -> np.ndarray:
        """Channel ``channel`` of ``block`` ``(member, channel, lat, lon)``, as written."""
        values = block[:, channel]
        if self.flip_latitude:
            values = values[:, ::-1]
        return values if self.member_dim is not None else values[0]

    def unfield(self, values: np.ndarray) -> np.ndarray:
        """Values read back from a target, as ``(member, lat, lon)`` in block orientation."""
        if self.member_dim is None:
            values = values[None]
        return values[:, ::-1] if self.flip_latitude else values


class Layout:
    """How a forecast is arranged in a file; the default layout is the template itself.

    Subclasses override :meth:`arrange`. Reading a file of a layout back into
    the default layout is :mod:`forecast.scoring.layouts` (``forecast score``).
    """

    #: Name of the layout (``--layout``).
    name = "default"

    def arrange(self, template: xr.Dataset) -> Arrangement:
        """The output dataset for ``template`` and where each block channel goes."""
        channels = [str(c) for c in template.data_vars]
        return Arrangement(template, [Target(c) for c in channels])


class DefaultLayout(Layout):
    """Today's layout: one variable per channel over ``(time, lead_time, member, lat, lon)``."""


#: The default layout.
DEFAULT = DefaultLayout()
