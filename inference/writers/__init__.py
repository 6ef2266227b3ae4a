"""Forecast writers, chosen by the output's suffix from :data:`WRITERS`."""

from __future__ import annotations

from pathlib import Path

from forecast.errors import ConfigError
from inference.writers.base import BackgroundWriter, ForecastWriter, Writer
from inference.writers.layout import forecast_template
from inference.writers.netcdf import NetCDFWriter
from inference.writers.zarr import ZarrWriter

#: Output suffix -> writer class.
WRITERS: dict[str, type[ForecastWriter]] = {
    ZarrWriter.suffix: ZarrWriter,
    NetCDFWriter.suffix: NetCDFWriter,
}


def writer_for(path: str | Path) -> ForecastWriter:
    """The writer for ``path``, chosen by its suffix (``.zarr`` or ``.nc``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise ConfigError(
            f"cannot tell the output format of {path.name!r}",
            hint=f"end --out with one of {', '.join(WRITERS)}",
        )
    return WRITERS[suffix](path)


__all__ = [
    "WRITERS",
    "BackgroundWriter",
    "ForecastWriter",
    "Writer",
    "forecast_template",
    "writer_for",
]
