"""Map source variables and levels to channel ids, converting units."""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.channels import (
    channel_info,
    known_single_level_order,
    lookup_source_variable,
    unit_conversion,
)
from forecast.errors import DataError


def available_channels(ds: xr.Dataset) -> dict[str, tuple[str, float | None]]:
    """Channels a standardised dataset can provide.

    Returns
    -------
    dict
        Channel id -> ``(variable name, level in hPa or None)``, in the order
        of the dataset's variables and levels.
    """
    found: dict[str, tuple[str, float | None]] = {}
    for name in ds.data_vars:
        variable = ds[name]
        has_level = "level" in variable.dims
        key = lookup_source_variable(str(name), has_level)
        if key is None:
            continue
        if has_level:
            for level in variable["level"].values:
                if float(level) == int(level):
                    found.setdefault(f"{key}{int(level)}", (str(name), float(level)))
        else:
            found.setdefault(key, (str(name), None))
    return found


def canonical_order(channels: list[str]) -> list[str]:
    """Sort channel ids: pressure-level variables (z, t, u, v, q, r, w), each by level, then single-level ones."""
    bases = ["z", "t", "u", "v", "q", "r", "w"]
    singles = known_single_level_order()

    def key(channel: str) -> tuple:
        info = channel_info(channel)
        if info.level is not None:
            return (0, bases.index(info.base) if info.base in bases else len(bases), info.level)
        return (1, singles.index(channel) if channel in singles else len(singles), 0)

    return sorted(channels, key=key)


def select_channels(
    ds: xr.Dataset, channels: list[str] | None = None, path: str | None = None
) -> xr.DataArray:
    """Stack the requested channels into one lazy array in canonical units.

    Parameters
    ----------
    ds : xarray.Dataset
        A standardised dataset (see :mod:`pipelines.sources`).
    channels : list of str, optional
        Channel ids; default every channel the dataset provides.
    path : str, optional
        Source description for error messages.

    Returns
    -------
    xarray.DataArray
        Dims ``(time, channel, latitude, longitude)``, float32, Dask-backed.

    Raises
    ------
    DataError
        If a requested channel is absent (the message lists what is there),
        or its units cannot be converted.
    """
    available = available_channels(ds)
    if not available:
        raise DataError(
            f"no known variables among {', '.join(map(str, ds.data_vars))}",
            path=path,
            hint="see docs/concepts.md for the variable names the lexicon knows",
        )
    if channels is None:
        channels = canonical_order(list(available))
    missing = [c for c in channels if c not in available]
    if missing:
        for channel in missing:
            channel_info(channel)  # an unknown id gets its own, more helpful error
        raise DataError(
            f"channel(s) {', '.join(missing)} not in the sources",
            path=path,
            hint=f"available: {', '.join(available)}",
        )
    fields = []
    for channel in channels:
        name, level = available[channel]
        variable = ds[name]
        if level is not None:
            variable = variable.sel(level=level, drop=True)
        scale, offset = unit_conversion(channel_info(channel), variable.attrs.get("units"))
        field = variable.astype(np.float32)
        if scale != 1.0 or offset != 0.0:
            field = field * np.float32(scale) + np.float32(offset)
        # the channel axis goes second before concatenating, so a computed block is one
        # contiguous (time, channel, lat, lon) array, not a transposed view that needs a copy
        fields.append(
            field.transpose("time", "latitude", "longitude")
            .drop_attrs(deep=False)
            .expand_dims("channel", axis=1)
        )
    stacked = xr.concat(fields, dim="channel", coords="minimal", compat="override", join="override")
    stacked = stacked.assign_coords(channel=np.asarray(channels, dtype=object))
    return stacked.rename("data")
