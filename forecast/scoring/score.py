"""Score a forecast against the store: metrics, baselines, spectra, scores file, table.

:func:`score_forecast` is the one call that scores a forecast Dataset (the
output layout of ``forecast run``) against a training store and returns
the scores Dataset of ``docs/metrics.md``; :func:`format_table` prints it;
:func:`~forecast.scoring.scores_file.write_scores` writes it atomically (one
variable per metric and channel, CF-1.8).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from forecast import __version__, staging, storage
from forecast.channels import channel_info
from forecast.errors import ConfigError, DataError, ForecastError, with_path
from forecast.grid import Grid
from forecast.scoring.blocks import score_blocks
from forecast.scoring.kernels import STATISTICS
from forecast.scoring.layouts import open_forecast
from forecast.scoring.matching import (
    INIT_DIM,
    LEAD_DIM,
    MEMBER_DIM,
    Matched,
    lead_label,
    match,
    parse_lead,
)
from forecast.scoring.metrics import METRICS, finish_metrics
from forecast.scoring.regions import REGIONS, Region, parse_region, region_weights
from forecast.scoring.scores_file import write_scores
from forecast.store import open_store, store_grid

#: Baseline forecasts scored alongside the forecast (the ``model`` dim).
BASELINES: tuple[str, ...] = ("persistence", "climatology")
FORECAST_MODEL = "forecast"
DEFAULT_REGIONS: tuple[str, ...] = ("global", "tropics", "extratropics_north", "extratropics_south")


def score_forecast(
    forecast: xr.Dataset,
    store: xr.Dataset,
    regions: Sequence[Region] | None = None,
    baselines: Sequence[str] = BASELINES,
    spectra: bool = True,
    progress: bool = False,
) -> xr.Dataset:
    """Score a forecast against the store the WeatherBench2 way.

    Parameters
    ----------
    forecast : xarray.Dataset
        Forecast output layout: dims ``time`` (init), ``lead_time``,
        [``member``], ``latitude``, ``longitude``; coordinate
        ``valid_time(time, lead_time)``; one variable per channel.
    store : xarray.Dataset
        A training store (:func:`forecast.store.open_store`): the truth,
        its climatology and the persistence baseline.
    regions : sequence of Region, optional
        Default: global, tropics, northern and southern extratropics.
    baselines : sequence of str
        Baselines to score alongside, from :data:`BASELINES`.
    spectra : bool
        Whether to compute power spectra (global-mean, by wavenumber).
    progress : bool
        Show a progress bar (tqdm) while computing.

    Returns
    -------
    xarray.Dataset
        One variable per metric of :data:`~forecast.scoring.metrics.METRICS`
        over ``(model, channel, lead_time, region)``; ``rank_histogram``
        ``(channel, lead_time, region, rank)``; ``n_init(lead_time)``;
        ``n_nan_forecast(channel, lead_time)``;
        with ``spectra``, ``power_spectrum(channel, lead_time, wavenumber)``
        (forecast member 0) and ``truth_power_spectrum(channel, lead_time,
        wavenumber)``. Attribute ``leads_without_truth`` lists the leads no
        initialisation could be verified at.

    Raises
    ------
    DataError, GridError
        Missing channels, other grid, no overlapping valid times.
    """
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(
            f"unknown baseline(s) {', '.join(unknown)}", hint=f"use {', '.join(BASELINES)}"
        )
    matched = match(forecast, store)
    if regions is None:
        regions = default_regions(matched.grid)
    regions = list(regions)
    weights = region_weights(matched.grid, regions)
    members = matched.forecast.sizes[MEMBER_DIM]
    models = (FORECAST_MODEL, *baselines)
    results = score_blocks(matched, weights, models, spectra=spectra, progress=progress)

    dims = (INIT_DIM, LEAD_DIM, "channel", "region")
    coords = {
        INIT_DIM: matched.forecast[INIT_DIM].values,
        LEAD_DIM: matched.forecast[LEAD_DIM].values,
        "channel": matched.channels,
        "region": [r.name for r in regions],
    }
    finished = []
    for model in models:
        values = results.statistics[model]
        statistics = xr.Dataset(
            {name: (dims, values[..., index]) for index, name in enumerate(STATISTICS)},
            coords=coords,
        )
        finished.append(finish_metrics(statistics, members if model == FORECAST_MODEL else 1))
    scores = xr.concat(finished, dim="model").assign_coords(model=list(models))
    scores = scores.transpose("model", "channel", LEAD_DIM, "region")
    histogram = xr.DataArray(
        results.statistics[FORECAST_MODEL][..., len(STATISTICS) :],
        dims=(*dims, "rank"),
        coords={**coords, "rank": np.arange(members + 1)},
    )
    scores["rank_histogram"] = histogram.mean(INIT_DIM, skipna=True).transpose(
        "channel", LEAD_DIM, "region", "rank"
    )
    scores["n_init"] = matched.available.sum(INIT_DIM).astype(np.int32)
    # forecast values that are NaN (an unfinished run, a blow-up) where truth exists
    squared_error = results.statistics[FORECAST_MODEL][..., STATISTICS.index("squared_error")]
    nan_forecast = np.isnan(squared_error).any(axis=-1) & matched.available.values[:, :, None]
    scores["n_nan_forecast"] = xr.DataArray(
        nan_forecast.sum(axis=0).astype(np.int32),
        dims=(LEAD_DIM, "channel"),
        coords={LEAD_DIM: coords[LEAD_DIM], "channel": matched.channels},
    ).transpose("channel", LEAD_DIM)
    if spectra:
        spectrum_dims = (INIT_DIM, LEAD_DIM, "channel", "wavenumber")
        spectrum_coords = {k: coords[k] for k in (INIT_DIM, LEAD_DIM, "channel")}
        spectrum_coords["wavenumber"] = np.arange(results.spectra["truth"].shape[-1])

        def init_mean(values: np.ndarray) -> xr.DataArray:
            return xr.DataArray(values, dims=spectrum_dims, coords=spectrum_coords).mean(
                INIT_DIM, skipna=True
            )

        scores["power_spectrum"] = init_mean(results.spectra[FORECAST_MODEL]).transpose(
            "channel", LEAD_DIM, "wavenumber"
        )
        scores["truth_power_spectrum"] = init_mean(results.spectra["truth"]).transpose(
            "channel", LEAD_DIM, "wavenumber"
        )
    return _annotate(scores, matched, regions, forecast)


def score_files(
    forecast_path: str | Path,
    truth_path: str | Path,
    out: str | Path | None = None,
    plots: str | Path | None = None,
    regions: Sequence[str] | None = None,
    lead_for_maps: str = "24h",
    table_region: str | None = None,
    baselines: Sequence[str] = BASELINES,
    spectra: bool = True,
    progress: bool = False,
    init_indices: Sequence[int] | None = None,
) -> tuple[xr.Dataset, str, list[Path | str]]:
    """Score a forecast file against a store file: the whole of ``forecast score``.

    Parameters
    ----------
    forecast_path : str or Path
        Forecast ``.zarr``, ``.nc`` or ``cdo`` directory in any layout of ``forecast run``
        (:func:`~forecast.scoring.layouts.open_forecast`).
    truth_path : str or Path
        Training store (``.zarr``).
    out : str or Path, optional
        Write the scores NetCDF here (atomically).
    plots : str or Path, optional
        Draw every plot into this directory.
    regions : sequence of str, optional
        Region names or boxes for :func:`~forecast.scoring.regions.parse_region`;
        default :data:`DEFAULT_REGIONS`.
    lead_for_maps : str
        Lead time of the maps, e.g. ``"24h"``.
    table_region : str, optional
        Region of the table and plots (default the first).
    baselines, spectra, progress
        As :func:`score_forecast`.
    init_indices : sequence of int, optional
        Score only these init times (positions in the forecast), e.g. the
        finished ones of an unfinished run.

    Returns
    -------
    scores : xarray.Dataset
        As :func:`score_forecast`.
    table : str
        The text table (:func:`format_table`).
    written : list of Path
        The scores file (if any) and the plots.

    Raises
    ------
    ConfigError
        Bad region, duplicate region names, a map lead the forecast lacks.
    DataError, GridError, FileNotFoundError
        As :func:`score_forecast` and the readers.
    """
    if plots:
        # cartopy/pyproj must load before any NetCDF I/O (see forecast.scoring.plots)
        from forecast.scoring import plots as plotting
    parsed = [parse_region(spec) for spec in (regions or DEFAULT_REGIONS)]
    names = [r.name for r in parsed]
    if len(set(names)) != len(names):
        raise ConfigError(
            "two regions have the same name", hint="name boxes NAME=LAT_MIN,LAT_MAX,LON_MIN,LON_MAX"
        )
    table_region = table_region or names[0]
    if table_region not in names:
        raise ConfigError(
            f"table region {table_region!r} is not among the scored regions",
            hint=f"use one of {', '.join(names)}",
        )
    map_lead = parse_lead(lead_for_maps)

    store = open_store(truth_path)
    if not regions:  # the default regions that the grid reaches (a limited area may miss some)
        parsed = default_regions(store_grid(store))
    forecast = open_forecast(forecast_path)
    if init_indices is not None:
        forecast = forecast.isel({INIT_DIM: list(init_indices)})
    if plots and LEAD_DIM in forecast.coords:
        leads = forecast[LEAD_DIM].values.astype("timedelta64[ns]")
        if map_lead not in leads:
            raise ConfigError(
                f"the forecast has no lead time {lead_label(map_lead)} for the maps",
                hint=f"choose --lead-for-maps among {', '.join(lead_label(x) for x in leads[:12])}",
            )
    try:
        scores = score_forecast(
            forecast, store, regions=parsed, baselines=baselines, spectra=spectra, progress=progress
        )
    except ForecastError as err:  # checks of the opened datasets: name the files
        named = with_path(err, f"{forecast_path} against {truth_path}")
        if named is err:
            raise
        raise named from err
    except (RuntimeError, ValueError, OSError) as err:
        if not _is_decode_error(err):
            raise
        raise DataError(
            f"a chunk cannot be decoded, the data are damaged ({' '.join(str(err).split())[:160]})",
            path=f"{forecast_path} or {truth_path}",
            hint="rerun the forecast (forecast run ... --overwrite) or re-ingest the store",
        ) from err
    written: list[Path | str] = []
    if out:
        with staging.output_path(out) as local:  # a URL: written locally, then uploaded
            write_scores(scores, local)
        written.append(local if storage.is_local(out) else str(out))
    if plots:
        with staging.output_path(plots) as folder:
            drawn = plotting.draw_all(
                scores, forecast, store, folder, lead_for_maps=map_lead, region=table_region
            )
        if storage.is_local(plots):
            written.extend(drawn)
        else:
            written.extend(storage.join(str(plots), Path(p).name) for p in drawn)
    return scores, format_table(scores, region=table_region), written


#: Words of the errors that codecs and the HDF5 library raise for a damaged chunk.
_DECODE_WORDS = (
    "decompress",
    "checksum",
    "codec",
    "hdf error",
    "corrupt",
    "truncated",
    "cannot reshape",
)


def _is_decode_error(err: BaseException) -> bool:
    """Whether an error from reading the data comes from a chunk that does not decode."""
    text = str(err).lower()
    return any(word in text for word in _DECODE_WORDS)


def default_regions(grid: Grid) -> list[Region]:
    """The regions of :data:`DEFAULT_REGIONS` that hold at least one cell of ``grid``."""
    regions = [REGIONS[name] for name in DEFAULT_REGIONS]
    return [r for r in regions if r.mask(grid.latitude, grid.longitude).any()]


def _annotate(
    scores: xr.Dataset, matched: Matched, regions: Sequence[Region], forecast: xr.Dataset
) -> xr.Dataset:
    for name, metric in METRICS.items():
        # metrics in the channel's units: see channel_units (the file has one variable per channel)
        scores[name].attrs = {"long_name": metric.long_name}
        if metric.units != "data":
            scores[name].attrs["units"] = metric.units
    scores["rank_histogram"].attrs = {
        "long_name": "area fraction of each rank of the truth among the ensemble members (0: below all)",
        "units": "1",
    }
    scores["n_nan_forecast"].attrs = {
        "long_name": "initialisations whose forecast has NaN where truth exists (left out of the means)",
        "units": "1",
    }
    scores["n_init"].attrs = {
        "long_name": "number of initialisations with truth at this lead",
        "units": "1",
    }
    if "power_spectrum" in scores:
        kind = "total spherical-harmonic" if matched.grid.is_global else "zonal"
        scores["power_spectrum"].attrs = {
            "long_name": f"init-mean power spectrum by {kind} wavenumber (member 0)"
        }
        scores["truth_power_spectrum"].attrs = {
            "long_name": f"init-mean power spectrum of the truth by {kind} wavenumber"
        }
    scores["channel_units"] = ("channel", [_units(c) for c in matched.channels])
    scores["channel_units"].attrs = {
        "long_name": "units of each channel (of the metrics without units of their own)"
    }
    scores["region_bounds"] = (
        ("region", "bound"),
        np.array([[r.lat_min, r.lat_max, r.lon_min, r.lon_max] for r in regions]),
    )
    scores = scores.assign_coords(bound=["lat_min", "lat_max", "lon_min", "lon_max"])
    scores["region_bounds"].attrs = {"long_name": "region boxes", "units": "degrees"}
    missing = matched.leads_without_truth()
    scores.attrs = {
        "title": "forecast skill scores (WeatherBench2 definitions)",
        "ensemble_size": int(matched.forecast.sizes[MEMBER_DIM]),
        "grid": matched.grid.describe(),
        "forecast_model": str(forecast.attrs.get("model", "")),
        "n_init_total": int(matched.available.sizes[INIT_DIM]),
        "leads_without_truth": ", ".join(lead_label(lead) for lead in missing),
        "software_version": __version__,
        "creation_time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "references": "Rasp et al. 2024, WeatherBench 2, doi:10.1029/2023MS004019; docs/metrics.md",
    }
    return scores


def _units(channel: str) -> str:
    try:
        return channel_info(channel).units
    except DataError:
        return ""


def format_table(
    scores: xr.Dataset,
    metrics: Sequence[str] = ("rmse", "acc", "crps", "ssr"),
    region: str = "global",
    max_leads: int = 10,
) -> str:
    """A text table per metric: rows channel x model, columns lead times.

    Parameters
    ----------
    scores : xarray.Dataset
        From :func:`score_forecast`.
    metrics : sequence of str
        Metrics to show (those absent are skipped; ensemble metrics only for ensembles).
    region : str
        The region to show.
    max_leads : int
        At most this many lead columns (evenly thinned, always with the last).
    """
    leads = scores[LEAD_DIM].values
    if leads.size > max_leads:
        chosen = np.unique(np.linspace(0, leads.size - 1, max_leads).round().astype(int))
        leads = leads[chosen]
    ensemble = int(scores.attrs.get("ensemble_size", 1)) > 1
    lines = []
    label_width = max(
        len(f"{c} [{u}]")
        for c, u in zip(scores["channel"].values, scores["channel_units"].values, strict=True)
    )
    label_width = max(label_width, 12)
    model_width = max(len(str(m)) for m in scores["model"].values)
    for name in metrics:
        if name not in scores or (METRICS[name].ensemble and not ensemble):
            continue
        models = [FORECAST_MODEL] if name in ("spread", "ssr") else list(scores["model"].values)
        header = f"{name.upper()} ({region})".ljust(label_width + model_width + 2)
        lines.append(header + "".join(f"{lead_label(lead):>11}" for lead in leads))
        for channel, units in zip(
            scores["channel"].values, scores["channel_units"].values, strict=True
        ):
            label = f"{channel} [{units}]" if METRICS[name].units == "data" else str(channel)
            for index, model in enumerate(models):
                values = (
                    scores[name]
                    .sel(model=model, channel=channel, region=region, lead_time=leads)
                    .values
                )
                cells = "".join(f"{_number(v):>11}" for v in values)
                lines.append(
                    f"{(label if index == 0 else ''):<{label_width}}  {model:<{model_width}}{cells}"
                )
        lines.append("")
    missing = scores.attrs.get("leads_without_truth", "")
    if missing:
        lines.append(f"no truth in the store at lead(s): {missing} (scores NaN there)")
    total = int(scores.attrs.get("n_init_total", 0))
    partial = scores["n_init"].where((scores["n_init"] > 0) & (scores["n_init"] < total), drop=True)
    if partial.size:
        counts = ", ".join(
            f"{lead_label(lead)}: {int(n)}"
            for lead, n in zip(partial[LEAD_DIM].values, partial.values, strict=True)
        )
        lines.append(
            f"truth for only some of the {total} initialisations at lead(s) {counts} (see n_init)"
        )
    if "n_nan_forecast" in scores and int(scores["n_nan_forecast"].sum()) > 0:
        bad = scores["n_nan_forecast"].sum("channel")
        nan_leads = ", ".join(lead_label(lead) for lead in bad[LEAD_DIM].values[bad.values > 0])
        lines.append(
            f"the forecast has NaN values at lead(s) {nan_leads}: {int(bad.sum())} (init, channel) "
            "field(s) left out of the means (see n_nan_forecast)"
        )
    return "\n".join(lines).rstrip() + "\n"


def _number(value: float) -> str:
    if not np.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude >= 1e5 or magnitude < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4g}"
