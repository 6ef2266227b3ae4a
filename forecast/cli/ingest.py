"""Turn ERA5-style sources into one training store (Zarr), with statistics and a climatology.

Sources may be NetCDF files (CDS layouts old and new), Zarr stores
(WeatherBench2 style) and GRIB files (needs the 'grib' extra); globs allowed.
Sources and the store may be local paths or URLs: s3://, gs://, file://
(read and write) and https:// (read); credentials come from each
filesystem's own environment or config (AWS_*, GOOGLE_APPLICATION_CREDENTIALS).
The data are read once, by the Dask workers, which also write the store's
chunks and reduce the statistics. The store is published only when complete
(locally: written under a hidden name and renamed; on object storage: a
completion marker written last); STORE.lock keeps other writers out, and
--overwrite replaces only a store that forecast wrote, never a source.
A new store is written in segments of at most 2,048 blocks; if the ingest
is killed, rerunning the same command continues after the last finished
segment (a changed source, or an option that changes the store, starts
afresh; --scheduler may differ).

examples:
  forecast ingest 'era5/*.nc' --out era5.zarr --grid 1.0deg
  forecast ingest era5/2024-06.nc --out era5.zarr --append
  forecast ingest 'era5/*.nc' --out era5.zarr --scheduler local:8
  forecast ingest 's3://bucket/era5/*.nc' --out s3://bucket/era5.zarr --scheduler tcp://scheduler:8786
"""

from __future__ import annotations

from typing import Literal

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import HIDE_HELP, shows_progress


class Config(CommandConfig):
    """Options of ``forecast ingest``."""

    sources: list[str] = option(
        help="NetCDF/GRIB files, Zarr stores or globs (quote globs); paths or URLs",
        metavar="SOURCE",
        positional=True,
        min_length=1,
    )
    out: str = option(
        help="the store to write (a path or an s3://, gs://, file:// URL)", metavar="STORE.zarr"
    )
    channels: list[str] | None = option(
        None, "comma-separated channel ids (default: every channel the sources provide)"
    )
    grid: str = option(
        "source", "target grid: 'source', NLATxNLON (e.g. 32x64) or a resolution (1.0deg)"
    )
    grid_kind: Literal["equiangular", "legendre-gauss"] = option(
        "equiangular", "kind of an NLATxNLON grid"
    )
    start: str | None = option(
        None, "first time to keep, e.g. 2020-01-01 (default: the sources' first)"
    )
    end: str | None = option(None, "last time to keep, inclusive (default: the sources' last)")
    step: str | None = option(None, "time step, e.g. 6h (default: the sources' step)")
    member: int | None = option(
        None, "ensemble member to take from a source with a 'number' dimension"
    )
    append: bool = option(False, "add times after the end of an existing store")
    recompute_statistics: bool = option(
        False, "with --append: recompute statistics and climatology over the whole store"
    )
    overwrite: bool = option(
        False, "replace an existing store written by forecast (never a source, nor anything else)"
    )
    scheduler: str = option(
        "threads",
        "Dask scheduler: threads, processes, synchronous, local:N (a local cluster of N worker processes) or tcp://HOST:PORT",
    )
    climatology_window: int | None = option(
        None,
        "days in the smoothing window of the climatology (a new store: 31; an append keeps the store's, "
        "and takes another only with --recompute-statistics)",
        metavar="DAYS",
    )
    no_progress: bool = option(False, HIDE_HELP, flags=("--no-progress", "--quiet"))


def run(args: Config) -> int:
    """Run ``forecast ingest``."""
    from pipelines.ingest import ingest

    report = ingest(
        args.sources,
        args.out,
        channels=args.channels,
        grid=args.grid,
        grid_kind=args.grid_kind,
        start=args.start,
        end=args.end,
        step=args.step,
        member=args.member,
        append=args.append,
        recompute_statistics=args.recompute_statistics,
        overwrite=args.overwrite,
        scheduler=args.scheduler,
        climatology_window_days=args.climatology_window,
        progress=shows_progress(args.no_progress),
    )
    verb = "appended to" if report.appended else "wrote"
    print(
        f"{verb} {report.store}: {report.times} times {report.first_time} .. {report.last_time} every {report.step} "
        f"({report.calendar} calendar), channels {','.join(report.channels)}, grid {report.grid} "
        f"[{report.regrid_method}], {report.seconds:.1f} s"
    )
    return 0
