"""Plots of a scores Dataset: skill against lead, spread-skill, rank histograms, spectra, maps.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state)
and maps with cartopy (coastlines from ``CARTOPY_DATA_DIR`` offline, or none
with a warning where cartopy can neither find nor download them). Every
axis names its quantity and units.

Import this module (it imports cartopy, hence pyproj) *before* any NetCDF
input or output in a process: with the netCDF4 1.7.5 and pyproj 3.7.2
wheels, loading pyproj after netCDF4 has done I/O corrupts the heap and the
interpreter aborts at exit (``free(): invalid pointer``).
"""

from __future__ import annotations

import functools
import sys
import urllib.error
import warnings
from pathlib import Path

import cartopy.crs as ccrs
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from forecast.channels import channel_info
from forecast.errors import ConfigError, DataError
from forecast.scoring.matching import INIT_DIM, LEAD_DIM, MEMBER_DIM, lead_label, match, valid_times
from forecast.scoring.metrics import METRICS
from forecast.time import format_time

MODEL_STYLE = {
    "forecast": {"color": "tab:blue", "linestyle": "-", "marker": "o"},
    "persistence": {"color": "tab:gray", "linestyle": "--", "marker": ""},
    "climatology": {"color": "tab:green", "linestyle": ":", "marker": ""},
}
METRIC_LABEL = {
    "rmse": "RMSE",
    "bias": "Bias",
    "mae": "MAE",
    "acc": "ACC",
    "crps": "CRPS",
    "spread": "Spread",
    "ssr": "SSR",
}


def _hours(leads: np.ndarray) -> np.ndarray:
    return np.asarray(leads).astype("timedelta64[s]").astype(np.float64) / 3600.0


def _panels(count: int, width: float = 4.2, height: float = 3.3) -> tuple[Figure, list]:
    columns = min(count, 3)
    rows = int(np.ceil(count / columns))
    figure = Figure(figsize=(width * columns, height * rows), layout="constrained")
    axes = [figure.add_subplot(rows, columns, index + 1) for index in range(count)]
    return figure, axes


def _units_of(scores: xr.Dataset, channel: str, metric: str) -> str:
    if METRICS[metric].units == "1":
        return "1"
    return str(scores["channel_units"].sel(channel=channel).values)


def _channel_units(channel: str, fallback: str = "") -> str:
    """Canonical units of a channel (those of the store), else ``fallback``."""
    try:
        return channel_info(channel).units
    except DataError:
        return str(fallback)


def plot_skill(scores: xr.Dataset, metric: str, region: str, path: Path) -> Path:
    """Metric against lead time, one panel per channel, forecast and baselines."""
    channels = [str(c) for c in scores["channel"].values]
    figure, axes = _panels(len(channels))
    hours = _hours(scores[LEAD_DIM].values)
    for axis, channel in zip(axes, channels, strict=True):
        for model in scores["model"].values:
            values = scores[metric].sel(model=model, channel=channel, region=region).values
            if np.isfinite(values).any():
                axis.plot(hours, values, label=str(model), **MODEL_STYLE.get(str(model), {}))
        axis.set_title(f"{channel} — {region}")
        axis.set_xlabel("lead time [h]")
        axis.set_ylabel(f"{METRIC_LABEL[metric]} [{_units_of(scores, channel, metric)}]")
        axis.grid(alpha=0.3)
        if metric == "acc":
            axis.axhline(0.6, color="k", linewidth=0.6, alpha=0.5)
        axis.legend(fontsize="small")
    figure.suptitle(f"{METRICS[metric].long_name} against lead time")
    figure.savefig(path, dpi=110)
    return path


def plot_spread_skill(scores: xr.Dataset, region: str, path: Path) -> Path:
    """RMSE of the ensemble mean and spread against lead (top), SSR (bottom), per channel."""
    channels = [str(c) for c in scores["channel"].values]
    hours = _hours(scores[LEAD_DIM].values)
    figure = Figure(figsize=(4.2 * len(channels), 5.6), layout="constrained")
    for index, channel in enumerate(channels):
        top = figure.add_subplot(2, len(channels), index + 1)
        bottom = figure.add_subplot(2, len(channels), len(channels) + index + 1, sharex=top)
        units = _units_of(scores, channel, "rmse")
        selected = {"model": "forecast", "channel": channel, "region": region}
        top.plot(
            hours,
            scores["rmse"].sel(selected),
            label="RMSE of ensemble mean",
            color="tab:blue",
            marker="o",
        )
        top.plot(
            hours, scores["spread"].sel(selected), label="spread", color="tab:orange", marker="s"
        )
        top.set_ylabel(f"[{units}]")
        top.set_title(f"{channel} — {region}")
        top.legend(fontsize="small")
        top.grid(alpha=0.3)
        bottom.plot(hours, scores["ssr"].sel(selected), color="tab:purple", marker="o")
        bottom.axhline(1.0, color="k", linewidth=0.8, linestyle="--")
        bottom.set_ylabel("spread-skill ratio [1]")
        bottom.set_xlabel("lead time [h]")
        bottom.grid(alpha=0.3)
    figure.suptitle(f"spread against skill ({int(scores.attrs.get('ensemble_size', 1))} members)")
    figure.savefig(path, dpi=110)
    return path


def _some_leads(scores: xr.Dataset, count: int = 3) -> np.ndarray:
    leads = scores[LEAD_DIM].values[scores["n_init"].values > 0]
    nonzero = leads[leads > np.timedelta64(0, "ns")]
    leads = nonzero if nonzero.size else leads
    chosen = np.unique(np.linspace(0, leads.size - 1, min(count, leads.size)).round().astype(int))
    return leads[chosen]


def plot_rank_histograms(scores: xr.Dataset, region: str, path: Path) -> Path:
    """Rank histograms (normalised so a flat, reliable histogram is 1) at a few leads."""
    channels = [str(c) for c in scores["channel"].values]
    leads = _some_leads(scores)
    figure, axes = _panels(len(channels))
    ranks = scores["rank"].values
    width = 0.8 / len(leads)
    for axis, channel in zip(axes, channels, strict=True):
        for index, lead in enumerate(leads):
            values = (
                scores["rank_histogram"].sel(channel=channel, region=region, lead_time=lead).values
                * ranks.size
            )
            axis.bar(
                ranks + (index - (len(leads) - 1) / 2) * width,
                values,
                width=width,
                label=f"lead {lead_label(lead)}",
            )
        axis.axhline(1.0, color="k", linewidth=0.8, linestyle="--")
        axis.set_xlabel("rank of the truth among the members")
        axis.set_ylabel("relative frequency × (members + 1) [1]")
        axis.set_title(f"{channel} — {region}")
        axis.legend(fontsize="small")
    figure.suptitle("rank histograms (flat at 1 = reliable; U-shape = under-dispersive)")
    figure.savefig(path, dpi=110)
    return path


def plot_spectra(scores: xr.Dataset, path: Path) -> Path:
    """Power spectra of truth and forecast (member 0) at a few leads, log-log."""
    channels = [str(c) for c in scores["channel"].values]
    leads = _some_leads(scores)
    figure, axes = _panels(len(channels))
    wavenumber = scores["wavenumber"].values
    keep = wavenumber > 0
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:purple"]
    kind = "total" if "total" in scores["power_spectrum"].attrs.get("long_name", "") else "zonal"
    for axis, channel in zip(axes, channels, strict=True):
        units = str(scores["channel_units"].sel(channel=channel).values)
        truth = scores["truth_power_spectrum"].sel(channel=channel).mean(LEAD_DIM).values
        axis.loglog(wavenumber[keep], truth[keep], color="k", linewidth=2, label="truth")
        for index, lead in enumerate(leads):
            values = scores["power_spectrum"].sel(channel=channel, lead_time=lead).values
            axis.loglog(
                wavenumber[keep],
                values[keep],
                color=colors[index % len(colors)],
                label=f"forecast {lead_label(lead)}",
            )
        axis.set_xlabel(f"{kind} wavenumber")
        axis.set_ylabel(f"power [({units})²]")
        axis.set_title(channel)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize="small")
    figure.suptitle("power spectra (a forecast below the truth at high wavenumbers is blurred)")
    figure.savefig(path, dpi=110)
    return path


@functools.cache
def coastlines_available(resolution: str) -> bool:
    """Whether cartopy has the Natural Earth coastlines at ``resolution`` or can download them.

    Where it can do neither (no internet and no ``CARTOPY_DATA_DIR`` that holds
    them), one line on stderr says so, once per process: the maps are then
    drawn without coastlines rather than not at all.
    """
    from cartopy.io import DownloadWarning, shapereader

    try:
        with warnings.catch_warnings():  # cartopy's "Downloading: URL"; a failure is said below
            warnings.simplefilter("ignore", DownloadWarning)
            shapereader.natural_earth(resolution=resolution, category="physical", name="coastline")
    except (urllib.error.URLError, ConnectionError) as err:
        print(
            f"warning: maps drawn without coastlines: cartopy has no {resolution} Natural Earth "
            f"coastlines and could not download them ({err}); set CARTOPY_DATA_DIR to a folder "
            "that holds them, or run once with internet",
            file=sys.stderr,
        )
        return False
    return True


def add_coastlines(axis, resolution: str = "110m", linewidth: float = 0.6) -> None:
    """Coastlines at ``resolution`` on a cartopy map ``axis``, where they can be had
    (:func:`coastlines_available`)."""
    if coastlines_available(resolution):
        axis.coastlines(resolution=resolution, linewidth=linewidth)


def plot_maps(
    forecast: xr.Dataset, store: xr.Dataset, lead: np.timedelta64, directory: Path
) -> list[Path]:
    """Maps of truth, ensemble mean, error and spread at ``lead`` for the first verifiable init.

    Raises
    ------
    ConfigError
        If the forecast has no such lead, or no init has truth at it.
    """
    matched = match(forecast, store)
    leads = matched.forecast[LEAD_DIM].values
    if lead not in leads:
        raise ConfigError(
            f"the forecast has no lead time {lead_label(lead)} for the maps",
            hint=f"choose --lead-for-maps among {', '.join(lead_label(x) for x in leads[:12])}",
        )
    available = matched.available.sel(lead_time=lead).values
    if not available.any():
        raise ConfigError(
            f"no initialisation has truth at lead {lead_label(lead)}",
            hint="choose a shorter --lead-for-maps",
        )
    init_index = int(np.argmax(available))
    init = matched.forecast[INIT_DIM].values[init_index]
    valid = (
        valid_times(matched.forecast).isel({INIT_DIM: init_index}).sel(lead_time=lead).values[()]
    )
    members = matched.forecast.sizes[MEMBER_DIM]
    written = []
    lat = matched.grid.latitude
    lon = matched.grid.longitude
    if matched.grid.is_global:
        projection, extent = ccrs.PlateCarree(central_longitude=180.0), None
    else:  # a limited area: centred on it, zoomed to it
        lon_range = (float(lon.min()), float(lon.max()))
        projection = ccrs.PlateCarree(central_longitude=0.5 * sum(lon_range))
        extent = [*lon_range, float(lat.min()), float(lat.max())]
    for channel in matched.channels:
        units = _channel_units(channel, forecast[channel].attrs.get("units", ""))
        fields = matched.forecast[channel].isel({INIT_DIM: init_index}).sel(lead_time=lead)
        ensemble_mean = fields.mean(MEMBER_DIM).values
        truth = matched.truth[channel].isel({INIT_DIM: init_index}).sel(lead_time=lead).values
        error = ensemble_mean - truth
        panels: list[tuple[str, np.ndarray, str, tuple[float, float] | None]] = [
            ("truth", truth, "viridis", None),
            ("ensemble mean" if members > 1 else "forecast", ensemble_mean, "viridis", None),
        ]
        limit = float(np.nanmax(np.abs(error))) or 1.0
        panels.append(("error (forecast − truth)", error, "RdBu_r", (-limit, limit)))
        if members > 1:
            panels.append(
                ("ensemble spread (std)", fields.std(MEMBER_DIM, ddof=1).values, "magma_r", None)
            )
        vmin = float(np.nanmin([truth.min(), ensemble_mean.min()]))
        vmax = float(np.nanmax([truth.max(), ensemble_mean.max()]))
        figure = Figure(figsize=(11, 2.9 * int(np.ceil(len(panels) / 2))), layout="constrained")
        for index, (title, values, cmap, limits) in enumerate(panels):
            axis = figure.add_subplot(
                int(np.ceil(len(panels) / 2)), 2, index + 1, projection=projection
            )
            low, high = (
                limits
                if limits
                else ((vmin, vmax) if index < 2 else (0.0, float(np.nanmax(values)) or 1.0))
            )
            mesh = axis.pcolormesh(
                lon,
                lat,
                values,
                transform=ccrs.PlateCarree(),
                cmap=cmap,
                vmin=low,
                vmax=high,
                shading="nearest",
            )
            add_coastlines(axis, "110m" if extent is None else "50m")
            if extent is None:
                axis.set_global()
            else:
                axis.set_extent(extent, crs=ccrs.PlateCarree())
            axis.set_title(title)
            figure.colorbar(mesh, ax=axis, shrink=0.85, label=f"{channel} [{units}]")
        figure.suptitle(
            f"{channel}: init {format_time(init)} + {lead_label(lead)} = valid {format_time(valid)}"
        )
        path = directory / f"maps_{channel}_{lead_label(lead)}.png"
        figure.savefig(path, dpi=110)
        written.append(path)
    return written


def draw_all(
    scores: xr.Dataset,
    forecast: xr.Dataset,
    store: xr.Dataset,
    directory: str | Path,
    lead_for_maps: np.timedelta64,
    region: str = "global",
) -> list[Path]:
    """Draw every plot into ``directory``; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ensemble = int(scores.attrs.get("ensemble_size", 1)) > 1
    written = []
    for metric in ("rmse", "acc", "bias") + (("crps",) if ensemble else ()):
        written.append(plot_skill(scores, metric, region, directory / f"{metric}_vs_lead.png"))
    if ensemble:
        written.append(plot_spread_skill(scores, region, directory / "spread_skill.png"))
        written.append(plot_rank_histograms(scores, region, directory / "rank_histograms.png"))
    if "power_spectrum" in scores:
        written.append(plot_spectra(scores, directory / "spectra.png"))
    written.extend(plot_maps(forecast, store, lead_for_maps, directory))
    return written
