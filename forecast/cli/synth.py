"""Write built-in ERA5-style synthetic NetCDF data, one file per month.

The fields come from a forced shallow-water model (torch-harmonics) and
behave like weather: they evolve, stay statistically steady, and have a
diurnal and a seasonal cycle. Files are laid out as the Copernicus Climate
Data Store delivers ERA5 (valid_time, pressure_level, latitude 90 -> -90,
longitude 0 -> 360, ERA5 short names and units) and are labelled synthetic.

With --sst the files also hold ``sst``, a slowly varying sea-surface
temperature (a seasonal zonal profile and drifting anomalies) for a forcing
store of prescribed fields (forecast ingest ... --channels sst).

example:
  forecast synth work/synth --grid 32x64 --days 60 --calendar noleap --seed 1
  forecast synth work/synth --grid 32x64 --days 60 --sst
"""

from __future__ import annotations

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import HIDE_HELP, shows_progress


class Config(CommandConfig):
    """Options of ``forecast synth``."""

    out_dir: str = option(
        help="directory for the files era5_synthetic_YYYY-MM.nc", metavar="OUT_DIR", positional=True
    )
    grid: str = option(
        "64x128", "output grid: NLATxNLON (equiangular) or a resolution such as 1.0deg"
    )
    start: str = option("2020-01-01", "first valid time")
    days: float = option(30.0, "number of days to write")
    step: str = option("6h", "time between fields, e.g. 6h, 1h")
    calendar: str = option("standard", "standard, noleap or 360_day")
    seed: int = option(0, "seed of the weather; the same seed gives identical files")
    pack_int16: bool = option(
        False, "pack variables as int16 with scale_factor/add_offset, as older CDS files"
    )
    spinup_days: float = option(20.0, "days simulated before --start so that weather is developed")
    sst: bool = option(
        False,
        "also write a slowly varying sea-surface temperature (sst) for a forcing store: "
        "forecast ingest ... --channels sst --out sst.zarr",
    )
    no_progress: bool = option(False, HIDE_HELP, flags=("--no-progress", "--quiet"))


def run(args: Config) -> int:
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
        sst=bool(args.sst),
        progress=shows_progress(args.no_progress),
    )
    print(
        f"wrote {len(paths)} file(s) ({grid.describe()}) to {args.out_dir}: {', '.join(p.name for p in paths)}"
    )
    return 0
