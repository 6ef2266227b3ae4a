"""``--layout cdo``: one NetCDF file per init and member, valid time as the record dimension.

CDO reads variables of at most four dims (time, level, lat, lon) and refuses
the default layout's five; NCO and Iris work best with one forecast per
file. The ``cdo`` layout writes a directory ``OUT/`` with
``OUT/{init}_m{member}.nc`` (``20200101T00_m000.nc``), each holding one
float32 variable per channel over ``(time, latitude, longitude)``, where

- ``time`` is the valid time (unlimited, ``standard_name: time``);
- ``forecast_period(time)`` is the lead time, ``forecast_reference_time``
  and ``realization`` are scalar coordinates (CF section 4.4, Appendix A);
- each channel has its scalar vertical coordinate (``pressure_500``,
  ``height_2m``), so ``cdo sinfo`` and Iris see its level.

The directory grows under ``OUT.partial/`` and is renamed at the end, so
there is either the old output or the complete new one. Files are created
as the first lead of their members arrives and kept open while they are
written (at most :data:`OPEN_FILES` at a time).
"""

from __future__ import annotations

import os
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from forecast.errors import ConfigError
from forecast.time import format_time
from inference.writers.base import ForecastWriter
from inference.writers.cf import NO_FILL
from inference.writers.compression import DEFAULT_COMPRESSION, resolve_compression
from inference.writers.layout import Layout
from inference.writers.netcdf import create_netcdf

#: Files kept open at once.
OPEN_FILES = 256


def file_name(init_time, member: int) -> str:
    """``20200101T06_m003.nc`` (minutes added when the init is not on the hour)."""
    text = format_time(init_time).replace("-", "").replace(":", "")
    if text.endswith("00") and len(text) == 13:
        text = text[:-2]
    return f"{text}_m{member:03d}.nc"


def member_file(template: xr.Dataset, init_index: int, member: int) -> xr.Dataset:
    """The dataset of one init and member of the template: 3-D channels, valid time as record."""
    channels = [str(c) for c in template.data_vars]
    one = template.isel(time=init_index, member=member)
    valid, lead = one["valid_time"], one["lead_time"]
    coords = {
        "time": xr.Variable(
            "time",
            valid.values,
            attrs={"standard_name": "time", "long_name": "valid time", "axis": "T"},
        ),
        "forecast_period": xr.Variable(
            "time",
            lead.values,
            attrs={"standard_name": "forecast_period", "long_name": "time since initialisation"},
        ),
        "forecast_reference_time": xr.Variable(
            (),
            one["time"].values,
            attrs={"standard_name": "forecast_reference_time", "long_name": "initialisation time"},
        ),
        "realization": xr.Variable(
            (),
            np.int32(member),
            attrs={"standard_name": "realization", "long_name": "ensemble member", "units": "1"},
        ),
    }
    keep = [
        str(n)
        for n in template.coords
        if n not in ("time", "lead_time", "member", "valid_time")
        and "member" not in template[n].dims
    ]
    for name in keep:
        coords[name] = template[name].variable
    if "checkpoint" in template.coords:  # a multi-checkpoint ensemble: the member's model
        coords["checkpoint"] = one["checkpoint"].variable
    data_vars = {
        c: xr.Variable(
            ("time", "latitude", "longitude"),
            np.broadcast_to(np.float32(np.nan), (valid.size, *template[c].shape[-2:])),
            attrs=template[c].attrs,
        )
        for c in channels
    }
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(template.attrs))
    ds.attrs["layout"] = "cdo"
    for name in ("time", "forecast_reference_time"):
        ds[name].encoding = dict(template["time"].encoding)
    ds["forecast_period"].encoding = dict(template["lead_time"].encoding)
    for name in keep:
        ds[name].encoding = dict(template[name].encoding) or (
            dict(NO_FILL) if ds[name].dtype.kind == "f" else {}
        )
    nlat, nlon = template[channels[0]].shape[-2:]
    for c in channels:
        ds[c].encoding = {
            "chunks": (1, nlat, nlon),
            "coordinates": template[c]
            .encoding["coordinates"]
            .replace("valid_time", "forecast_period forecast_reference_time realization"),
        }
    return ds


class CDOLayout(Layout):
    """Marker of the ``cdo`` layout; :class:`CDOWriter` does the arranging."""

    name = "cdo"


#: The CDO layout.
CDO = CDOLayout()


class CDOWriter(ForecastWriter):
    """Writes the directory ``OUT/`` of the ``cdo`` layout (via ``OUT.partial/``).

    Parameters
    ----------
    path : Path
        The output directory (no ``.zarr`` suffix).
    compression : str
        One of :data:`~inference.writers.compression.COMPRESSIONS` (``auto``: none).
    """

    suffix = ""

    def __init__(self, path: Path, compression: str = DEFAULT_COMPRESSION):
        path = Path(path)
        if path.suffix.lower() == ".zarr":
            raise ConfigError(
                f"--layout cdo writes a directory of NetCDF files, not {path.name!r}",
                hint="give --out a directory name such as fc_cdo",
            )
        super().__init__(path)
        self.compression = resolve_compression(compression, "netcdf")
        self._open_files: OrderedDict[tuple[int, int], Any] = OrderedDict()

    @property
    def partial_path(self) -> Path:
        """Where the directory grows until :meth:`finish`."""
        return self.path.with_name(self.path.name + ".partial")

    def create(self, template: xr.Dataset) -> None:
        self._template = template
        self.channels = [str(c) for c in template.data_vars]
        if self.partial_path.exists():
            shutil.rmtree(self.partial_path)
        self.partial_path.mkdir(parents=True)

    def _file(self, init_index: int, member: int):
        key = (init_index, member)
        if key in self._open_files:
            self._open_files.move_to_end(key)
            return self._open_files[key]
        template = self._template
        path = self.partial_path / file_name(template["time"].values[init_index], member)
        if path.exists():
            import netCDF4

            nc = netCDF4.Dataset(path, "a")
        else:
            dataset = member_file(template, init_index, member)
            nc = create_netcdf(
                path, dataset, self.channels, self.compression, unlimited_dims=("time",)
            )
        self._open_files[key] = nc
        while len(self._open_files) > OPEN_FILES:
            _, oldest = self._open_files.popitem(last=False)
            oldest.close()
        return nc

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        for offset in range(block.shape[0]):
            nc = self._file(init_index, member_start + offset)
            for k, channel in enumerate(self.channels):
                nc[channel][lead] = block[offset, k]

    def close(self) -> None:
        while self._open_files:
            _, nc = self._open_files.popitem()
            nc.close()

    def finish(self) -> None:
        self.close()
        old = self.path.with_name(f"{self.path.name}.old-{os.getpid()}")
        if self.path.exists():
            os.replace(self.path, old)  # the old output stays whole until the new one is in place
        os.replace(self.partial_path, self.path)
        shutil.rmtree(old, ignore_errors=True)
