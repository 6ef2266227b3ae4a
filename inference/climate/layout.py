"""The layout of climate products: CF means over periods with ``time_bnds``, and histograms.

A period product (``monthly``, ``seasonal``, ``annual``, ``time-mean``) has
dims ``time`` (one per period, at the period's middle), ``member``,
``latitude``, ``longitude``; ``time_bnds(time, bnds)`` holds each period's
bounds, clipped to the run; ``samples(time)`` counts the states averaged and
``complete(time)`` flags partial first and last periods (0 partial, 1
complete). One float32 variable per channel, named by its id, with the
channel's CF attributes and ``cell_methods: "time: mean"``.

The ``histograms`` product has one count variable per channel,
``CH(time, member, latitude, CH_bin)`` (int32, over the whole run: ``time``
has one entry), with the bin centres ``CH_bin`` (the channel's units,
``bounds: CH_bin_bnds``) and the values outside the bins in ``CH_below``
and ``CH_above``.

Both are built from the run's forecast template (:func:`inference.writers.forecast_template`),
whose grid coordinates, members and global attributes they keep.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array
import numpy as np
import xarray as xr

from forecast.periods import PERIOD_KINDS, Period, seconds_between
from forecast.time import format_time

#: Name of the dimension of bounds (two per cell).
BOUNDS = "bnds"

#: Integer type of the counts in files (CF-1.8 has no 64-bit integers).
COUNT_DTYPE = "int32"


def _time_units(origin, periods: Sequence[Period]) -> str:
    """``hours since ORIGIN`` when every middle and bound is a whole hour from ``origin``, else minutes."""
    offsets = [seconds_between(origin, t) for p in periods for t in (p.middle, p.start, p.end)]
    unit = "hours" if all(o % 3600 == 0 for o in offsets) else "minutes"
    return f"{unit} since {format_time(origin).replace('T', ' ')}:00"


def _grid_and_members(template: xr.Dataset) -> dict[str, xr.Variable]:
    """The template's coordinates that products share: member, grid, their bounds, vertical ones."""
    keep = {}
    for name, variable in template.coords.items():
        if {"time", "lead_time"} & set(variable.dims) or name in ("time", "lead_time"):
            continue
        keep[str(name)] = variable.variable
    return keep


def _time_coordinates(periods: Sequence[Period], origin, calendar: str) -> dict[str, xr.Variable]:
    units = _time_units(origin, periods)
    time = xr.Variable(
        "time",
        np.asarray([p.middle for p in periods]),
        attrs={
            "standard_name": "time",
            "long_name": "middle of the averaging period",
            "axis": "T",
            "bounds": "time_bnds",
        },
        encoding={"units": units, "calendar": calendar, "dtype": "int32", "_FillValue": None},
    )
    bounds = xr.Variable(
        ("time", BOUNDS),
        np.asarray([[p.start, p.end] for p in periods]),
        encoding={"units": units, "calendar": calendar, "dtype": "int32", "_FillValue": None},
    )
    return {"time": time, "time_bnds": bounds}


def _placeholder(
    shape: tuple[int, ...], chunks: tuple[int, ...], dtype: str, fill
) -> dask.array.Array:
    """A lazy array that is never computed: writing the dataset writes only its metadata."""
    return dask.array.full(shape, fill, dtype=dtype, chunks=chunks)


def period_dataset(
    template: xr.Dataset, kind: str, periods: Sequence[Period], member_chunk: int
) -> xr.Dataset:
    """The empty product of period means of ``kind`` for the run of ``template``.

    Parameters
    ----------
    template : xarray.Dataset
        The run's forecast template (one init time).
    kind : str
        A key of :data:`forecast.periods.PERIOD_KINDS`.
    periods : sequence of Period
        The run's periods of that kind.
    member_chunk : int
        Members per chunk (chunks are ``(1, member_chunk, lat, lon)``).

    Returns
    -------
    xarray.Dataset
        Data variables are lazy NaN placeholders; ``encoding`` holds chunks and types.
    """
    channels = [str(c) for c in template.data_vars]
    calendar = template.attrs["calendar"]
    origin = template["time"].values[0]
    members = template.sizes["member"]
    nlat, nlon = template.sizes["latitude"], template.sizes["longitude"]
    coords = {
        **_time_coordinates(periods, origin, calendar),
        **_grid_and_members(template),
        "samples": xr.Variable(
            "time",
            np.asarray([p.samples for p in periods], dtype=np.int32),
            attrs={"long_name": "number of model states averaged", "units": "1"},
            encoding={"_FillValue": None},
        ),
        "complete": xr.Variable(
            "time",
            np.asarray([p.complete for p in periods], dtype=np.int8),
            attrs={
                "long_name": "whether the run covers the whole calendar period",
                "flag_values": np.asarray([0, 1], dtype=np.int8),
                "flag_meanings": "partial complete",
            },
            encoding={"_FillValue": None},
        ),
    }
    shape = (len(periods), members, nlat, nlon)
    chunks = (1, min(member_chunk, members), nlat, nlon)
    data_vars = {}
    for channel in channels:
        attrs = {**template[channel].attrs, "cell_methods": "time: mean"}
        data_vars[channel] = xr.Variable(
            ("time", "member", "latitude", "longitude"),
            _placeholder(shape, chunks, "float32", np.float32(np.nan)),
            attrs=attrs,
            encoding={"dtype": "float32", "_FillValue": np.float32(np.nan), "chunks": chunks},
        )
    dataset = xr.Dataset(data_vars, coords=coords)
    period = PERIOD_KINDS[kind]
    dataset.attrs = {
        **template.attrs,
        "title": f"{kind} means of a climate run ({template.attrs.get('title', '')})".replace(
            " ()", ""
        ),
        "climate_product": kind,
        "frequency": period.frequency,
        "averaging": (
            "mean of the model states valid in [time_bnds[0], time_bnds[1]): each state stands "
            "for the model step that follows it; partial periods have complete = 0"
        ),
    }
    return dataset


def histogram_dataset(
    template: xr.Dataset,
    run: Period,
    edges: np.ndarray,
    member_chunk: int,
) -> xr.Dataset:
    """The empty histograms product of the run of ``template``.

    Parameters
    ----------
    template : xarray.Dataset
        The run's forecast template.
    run : Period
        The whole run (the ``time-mean`` period).
    edges : numpy.ndarray
        Shape ``(channel, bins + 1)``: the fixed bin edges of each channel.
    member_chunk : int
        Members per chunk.
    """
    channels = [str(c) for c in template.data_vars]
    calendar = template.attrs["calendar"]
    origin = template["time"].values[0]
    members, nlat = template.sizes["member"], template.sizes["latitude"]
    bins = edges.shape[1] - 1
    coords = {**_time_coordinates([run], origin, calendar), **_grid_and_members(template)}
    coords.pop("longitude", None)
    coords.pop("longitude_bnds", None)
    data_vars = {}
    chunks = (1, min(member_chunk, members), nlat, bins)
    for number, channel in enumerate(channels):
        attrs = template[channel].attrs
        units = attrs.get("units", "1")
        centre = 0.5 * (edges[number, :-1] + edges[number, 1:])
        bin_name = f"{channel}_bin"
        coords[bin_name] = xr.Variable(
            bin_name,
            centre,
            attrs={
                "long_name": f"centre of the {channel} bin",
                "units": units,
                "bounds": f"{bin_name}_bnds",
            },
            encoding={"_FillValue": None},
        )
        coords[f"{bin_name}_bnds"] = xr.Variable(
            (bin_name, BOUNDS),
            np.stack([edges[number, :-1], edges[number, 1:]], axis=1),
            encoding={"_FillValue": None},
        )
        description = attrs.get("long_name", channel)
        data_vars[channel] = xr.Variable(
            ("time", "member", "latitude", bin_name),
            _placeholder((1, members, nlat, bins), chunks, COUNT_DTYPE, 0),
            attrs={
                "long_name": f"number of grid points and model states with {description} in each bin",
                "units": "1",
                "cell_methods": "time: sum longitude: sum",
            },
            encoding={"dtype": COUNT_DTYPE, "_FillValue": None, "chunks": chunks},
        )
        for side, word in (("below", "under the first"), ("above", "over the last")):
            data_vars[f"{channel}_{side}"] = xr.Variable(
                ("time", "member", "latitude"),
                _placeholder((1, members, nlat), chunks[:3], COUNT_DTYPE, 0),
                attrs={"long_name": f"number of {channel} values {word} bin edge", "units": "1"},
                encoding={"dtype": COUNT_DTYPE, "_FillValue": None, "chunks": chunks[:3]},
            )
    dataset = xr.Dataset(data_vars, coords=coords)
    dataset.attrs = {
        **template.attrs,
        "title": "histograms of a climate run",
        "climate_product": "histograms",
        "frequency": "fx",
        "averaging": "counts of the model states valid in [time_bnds[0], time_bnds[1]), per latitude row",
    }
    return dataset
