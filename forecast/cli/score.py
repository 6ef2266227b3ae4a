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
        help="forecast .zarr or .nc in the output layout of 'forecast run'",
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
    if args.plots:
        # cartopy/pyproj must load before any NetCDF I/O (see forecast.scoring.plots)
        from forecast.scoring import plots  # noqa: F401
    from forecast.errors import ConfigError
    from forecast.scoring.matching import lead_label, parse_lead
    from forecast.scoring.regions import parse_region
    from forecast.scoring.score import (
        BASELINES,
        DEFAULT_REGIONS,
        format_table,
        open_forecast,
        score_forecast,
        write_scores,
    )
    from forecast.store import open_store

    specs = args.region or list(DEFAULT_REGIONS)
    if isinstance(specs, str):
        specs = [specs]
    regions = [parse_region(spec) for spec in specs]
    if len({r.name for r in regions}) != len(regions):
        raise ConfigError(
            "two regions have the same name", hint="name boxes NAME=LAT_MIN,LAT_MAX,LON_MIN,LON_MAX"
        )
    lead_for_maps = parse_lead(args.lead_for_maps)
    table_region = args.table_region or regions[0].name
    if table_region not in {r.name for r in regions}:
        raise ConfigError(
            f"--table-region {table_region!r} is not among the scored regions",
            hint=f"use one of {', '.join(r.name for r in regions)}",
        )

    store = open_store(args.truth)
    forecast = open_forecast(args.forecast)
    if args.plots and "lead_time" in forecast.coords:
        leads = forecast["lead_time"].values.astype("timedelta64[ns]")
        if lead_for_maps not in leads:
            raise ConfigError(
                f"the forecast has no lead time {lead_label(lead_for_maps)} for the maps",
                hint=f"choose --lead-for-maps among {', '.join(lead_label(x) for x in leads[:12])}",
            )
    scores = score_forecast(
        forecast,
        store,
        regions=regions,
        baselines=() if args.no_baselines else BASELINES,
        spectra=not args.no_spectra,
        progress=not args.no_progress,
    )
    print(format_table(scores, region=table_region))
    if args.out:
        path = write_scores(scores, args.out)
        print(f"scores written to {path}", file=sys.stderr)
    if args.plots:
        from forecast.scoring.plots import draw_all

        written = draw_all(
            scores, forecast, store, args.plots, lead_for_maps=lead_for_maps, region=table_region
        )
        print(f"{len(written)} plots written to {args.plots}", file=sys.stderr)
    return 0
