"""Match forecasts to the store on valid time; build the baseline forecasts.

A forecast from initialisation ``t`` at lead ``l`` verifies against the
store's field at ``valid_time = t + l``. Matching is done on the
``valid_time(time, lead_time)`` coordinate, so forecasts from many inits and
leads line up whatever their spacing; valid times the store lacks are
reported (:class:`Matched` ``available``) and their truth is NaN.

Baselines, as in WeatherBench2, are computed from the store itself:
*persistence* (the analysis at the initialisation time, for every lead) and
*climatology* (the store's climatology at the valid time).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from forecast.dims import LATITUDE, LONGITUDE, SPACE, VALID_TIME
from forecast.dims import LEAD_TIME as LEAD_DIM
from forecast.dims import MEMBER as MEMBER_DIM
from forecast.dims import TIME as INIT_DIM
from forecast.errors import DataError, GridError
from forecast.grid import Grid
from forecast.store import climatology_at, require_channels, store_grid
from forecast.time import format_time, time_calendar, time_index


@dataclass
class Matched:
    """A forecast lined up with its truth and baselines.

    Attributes
    ----------
    channels : list of str
        Channel ids scored, in forecast order.
    grid : Grid
        The common grid.
    forecast : xarray.Dataset
        The forecast, one variable per channel, dims
        ``(time, lead_time, member, latitude, longitude)``.
    truth, climatology, persistence : xarray.Dataset
        One variable per channel, dims ``(time, lead_time, latitude, longitude)``
        (persistence without ``lead_time``); truth is NaN where missing.
    available : xarray.DataArray
        bool ``(time, lead_time)``: whether the store has the valid time.
    positions : numpy.ndarray
        int ``(time, lead_time)``: index of each valid time in the store (-1: absent).
    init_positions : numpy.ndarray
        int ``(time,)``: index of each initialisation time in the store (-1: absent).
    fields : xarray.DataArray
        The store's ``data`` restricted to ``channels`` (lazy).
    climatology_fields : xarray.DataArray
        The climatology at each distinct valid time, dims
        ``(valid, channel, latitude, longitude)`` (lazy);
        ``climatology_index(time, lead_time)`` points into it.
    """

    channels: list[str]
    grid: Grid
    forecast: xr.Dataset
    truth: xr.Dataset
    climatology: xr.Dataset
    persistence: xr.Dataset
    available: xr.DataArray
    positions: np.ndarray
    init_positions: np.ndarray
    fields: xr.DataArray
    climatology_fields: xr.DataArray
    climatology_index: np.ndarray

    def leads_without_truth(self) -> list[np.timedelta64]:
        """Lead times at which no initialisation has truth."""
        none = ~self.available.any(INIT_DIM)
        return [np.timedelta64(v, "ns") for v in self.available[LEAD_DIM].values[none.values]]


def forecast_channels(forecast: xr.Dataset) -> list[str]:
    """The channel variables of a forecast: data variables with latitude and longitude dims."""
    return [str(name) for name, var in forecast.data_vars.items() if set(SPACE) <= set(var.dims)]


def valid_times(forecast: xr.Dataset) -> xr.DataArray:
    """The ``valid_time(time, lead_time)`` coordinate, or ``time + lead_time`` if absent."""
    if VALID_TIME in forecast.coords:
        return forecast[VALID_TIME].transpose(INIT_DIM, LEAD_DIM)
    inits = np.asarray(forecast[INIT_DIM].values)
    leads = np.asarray(forecast[LEAD_DIM].values).astype("timedelta64[ns]")
    if np.issubdtype(inits.dtype, np.datetime64):
        values = inits[:, None] + leads[None, :]
    else:
        steps = [pd.Timedelta(lead).to_pytimedelta() for lead in leads]
        values = np.array([[init + step for step in steps] for init in inits], dtype=object)
    return xr.DataArray(
        values,
        dims=(INIT_DIM, LEAD_DIM),
        coords={INIT_DIM: forecast[INIT_DIM], LEAD_DIM: forecast[LEAD_DIM]},
    )


def _positions(store_times, times: np.ndarray) -> np.ndarray:
    """Index of each of ``times`` in the store (-1 where absent)."""
    index = time_index(store_times)
    flat = np.asarray(times).ravel()
    if flat.size and time_calendar(flat) != time_calendar(np.asarray(store_times)):
        return np.full(np.asarray(times).shape, -1)
    return np.asarray(index.get_indexer(flat)).reshape(np.asarray(times).shape)


def check_grid(forecast: xr.Dataset, store: xr.Dataset) -> Grid:
    """The store's grid, after checking that the forecast is on it.

    Raises
    ------
    GridError
        If the shapes or coordinates differ (naming a flipped latitude).
    """
    grid = store_grid(store)
    lat = np.asarray(forecast[LATITUDE].values, dtype=np.float64)
    lon = np.asarray(forecast[LONGITUDE].values, dtype=np.float64)
    if (
        lat.shape == grid.latitude.shape
        and np.allclose(lat[::-1], grid.latitude, atol=1e-4)
        and lat.size > 1
    ):
        raise GridError(
            "forecast latitudes are ascending but the store's descend (90 -> -90)",
            hint="flip the forecast with ds.isel(latitude=slice(None, None, -1))",
        )
    if (lat.size, lon.size) != grid.shape or not (
        np.allclose(lat, grid.latitude, atol=1e-4) and np.allclose(lon, grid.longitude, atol=1e-4)
    ):
        raise GridError(
            f"forecast grid {lat.size}x{lon.size} does not match the store's {grid.describe()} grid",
            hint="score against the store the model was run from, or regrid the forecast",
        )
    return grid


def match(forecast: xr.Dataset, store: xr.Dataset) -> Matched:
    """Line a forecast up with the store's truth, climatology and persistence.

    Parameters
    ----------
    forecast : xarray.Dataset
        Forecast output layout: dims ``time``, ``lead_time``, [``member``],
        ``latitude``, ``longitude``; one variable per channel.
    store : xarray.Dataset
        A training store from :func:`forecast.store.open_store`.

    Returns
    -------
    Matched

    Raises
    ------
    DataError
        If a forecast channel is missing from the store, or no valid time of
        the forecast is in the store.
    GridError
        If the grids differ.
    """
    channels = forecast_channels(forecast)
    if not channels:
        raise DataError(
            "the forecast has no variable with latitude and longitude dims",
            hint="pass a file written by 'forecast run'",
        )
    for dim in (INIT_DIM, LEAD_DIM):
        if dim not in forecast.dims:
            raise DataError(
                f"the forecast has no {dim!r} dimension",
                hint="pass a file in the forecast output layout (time, lead_time, member, latitude, longitude)",
            )
    require_channels(store, channels)
    grid = check_grid(forecast, store)
    if MEMBER_DIM not in forecast.dims:
        forecast = forecast.expand_dims({MEMBER_DIM: 1})
    forecast = forecast[channels].transpose(INIT_DIM, LEAD_DIM, MEMBER_DIM, *SPACE)

    valid = valid_times(forecast)
    positions = _positions(store[INIT_DIM].values, valid.values)
    available = positions >= 0
    if not available.any():
        first, last = valid.values.min(), valid.values.max()
        store_times = store[INIT_DIM].values
        raise DataError(
            f"no valid time of the forecast ({format_time(first)} to {format_time(last)}) is in the store "
            f"({format_time(store_times[0])} to {format_time(store_times[-1])})",
            hint="score against a store that covers the forecast period (same calendar)",
        )
    coords = {INIT_DIM: forecast[INIT_DIM], LEAD_DIM: forecast[LEAD_DIM]}
    available_da = xr.DataArray(available, dims=(INIT_DIM, LEAD_DIM), coords=coords)
    index = xr.DataArray(np.where(available, positions, 0), dims=(INIT_DIM, LEAD_DIM))
    data = store["data"].sel(channel=channels).drop_vars(INIT_DIM)
    truth = data.isel({INIT_DIM: index}).assign_coords(coords).where(available_da)

    unique_valid, inverse = np.unique(valid.values.ravel(), return_inverse=True)
    clim = climatology_at(store, unique_valid).sel(channel=channels).drop_vars(INIT_DIM)
    clim_index = xr.DataArray(inverse.reshape(valid.shape), dims=(INIT_DIM, LEAD_DIM))
    climatology = clim.isel({INIT_DIM: clim_index}).assign_coords(coords)

    init_positions = _positions(store[INIT_DIM].values, forecast[INIT_DIM].values)
    init_ok = xr.DataArray(
        init_positions >= 0, dims=INIT_DIM, coords={INIT_DIM: forecast[INIT_DIM]}
    )
    persistence = (
        data.isel({INIT_DIM: np.where(init_positions >= 0, init_positions, 0)})
        .assign_coords({INIT_DIM: forecast[INIT_DIM]})
        .where(init_ok)
    )

    def by_channel(array: xr.DataArray) -> xr.Dataset:
        return xr.Dataset({c: array.sel(channel=c, drop=True) for c in channels})

    return Matched(
        channels=channels,
        grid=grid,
        forecast=forecast,
        truth=by_channel(truth),
        climatology=by_channel(climatology),
        persistence=by_channel(persistence),
        available=available_da,
        positions=np.where(available, positions, -1),
        init_positions=init_positions,
        fields=data,
        climatology_fields=clim.rename({INIT_DIM: "valid"}),
        climatology_index=inverse.reshape(valid.shape),
    )


def lead_label(lead) -> str:
    """``"6h"``, ``"36h"``, ``"0h"``, or ``"90min"`` for a lead time."""
    seconds = int(pd.Timedelta(lead).total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds // 60}min"


def parse_lead(text: str) -> np.timedelta64:
    """Parse a lead time such as ``"24h"``, ``"2d"`` or ``"0h"``."""
    from forecast.time import parse_step

    if text.strip() in ("0", "0h", "0d", "0min"):
        return np.timedelta64(0, "ns")
    return np.timedelta64(
        pd.Timedelta(parse_step(text) if not isinstance(text, dt.timedelta) else text), "ns"
    )
