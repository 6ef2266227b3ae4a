"""Compression of forecast variables, by name: ``--compression auto|zstd|deflate|none``.

Codecs run at level 1, which keeps most of the size saving for the least
CPU, after a byte shuffle (the four bytes of each float32 grouped by
significance) except for NetCDF's zstd (netCDF4-python sets the shuffle
filter only together with deflate):

- ``zstd``: Zstandard (Zarr: Blosc's zstd; NetCDF-4: netCDF-C's zstd filter,
  which a reader can only decode where netCDF-C >= 4.9 was built with it and
  finds the HDF5 plugin: Debian's CDO and NCO cannot);
- ``deflate``: zlib, the one filter every NetCDF-4/HDF5 reader has;
- ``none``;
- ``auto`` (the default): ``zstd`` for Zarr, ``none`` for NetCDF.

The default comes from the measurement in docs/performance.md ("Forecast
output compression"): on real fields Zarr's zstd saves 29 % of the bytes
for 1.16x the write time; in NetCDF deflate saves 31 % but writes 10x
slower, and zstd saves 13 % for 2x but leaves files that CDO and NCO
cannot read without the plugin, so NetCDF is written plain unless asked.
"""

from __future__ import annotations

from typing import Any, Literal

from forecast.errors import ConfigError

#: ``--compression`` choices.
COMPRESSIONS = ("auto", "zstd", "deflate", "none")
#: The default (docs/performance.md).
DEFAULT_COMPRESSION = "auto"
#: What ``auto`` means for each format.
AUTO = {"zarr": "zstd", "netcdf": "none"}
#: Compression level (1: most of the size saving at the least CPU).
LEVEL = 1


def resolve_compression(name: str, file_format: str) -> str:
    """The codec that ``name`` means for ``file_format`` (``"zarr"`` or ``"netcdf"``).

    Raises
    ------
    ConfigError
        If ``name`` is not one of :data:`COMPRESSIONS`.
    """
    if name not in COMPRESSIONS:
        raise ConfigError(
            f"--compression {name!r} is not one of {', '.join(COMPRESSIONS)}",
            hint="auto (zstd for Zarr, none for NetCDF), zstd, deflate or none",
        )
    return AUTO[file_format] if name == "auto" else name


def zarr_compressors(name: str) -> Any:
    """The ``compressors`` argument of :func:`zarr.Group.create_array` for a resolved codec."""
    if name == "none":
        return None
    from zarr.codecs import BloscCodec

    cname: Literal["zstd", "zlib"] = "zstd" if name == "zstd" else "zlib"
    return (BloscCodec(cname=cname, clevel=LEVEL, shuffle="shuffle", typesize=4),)


def netcdf_compression(name: str) -> dict[str, Any]:
    """Keyword arguments of :meth:`netCDF4.Dataset.createVariable` for a resolved codec."""
    if name == "none":
        return {}
    return {
        "compression": {"zstd": "zstd", "deflate": "zlib"}[name],
        "complevel": LEVEL,
        "shuffle": True,
    }
