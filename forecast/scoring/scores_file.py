"""The scores NetCDF: a CF-1.8 file with one variable per metric and channel, and its reader.

:func:`forecast.scoring.score.score_forecast` returns scores over a
``channel`` dim (``rmse(model, channel, lead_time, region)``), handy in code
but not in a file, where one variable has one ``units``. The file
(:func:`to_cf`, :func:`write_scores`) holds instead

- ``{metric}_{channel}(model, lead_time, region)`` (``rmse_z500``,
  ``acc_t2m`` ...), with the channel's units (``m**2 s**-2``) or ``1``;
- ``rank_histogram_{channel}(lead_time, region, rank)``,
  ``n_nan_forecast_{channel}(lead_time)``, ``power_spectrum_{channel}`` and
  ``truth_power_spectrum_{channel}(lead_time, wavenumber)`` in the channel's
  units squared, ``n_init(lead_time)``, and the region boxes
  ``region_lat_min(region)`` ...;
- ``lead_time`` as int32 hours (``standard_name: forecast_period``), the
  labels ``model`` and ``region`` as character arrays named in each
  variable's ``coordinates`` (CF section 6.1; no NetCDF-4 ``string`` type,
  which cfchecks rejects, and no ``_Encoding``, which Iris 3.14 cannot read);
- ``Conventions: CF-1.8``, ``history`` and the global ``channels`` (the order).

:func:`open_scores` reads such a file back into the layout of
``score_forecast`` (:func:`from_cf`), labels decoded to ``str``.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

from forecast import __version__
from forecast.files import atomic_write
from forecast.scoring.metrics import METRICS

#: CF version of the scores file.
CONVENTIONS = "CF-1.8"
#: Variables of the in-memory scores with a ``channel`` dim (besides the metrics), and their units.
PER_CHANNEL: dict[str, str] = {
    "rank_histogram": "1",
    "n_nan_forecast": "1",
    "power_spectrum": "squared",
    "truth_power_spectrum": "squared",
}
#: Character-array labels of the file.
LABELS = ("model", "region")
_BOUNDS = {
    "lat_min": "degrees_north",
    "lat_max": "degrees_north",
    "lon_min": "degrees_east",
    "lon_max": "degrees_east",
}


def squared_units(units: str) -> str:
    """``K`` -> ``K**2``, ``m**2 s**-2`` -> ``(m**2 s**-2)**2`` (UDUNITS syntax); ``1`` stays ``1``."""
    units = units.strip() or "1"
    if units == "1":
        return "1"
    return f"{units}**2" if units.isalpha() else f"({units})**2"


def _variable_units(name: str, channel_units: str) -> str:
    if name in METRICS:
        return (channel_units or "1") if METRICS[name].units == "data" else METRICS[name].units
    kind = PER_CHANNEL[name]
    return squared_units(channel_units) if kind == "squared" else kind


def to_cf(scores: xr.Dataset) -> xr.Dataset:
    """The scores in the file layout (see the module docstring).

    Parameters
    ----------
    scores : xarray.Dataset
        From :func:`forecast.scoring.score.score_forecast`.

    Returns
    -------
    xarray.Dataset
        One variable per metric and channel, each with its own ``units``.
    """
    channels = [str(c) for c in scores["channel"].values]
    units = {c: str(u) for c, u in zip(channels, scores["channel_units"].values, strict=True)}
    variables = {}
    for name in [*METRICS, *PER_CHANNEL]:
        if name not in scores:
            continue
        variable = scores[name]
        for channel in channels:
            values = variable.sel(channel=channel, drop=True)
            long_name = variable.attrs.get("long_name", name)
            variables[f"{name}_{channel}"] = values.assign_attrs(
                long_name=f"{long_name}: {channel}",
                units=_variable_units(name, units[channel]),
                metric=name,
                channel=channel,
            )
    # one Dataset of all (adding them one by one costs a merge each: minutes for 73 channels)
    out = xr.Dataset(variables, coords={k: scores[k] for k in ("model", "lead_time", "region")})
    out["n_init"] = scores["n_init"]
    for k, (bound, bound_units) in enumerate(_BOUNDS.items()):
        out[f"region_{bound}"] = xr.DataArray(
            scores["region_bounds"].values[:, k],
            dims="region",
            attrs={
                "long_name": f"region box: {bound.replace('_', ' ')}",
                "standard_name": "latitude" if bound.startswith("lat") else "longitude",
                "units": bound_units,
            },
        )
    for dim in ("rank", "wavenumber"):
        if dim in out.dims:
            out = out.assign_coords(
                {dim: xr.Variable(dim, np.arange(out.sizes[dim], dtype=np.int32), {"units": "1"})}
            )
    if "rank" in out.coords:
        out["rank"].attrs["long_name"] = "rank of the truth among the members (0: below all)"
    if "wavenumber" in out.coords:
        out["wavenumber"].attrs["long_name"] = "spherical-harmonic (or zonal) wavenumber"
    out["lead_time"].attrs = {"standard_name": "forecast_period", "long_name": "lead time"}
    out["model"].attrs = {"long_name": "forecast model or baseline"}
    out["region"].attrs = {"long_name": "region"}
    now = dt.datetime.now(dt.UTC)
    out.attrs = {
        "Conventions": CONVENTIONS,
        **scores.attrs,
        "channels": " ".join(channels),
        "history": f"{now:%Y-%m-%dT%H:%M:%SZ} forecast {__version__}: forecast score",
    }
    return out


def _encoding(ds: xr.Dataset) -> dict[str, dict]:
    encoding: dict[str, dict] = {
        "lead_time": {"units": "hours", "dtype": "int32"},
        **{label: {"dtype": "S1"} for label in LABELS},
    }
    for name, variable in ds.variables.items():
        if variable.dtype.kind == "f":
            is_coordinate = name in ds.coords
            encoding[str(name)] = (
                {"_FillValue": None} if is_coordinate else {"zlib": True, "complevel": 4}
            )
    return encoding


def _label_coordinates(path: Path, ds: xr.Dataset) -> None:
    """Name the labels in each variable's ``coordinates``; drop ``_Encoding`` (Iris reads bytes)."""
    with netCDF4.Dataset(path, "a") as nc:
        for label in LABELS:
            if "_Encoding" in nc[label].ncattrs():
                nc[label].delncattr("_Encoding")
        for name in ds.data_vars:
            labels = [label for label in LABELS if label in ds[name].dims]
            if labels:
                nc[str(name)].setncattr("coordinates", " ".join(labels))


def write_scores(scores: xr.Dataset, path: str | Path) -> Path:
    """Write the scores NetCDF (:func:`to_cf`) atomically (temporary name, then ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cf = to_cf(scores)

    def write(temporary: Path) -> None:
        cf.to_netcdf(temporary, encoding=_encoding(cf), format="NETCDF4")
        _label_coordinates(temporary, cf)

    return atomic_write(path, write)


def _decode_labels(ds: xr.Dataset) -> xr.Dataset:
    decoded = {
        label: [v.decode() if isinstance(v, bytes) else str(v) for v in ds[label].values]
        for label in LABELS
        if label in ds.coords
    }
    return ds.assign_coords({k: (k, v, ds[k].attrs) for k, v in decoded.items()})


def from_cf(ds: xr.Dataset) -> xr.Dataset:
    """A scores file (:func:`to_cf`) back in the layout of ``score_forecast``."""
    ds = _decode_labels(ds)
    channels = str(ds.attrs.get("channels", "")).split()
    out = xr.Dataset(coords={k: ds[k] for k in ("model", "lead_time", "region")})
    for name in [*METRICS, *PER_CHANNEL]:
        parts = [f"{name}_{c}" for c in channels]
        if not parts or any(p not in ds for p in parts):
            continue
        # the first channel's array with the channel dim in front, holding every channel's values
        # (a DataArray per part and xr.concat cost seconds for 73 channels)
        values = np.stack([ds.variables[p].values for p in parts])
        stacked = ds[parts[0]].drop_attrs().expand_dims(channel=len(parts)).copy(data=values)
        stacked = stacked.assign_coords(channel=channels)
        out[name] = stacked.transpose("model", ...) if "model" in stacked.dims else stacked
        attrs = ds[parts[0]].attrs
        out[name].attrs = {"long_name": str(attrs.get("long_name", name)).rsplit(": ", 1)[0]}
        if name in METRICS and METRICS[name].units != "data":
            out[name].attrs["units"] = METRICS[name].units
    out["n_init"] = ds["n_init"]
    # every metric in the channel's units carries them; rmse is always there
    out["channel_units"] = (
        "channel",
        [str(ds[f"rmse_{c}"].attrs.get("units", "")) for c in channels],
    )
    out["region_bounds"] = (
        ("region", "bound"),
        np.stack([ds[f"region_{b}"].values for b in _BOUNDS], axis=1),
    )
    out = out.assign_coords(bound=list(_BOUNDS))
    out.attrs = {
        k: v for k, v in ds.attrs.items() if k not in ("Conventions", "channels", "history")
    }
    return out


def open_scores(path: str | Path) -> xr.Dataset:
    """Read a scores file written by ``forecast score`` into the layout of ``score_forecast``."""
    with xr.open_dataset(path, decode_timedelta=True) as ds:
        return from_cf(ds.load())
