"""``--layout wb2``: the forecast as WeatherBench2's evaluation reads it, with no renames.

WeatherBench2 (``weatherbench2.evaluation.open_source_files`` and
``schema.apply_time_conventions``) takes a forecast Zarr with

- ``time``: the initialisation time (``by_init`` forecasts), and
  ``prediction_timedelta`` (timedelta64) the lead time; without
  ``prediction_timedelta`` it would take ``time`` for the valid time;
- ``realization`` for ensemble members (``weatherbench2.metrics.REALIZATION``);
  a deterministic forecast has no member dim;
- ``latitude`` and ``longitude`` that match its ERA5 grid to 1e-3 degrees;
  its own datasets have latitude ascending (it flips descending ones);
- variables by long name (``geopotential``, ``2m_temperature`` ...), those on
  pressure levels over a ``level`` dim in hPa.

So: dims ``(time, prediction_timedelta, [realization,] [level,] latitude,
longitude)``, latitude ascending, float32 variables named as in
:data:`forecast.scoring.layouts.WB2_PRESSURE_NAMES` and
:data:`~forecast.scoring.layouts.WB2_SINGLE_NAMES`; every pressure variable
spans the union of the levels written (a level some variable was not
forecast at stays NaN); the global attribute ``channels`` lists the channels
written, which :func:`forecast.scoring.layouts.from_wb2` reads back.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.channels import channel_info
from forecast.errors import DataError
from forecast.grid import Grid
from forecast.scoring.layouts import WB2_LEAD_DIM, WB2_LEVEL_DIM, WB2_MEMBER_DIM, wb2_variable
from inference.writers.cf import (
    NO_FILL,
    grid_coordinates,
    member_coordinate,
    pressure_attrs,
    vertical_coordinate,
)
from inference.writers.layout import Arrangement, Layout, Target


def _variable_attrs(channel: str) -> dict[str, str]:
    try:
        info = channel_info(channel)
    except DataError:
        return {"long_name": channel, "units": "1"}
    attrs = info.attrs()
    if info.level is not None:  # the level is a coordinate here, not part of the name
        attrs["long_name"] = attrs["long_name"].removesuffix(f" at {info.level} hPa")
    return attrs


def _renamed(variable: xr.DataArray, dims: tuple[str, ...]) -> xr.Variable:
    return xr.Variable(dims, variable.values, attrs=variable.attrs)


class WB2Layout(Layout):
    """WeatherBench2's names, dims and orientation (see the module docstring)."""

    name = "wb2"

    def arrange(self, template: xr.Dataset) -> Arrangement:
        channels = [str(c) for c in template.data_vars]
        members = template.sizes["member"]
        member_dims = (WB2_MEMBER_DIM,) if members > 1 else ()
        places = {c: wb2_variable(c) for c in channels}
        levels = sorted({level for _, level in places.values() if level is not None})
        level_index = {level: k for k, level in enumerate(levels)}
        chunks = template[channels[0]].encoding["chunks"]
        member_chunk = chunks[2]
        nlat, nlon = template.sizes["latitude"], template.sizes["longitude"]
        grid = Grid.from_coords(template["latitude"].values, template["longitude"].values)
        sizes = {
            "time": template.sizes["time"],
            WB2_LEAD_DIM: template.sizes["lead_time"],
            WB2_MEMBER_DIM: members,
            WB2_LEVEL_DIM: len(levels),
            "latitude": nlat,
            "longitude": nlon,
        }

        coords = _coordinates(template, grid, members, levels)
        data_vars: dict[str, xr.Variable] = {}
        encodings: dict[str, dict] = {}
        targets = []
        for channel in channels:
            name, level = places[channel]
            targets.append(Target(name, None if level is None else level_index[level]))
            if name in data_vars:
                continue
            level_dims = (WB2_LEVEL_DIM,) if level is not None else ()
            dims = ("time", WB2_LEAD_DIM, *member_dims, *level_dims, "latitude", "longitude")
            shape = tuple(sizes[d] for d in dims)
            data_vars[name] = xr.Variable(
                dims, np.broadcast_to(np.float32(np.nan), shape), attrs=_variable_attrs(channel)
            )
            coordinates = ["valid_time", *(["checkpoint"] if "checkpoint" in coords else [])]
            vertical = vertical_coordinate(channel) if level is None else None
            if vertical is not None:
                coords[vertical[0]] = vertical[1]
                coordinates.append(vertical[0])
            encodings[name] = {
                "_FillValue": np.float32(np.nan),
                "dtype": "float32",
                "chunks": tuple(
                    {WB2_MEMBER_DIM: member_chunk, WB2_LEVEL_DIM: 1}.get(d, 1)
                    if d not in ("latitude", "longitude")
                    else sizes[d]
                    for d in dims
                ),
                "coordinates": " ".join(coordinates),
            }
        ds = xr.Dataset(data_vars, coords=coords, attrs=dict(template.attrs))
        ds.attrs["channels"] = " ".join(channels)
        ds.attrs["layout"] = self.name
        if grid.wb2_name():
            ds.attrs["wb2_grid"] = grid.wb2_name()
        for name in ("time", "valid_time"):
            ds[name].encoding = dict(template[name].encoding)
        ds[WB2_LEAD_DIM].encoding = dict(template["lead_time"].encoding)
        for coordinate in ds.coords:
            if ds[coordinate].dtype.kind == "f":
                ds[coordinate].encoding = dict(NO_FILL)
        for name, encoding in encodings.items():
            ds[name].encoding = encoding
        return Arrangement(
            ds,
            targets,
            member_dim=WB2_MEMBER_DIM if members > 1 else None,
            flip_latitude=True,
        )


def _coordinates(
    template: xr.Dataset, grid: Grid, members: int, levels: list[int]
) -> dict[str, xr.Variable]:
    """The WB2 layout's coordinates: init time, lead, ascending latitude, valid time, member and level."""
    coords = {
        "time": template["time"].variable,
        WB2_LEAD_DIM: _renamed(template["lead_time"], (WB2_LEAD_DIM,)),
        **grid_coordinates(grid, ascending_latitude=True),
        "valid_time": _renamed(template["valid_time"], ("time", WB2_LEAD_DIM)),
    }
    if members > 1:
        coords[WB2_MEMBER_DIM] = member_coordinate(members, WB2_MEMBER_DIM)
        if "checkpoint" in template.coords:  # a multi-checkpoint ensemble: each member's model
            coords["checkpoint"] = _renamed(template["checkpoint"], (WB2_MEMBER_DIM,))
    if levels:
        coords[WB2_LEVEL_DIM] = xr.Variable(
            WB2_LEVEL_DIM,
            np.asarray(levels, dtype=np.int32),
            attrs={**pressure_attrs(), "long_name": "pressure level"},
        )
    return coords


#: The WeatherBench2 layout.
WB2 = WB2Layout()
