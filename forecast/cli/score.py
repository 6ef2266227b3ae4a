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
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forecast score``."""
    parser.add_argument(
        "forecast",
        metavar="FORECAST",
        help="forecast written by 'forecast run' in any --layout: .zarr, .nc or a cdo directory",
    )
    parser.add_argument(
        "--truth",
        metavar="STORE.zarr",
        required=True,
        help="training store that holds the truth and its climatology",
    )
    parser.add_argument(
        "--out", metavar="SCORES.nc", help="write the scores NetCDF here (atomically)"
    )
    parser.add_argument(
        "--plots",
        metavar="DIR",
        help="draw skill, spread-skill, rank histogram, spectra and map plots into DIR",
    )
    parser.add_argument(
        "--region",
        nargs="+",
        metavar="REGION",
        help="regions: global, tropics, extratropics_north, extratropics_south, or a box "
        "NAME=LAT_MIN,LAT_MAX,LON_MIN,LON_MAX (degrees east); default the four standard regions",
    )
    parser.add_argument(
        "--lead-for-maps", default="24h", metavar="LEAD", help="lead time of the maps (default 24h)"
    )
    parser.add_argument(
        "--table-region",
        default=None,
        metavar="REGION",
        help="region shown in the printed table (default the first)",
    )
    parser.add_argument(
        "--no-baselines",
        action="store_true",
        help="score only the forecast, not persistence and climatology",
    )
    parser.add_argument("--no-spectra", action="store_true", help="skip the power spectra")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Score, print the table, write the file and plots."""
    from forecast.scoring.score import BASELINES, score_files

    regions = [args.region] if isinstance(args.region, str) else args.region
    _, table, written = score_files(
        args.forecast,
        args.truth,
        out=args.out,
        plots=args.plots,
        regions=regions,
        lead_for_maps=args.lead_for_maps,
        table_region=args.table_region,
        baselines=() if args.no_baselines else BASELINES,
        spectra=not args.no_spectra,
        progress=not args.no_progress,
    )
    print(table)
    if args.out:
        print(f"scores written to {written[0]}", file=sys.stderr)
    if args.plots:
        print(f"{len(written) - bool(args.out)} plots written to {args.plots}", file=sys.stderr)
    return 0
