"""Files of climate products: created from an empty dataset, then written one region at a time.

:func:`product_store` picks the format by suffix. Zarr stores are written
in place and can be reopened by a resumed run; NetCDF files grow under
``NAME.nc.partial`` and are renamed into place by :meth:`ProductStore.finish`
(an interrupted NetCDF run starts again, as for forecasts).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr
import zarr

from forecast.errors import ConfigError, DataError
from inference.writers.compression import (
    DEFAULT_COMPRESSION,
    netcdf_compression,
    resolve_compression,
    zarr_compressors,
)
from inference.writers.zarr import require_same_shape


class ProductStore:
    """One product file.

    Parameters
    ----------
    path : Path
        The final path.
    compression : str
        One of :data:`inference.writers.compression.COMPRESSIONS` (``auto``
        is resolved for the format; :attr:`compression` holds the codec).
    """

    suffix = ""
    #: ``zarr`` or ``netcdf`` (for :func:`resolve_compression`).
    file_format = ""
    #: Whether a resumed run can continue writing the file.
    resumable = False

    def __init__(self, path: Path, compression: str = DEFAULT_COMPRESSION):
        self.path = Path(path)
        self.compression = resolve_compression(compression, self.file_format)

    def create(self, dataset: xr.Dataset) -> None:
        """Write ``dataset``'s coordinates and define its (lazy, never computed) data variables."""
        raise NotImplementedError

    def reopen(self, dataset: xr.Dataset) -> None:
        """Open an unfinished file written for ``dataset`` to continue writing."""
        raise DataError("this format cannot be resumed", path=self.path)

    def write(self, name: str, index: tuple, values: np.ndarray) -> None:
        """Write ``values`` into variable ``name`` at ``index``."""
        raise NotImplementedError

    def finish(self) -> None:
        """Make the file final."""

    def close(self) -> None:
        """Release the file without making it final."""

    def exists(self) -> bool:
        """Whether the final file (or an unfinished one) is there."""
        return self.path.exists()


class ZarrProductStore(ProductStore):
    """A Zarr (v3) product, written in place."""

    suffix = ".zarr"
    _group: zarr.Group | None = None
    file_format = "zarr"
    resumable = True

    def create(self, dataset: xr.Dataset) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        dataset = dataset.copy()
        for name in dataset.data_vars:
            dataset[name].encoding["compressors"] = zarr_compressors(self.compression)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec yet
            dataset.to_zarr(self.path, mode="w", compute=False, consolidated=False, zarr_format=3)
            zarr.consolidate_metadata(self.path)
        self._group = zarr.open_group(self.path, mode="r+")

    def reopen(self, dataset: xr.Dataset) -> None:
        try:
            existing = xr.open_zarr(self.path, consolidated=True)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"cannot reopen the product ({err})", path=self.path) from err
        require_same_shape(existing, dataset, dataset.data_vars, self.path, "product")
        self._group = zarr.open_group(self.path, mode="r+")

    def write(self, name: str, index: tuple, values: np.ndarray) -> None:
        array = self._group[name] if self._group is not None else None
        assert isinstance(array, zarr.Array), f"{self.path}: {name} is not an open array"
        array[index] = values

    def close(self) -> None:
        self._group = None


class NetCDFProductStore(ProductStore):
    """A NetCDF-4 product, grown under ``NAME.nc.partial`` and renamed at the end."""

    suffix = ".nc"
    file_format = "netcdf"

    @property
    def partial_path(self) -> Path:
        """Where the file grows until :meth:`finish`."""
        return self.path.with_name(self.path.name + ".partial")

    def create(self, dataset: xr.Dataset) -> None:
        partial = self.partial_path
        if partial.exists():
            partial.unlink()
        names = [str(v) for v in dataset.data_vars]
        dataset.drop_vars(names).to_netcdf(partial, format="NETCDF4", engine="netcdf4")
        self._nc = netCDF4.Dataset(partial, "a")
        for name in names:
            variable = dataset[name]
            encoding = variable.encoding
            fill = encoding.get("_FillValue")
            created = self._nc.createVariable(
                name,
                np.dtype(encoding["dtype"]),
                tuple(str(dim) for dim in variable.dims),
                fill_value=False if fill is None else fill,
                chunksizes=encoding["chunks"],
                **netcdf_compression(self.compression),
            )
            attributes = dict(variable.attrs)
            shared = [
                str(c)
                for c, coordinate in dataset.coords.items()
                if c not in dataset.dims and set(coordinate.dims) <= set(variable.dims)
            ]
            if shared:
                attributes["coordinates"] = " ".join(shared)
            created.setncatts(attributes)
        if "coordinates" in self._nc.ncattrs():  # CF: coordinates belong to variables
            self._nc.delncattr("coordinates")

    def write(self, name: str, index: tuple, values: np.ndarray) -> None:
        self._nc[name][index] = values

    def close(self) -> None:
        nc = getattr(self, "_nc", None)
        if nc is not None and nc.isopen():
            nc.close()

    def finish(self) -> None:
        self.close()
        os.replace(self.partial_path, self.path)

    def exists(self) -> bool:
        return self.path.exists() or self.partial_path.exists()


#: Suffix -> product store class.
PRODUCT_STORES: dict[str, type[ProductStore]] = {
    ZarrProductStore.suffix: ZarrProductStore,
    NetCDFProductStore.suffix: NetCDFProductStore,
}


def product_store(path: Path, compression: str = DEFAULT_COMPRESSION) -> ProductStore:
    """The store for ``path``, by its suffix (``.zarr`` or ``.nc``), with ``compression``."""
    suffix = Path(path).suffix.lower()
    if suffix not in PRODUCT_STORES:
        raise ConfigError(
            f"cannot tell the format of {Path(path).name!r}",
            hint=f"end --out with one of {', '.join(PRODUCT_STORES)}",
        )
    return PRODUCT_STORES[suffix](Path(path), compression)


def product_path(out: Path, product: str) -> Path:
    """Where product ``product`` of a run with ``--out OUT.zarr`` goes: ``OUT.PRODUCT.zarr``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.{product}{out.suffix}")
