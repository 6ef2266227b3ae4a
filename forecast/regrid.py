"""Regridding between lat/lon grids, shared by ingestion (numpy blocks, lazily over
Dask) and inference (``--output-grid``, torch tensors on the model's device).

Method: bilinear interpolation in latitude and longitude, periodic in
longitude, with the pole values taken as the mean of the nearest ring.

- From a torch-harmonics grid (``equiangular`` with poles, ``legendre-gauss``)
  to another: :class:`torch_harmonics.ResampleS2`.
- From any other global grid (e.g. WeatherBench2's equiangular grids without
  poles): the source is padded with its pole rows and one wrapped column on
  each side, then interpolated with xarray's ``interp`` (SciPy), which is the
  same bilinear rule.

A regional source can be kept on its own grid but never turned into a global
one: that would invent data outside the region.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from forecast.dims import LATITUDE, LONGITUDE, SPACE
from forecast.errors import GridError
from forecast.grid import Grid

if TYPE_CHECKING:  # torch is imported where a resampling needs it: an ingest on the same grid,
    # its Dask workers and the scoring would otherwise pay seconds and ~600 MB for it
    import torch
    from torch_harmonics import ResampleS2


def covers_globe(grid: Grid, atol: float = 1e-3) -> bool:
    """Whether a grid spans all longitudes regularly and reaches within one spacing of both poles."""
    lon, lat = grid.longitude, grid.latitude
    spacing = np.diff(lon)
    regular = (
        np.allclose(spacing, spacing[0], atol=atol)
        and abs(spacing[0] * lon.size - 360.0) < atol * lon.size
    )
    lat_step = np.abs(np.diff(lat)).max()
    return bool(regular and lat[0] >= 90.0 - lat_step - atol and lat[-1] <= -90.0 + lat_step + atol)


class Regridder:
    """Callable that maps arrays ``(..., nlat_source, nlon_source)`` to the target grid.

    Parameters
    ----------
    source, target : Grid
        Grids in store orientation.
    path : str, optional
        Source description for error messages.

    Raises
    ------
    GridError
        If a regional source is asked to become a global grid, or a regional
        target differs from the source.
    """

    def __init__(self, source: Grid, target: Grid, path: str | None = None):
        self.source = source
        self.target = target
        self.identity = source.same_as(target)
        self._module: ResampleS2 | None = None
        if self.identity:
            return
        if not target.is_global:
            raise GridError(
                f"cannot regrid to a regional grid ({target.describe()})",
                path=path,
                hint="keep the source grid (ingest: --grid source; run: no --output-grid), or choose a global grid such as 1.0deg",
            )
        if not (source.is_global or covers_globe(source)):
            raise GridError(
                f"the source grid is regional (lat {source.latitude[-1]:g}..{source.latitude[0]:g}, "
                f"lon {source.longitude[0]:g}..{source.longitude[-1]:g}) and cannot become the global grid {target.describe()}",
                path=path,
                hint="keep the regional grid (ingest: --grid source; run: no --output-grid)",
            )

    @property
    def method(self) -> str:
        """``"identity"``, ``"torch-harmonics ResampleS2 (bilinear)"`` or ``"xarray interp (bilinear)"``."""
        if self.identity:
            return "identity"
        if self.source.is_global:
            return "torch-harmonics ResampleS2 (bilinear)"
        return "xarray interp (bilinear, padded at poles and periodic in longitude)"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_module"] = None  # rebuilt on demand in each worker process
        return state

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if self.identity:
            return values
        if self.source.is_global:
            return self._resample(values)
        return self._interp(values)

    def _resampler(self, device: torch.device | str = "cpu") -> ResampleS2:
        if self._module is None:
            from torch_harmonics import ResampleS2

            self._module = ResampleS2(
                self.source.nlat,
                self.source.nlon,
                self.target.nlat,
                self.target.nlon,
                grid_in=self.source.kind,
                grid_out=self.target.kind,
            )
        return self._module.to(device)

    def _resample(self, values: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out = self._resampler()(
                torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
            )
        return out.numpy()

    def regrid_tensor(self, values: torch.Tensor) -> torch.Tensor:
        """Regrid a tensor ``(..., nlat_source, nlon_source)`` on its own device.

        Only between torch-harmonics grids (equiangular, legendre-gauss), as the
        model's grid always is.
        """
        if self.identity:
            return values
        if not self.source.is_global:
            raise GridError(
                f"tensor regridding needs a global source grid, got {self.source.describe()}"
            )
        import torch

        with torch.no_grad():
            return self._resampler(values.device)(values)

    def _interp(self, values: np.ndarray) -> np.ndarray:
        lead = values.shape[:-2]
        flat = values.reshape(-1, *values.shape[-2:]).astype(np.float64)
        lat, lon = self.source.latitude, self.source.longitude
        north = flat[:, :1, :].mean(axis=2, keepdims=True).repeat(lon.size, axis=2)
        south = flat[:, -1:, :].mean(axis=2, keepdims=True).repeat(lon.size, axis=2)
        padded = np.concatenate([north, flat, south], axis=1)
        padded = np.concatenate([padded[:, :, -1:], padded, padded[:, :, :1]], axis=2)
        lat_p = np.concatenate([[90.0], lat, [-90.0]]) if lat[0] < 90.0 else lat
        if lat[0] >= 90.0:
            padded = padded[:, 1:-1]
            lat_p = lat
        lon_p = np.concatenate([[lon[-1] - 360.0], lon, [lon[0] + 360.0]])
        field = xr.DataArray(
            padded, dims=("sample", *SPACE), coords={LATITUDE: lat_p, LONGITUDE: lon_p}
        )
        out = field.interp(
            latitude=self.target.latitude, longitude=self.target.longitude, method="linear"
        )
        return out.values.astype(np.float32).reshape(*lead, self.target.nlat, self.target.nlon)


def regrid_dataarray(data: xr.DataArray, regridder: Regridder) -> xr.DataArray:
    """Apply a regridder lazily to ``(..., latitude, longitude)`` Dask data, block by block."""
    if regridder.identity:
        return data
    data = data.chunk({LATITUDE: -1, LONGITUDE: -1})
    target = regridder.target
    chunks = data.chunks or ()
    out = data.data.map_blocks(
        regridder,
        dtype=np.float32,
        chunks=(*chunks[:-2], (target.nlat,), (target.nlon,)),
    )
    coords: dict[Any, Any] = {name: data[name] for name in data.dims[:-2] if name in data.coords}
    coords.update(latitude=target.latitude, longitude=target.longitude)
    return xr.DataArray(out, dims=data.dims, coords=coords, name=data.name, attrs=data.attrs)
