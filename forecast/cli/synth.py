"""Write built-in ERA5-style synthetic NetCDF data, one file per month.

The fields come from a forced shallow-water model (torch-harmonics) and
behave like weather: they evolve, stay statistically steady, and have a
diurnal and a seasonal cycle. Files are laid out as the Copernicus Climate
Data Store delivers ERA5 (valid_time, pressure_level, latitude 90 -> -90,
longitude 0 -> 360, ERA5 short names and units) and are labelled synthetic.

example:
  forecast synth work/synth --grid 32x64 --days 60 --calendar noleap --seed 1
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``synth`` options to its subparser."""
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="directory for the files era5_synthetic_YYYY-MM.nc"
    )
    parser.add_argument(
        "--grid",
        default="64x128",
        help="output grid: NLATxNLON (equiangular) or a resolution such as 1.0deg (default 64x128)",
    )
    parser.add_argument(
        "--start", default="2020-01-01", help="first valid time (default 2020-01-01)"
    )
    parser.add_argument(
        "--days", type=float, default=30.0, help="number of days to write (default 30)"
    )
    parser.add_argument(
        "--step", default="6h", help="time between fields, e.g. 6h, 1h (default 6h)"
    )
    parser.add_argument(
        "--calendar", default="standard", help="standard, noleap or 360_day (default standard)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the weather; the same seed gives identical files (default 0)",
    )
    parser.add_argument(
        "--pack-int16",
        action="store_true",
        help="pack variables as int16 with scale_factor/add_offset, as older CDS files",
    )
    parser.add_argument(
        "--spinup-days",
        type=float,
        default=20.0,
        help="days simulated before --start so that weather is developed (default 20)",
    )
    parser.add_argument(
        "--no-progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar"
    )


def run(args: argparse.Namespace) -> int:
    """Generate the files; returns the exit code."""
    from forecast.grid import Grid
    from pipelines.synthetic import synthesize

    grid = Grid.parse(str(args.grid))
    paths = synthesize(
        args.out_dir,
        grid,
        start=str(args.start),
        days=float(args.days),
        step=str(args.step),
        calendar=str(args.calendar),
        seed=int(args.seed),
        pack_int16=bool(args.pack_int16),
        spinup_days=float(args.spinup_days),
        progress=not args.no_progress,
    )
    print(
        f"wrote {len(paths)} file(s) ({grid.describe()}) to {args.out_dir}: {', '.join(p.name for p in paths)}"
    )
    return 0
