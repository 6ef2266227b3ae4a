"""Compression of forecast variables, by name: ``--compression zstd|none``.

``zstd`` is Zstandard at level 1 after a byte shuffle, in both formats
(Zarr: Blosc with the zstd codec; NetCDF-4: the HDF5 shuffle filter and the
zstd filter that netCDF-C >= 4.9 ships). The default and the level come from
the measurement in docs/performance.md ("Forecast output compression").
"""

from __future__ import annotations

from typing import Any

from forecast.errors import ConfigError

#: ``--compression`` choices.
COMPRESSIONS = ("zstd", "none")
#: Chosen from the measurement in docs/performance.md.
DEFAULT_COMPRESSION = "zstd"
#: Zstandard level (1: most of the size saving at the least CPU).
ZSTD_LEVEL = 1


def check_compression(name: str) -> str:
    """``name`` if it is one of :data:`COMPRESSIONS`; a ConfigError otherwise."""
    if name not in COMPRESSIONS:
        raise ConfigError(
            f"--compression {name!r} is not one of {', '.join(COMPRESSIONS)}",
            hint="use zstd (smaller files) or none (fastest writes)",
        )
    return name


def zarr_compressors(name: str) -> Any:
    """The ``compressors`` argument of :func:`zarr.Group.create_array`."""
    if check_compression(name) == "none":
        return None
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="zstd", clevel=ZSTD_LEVEL, shuffle="shuffle", typesize=4),)


def netcdf_compression(name: str) -> dict[str, Any]:
    """Keyword arguments of :meth:`netCDF4.Dataset.createVariable`."""
    if check_compression(name) == "none":
        return {}
    return {"compression": "zstd", "complevel": ZSTD_LEVEL, "shuffle": True}
