"""Regions over which scores are averaged, WeatherBench2's standard set plus boxes.

WeatherBench2 (``weatherbench2/regions.py``, Rasp et al. 2024, section 4)
scores the globe, the tropics (20°S–20°N) and the northern and southern
extratropics (20°N–90°N, 90°S–20°S). A region here is a latitude band and a
longitude range; the area average over a region is the cell-area weighted
mean over the grid cells whose centres fall inside it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.dims import LATITUDE, LONGITUDE, SPACE
from forecast.errors import ConfigError, GridError
from forecast.grid import Grid


@dataclass(frozen=True)
class Region:
    """A latitude/longitude box (cell centres inside it count, bounds included).

    Parameters
    ----------
    name : str
        Label used in the scores file's ``region`` coordinate.
    lat_min, lat_max : float
        Latitude bounds in degrees north, ``lat_min <= lat_max``.
    lon_min, lon_max : float
        Longitude bounds in degrees east in [0, 360]; ``lon_min > lon_max``
        wraps through the Greenwich meridian (e.g. 350 to 20).
    """

    name: str
    lat_min: float = -90.0
    lat_max: float = 90.0
    lon_min: float = 0.0
    lon_max: float = 360.0

    def __post_init__(self) -> None:
        if not -90.0 <= self.lat_min <= self.lat_max <= 90.0:
            raise ConfigError(
                f"region {self.name!r}: latitudes {self.lat_min}..{self.lat_max} are not an increasing range in [-90, 90]"
            )
        if not (0.0 <= self.lon_min <= 360.0 and 0.0 <= self.lon_max <= 360.0):
            raise ConfigError(
                f"region {self.name!r}: longitudes must lie in [0, 360]",
                hint="write e.g. 350 for 10°W",
            )

    def mask(self, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
        """Boolean mask of the cells inside the region, shape ``(nlat, nlon)``."""
        lat = np.asarray(latitude, dtype=np.float64)
        lon = np.mod(np.asarray(longitude, dtype=np.float64), 360.0)
        in_lat = (lat >= self.lat_min) & (lat <= self.lat_max)
        if self.lon_min <= self.lon_max:
            in_lon = (lon >= self.lon_min) & (lon <= self.lon_max)
        else:
            in_lon = (lon >= self.lon_min) | (lon <= self.lon_max)
        return in_lat[:, None] & in_lon[None, :]


#: WeatherBench2's standard regions, by name.
REGIONS: dict[str, Region] = {
    "global": Region("global"),
    "tropics": Region("tropics", -20.0, 20.0),
    "extratropics_north": Region("extratropics_north", 20.0, 90.0),
    "extratropics_south": Region("extratropics_south", -90.0, -20.0),
}

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(rf"^(?:([A-Za-z_][\w-]*)=)?{_NUMBER},{_NUMBER},{_NUMBER},{_NUMBER}$")


def parse_region(spec: str) -> Region:
    """A region from its name or a box ``[NAME=]LAT_MIN,LAT_MAX,LON_MIN,LON_MAX``.

    Parameters
    ----------
    spec : str
        ``"tropics"`` or any key of :data:`REGIONS`, or a box such as
        ``"europe=35,70,350,40"`` (longitudes in degrees east; negative
        longitudes are taken modulo 360).

    Raises
    ------
    ConfigError
        If the text is neither a known name nor a box.
    """
    text = spec.strip()
    if text in REGIONS:
        return REGIONS[text]
    match = _BOX.match(text)
    if not match:
        raise ConfigError(
            f"unknown region {spec!r}",
            hint=f"use one of {', '.join(REGIONS)} or a box NAME=LAT_MIN,LAT_MAX,LON_MIN,LON_MAX",
        )
    name, lat_min, lat_max, lon_min, lon_max = match.groups()
    lon_min_v, lon_max_v = float(lon_min) % 360.0, float(lon_max) % 360.0
    if float(lon_max) == 360.0:
        lon_max_v = 360.0
    label = name or f"box_{lat_min}_{lat_max}_{lon_min}_{lon_max}"
    return Region(label, float(lat_min), float(lat_max), lon_min_v, lon_max_v)


def region_weights(grid: Grid, regions: list[Region]) -> xr.DataArray:
    """Area weights of each region, normalised to sum 1 over the region.

    The cell-area weights are :meth:`forecast.grid.Grid.area_weights`
    (WeatherBench2's ``get_lat_weights``) times the region's mask; a weighted
    mean is then a plain sum of ``weights * field``.

    Parameters
    ----------
    grid : Grid
        The grid of the fields.
    regions : list of Region
        Regions, in output order.

    Returns
    -------
    xarray.DataArray
        dims ``(region, latitude, longitude)``, float64, each region summing to 1.

    Raises
    ------
    GridError
        If a region holds no grid cell.
    """
    area = grid.area_weights()[:, None] * np.ones((1, grid.nlon))
    out = np.empty((len(regions), grid.nlat, grid.nlon))
    for index, region in enumerate(regions):
        weights = area * region.mask(grid.latitude, grid.longitude)
        total = weights.sum()
        if total <= 0:
            raise GridError(
                f"region {region.name!r} contains no cell of the {grid.describe()} grid",
                hint="widen the box or check that its longitudes are in degrees east [0, 360)",
            )
        out[index] = weights / total
    return xr.DataArray(
        out,
        dims=("region", *SPACE),
        coords={
            "region": [r.name for r in regions],
            LATITUDE: grid.latitude,
            LONGITUDE: grid.longitude,
        },
    )
