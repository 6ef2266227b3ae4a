"""Zarr (v3) output: metadata first, then each block into its own chunks.

Chunks hold one lead time and one init of a run of members
(``(1, 1, member_chunk, lat, lon)``, see :func:`inference.batching.plan_batches`),
so ranks and batches never share a chunk: several processes can write their
own regions of the same store, and an interrupted run can continue into it.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Hashable, Iterable
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from forecast.errors import DataError
from inference.writers.base import ForecastWriter
from inference.writers.compression import DEFAULT_COMPRESSION, resolve_compression, zarr_compressors
from inference.writers.layout import DEFAULT, Arrangement, Layout


def require_same_shape(
    existing: xr.Dataset, planned: xr.Dataset, variables: Iterable[Hashable], path: Path, noun: str
) -> None:
    """Refuse to resume into ``existing`` unless it has ``planned``'s sizes and every one of ``variables``.

    Raises
    ------
    DataError
        Naming ``path`` (the ``noun``: an output, a product), the size or the variables that differ.
    """
    for name, size in planned.sizes.items():
        if existing.sizes.get(name) != size:
            raise DataError(
                f"existing {noun} has {existing.sizes.get(name)} {name}, this run writes {size}",
                path=path,
                hint="use another --out or --overwrite",
            )
    missing = [str(v) for v in variables if v not in existing.data_vars]
    if missing:
        raise DataError(
            f"existing {noun} lacks variable(s) {', '.join(missing)}",
            path=path,
            hint="use another --out or --overwrite",
        )


class ZarrWriter(ForecastWriter):
    """Writes ``OUT.zarr`` in a layout; resumable and safe for parallel writers.

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

    suffix = ".zarr"
    resumable = True
    parallel = True

    def __init__(
        self, path: Path, layout: Layout = DEFAULT, compression: str = DEFAULT_COMPRESSION
    ):
        super().__init__(path)
        self.layout = layout
        self.compression = resolve_compression(compression, "zarr")

    def create(self, template: xr.Dataset) -> None:
        if self.path.exists():
            shutil.rmtree(self.path)
        arrangement = self.layout.arrange(template)
        output = arrangement.dataset
        names = arrangement.variables
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr: consolidated metadata is not in the v3 spec yet
            output.drop_vars(names).to_zarr(self.path, mode="w", consolidated=False, zarr_format=3)
            group = zarr.open_group(self.path, mode="r+")
            for name in names:
                variable = output[name]
                attributes = dict(variable.attrs)
                if variable.encoding.get("coordinates"):
                    attributes["coordinates"] = variable.encoding["coordinates"]
                group.create_array(
                    name,
                    shape=variable.shape,
                    chunks=variable.encoding["chunks"],
                    dtype="float32",
                    fill_value=np.float32(np.nan),
                    compressors=zarr_compressors(self.compression),
                    dimension_names=[str(d) for d in variable.dims],
                    attributes=attributes,
                )
            # coordinates that belong to no variable (the bounds) are listed per variable or
            # not at all, as in NetCDF: a global "coordinates" attribute is not CF
            if "coordinates" in group.attrs:
                del group.attrs["coordinates"]
            zarr.consolidate_metadata(self.path)
        self._open(arrangement)

    def resume(self, template: xr.Dataset) -> None:
        arrangement = self.layout.arrange(template)
        output = arrangement.dataset
        existing = xr.open_zarr(self.path, consolidated=True, decode_timedelta=True)
        require_same_shape(existing, output, arrangement.variables, self.path, "output")
        self._open(arrangement)

    def _open(self, arrangement: Arrangement) -> None:
        self._arrangement = arrangement
        self.channels = [t.variable for t in arrangement.targets]
        group = zarr.open_group(self.path, mode="r+")
        # every chunk is written whole and once: skip zarr's comparison of each chunk with the fill value
        arrays = {}
        for name in arrangement.variables:
            array = group[name]
            assert isinstance(array, zarr.Array)
            arrays[name] = array.with_config({"write_empty_chunks": True})
        self._arrays = [(target, arrays[target.variable]) for target in arrangement.targets]

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        members = slice(member_start, member_start + block.shape[0])
        arrangement = self._arrangement
        for k, (target, array) in enumerate(self._arrays):
            array[arrangement.index(target, init_index, lead, members)] = arrangement.field(
                block, k
            )

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        members = slice(member_start, member_stop)
        arrangement = self._arrangement
        fields = []
        for target, array in self._arrays:
            where = arrangement.index(target, init_index, lead, members)
            try:
                fields.append(arrangement.unfield(np.asarray(array[where])))
            except (ValueError, RuntimeError) as err:  # the codecs' errors: checksum, truncation
                reason = " ".join(str(err).split())[:120]
                if "checksum" in reason:
                    reason = "its CRC32C checksum does not match: truncated or overwritten"
                raise DataError(
                    f"a chunk of {target.variable} (init {init_index}, lead {lead}) is damaged "
                    f"and cannot be read back to resume ({reason})",
                    path=self.path,
                    hint="rerun with --overwrite to write the forecast again",
                ) from err
        return np.stack(fields, axis=1)

    def close(self) -> None:
        self._arrays = []

    def finish(self) -> None:
        self.close()
