"""The forecast layouts that ``forecast run --layout`` writes, read back into the default one.

``forecast score`` scores the default layout (``time``, ``lead_time``,
``member``, ``latitude`` descending, one variable per channel);
:func:`open_forecast` opens a forecast in any of the three layouts and
returns it in that one:

- ``default``: as written;
- ``wb2``: WeatherBench2's names and dims (``prediction_timedelta``,
  ``realization``, ``level``, long variable names, latitude ascending);
  :data:`WB2_PRESSURE_NAMES` and :data:`WB2_SINGLE_NAMES` map channel ids to
  WeatherBench2's variable names, here and for the writer;
- ``cdo``: a directory of NetCDF files, one per init and member, with the
  valid time as the record dimension.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from forecast.channels import channel_info
from forecast.errors import DataError
from forecast.store import checked_zarr_store

#: WeatherBench2's names of pressure-level variables, by the channel id's base letter.
WB2_PRESSURE_NAMES: dict[str, str] = {
    "z": "geopotential",
    "t": "temperature",
    "u": "u_component_of_wind",
    "v": "v_component_of_wind",
    "q": "specific_humidity",
    "r": "relative_humidity",
    "w": "vertical_velocity",
}
#: WeatherBench2's names of single-level variables, by channel id.
WB2_SINGLE_NAMES: dict[str, str] = {
    "t2m": "2m_temperature",
    "d2m": "2m_dewpoint_temperature",
    "u10m": "10m_u_component_of_wind",
    "v10m": "10m_v_component_of_wind",
    "msl": "mean_sea_level_pressure",
    "sp": "surface_pressure",
    "tcwv": "total_column_water_vapour",
    "sst": "sea_surface_temperature",
}
#: WeatherBench2's dim names for lead time, ensemble member and pressure level.
WB2_LEAD_DIM, WB2_MEMBER_DIM, WB2_LEVEL_DIM = "prediction_timedelta", "realization", "level"


def file_order(names: Sequence[str]) -> list[str]:
    """Names in the order Zarr lists them (case-folded), used by every layout and format.

    Zarr's consolidated metadata sorts its arrays, so ``xarray.open_zarr`` sees
    them sorted whatever the write order; NetCDF files and the scores file
    use the same order so that all three list the variables alike.
    """
    return sorted(names, key=lambda name: unicodedata.normalize("NFKC", name).casefold())


def wb2_variable(channel: str) -> tuple[str, int | None]:
    """WeatherBench2's variable name and pressure level (hPa) of a channel.

    ``z500`` -> ``("geopotential", 500)``; ``t2m`` -> ``("2m_temperature", None)``;
    an unknown channel keeps its id (``("foo", None)``).
    """
    if channel in WB2_SINGLE_NAMES:
        return WB2_SINGLE_NAMES[channel], None
    try:
        info = channel_info(channel)
    except DataError:
        return channel, None
    if info.level is not None and info.base in WB2_PRESSURE_NAMES:
        return WB2_PRESSURE_NAMES[info.base], info.level
    return channel, None


def channel_from_wb2(name: str, level: int | None) -> str:
    """The channel id of a WeatherBench2 variable (at a level): the inverse of :func:`wb2_variable`."""
    if level is not None:
        bases = {v: k for k, v in WB2_PRESSURE_NAMES.items()}
        return f"{bases.get(name, name)}{int(level)}"
    singles = {v: k for k, v in WB2_SINGLE_NAMES.items()}
    return singles.get(name, name)


def is_wb2(dataset: xr.Dataset) -> bool:
    """Whether a dataset is in the ``wb2`` layout (it has ``prediction_timedelta``)."""
    return WB2_LEAD_DIM in dataset.dims


def from_wb2(dataset: xr.Dataset) -> xr.Dataset:
    """A ``wb2``-layout forecast in the default layout.

    Renames ``prediction_timedelta`` -> ``lead_time`` and ``realization`` ->
    ``member`` (adding a one-member dim where there is none), splits
    variables with a ``level`` dim into one channel per level (only the
    channels listed in the ``channels`` attribute, when there is one) and
    turns latitude to descend.
    """
    written = set(str(dataset.attrs.get("channels", "")).split())
    renames = {WB2_LEAD_DIM: "lead_time"}
    if WB2_MEMBER_DIM in dataset.dims:
        renames[WB2_MEMBER_DIM] = "member"
    ds = dataset.rename(renames)
    if "member" not in ds.dims:
        ds = ds.expand_dims(member=np.zeros(1, dtype=np.int32))
    channels: dict[str, xr.DataArray] = {}
    for name, variable in ds.data_vars.items():
        if not {"latitude", "longitude"} <= set(variable.dims):
            continue
        if WB2_LEVEL_DIM in variable.dims:
            for level in variable[WB2_LEVEL_DIM].values:
                channel = channel_from_wb2(str(name), int(level))
                if not written or channel in written:
                    field = variable.sel({WB2_LEVEL_DIM: level}, drop=True)
                    channels[channel] = field.assign_attrs(_channel_attrs(channel, variable))
        else:
            channel = channel_from_wb2(str(name), None)
            if not written or channel in written:
                channels[channel] = variable
    coords = {k: v for k, v in ds.coords.items() if WB2_LEVEL_DIM not in v.dims}
    ordered = {c: channels[c] for c in file_order(list(channels))}
    out = xr.Dataset(ordered, coords=coords, attrs=ds.attrs)
    out = out.transpose("time", "lead_time", "member", "latitude", "longitude", ...)
    latitude = out["latitude"].values
    if latitude.size > 1 and latitude[0] < latitude[-1]:
        out = out.isel(latitude=slice(None, None, -1))
    return out


def _channel_attrs(channel: str, variable: xr.DataArray) -> dict:
    try:
        return channel_info(channel).attrs()
    except DataError:
        return dict(variable.attrs)


def is_cdo(path: Path) -> bool:
    """Whether ``path`` is a ``cdo``-layout directory (NetCDF files, not a Zarr store)."""
    return (
        path.is_dir()
        and not (path / "zarr.json").exists()
        and not (path / ".zgroup").exists()
        and any(path.glob("*.nc"))
    )


def open_cdo(path: Path) -> xr.Dataset:
    """A ``cdo``-layout directory (one file per init and member) as one default-layout dataset.

    Each file has the valid time ``time`` as its record dim, ``forecast_period``
    along it and the scalars ``forecast_reference_time`` and ``realization``;
    the files are lined up on those (not on their names) and opened lazily.

    Raises
    ------
    DataError
        If the files do not form a full (init x member) table with the same leads.
    """
    pieces: dict[tuple, xr.Dataset] = {}
    for file in sorted(path.glob("*.nc")):
        ds = xr.open_dataset(file, chunks={}, decode_timedelta=True)
        init = ds["forecast_reference_time"].values[()]
        member = int(ds["realization"].values)
        ds = (
            ds.drop_vars(["forecast_reference_time", "realization"])
            .swap_dims(time="forecast_period")
            .rename({"time": "valid_time", "forecast_period": "lead_time"})
        )
        ds = ds.expand_dims(member=np.array([member], dtype=np.int32))
        if "checkpoint" in ds.coords:  # a multi-checkpoint ensemble: each file's member's model
            ds = ds.assign_coords(
                checkpoint=ds["checkpoint"].expand_dims(member=ds["member"].values)
            )
        ds = ds.expand_dims(time=np.array([init]))
        ds = ds.assign_coords(valid_time=ds["valid_time"].expand_dims(time=ds["time"].values))
        pieces[(init, member)] = ds
    inits = sorted({init for init, _ in pieces})
    members = sorted({member for _, member in pieces})
    missing = [(i, m) for i in inits for m in members if (i, m) not in pieces]
    if missing:
        raise DataError(
            f"the cdo-layout directory lacks {len(missing)} (init, member) file(s)",
            path=path,
            hint="pass the complete directory that 'forecast run --layout cdo' wrote",
        )
    nested = [[pieces[(i, m)] for m in members] for i in inits]
    try:
        combined = xr.combine_nested(
            nested,
            concat_dim=["time", "member"],
            data_vars="minimal",
            coords="minimal",
            compat="override",
            join="exact",
        )
    except ValueError as err:
        raise DataError(
            f"the files of the cdo-layout directory do not line up ({err})",
            path=path,
            hint="pass the complete directory that 'forecast run --layout cdo' wrote",
        ) from err
    return combined.transpose("time", "lead_time", "member", "latitude", "longitude", ...)


def open_forecast(path: str | Path) -> xr.Dataset:
    """Open a forecast in any layout (``.zarr``, ``.nc`` or a cdo directory), in the default layout.

    Raises
    ------
    FileNotFoundError
        If the path does not exist.
    DataError
        If it cannot be read as a forecast.
    """
    from forecast import staging, storage

    if not storage.is_local(path):  # object storage: Zarr read in place, other files downloaded
        opened = staging.open_remote_dataset(str(path))
        if isinstance(opened, xr.Dataset):
            return from_wb2(opened) if is_wb2(opened) else opened
        path = opened
    path = storage.local_path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file or directory", str(path))
    try:
        if is_cdo(path):
            return open_cdo(path)
        if path.is_dir():  # chunks with a CRC32C (forecast run writes them) are checked as read
            store = checked_zarr_store(
                path, hint="rerun the forecast (forecast run ... --overwrite)"
            )
            ds = xr.open_zarr(store, consolidated=None, decode_timedelta=True)
        else:
            ds = xr.open_dataset(path, chunks={}, decode_timedelta=True)
    except DataError:
        raise
    except Exception as err:  # readers raise many types on a foreign file
        raise DataError(
            f"cannot read the forecast ({type(err).__name__}: {err})",
            path=path,
            hint="pass a .zarr, .nc or cdo directory written by 'forecast run'",
        ) from err
    return from_wb2(ds) if is_wb2(ds) else ds
