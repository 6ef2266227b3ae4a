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

examples:
  forecast ingest 'era5/*.nc' --out era5.zarr --grid 1.0deg
  forecast ingest era5/2024-06.nc --out era5.zarr --append
  forecast ingest 'era5/*.nc' --out era5.zarr --scheduler local:8
  forecast ingest 's3://bucket/era5/*.nc' --out s3://bucket/era5.zarr --scheduler tcp://scheduler:8786
"""

from __future__ import annotations

import argparse


def _channel_list(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forecast ingest``."""
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="NetCDF/GRIB files, Zarr stores or globs (quote globs); paths or URLs")
    parser.add_argument("--out", required=True, metavar="STORE.zarr", help="the store to write (a path or an s3://, gs://, file:// URL)")
    parser.add_argument("--channels", type=_channel_list, default=None, help="comma-separated channel ids (default: every channel the sources provide)")
    parser.add_argument("--grid", default="source", help="target grid: 'source' (default), NLATxNLON (e.g. 32x64) or a resolution (1.0deg)")
    parser.add_argument("--grid-kind", default="equiangular", choices=["equiangular", "legendre-gauss"], help="kind of an NLATxNLON grid (default equiangular)")
    parser.add_argument("--start", default=None, help="first time to keep, e.g. 2020-01-01 (default: the sources' first)")
    parser.add_argument("--end", default=None, help="last time to keep, inclusive (default: the sources' last)")
    parser.add_argument("--step", default=None, help="time step, e.g. 6h (default: the sources' step)")
    parser.add_argument("--member", type=int, default=None, help="ensemble member to take from a source with a 'number' dimension")
    parser.add_argument("--append", action="store_true", help="add times after the end of an existing store")
    parser.add_argument("--recompute-statistics", action="store_true", help="with --append: recompute statistics and climatology over the whole store")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store written by forecast (never a source, nor anything else)")
    parser.add_argument(
        "--scheduler",
        default="threads",
        help="Dask scheduler: threads (default), processes, synchronous, local:N (a local cluster of N worker processes) or tcp://HOST:PORT",
    )
    parser.add_argument("--climatology-window", type=int, default=31, metavar="DAYS", help="days in the smoothing window of the climatology (default 31)")
    parser.add_argument("--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
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
        progress=not args.no_progress,
    )
    verb = "appended to" if report.appended else "wrote"
    print(
        f"{verb} {report.store}: {report.times} times {report.first_time} .. {report.last_time} every {report.step} "
        f"({report.calendar} calendar), channels {','.join(report.channels)}, grid {report.grid} "
        f"[{report.regrid_method}], {report.seconds:.1f} s"
    )
    return 0
