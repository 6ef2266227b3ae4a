"""Open ERA5-style sources lazily and bring them to one layout.

Sources are local paths or URLs (:mod:`forecast.storage`): NetCDF files (the CDS layout with ``valid_time``/``pressure_level``
and the older one with ``time``/``level``), Zarr stores (WeatherBench2 style,
long variable names, latitude ascending) and GRIB files (through cfgrib).
After :func:`open_sources` every dataset has

- dims ``time`` (decoded, in the source calendar), optional ``level`` (hPa),
  ``latitude`` (descending), ``longitude`` (ascending, in [0, 360));
- no ensemble dimension (``number`` is selected with ``member``);
- a ``source`` attribute naming its file(s).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from forecast import storage
from forecast.errors import CalendarError, DataError, GridError
from forecast.time import format_time, time_index

_DIM_ALIASES = {
    "lat": "latitude",
    "nav_lat": "latitude",
    "lon": "longitude",
    "nav_lon": "longitude",
    "pressure_level": "level",
    "isobaricInhPa": "level",
    "plev": "level",
    "lev": "level",
}
_GRIB_SUFFIXES = (".grib", ".grb", ".grib1", ".grib2", ".grb2")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5")

#: Target bytes of one Dask chunk (per variable) when opening a NetCDF or GRIB source.
CHUNK_BYTES = 16 * 2**20


@dataclass(frozen=True)
class Source:
    """One opened file: its path and its standardised, lazy dataset."""

    path: str
    dataset: xr.Dataset


def expand_paths(patterns: Sequence[str | Path]) -> list[str]:
    """Expand globs, local or on object storage; a pattern that matches nothing is an error naming it."""
    paths: list[str] = []
    for pattern in patterns:
        paths.extend(storage.glob(pattern))
    return list(dict.fromkeys(paths))


def _engine(path: str) -> str:
    lowered = path.lower().rstrip("/")
    if lowered.endswith(".zarr") or storage.is_dir(path):
        return "zarr"
    if lowered.endswith(_GRIB_SUFFIXES):
        return "cfgrib"
    if lowered.endswith(_NETCDF_SUFFIXES):
        return "netcdf4"
    with storage.storage_errors(path, "read"):
        magic = storage.read_head(path, 8)
    if magic.startswith(b"GRIB"):
        return "cfgrib"
    return "netcdf4"


def open_file(path: str) -> xr.Dataset:
    """Open one source file lazily (Dask-backed), without standardising it.

    Raises
    ------
    DataError
        If the file cannot be read, with the reader's reason.
    CalendarError
        If its time axis uses a calendar that cannot be decoded.
    """
    engine = _engine(path)
    kwargs: dict = {}
    local = storage.is_local(path)
    if engine == "cfgrib":
        try:
            import cfgrib  # noqa: F401
        except ImportError:
            raise DataError(
                "reading GRIB needs cfgrib and eccodes",
                path=path,
                hint="pip install 'forecast[grib]'",
            ) from None
        if not local:
            raise DataError(
                "GRIB sources must be local files (cfgrib reads files only)",
                path=path,
                hint="copy the file to a local disk first",
            )
        kwargs["backend_kwargs"] = {"indexpath": ""}
    try:
        if engine == "zarr":
            return xr.open_zarr(
                storage.zarr_store(path, read_only=True)
                if not local
                else str(storage.local_path(path)),
                chunks={},
                decode_timedelta=False,
            )
        # opened once, lazily (no cache: Dask reads each block), then chunked along time
        if local:
            ds = xr.open_dataset(
                str(storage.local_path(path)),
                engine=engine,
                decode_timedelta=False,
                cache=False,
                **kwargs,
            )
        else:  # NetCDF-4 (HDF5) on object storage or https: read through an fsspec file by h5netcdf
            ds = xr.open_dataset(
                storage.open_file(path), engine="h5netcdf", decode_timedelta=False, cache=False
            )
        return ds.chunk(_time_chunks(ds))
    except storage.StorageError:
        raise
    except ValueError as err:
        text = str(err)
        if "calendar" in text:
            raise CalendarError(
                f"cannot decode times ({text.splitlines()[0]})",
                path=path,
                hint="use a CF calendar: standard, noleap, 360_day, ...",
            ) from None
        raise DataError(
            f"cannot read the file ({text.splitlines()[0]})",
            path=path,
            hint="check that it is a complete NetCDF, Zarr or GRIB file",
        ) from None
    except Exception as err:  # readers raise OSError, KeyError, RuntimeError ... for corrupt files
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DataError(
            f"cannot read the file ({reason})",
            path=path,
            hint="check that it is a complete NetCDF, Zarr or GRIB file",
        ) from None


def _time_chunks(ds: xr.Dataset) -> dict:
    """Dask chunks of about :data:`CHUNK_BYTES` along time for a file without chunking of its own.

    NetCDF files written without chunking are one Dask chunk per variable if
    opened with ``chunks={}``; every block of times would then read the whole
    variable again. Chunking along time lets each block read only its times.
    Without a time dimension: one chunk per variable.
    """
    time_dim = next((d for d in ("valid_time", "time") if d in ds.dims), None)
    if time_dim is None:
        return {}
    per_step = max(
        (
            ds[name].dtype.itemsize * ds[name].size // max(ds.sizes[time_dim], 1)
            for name in ds.data_vars
            if time_dim in ds[name].dims
        ),
        default=1,
    )
    return {time_dim: max(1, int(CHUNK_BYTES // max(per_step, 1)))}


def standardise(ds: xr.Dataset, path: str, member: int | None = None) -> xr.Dataset:
    """Bring one dataset to the common layout (see module docstring).

    Parameters
    ----------
    ds : xarray.Dataset
        As opened by :func:`open_file`.
    path : str
        Its file, for error messages.
    member : int, optional
        Ensemble member to select when the source has a ``number`` dimension.
    """
    ds = ds.rename(
        {
            name: alias
            for name, alias in _DIM_ALIASES.items()
            if name in ds.variables and alias not in ds.variables
        }
    )
    ds = _standardise_time(ds, path)
    if "number" in ds.dims:
        members = ds["number"].values.tolist()
        if member is None:
            raise DataError(
                f"the source is an ensemble with members {members}",
                path=path,
                hint="choose one with --member N",
            )
        if member not in members:
            raise DataError(
                f"member {member} not in the source (members {members})",
                path=path,
                hint="choose one of those with --member",
            )
        ds = ds.sel(number=member)
    if "number" in ds.coords:
        ds = ds.drop_vars("number")
    for name in ("latitude", "longitude"):
        if name not in ds.dims:
            raise GridError(
                f"no {name} dimension (dims are {', '.join(map(str, ds.dims))})",
                path=path,
                hint="the source must be on a regular lat/lon grid",
            )
    if "level" in ds.dims:
        units = str(ds["level"].attrs.get("units", "hPa")).lower()
        if units in ("pa", "pascal"):
            ds = ds.assign_coords(level=ds["level"] / 100.0)
    ds = _orient(ds)
    drop = [name for name in ds.coords if name not in ds.dims]
    ds = ds.drop_vars(drop)
    ds.attrs["source"] = path
    return ds


def _standardise_time(ds: xr.Dataset, path: str) -> xr.Dataset:
    if "valid_time" in ds.dims:
        if "time" in ds.variables:
            ds = ds.drop_vars("time")
        ds = ds.rename({"valid_time": "time"})
    elif "time" in ds.dims and "valid_time" in ds.coords and ds["valid_time"].dims == ("time",):
        ds = ds.assign_coords(time=ds["valid_time"].values)
    elif "time" not in ds.dims:
        if "time" in ds.coords and ds["time"].ndim == 0:
            ds = ds.expand_dims("time")
        elif "valid_time" in ds.coords and ds["valid_time"].ndim == 0:
            ds = (
                ds.drop_vars([v for v in ("time",) if v in ds.variables])
                .rename({"valid_time": "time"})
                .expand_dims("time")
            )
        else:
            dims = ", ".join(f"{name}={size}" for name, size in ds.sizes.items())
            raise CalendarError(
                f"no time coordinate (looked for time and valid_time; the dimensions are {dims})",
                path=path,
                hint="ingest needs a time series of analyses; a climatology (month, dayofyear) is not one",
            )
    values = ds["time"].values
    if not (np.issubdtype(values.dtype, np.datetime64) or values.dtype == object):
        calendar = ds["time"].attrs.get("calendar", "?")
        raise CalendarError(
            f"times could not be decoded (calendar {calendar!r})",
            path=path,
            hint="use a CF calendar: standard, noleap, 360_day, ...",
        )
    # Variables without a time dimension (orography, land-sea mask) are not state channels.
    ds = ds[[name for name in ds.data_vars if "time" in ds[name].dims]]
    return ds


def _orient(ds: xr.Dataset) -> xr.Dataset:
    """Latitude descending; longitude in [0, 360) ascending (kept contiguous for a region across 0)."""
    lon = ds["longitude"].values.astype(np.float64)
    wrapped = np.mod(lon, 360.0)
    order = np.argsort(wrapped, kind="stable")
    sorted_lon = wrapped[order]
    if lon.size > 1:
        gaps = np.diff(np.concatenate([sorted_lon, [sorted_lon[0] + 360.0]]))
        largest = int(np.argmax(gaps))
        spacing = np.median(gaps)
        if gaps[largest] > 1.5 * spacing and largest != lon.size - 1:
            # A regional grid that crosses the prime meridian: start after the gap, unwrap past 360.
            order = np.roll(order, -(largest + 1))
            sorted_lon = np.unwrap(wrapped[order], period=360.0)
    ds = ds.isel(longitude=order).assign_coords(longitude=sorted_lon)
    if ds["latitude"].size > 1 and ds["latitude"].values[0] < ds["latitude"].values[-1]:
        ds = ds.isel(latitude=slice(None, None, -1))
    return ds


def open_sources(patterns: Sequence[str | Path], member: int | None = None) -> list[Source]:
    """Open every file matched by ``patterns``, standardised and lazy."""
    return [
        Source(path, standardise(open_file(path), path, member)) for path in expand_paths(patterns)
    ]


def combine(sources: Iterable[Source]) -> tuple[xr.Dataset, dict[str, list[tuple]]]:
    """Combine standardised sources into one dataset.

    Files with the same variables are concatenated along time; groups with
    different variables (pressure-level and single-level files) are merged.
    Where two files cover the same times for the same variables, the
    overlap must agree (only the overlap is read to check).

    Returns
    -------
    dataset : xarray.Dataset
        Lazy, times sorted.
    spans : dict
        Variable name -> list of ``(first_time, last_time, path)``, to name
        the file behind a time in later error messages.

    Raises
    ------
    DataError
        If overlapping files disagree, or grids differ between files.
    """
    groups: dict[tuple[str, ...], list[Source]] = {}
    for source in sources:
        key = tuple(sorted(str(name) for name in source.dataset.data_vars))
        groups.setdefault(key, []).append(source)
    merged: list[xr.Dataset] = []
    spans: dict[str, list[tuple]] = {}
    reference: Source | None = None
    for names, members in groups.items():
        members = sorted(members, key=lambda s: s.dataset["time"].values[0])
        pieces = []
        seen: xr.Dataset | None = None
        for source in members:
            ds = source.dataset
            reference = reference or source
            _check_same_grid(reference, source)
            if seen is not None:
                ds = _drop_agreeing_overlap(seen, ds, source.path)
                if ds.sizes["time"] == 0:
                    continue
            pieces.append(ds)
            seen = (
                ds
                if seen is None
                else xr.concat(
                    [seen, ds],
                    dim="time",
                    data_vars="all",
                    coords="minimal",
                    compat="override",
                    join="override",
                )
            )
            for name in names:
                spans.setdefault(name, []).append(
                    (ds["time"].values[0], ds["time"].values[-1], source.path)
                )
        if seen is not None:
            merged.append(seen)
    if not merged:
        raise DataError("no data variables with a time dimension in the sources")
    combined = (
        xr.merge(merged, join="outer", compat="override", combine_attrs="drop")
        if len(merged) > 1
        else merged[0]
    )
    combined.attrs["sources"] = [s.path for group in groups.values() for s in group]
    return combined, spans


def _check_same_grid(reference: Source, other: Source) -> None:
    a, b = reference.dataset, other.dataset
    for name in ("latitude", "longitude"):
        if a.sizes[name] != b.sizes[name] or not np.allclose(
            a[name].values, b[name].values, atol=1e-6
        ):
            raise GridError(
                f"its {name} differs from that of {reference.path}",
                path=other.path,
                hint="ingest sources on the same grid together, or regrid them first",
            )


def _drop_agreeing_overlap(seen: xr.Dataset, new: xr.Dataset, path: str) -> xr.Dataset:
    """Remove from ``new`` the times already in ``seen``; raise if the overlap disagrees."""
    seen_index = time_index(seen["time"].values)
    new_times = new["time"].values
    overlap = np.asarray([t in seen_index for t in time_index(new_times)], dtype=bool)
    if not overlap.any():
        return new
    common = new_times[overlap]
    for name in new.data_vars:
        a = seen[name].sel(time=common).values
        b = new[name].sel(time=common).values
        if not np.allclose(a, b, rtol=1e-6, atol=0.0, equal_nan=True):
            raise DataError(
                f"variable {name} disagrees with another source over {len(common)} overlapping time(s) "
                f"from {format_time(common[0])}",
                path=path,
                hint="drop one of the overlapping files",
            )
    return new.isel(time=np.flatnonzero(~overlap))


def file_for_time(spans: dict[str, list[tuple]], time) -> str:
    """The file(s) that hold ``time``, for error messages."""
    index = time_index(np.asarray([time]))
    found = []
    for entries in spans.values():
        for first, last, path in entries:
            if time_index(np.asarray([first]))[0] <= index[0] <= time_index(np.asarray([last]))[0]:
                found.append(path)
    return ", ".join(dict.fromkeys(found)) or "the sources"
