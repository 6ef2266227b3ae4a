"""Plots of climate scores: maps of the time-mean bias (cartopy) and the annual cycle against the reference.

Import this module before any NetCDF I/O in a process (it imports cartopy;
see :mod:`forecast.scoring.plots`).
"""

from __future__ import annotations

from pathlib import Path

import cartopy.crs as ccrs
import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from forecast.scoring.plots import _channel_units, _panels, add_coastlines

MONTH_NAMES = "JFMAMJJASOND"


def plot_bias_maps(scores: xr.Dataset, path: Path) -> Path:
    """One map per channel of ``time_mean_bias_map``, symmetric colour scale, RMSE in the title."""
    channels = [str(c) for c in scores["channel"].values]
    columns = min(len(channels), 3)
    rows = int(np.ceil(len(channels) / columns))
    figure = Figure(figsize=(5.0 * columns, 2.9 * rows), layout="constrained")
    bias = scores["time_mean_bias_map"]
    for index, channel in enumerate(channels):
        axis = figure.add_subplot(
            rows, columns, index + 1, projection=ccrs.PlateCarree(central_longitude=180.0)
        )
        values = bias.sel(channel=channel).values
        limit = float(np.nanmax(np.abs(values))) or 1.0
        mesh = axis.pcolormesh(
            bias["longitude"].values,
            bias["latitude"].values,
            values,
            transform=ccrs.PlateCarree(),
            cmap="RdBu_r",
            vmin=-limit,
            vmax=limit,
            shading="nearest",
        )
        add_coastlines(axis, linewidth=0.5)
        axis.set_global()
        rmse = float(scores["time_mean_rmse"].sel(channel=channel))
        axis.set_title(f"{channel}: time-mean bias (RMSE {rmse:.3g})", fontsize=9)
        figure.colorbar(mesh, ax=axis, shrink=0.8, label=f"[{_channel_units(channel)}]")
    figure.suptitle(
        f"time-mean bias, run − reference, {scores.attrs.get('run_start', '')[:10]} .. {scores.attrs.get('run_end', '')[:10]}"
    )
    figure.savefig(path, dpi=110)
    return path


def plot_annual_cycle(scores: xr.Dataset, path: Path) -> Path:
    """Global-mean annual cycle per channel: the run against the reference."""
    channels = [str(c) for c in scores["channel"].values]
    figure, axes = _panels(len(channels), width=3.6, height=2.8)
    cycle = scores["annual_cycle"]
    months = cycle["month"].values
    for axis, channel in zip(axes, channels, strict=True):
        for source, style in (
            ("reference", {"color": "black", "linestyle": "--"}),
            ("forecast", {"color": "tab:blue", "marker": "o", "markersize": 3}),
        ):
            axis.plot(
                months, cycle.sel(source=source, channel=channel).values, label=source, **style
            )
        axis.set_xticks(months, [MONTH_NAMES[m - 1] for m in months])
        axis.set_title(channel, fontsize=9)
        axis.set_ylabel(f"global mean [{_channel_units(channel)}]", fontsize=8)
    axes[0].legend(fontsize=8)
    figure.suptitle("annual cycle of global means (monthly means averaged by calendar month)")
    figure.savefig(path, dpi=110)
    return path


def draw_climate(scores: xr.Dataset, directory: str | Path) -> list[Path]:
    """The climate plots that ``scores`` has data for; returns the files written."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    if "time_mean_bias_map" in scores:
        written.append(plot_bias_maps(scores, directory / "time_mean_bias.png"))
    if "annual_cycle" in scores:
        written.append(plot_annual_cycle(scores, directory / "annual_cycle.png"))
    return written
