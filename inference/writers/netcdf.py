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

from forecast.scoring.layouts import file_order
from inference.writers.base import ForecastWriter
from inference.writers.compression import (
    DEFAULT_COMPRESSION,
    netcdf_compression,
    resolve_compression,
)
from inference.writers.layout import DEFAULT, Layout


def create_netcdf(
    path: Path,
    output: xr.Dataset,
    variables: list[str],
    compression: str,
    unlimited_dims: tuple[str, ...] = (),
):
    """Write ``output``'s coordinates with xarray, then create ``variables`` natively.

    Parameters
    ----------
    path : Path
        The file to create (replaced if it exists).
    output : xarray.Dataset
        Coordinates, attributes and placeholders; each of ``variables`` has
        ``encoding["chunks"]`` and optionally ``encoding["coordinates"]``.
    variables : list of str
        Data variables to create, float32 with NaN fill, in :func:`file_order`.
    compression : str
        A resolved codec: ``"zstd"``, ``"deflate"`` or ``"none"``.
    unlimited_dims : tuple of str
        Dims to make unlimited (the record dimension).

    Returns
    -------
    netCDF4.Dataset
        Open for appending; the caller closes it.
    """
    if path.exists():
        path.unlink()
    output.drop_vars(variables).to_netcdf(
        path, format="NETCDF4", engine="netcdf4", unlimited_dims=unlimited_dims
    )
    nc = netCDF4.Dataset(path, "a")
    for name in file_order(variables):
        variable = output[name]
        created = nc.createVariable(
            name,
            "f4",
            tuple(str(d) for d in variable.dims),
            fill_value=np.float32(np.nan),
            chunksizes=variable.encoding["chunks"],
            **netcdf_compression(compression),
        )
        attributes = dict(variable.attrs)
        if variable.encoding.get("coordinates"):
            attributes["coordinates"] = variable.encoding["coordinates"]
        created.setncatts(attributes)
    if "coordinates" in nc.ncattrs():  # not CF: coordinates belong to variables
        nc.delncattr("coordinates")
    return nc


class NetCDFWriter(ForecastWriter):
    """Writes ``OUT.nc`` (via ``OUT.nc.partial``) in a layout.

    Parameters
    ----------
    path : Path
        The output.
    layout : Layout
        How the forecast is arranged (default: the template's layout).
    compression : str
        One of :data:`~inference.writers.compression.COMPRESSIONS`; ``auto`` is resolved
        for the format (``compression`` holds the codec).
    """

    suffix = ".nc"

    def __init__(
        self, path: Path, layout: Layout = DEFAULT, compression: str = DEFAULT_COMPRESSION
    ):
        super().__init__(path)
        self.layout = layout
        self.compression = resolve_compression(compression, "netcdf")

    @property
    def partial_path(self) -> Path:
        """Where the file grows until :meth:`finish`."""
        return self.path.with_name(self.path.name + ".partial")

    def create(self, template: xr.Dataset) -> None:
        arrangement = self.layout.arrange(template)
        self._arrangement = arrangement
        self.channels = [t.variable for t in arrangement.targets]
        self._nc = create_netcdf(
            self.partial_path, arrangement.dataset, arrangement.variables, self.compression
        )
        self._targets = [(t, self._nc[t.variable]) for t in arrangement.targets]

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        members = slice(member_start, member_start + block.shape[0])
        arrangement = self._arrangement
        for k, (target, variable) in enumerate(self._targets):
            variable[arrangement.index(target, init_index, lead, members)] = arrangement.field(
                block, k
            )

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        members = slice(member_start, member_stop)
        arrangement = self._arrangement
        return np.stack(
            [
                arrangement.unfield(
                    np.asarray(variable[arrangement.index(target, init_index, lead, members)])
                )
                for target, variable in self._targets
            ],
            axis=1,
        )

    def close(self) -> None:
        nc = getattr(self, "_nc", None)
        if nc is not None and nc.isopen():
            nc.close()

    def finish(self) -> None:
        self.close()
        os.replace(self.partial_path, self.path)
