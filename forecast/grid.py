"""Latitude/longitude grids and their area weights.

A :class:`Grid` holds the cell-centre coordinates of a rectangular lat/lon
grid in the orientation of the training store: latitude descending
(north to south), longitude ascending in [0, 360). Global grids are either

- ``equiangular``: equally spaced latitudes including both poles
  (``90, ..., -90``), as ERA5 at 0.25 degrees (721 x 1440) — torch-harmonics'
  ``"equiangular"`` grid;
- ``legendre-gauss``: Gaussian latitudes (roots of a Legendre polynomial),
  torch-harmonics' ``"legendre-gauss"`` grid;

and any other rectangle (a limited area, or a global grid that matches
neither) is ``regional``; spherical models refuse those.

WeatherBench2's equiangular grids with poles are equiangular grids here
(:data:`WB2_GRIDS`): its ``64x33_equiangular_with_poles`` (5.625 degrees),
``240x121_equiangular_with_poles`` (1.5 degrees) and ``1440x721``
(0.25 degrees, ERA5's own) are our ``33x64``, ``121x240`` and ``721x1440``
(WeatherBench2 names grids longitude first). Its ``64x32_equiangular`` grid
has no poles and matches no grid here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from forecast.errors import GridError

GLOBAL_KINDS = ("equiangular", "legendre-gauss")
KINDS = (*GLOBAL_KINDS, "regional")

#: WeatherBench2's equiangular grids with poles: its name (longitudes x latitudes) -> (nlat, nlon).
WB2_GRIDS: dict[str, tuple[int, int]] = {
    "64x33_equiangular_with_poles": (33, 64),
    "240x121_equiangular_with_poles": (121, 240),
    "1440x721": (721, 1440),
}


def _th_latitudes(nlat: int, kind: str) -> np.ndarray:
    """Latitudes (degrees, north to south) of torch-harmonics' ``kind`` grid of ``nlat`` rows.

    The nodes of ``torch_harmonics.quadrature.precompute_latitudes``
    (equally spaced colatitudes with both poles; Legendre-Gauss nodes, from
    numpy's ``leggauss``), computed without torch: grids are recognised in
    every ingest, its Dask workers and the scoring, none of which otherwise
    needs torch (seconds and ~600 MB per process). ``tests/forecast/test_grid.py``
    checks them against torch-harmonics.
    """
    if kind == "equiangular":
        colatitude = np.linspace(0.0, np.pi, nlat)
    elif kind == "legendre-gauss":
        colatitude = np.flip(np.arccos(np.polynomial.legendre.leggauss(nlat)[0]))
    else:
        raise ValueError(f"unknown torch-harmonics grid {kind!r}")
    return 90.0 - np.rad2deg(colatitude)


def _th_longitudes(nlon: int) -> np.ndarray:
    """``nlon`` equally spaced longitudes from 0 (degrees), torch-harmonics' ``precompute_longitudes``."""
    return np.rad2deg(np.linspace(0.0, 2.0 * np.pi, nlon, endpoint=False))


@dataclass(frozen=True, eq=False)
class Grid:
    """A rectangular latitude/longitude grid.

    Parameters
    ----------
    kind : str
        ``"equiangular"``, ``"legendre-gauss"`` or ``"regional"``.
    latitude : numpy.ndarray
        Cell-centre latitudes in degrees north, shape ``(nlat,)``, descending.
    longitude : numpy.ndarray
        Cell-centre longitudes in degrees east, shape ``(nlon,)``, ascending.
    """

    kind: str
    latitude: np.ndarray = field(repr=False)
    longitude: np.ndarray = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise GridError(
                f"unknown grid kind {self.kind!r}", hint=f"use one of {', '.join(KINDS)}"
            )
        lat = np.asarray(self.latitude, dtype=np.float64)
        lon = np.asarray(self.longitude, dtype=np.float64)
        object.__setattr__(self, "latitude", lat)
        object.__setattr__(self, "longitude", lon)
        if lat.ndim != 1 or lon.ndim != 1 or lat.size < 2 or lon.size < 2:
            raise GridError("a grid needs 1-D latitude and longitude with at least two points each")
        if not np.all(np.diff(lat) < 0):
            raise GridError("grid latitudes must be strictly descending (north to south)")
        if not np.all(np.diff(lon) > 0):
            raise GridError("grid longitudes must be strictly ascending")

    # -- constructors -----------------------------------------------------------------
    @classmethod
    def equiangular(cls, nlat: int, nlon: int) -> Grid:
        """Equally spaced latitudes from 90 to -90 (poles included), ``nlon`` longitudes from 0."""
        return cls("equiangular", _th_latitudes(nlat, "equiangular"), _th_longitudes(nlon))

    @classmethod
    def legendre_gauss(cls, nlat: int, nlon: int) -> Grid:
        """Gaussian latitudes (Legendre-Gauss nodes), ``nlon`` equally spaced longitudes from 0."""
        return cls("legendre-gauss", _th_latitudes(nlat, "legendre-gauss"), _th_longitudes(nlon))

    @classmethod
    def from_kind(cls, kind: str, nlat: int, nlon: int) -> Grid:
        """Build a global grid by kind name."""
        builders = {"equiangular": cls.equiangular, "legendre-gauss": cls.legendre_gauss}
        if kind not in builders:
            raise GridError(
                f"cannot build a {kind!r} grid from a shape",
                hint=f"use one of {', '.join(builders)}",
            )
        return builders[kind](nlat, nlon)

    @classmethod
    def from_coords(cls, latitude: np.ndarray, longitude: np.ndarray, atol: float = 1e-3) -> Grid:
        """Recognise the kind of a grid from its coordinates.

        Coordinates are expected in store orientation (latitude descending,
        longitude ascending in [0, 360)). A grid that matches a global kind to
        ``atol`` degrees gets that kind; anything else is ``regional``.
        """
        lat = np.asarray(latitude, dtype=np.float64)
        lon = np.asarray(longitude, dtype=np.float64)
        nlat, nlon = lat.size, lon.size
        lon_global = np.allclose(lon, _th_longitudes(nlon), atol=atol)
        if lon_global:
            for kind in GLOBAL_KINDS:
                reference = _th_latitudes(nlat, kind)
                if np.allclose(lat, reference, atol=atol):
                    return cls(kind, reference, _th_longitudes(nlon))
        return cls("regional", lat, lon)

    @classmethod
    def parse(cls, spec: str, kind: str = "equiangular") -> Grid:
        """Parse a grid specification.

        Parameters
        ----------
        spec : str
            ``"NLATxNLON"`` (``"32x64"``) or a resolution in degrees
            (``"1.0deg"``, ``"0.25deg"``), which gives an equiangular grid
            with poles: ``180/res + 1`` latitudes and ``360/res`` longitudes.
        kind : str
            Grid kind for the ``NLATxNLON`` form.
        """
        text = spec.strip().lower()
        shape = re.fullmatch(r"(\d+)x(\d+)", text)
        if shape:
            nlat, nlon = int(shape.group(1)), int(shape.group(2))
            if nlat > nlon:
                raise GridError(
                    f"grid {spec!r} has more latitudes than longitudes",
                    hint=f"write NLATxNLON, latitudes first: {nlon}x{nlat} "
                    "(WeatherBench2's names put the longitudes first)",
                )
            return cls.from_kind(kind, nlat, nlon)
        degrees = re.fullmatch(r"(\d+(?:\.\d+)?)\s*deg", text)
        if degrees:
            res = float(degrees.group(1))
            rows, columns = (180.0 / res + 1, 360.0 / res) if res > 0 else (0.5, 0.5)
            if abs(rows - round(rows)) > 1e-6 or abs(columns - round(columns)) > 1e-6:
                raise GridError(
                    f"resolution {spec!r} does not divide 180 and 360 degrees",
                    hint="use e.g. 0.25deg, 1.0deg, 1.5deg, 5.625deg",
                )
            return cls.equiangular(round(rows), round(columns))
        raise GridError(
            f"cannot parse grid {spec!r}",
            hint="write NLATxNLON (e.g. 32x64) or a resolution such as 1.0deg",
        )

    # -- properties -------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(nlat, nlon)``."""
        return self.latitude.size, self.longitude.size

    @property
    def nlat(self) -> int:
        return self.latitude.size

    @property
    def nlon(self) -> int:
        return self.longitude.size

    @property
    def is_global(self) -> bool:
        """Whether the grid covers the whole sphere with a torch-harmonics layout."""
        return self.kind in GLOBAL_KINDS

    def area_weights(self) -> np.ndarray:
        """Relative cell areas per latitude, normalised to mean 1, shape ``(nlat,)``.

        Each cell spans the latitudes half-way to its neighbours (clipped to
        the poles, and at the edges of a regional grid extended by half a
        spacing; on a global grid the outermost bands reach the poles); its area is proportional to the difference of the sines of
        its bounds. This is WeatherBench2's definition; summed over a global
        grid the unnormalised weights give exactly 2 (the integral of
        ``cos(lat)`` over latitude).
        """
        areas = self.cell_area_fractions()
        return areas / areas.mean()

    def cell_area_fractions(self) -> np.ndarray:
        """``sin(upper) - sin(lower)`` of each latitude band, shape ``(nlat,)``.

        Divided by ``2 * nlon`` this is each cell's fraction of the sphere.
        """
        lat = self.latitude
        mid = 0.5 * (lat[:-1] + lat[1:])
        upper = np.concatenate([[lat[0] + (lat[0] - mid[0])], mid])
        lower = np.concatenate([mid, [lat[-1] - (mid[-1] - lat[-1])]])
        if self.is_global:
            upper[0], lower[-1] = 90.0, -90.0
        upper = np.clip(upper, -90.0, 90.0)
        lower = np.clip(lower, -90.0, 90.0)
        return np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower))

    def same_as(self, other: Grid, atol: float = 1e-4) -> bool:
        """Whether two grids have the same kind and coordinates to ``atol`` degrees."""
        return (
            self.kind == other.kind
            and self.shape == other.shape
            and np.allclose(self.latitude, other.latitude, atol=atol)
            and np.allclose(self.longitude, other.longitude, atol=atol)
        )

    def describe(self) -> str:
        """Short text such as ``"equiangular 32x64"``."""
        return f"{self.kind} {self.nlat}x{self.nlon}"

    def wb2_name(self) -> str | None:
        """WeatherBench2's name of this grid (:data:`WB2_GRIDS`), or None when it has none."""
        if self.kind != "equiangular":
            return None
        for name, shape in WB2_GRIDS.items():
            if shape == self.shape:
                return name
        return None

    @classmethod
    def from_wb2_name(cls, name: str) -> Grid:
        """The grid of a WeatherBench2 name such as ``240x121_equiangular_with_poles_conservative``.

        Raises
        ------
        GridError
            For names of grids without poles (``64x32_equiangular``) or unknown names.
        """
        text = name.strip().lower().removesuffix("_conservative")
        if text not in WB2_GRIDS:
            raise GridError(
                f"{name!r} is not one of WeatherBench2's equiangular grids with poles",
                hint=f"use one of {', '.join(WB2_GRIDS)} (64x32_equiangular has no poles: regrid "
                "ERA5 with --grid 33x64 instead)",
            )
        return cls.equiangular(*WB2_GRIDS[text])

    def to_attrs(self) -> dict[str, str | int]:
        """Attributes that record the grid in a store or checkpoint."""
        return {"grid_kind": self.kind, "grid_nlat": self.nlat, "grid_nlon": self.nlon}

    def to_dict(self) -> dict[str, Any]:
        """Plain description (``kind``, ``nlat``, ``nlon``) for checkpoints; regional grids keep their coordinates."""
        out: dict[str, Any] = {"kind": self.kind, "nlat": self.nlat, "nlon": self.nlon}
        if not self.is_global:
            out["latitude"] = self.latitude.tolist()
            out["longitude"] = self.longitude.tolist()
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Grid:
        """Inverse of :meth:`to_dict`."""
        if values["kind"] == "regional":
            return cls("regional", np.asarray(values["latitude"]), np.asarray(values["longitude"]))
        return cls.from_kind(values["kind"], int(values["nlat"]), int(values["nlon"]))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Grid) and self.same_as(other)

    def __hash__(self) -> int:
        return hash((self.kind, self.shape))
