"""Score a forecast against the training store the WeatherBench2 way.

Matches every (init, lead) of FORECAST to the store on its valid time and
computes area-weighted RMSE, bias, MAE and ACC of the (ensemble mean)
forecast and, for ensembles, spread, spread-skill ratio, fair CRPS and rank
histograms, per channel, lead time and region, with persistence and
climatology baselines from the store. Prints a table; writes the scores
NetCDF with --out and the plots with --plots. Definitions: docs/metrics.md.

examples:
  forecast score fc.zarr --truth era5.zarr --out scores.nc
  forecast score fc.nc --truth era5.zarr --plots plots/ --lead-for-maps 48h
  forecast score fc.zarr --truth era5.zarr --region global europe=35,72,345,45
  forecast score climate.zarr --truth reference.zarr --climate --out climate_scores.nc --plots plots/

With --climate, FORECAST is the --out of a climate run (forecast run --reduce
...) or one of its product files: the time-mean RMSE and bias maps, the annual
cycle of global means, the drift of annual global means and the Wasserstein-1
distance of the histograms against the same reductions of the store.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import HIDE_HELP, shows_progress


class Config(CommandConfig):
    """Options of ``forecast score``."""

    forecast: str = option(
        help="forecast written by 'forecast run' in any --layout: .zarr, .nc or a cdo directory",
        metavar="FORECAST",
        positional=True,
    )
    truth: str = option(
        help="training store that holds the truth and its climatology", metavar="STORE.zarr"
    )
    out: str | None = option(None, "write the scores NetCDF here (atomically)", metavar="SCORES.nc")
    plots: str | None = option(
        None,
        "draw skill, spread-skill, rank histogram, spectra and map plots into DIR",
        metavar="DIR",
    )
    region: list[str] | None = option(
        None,
        "regions: global, tropics, extratropics_north, extratropics_south, or a box "
        "NAME=LAT_MIN,LAT_MAX,LON_MIN,LON_MAX (degrees east); default the four standard regions",
        metavar="REGION",
        nargs="+",
    )
    lead_for_maps: str = option("24h", "lead time of the maps", metavar="LEAD")
    table_region: str | None = option(
        None, "region shown in the printed table (default the first)", metavar="REGION"
    )
    no_baselines: bool = option(False, "score only the forecast, not persistence and climatology")
    no_spectra: bool = option(False, "skip the power spectra")
    allow_partial: bool = option(
        False,
        "score an unfinished forecast (its manifest says running or failed): only its finished init times",
    )
    no_progress: bool = option(False, HIDE_HELP)
    climate: bool = option(
        False,
        "score a climate run's products (time-mean RMSE and bias maps, annual cycle, drift, "
        "histogram distances) against the same reductions of --truth",
    )


def run_climate(args: Config) -> int:
    """``forecast score --climate``: score, print the table, write the file and plots."""
    if args.plots:  # cartopy before any NetCDF I/O (see forecast.scoring.plots)
        from forecast.scoring.climate_plots import draw_climate
    from forecast.scoring.climate import (
        climate_scores,
        format_climate_table,
        open_products,
        write_climate_scores,
    )
    from forecast.scoring.climate_reference import CHUNK_BYTES
    from forecast.store import open_store

    scores = climate_scores(
        open_products(args.forecast),
        open_store(args.truth, chunk_bytes=CHUNK_BYTES),
        progress=shows_progress(args.no_progress),
    )
    print(format_climate_table(scores))
    if args.out:
        with _scores_output(args):
            written = write_climate_scores(scores, args.out)
        print(f"scores written to {written}", file=sys.stderr)
    if args.plots:
        drawn = draw_climate(scores, args.plots)
        print(f"{len(drawn)} plots written to {args.plots}", file=sys.stderr)
    return 0


@contextlib.contextmanager
def _scores_output(args: Config) -> Iterator[None]:
    """Hold ``--out``'s lock (one writer at a time) and refuse to replace anything but a scores file."""
    from forecast.locking import lock
    from forecast.overwrite import check_replaceable

    if not args.out:
        yield
        return
    with lock(args.out, "forecast score"):
        check_replaceable(
            args.out,
            inputs=[args.forecast, args.truth],
            kinds=("scores",),
            flag="--out",
            action="replace",
        )
        yield


def run(args: Config) -> int:
    """Score, print the table, write the file and plots."""
    if args.climate:
        return run_climate(args)
    from forecast.scoring.score import BASELINES, score_files

    init_indices = _finished_part(args.forecast, args.allow_partial)
    with _scores_output(args):
        _, table, written = score_files(
            args.forecast,
            args.truth,
            out=args.out,
            plots=args.plots,
            regions=args.region,
            lead_for_maps=args.lead_for_maps,
            table_region=args.table_region,
            baselines=() if args.no_baselines else BASELINES,
            spectra=not args.no_spectra,
            progress=shows_progress(args.no_progress),
            init_indices=init_indices,
        )
    print(table)
    if args.out:
        print(f"scores written to {written[0]}", file=sys.stderr)
    if args.plots:
        print(f"{len(written) - bool(args.out)} plots written to {args.plots}", file=sys.stderr)
    return 0


def _finished_part(forecast: str, allow_partial: bool) -> list[int] | None:
    """The init times to score of a forecast whose manifest says it is unfinished (None: all).

    Raises
    ------
    DataError
        The run is unfinished and ``allow_partial`` is off, or no init time is finished.
    """
    from pathlib import Path

    from forecast.errors import DataError
    from forecast.scoring.layouts import open_forecast
    from inference.schedule import FINISHED, finished_inits, read_manifest

    manifest = read_manifest(Path(forecast))
    if manifest is None or manifest.get("status") in (FINISHED, None):
        return None
    status, total = manifest["status"], len(manifest.get("init_times", []))
    grid = open_forecast(forecast)
    done = finished_inits(
        Path(forecast), manifest, grid.sizes["latitude"] * grid.sizes["longitude"] * 4
    )
    counted = f"{len(done)} of {total} init time(s) complete"
    if not allow_partial:
        raise DataError(
            f"the forecast is unfinished (its manifest says {status}; {counted})",
            path=forecast,
            hint="let 'forecast run' finish (rerun it to resume), or pass --allow-partial to score the complete init times",
        )
    if not done:
        raise DataError(
            f"the forecast is unfinished (its manifest says {status}) and no init time is complete yet",
            path=forecast,
            hint="let 'forecast run' finish (rerun it to resume)",
        )
    print(
        f"forecast score: {forecast}: unfinished ({status}); scoring only its {counted}",
        file=sys.stderr,
    )
    return done
