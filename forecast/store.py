"""The training store: layout, opening and validation.

A store is a Zarr (v3) group written by ``forecast ingest`` that
``xarray.open_zarr(path)`` opens directly:

- ``data(time, channel, latitude, longitude)`` float32, one chunk per time step;
- ``time`` CF-encoded in the source calendar; ``channel`` string ids;
  ``latitude`` descending 90 -> -90; ``longitude`` ascending in [0, 360);
- ``mean(channel)``, ``std(channel)``: area-weighted over the statistics period;
- ``diff_std(channel)``: area-weighted std of one-step tendencies;
- ``climatology(dayofyear, hour, channel, latitude, longitude)`` float32: the
  mean by day of year and hour of day, smoothed over a window of days
  (NaN where no data fall in the window);
- attributes: see :data:`REQUIRED_ATTRS`; ``forecast_status`` is ``complete``
  once the store is published (:mod:`forecast.publish`).

A store may live on local disk or on object storage (any location of
:mod:`forecast.storage`); readers see it as last published.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from zarr.errors import NodeNotFoundError
from zarr.storage import WrapperStore

from forecast import storage
from forecast.errors import DataError, ForecastError
from forecast.grid import Grid
from forecast.publish import require_complete
from forecast.time import canonical_calendar, parse_step, time_calendar

#: Version of the store layout written by this software.
STORE_FORMAT_VERSION = 1

REQUIRED_VARIABLES = ("data", "mean", "std", "diff_std", "climatology")
REQUIRED_ATTRS = (
    "store_format_version",
    "grid_kind",
    "time_step",
    "calendar",
    "statistics_start",
    "statistics_end",
    "sources",
    "software_version",
)


class CheckedStore(WrapperStore):
    """A read-only Zarr store that verifies each chunk's CRC32C before Zarr decodes it.

    The store's ``data`` and ``climatology`` chunks end with a CRC32C of their
    compressed bytes (Zarr's ``crc32c`` codec). A chunk that fails the check
    (truncated, overwritten, bit rot) raises a one-line :class:`DataError`
    naming the chunk and the fix, instead of a codec's traceback.
    """

    #: The fix named when a chunk of a training store is damaged.
    STORE_HINT = (
        "re-ingest the data (forecast ingest ... --overwrite), or restore the store from a copy"
    )

    def __init__(self, store, location: str, checked: frozenset[str], hint: str = STORE_HINT):
        super().__init__(store)
        self.location = location
        self.checked = checked
        self.hint = hint

    def _with_store(self, store):
        return type(self)(store, self.location, self.checked, self.hint)

    async def get(self, key, prototype, byte_range=None):
        value = await self._store.get(key, prototype, byte_range)
        # the array of a chunk key: NAME/c/0/1 (Zarr v3's default encoding) or NAME/0.1 (v2's)
        array = key.split("/c/", 1)[0] if "/c/" in key else key.rsplit("/", 1)[0]
        if (
            value is None
            or byte_range is not None
            or array not in self.checked
            or key.endswith("zarr.json")
        ):
            return value
        data = value.as_numpy_array()
        import google_crc32c

        if (
            len(data) < 4
            or np.uint32(google_crc32c.value(data[:-4].tobytes())).tobytes() != data[-4:].tobytes()
        ):
            raise DataError(
                f"chunk {key} is damaged (its CRC32C checksum does not match: truncated or overwritten)",
                path=self.location,
                hint=self.hint,
            )
        return value


def _checksummed_arrays(store) -> frozenset[str]:
    """Names of the arrays whose codecs end with ``crc32c``."""
    import zarr

    try:
        group = zarr.open_group(store, mode="r")
    except Exception:  # not a group: open_zarr will say so
        return frozenset()
    names = set()
    for name, node in group.members():
        codecs = getattr(node.metadata, "codecs", ())
        if codecs and type(codecs[-1]).__name__ == "Crc32cCodec":
            names.add(name)
    return frozenset(names)


def checked_zarr_store(location: str | Path, hint: str = CheckedStore.STORE_HINT) -> CheckedStore:
    """A read-only Zarr store at ``location`` whose checksummed arrays are verified chunk by chunk.

    ``hint`` is the fix a damaged chunk's error names.
    """
    raw = storage.zarr_store(str(location), read_only=True)
    return CheckedStore(raw, str(location), _checksummed_arrays(raw), hint)


def _unreadable(location: str, err: Exception) -> DataError:
    return DataError(
        f"not a readable Zarr store ({type(err).__name__}: {err})",
        path=location,
        hint="point at a store written by 'forecast ingest'",
    )


def open_store(path: str | Path, chunk_bytes: int | None = None) -> xr.Dataset:
    """Open and validate a training store lazily (Dask-backed).

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` directory written by ``forecast ingest``, or its URL
        (``s3://``, ``gs://``, ``file://``, ``https://``; see
        :mod:`forecast.storage`).
    chunk_bytes : int, optional
        Make each Dask chunk of ``data`` about this many bytes: whole store
        chunks along ``time`` (one Dask task reads them all, for a reader
        that streams through the store; the store's chunks hold one time
        step each, whose tasks cost more to schedule than to read). Default:
        one Dask chunk per store chunk.

    Returns
    -------
    xarray.Dataset
        The store as last published (its consolidated metadata), with
        ``time`` decoded in its own calendar. Chunks are checked against
        their CRC32C as they are read (:class:`CheckedStore`).

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    DataError
        If it is not a store of a version this software reads, or an ingest
        is writing it or left it unfinished.
    """
    location = str(path)
    if not storage.exists(location):
        raise FileNotFoundError(2, "No such file or directory", location)
    require_complete(location, "store", "forecast ingest")
    ds = _open(location)
    missing = [v for v in REQUIRED_VARIABLES if v not in ds.variables]
    missing += [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise DataError(
            f"not a training store: missing {', '.join(missing)}",
            path=location,
            hint="write the store with 'forecast ingest'",
        )
    version = int(ds.attrs["store_format_version"])
    if version > STORE_FORMAT_VERSION:
        raise DataError(
            f"store format version {version} is newer than this software reads ({STORE_FORMAT_VERSION})",
            path=location,
            hint="upgrade forecast or re-ingest the data",
        )
    if ds["data"].dims != ("time", "channel", "latitude", "longitude"):
        raise DataError(
            f"data has dims {ds['data'].dims}, expected (time, channel, latitude, longitude)",
            path=location,
        )
    if chunk_bytes is not None:
        data = ds["data"]
        assert data.chunks is not None  # open_zarr gives Dask arrays
        chunk = data.chunks[0][0]
        per_chunk = chunk * int(np.prod(data.shape[1:])) * data.dtype.itemsize
        steps = chunk * max(1, int(chunk_bytes) // per_chunk)
        if steps > chunk:
            # the whole store again, not its data alone: a publish between the two opens
            # then gives another complete store, never one store's data with another's times
            ds = _open(location, chunks={"time": steps})
    return ds


def _open(location: str, chunks: dict | None = None) -> xr.Dataset:
    """The store at ``location`` through xarray (Dask chunks: the store's, or ``chunks`` by dimension)."""
    options: dict[str, Any] = {} if chunks is None else {"chunks": chunks}  # else xarray's default
    try:
        return xr.open_zarr(
            checked_zarr_store(location),
            consolidated=None,
            use_cftime=None,
            decode_timedelta=False,
            **options,
        )
    except ForecastError:
        raise
    except FileNotFoundError as err:
        if not isinstance(err, NodeNotFoundError):  # zarr's "no group here" is a FileNotFoundError
            raise
        raise _unreadable(location, err) from err
    except Exception as err:  # zarr raises many types for a non-store directory
        raise _unreadable(location, err) from err


def store_grid(ds: xr.Dataset) -> Grid:
    """The grid of a store (kind from its attributes, coordinates from the store)."""
    return Grid(ds.attrs["grid_kind"], ds["latitude"].values, ds["longitude"].values)


def store_step(ds: xr.Dataset) -> dt.timedelta:
    """The time step of a store."""
    return parse_step(ds.attrs["time_step"])


def store_channels(ds: xr.Dataset) -> list[str]:
    """The channel ids of a store, in store order."""
    return [str(c) for c in ds["channel"].values]


def store_calendar(ds: xr.Dataset) -> str:
    """The calendar of a store's time coordinate."""
    if "calendar" in ds.attrs:
        return canonical_calendar(ds.attrs["calendar"])
    return time_calendar(ds["time"].values)


def require_channels(ds: xr.Dataset, channels: list[str], path: str | Path | None = None) -> None:
    """Raise a DataError naming the channels of ``channels`` that the store lacks."""
    have = store_channels(ds)
    missing = [c for c in channels if c not in have]
    if missing:
        raise DataError(
            f"store lacks channel(s) {', '.join(missing)}",
            path=path,
            hint=f"it has {', '.join(have)}; re-ingest with --channels including them",
        )


def climatology_at(ds: xr.Dataset, times) -> xr.DataArray:
    """Climatology matched to each of ``times``: dims (time, channel, latitude, longitude).

    Looks up the store's ``climatology`` by the day of year and hour of each
    time (in the store's calendar). Hours absent from the climatology take
    the nearest hour present; days of year without a climatology (the store
    fills only the days its data cover) take the nearest day that has one,
    cyclically over the year.
    """
    from forecast.time import day_of_year_and_hour, time_index

    index = time_index(times)
    doy, hour = day_of_year_and_hour(index)
    clim = ds["climatology"]
    hours = clim["hour"].values
    nearest_hour = hours[np.abs(hours[None, :] - hour[:, None]).argmin(axis=1)]
    ndays = clim.sizes["dayofyear"]
    available = _climatology_days(ds)
    if available.size == 0:
        raise DataError("the store's climatology is empty", hint="re-ingest the data")
    distance = np.abs(available[None, :] - np.minimum(doy, ndays)[:, None])
    distance = np.minimum(distance, ndays - distance)
    nearest_day = available[distance.argmin(axis=1)]
    out = clim.sel(
        dayofyear=xr.DataArray(nearest_day, dims="time"),
        hour=xr.DataArray(nearest_hour, dims="time"),
    ).drop_vars(["dayofyear", "hour"])
    return out.assign_coords(time=("time", np.asarray(index)))


def _climatology_days(ds: xr.Dataset) -> np.ndarray:
    """Days of year at which the store's climatology has values."""
    if "climatology_days" in ds.attrs:
        return np.asarray(ds.attrs["climatology_days"], dtype=np.int64)
    first = ds["climatology"].isel(hour=0, channel=0, latitude=0, longitude=0).values
    return ds["dayofyear"].values[np.isfinite(first)]


def seasonal_cycle(ds: xr.Dataset, channels: list[str], harmonics: int = 4) -> np.ndarray:
    """The climatological seasonal cycle of ``channels``: Fourier coefficients of its daily means.

    The store's climatology (day of year x hour) averaged over the hours,
    each day's mean valid at the mean of its hours, fitted by least squares
    with the mean and ``harmonics`` annual harmonics
    (:func:`forecast.seasonal.fit_seasonal_cycle`); what
    :class:`~forecast.steppers.backbone.BackboneStepper` takes as ``seasonal=``.

    Parameters
    ----------
    ds : xarray.Dataset
        A training store (:func:`open_store`).
    channels : list of str
        Channels, in the order wanted.
    harmonics : int
        Annual harmonics.

    Returns
    -------
    numpy.ndarray
        ``(2 * harmonics + 1, channel, latitude, longitude)`` float64, physical units.

    Raises
    ------
    DataError
        If the climatology covers too few days of the year for the harmonics.
    """
    from forecast.seasonal import fit_seasonal_cycle

    clim = ds["climatology"].sel(channel=channels)
    days = _climatology_days(ds)
    daily = clim.sel(dayofyear=days).mean("hour").transpose("dayofyear", "channel", ...)
    hour = float(np.mean(clim["hour"].values))
    fraction = (days - 1 + hour / 24.0) / ds.sizes["dayofyear"]
    return fit_seasonal_cycle(fraction, daily.values, harmonics)


def diurnal_cycle(ds: xr.Dataset, channels: list[str], times=None) -> tuple[np.ndarray, np.ndarray]:
    """The climatological diurnal cycle of ``channels``: mean hour-of-day anomalies.

    The store's climatology (day of year x hour), averaged over the days of
    year of ``times`` (default: every day it covers), minus its mean over the
    hours; what :class:`forecast.stepper.Stepper` adds to its residual with
    ``diurnal=``.

    Parameters
    ----------
    ds : xarray.Dataset
        A training store (:func:`open_store`).
    channels : list of str
        Channels, in the order wanted.
    times : array of datetime64 or cftime, optional
        Restrict the average to these times' days of year (e.g. the training period).

    Returns
    -------
    hours : numpy.ndarray
        ``(hour,)`` hours of day of the climatology, float64.
    table : numpy.ndarray
        ``(hour, channel, latitude, longitude)`` float64, physical units.

    Raises
    ------
    DataError
        If the climatology has fewer than two hours of day, or no values on those days.
    """
    from forecast.time import day_of_year_and_hour, time_index

    clim = ds["climatology"].sel(channel=channels)
    if clim.sizes["hour"] < 2:
        raise DataError(
            f"the store's climatology has {clim.sizes['hour']} hour of day; a diurnal cycle needs two or more",
            hint="ingest at a sub-daily step, or train without the diurnal baseline",
        )
    days = _climatology_days(ds)
    if times is not None:
        wanted = np.unique(day_of_year_and_hour(time_index(times))[0])
        days = np.intersect1d(days, wanted)
    if days.size == 0:
        raise DataError(
            "the store's climatology has no values on the days of year asked for",
            hint="re-ingest the data",
        )
    by_hour = clim.sel(dayofyear=days).mean("dayofyear").transpose("hour", "channel", ...)
    table = np.asarray(by_hour.values, dtype=np.float64)
    table = table - table.mean(axis=0, keepdims=True)
    return np.asarray(clim["hour"].values, dtype=np.float64), table
