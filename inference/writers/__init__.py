"""Forecast writers: a layout chosen by name from :data:`LAYOUTS`, a format by the output's suffix.

``--layout default`` (today's layout), ``wb2`` (WeatherBench2's names and
dims, :mod:`inference.writers.wb2`) and ``cdo`` (one NetCDF file per init
and member, at most 4-D variables, :mod:`inference.writers.cdo`);
``--compression auto|zstd|deflate|none``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from forecast.errors import ConfigError
from inference.writers.base import BackgroundWriter, ForecastWriter, Writer
from inference.writers.cdo import CDO, CDOWriter
from inference.writers.compression import COMPRESSIONS, DEFAULT_COMPRESSION
from inference.writers.layout import DEFAULT, Layout, forecast_template
from inference.writers.netcdf import NetCDFWriter
from inference.writers.wb2 import WB2
from inference.writers.zarr import ZarrWriter

#: Output suffix -> writer class of the single-store layouts.
WRITERS: dict[str, Callable[..., ForecastWriter]] = {
    ZarrWriter.suffix: ZarrWriter,
    NetCDFWriter.suffix: NetCDFWriter,
}


def _store_writer(layout: Layout) -> Callable[[Path, str], ForecastWriter]:
    def make(path: Path, compression: str) -> ForecastWriter:
        suffix = path.suffix.lower()
        if suffix not in WRITERS:
            raise ConfigError(
                f"cannot tell the output format of {path.name!r}",
                hint=f"end --out with one of {', '.join(WRITERS)}",
            )
        return WRITERS[suffix](path, layout=layout, compression=compression)

    return make


#: ``--layout`` name -> ``factory(path, compression) -> writer``.
LAYOUTS: dict[str, Callable[[Path, str], ForecastWriter]] = {
    DEFAULT.name: _store_writer(DEFAULT),
    WB2.name: _store_writer(WB2),
    CDO.name: CDOWriter,
}

#: Layouts a written forecast is recognised in (``forecast score``), by name.
READERS: dict[str, Layout] = {WB2.name: WB2, CDO.name: CDO, DEFAULT.name: DEFAULT}


def writer_for(
    path: str | Path, layout: str = "default", compression: str = DEFAULT_COMPRESSION
) -> ForecastWriter:
    """The writer for ``path`` in ``layout``.

    Parameters
    ----------
    path : str or Path
        ``OUT.zarr`` or ``OUT.nc`` (``default``, ``wb2``), or the directory of
        the ``cdo`` layout.
    layout : str
        A key of :data:`LAYOUTS`.
    compression : str
        One of :data:`~inference.writers.compression.COMPRESSIONS`.

    Raises
    ------
    ConfigError
        Unknown layout, compression or suffix.
    """
    if layout not in LAYOUTS:
        raise ConfigError(
            f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}",
            hint="default (this project's layout), wb2 (WeatherBench2) or cdo (CDO, NCO, Iris)",
        )
    return LAYOUTS[layout](Path(path), compression)


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "LAYOUTS",
    "READERS",
    "WRITERS",
    "BackgroundWriter",
    "ForecastWriter",
    "Writer",
    "forecast_template",
    "writer_for",
]
