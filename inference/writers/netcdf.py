"""NetCDF-4 output, streamed into a temporary file that is renamed at the end.

An interrupted NetCDF run leaves only ``OUT.nc.partial`` and starts again
from the beginning; resuming applies to Zarr output.
"""

from __future__ import annotations

import os
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from inference.writers.base import ForecastWriter


class NetCDFWriter(ForecastWriter):
    """Writes ``OUT.nc`` (via ``OUT.nc.partial``)."""

    suffix = ".nc"

    @property
    def partial_path(self) -> Path:
        """Where the file grows until :meth:`finish`."""
        return self.path.with_name(self.path.name + ".partial")

    def create(self, template: xr.Dataset) -> None:
        self.channels = [str(c) for c in template.data_vars]
        tmp = self.partial_path
        if tmp.exists():
            tmp.unlink()
        coords_only = template.drop_vars(self.channels)
        coords_only.to_netcdf(tmp, format="NETCDF4", engine="netcdf4")
        self._nc = netCDF4.Dataset(tmp, "a")
        self._variables = []
        for c in self.channels:
            variable = self._nc.createVariable(
                c,
                "f4",
                tuple(str(d) for d in template[c].dims),
                fill_value=np.float32(np.nan),
                chunksizes=template[c].encoding["chunks"],
            )
            variable.setncatts({**template[c].attrs, "coordinates": "valid_time"})
            self._variables.append(variable)
        if "coordinates" in self._nc.ncattrs():
            self._nc.delncattr("coordinates")

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        stop = member_start + block.shape[0]
        for k, variable in enumerate(self._variables):
            variable[init_index, lead, member_start:stop] = block[:, k]

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        return np.stack(
            [np.asarray(v[init_index, lead, member_start:member_stop]) for v in self._variables],
            axis=1,
        )

    def close(self) -> None:
        nc = getattr(self, "_nc", None)
        if nc is not None and nc.isopen():
            nc.close()

    def finish(self) -> None:
        self.close()
        os.replace(self.partial_path, self.path)
