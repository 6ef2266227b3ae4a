"""Built-in ERA5-style synthetic data: the source of the demo and the tests.

:func:`synthesize` runs a forced shallow-water model
(:mod:`pipelines.synthetic_dynamics`), derives ERA5 variables from it
(:mod:`pipelines.synthetic_fields`) and writes NetCDF files laid out as the
Copernicus Climate Data Store delivers ERA5 today:

- one file per month, named ``era5_synthetic_YYYY-MM.nc``;
- dims ``valid_time`` (CF-encoded int64 ``seconds since 1970-01-01``,
  calendar ``proleptic_gregorian`` for the standard calendar or the cftime
  calendar's name), ``pressure_level`` (hPa, 850 then 500), ``latitude``
  (degrees_north, 90 -> -90) and ``longitude`` (degrees_east, 0 -> 360);
- scalar coordinate ``number`` and per-time ``expver`` as in CDS files;
- ERA5 short names: ``z, t, u, v`` on pressure levels; ``t2m, u10, v10,
  msl`` on single levels, with ERA5 units, ``long_name``,
  ``standard_name`` and ``GRIB_*`` attributes;
- float32, or int16 packed with ``scale_factor``/``add_offset`` chosen from
  each variable's range in the file (``_FillValue`` -32767);
- global attributes that label the data as synthetic (``synthetic: "true"``,
  the seed, the generator).

The same arguments (seed, grid, start, step, calendar, spin-up) give
bit-identical files.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from torch_harmonics import InverseRealSHT, InverseRealVectorSHT

from forecast import __version__
from forecast.channels import channel_info
from forecast.errors import CalendarError, ConfigError, GridError
from forecast.files import atomic_write
from forecast.grid import Grid
from forecast.time import (
    canonical_calendar,
    format_time,
    fraction_of_day_and_year,
    parse_step,
    parse_time,
    time_index,
    time_range,
)
from pipelines.synthetic_dynamics import GRAVITY, MEAN_DEPTH, ForcedShallowWater, config_for_output
from pipelines.synthetic_fields import (
    PRESSURE_LEVELS,
    PRESSURE_VARIABLES,
    SINGLE_VARIABLES,
    derive_fields,
)
from pipelines.synthetic_forcing import sst_field

#: Calendars the generator writes.
SUPPORTED_CALENDARS = ("standard", "noleap", "360_day")
FILE_PATTERN = "era5_synthetic_{year:04d}-{month:02d}.nc"

#: ERA5 GRIB parameter ids and level types of the variables written.
_GRIB = {
    "z": (129, "isobaricInhPa", "z500"),
    "t": (130, "isobaricInhPa", "t500"),
    "u": (131, "isobaricInhPa", "u500"),
    "v": (132, "isobaricInhPa", "v500"),
    "t2m": (167, "heightAboveGround", "t2m"),
    "u10": (165, "heightAboveGround", "u10m"),
    "v10": (166, "heightAboveGround", "v10m"),
    "msl": (151, "meanSea", "msl"),
    "sst": (34, "surface", "sst"),
}
#: GRIB short names where they differ from the CDS NetCDF names.
_GRIB_SHORT_NAMES = {"t2m": "2t", "u10": "10u", "v10": "10v"}


def variable_attrs(name: str, grid: Grid) -> dict[str, str | int]:
    """ERA5/CDS attributes of a variable (``"z"``, ``"t2m"`` ...)."""
    param_id, level_type, channel_id = _GRIB[name]
    info = channel_info(channel_id)
    long_name = info.long_name.split(" at ")[0]
    attrs: dict[str, str | int] = {
        "GRIB_paramId": param_id,
        "GRIB_dataType": "an",
        "GRIB_gridType": "regular_gg" if grid.kind == "legendre-gauss" else "regular_ll",
        "GRIB_typeOfLevel": level_type,
        "GRIB_stepType": "instant",
        "GRIB_shortName": _GRIB_SHORT_NAMES.get(name, name),
        "GRIB_name": long_name,
        "GRIB_units": info.units,
        "long_name": long_name,
        "units": info.units,
    }
    if info.standard_name:
        attrs["standard_name"] = info.standard_name
    return attrs


def output_lmax(grid: Grid) -> int:
    """Largest spherical-harmonic degree a global grid resolves (torch-harmonics default)."""
    return (grid.nlat + 1) // 2 if grid.kind == "equiangular" else grid.nlat


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch on one thread (reproducible reductions), restoring the setting after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _shift(time, delta: dt.timedelta):
    if isinstance(time, np.datetime64):
        return time + np.timedelta64(delta)
    return time + delta


def _validate(grid: Grid, days: float, calendar: str, spinup_days: float) -> str:
    if not grid.is_global:
        raise GridError(
            f"synthetic data needs a global grid, got {grid.describe()}",
            hint="use --grid NLATxNLON (e.g. 64x128) or a resolution such as 1.0deg",
        )
    if not days > 0:
        raise ConfigError(f"--days must be positive, got {days}", hint="e.g. --days 30")
    if not spinup_days >= 0:
        raise ConfigError(f"spin-up must be zero or positive days, got {spinup_days}")
    try:
        name = canonical_calendar(calendar)
    except CalendarError:
        name = None
    if name not in SUPPORTED_CALENDARS:
        raise CalendarError(
            f"synthetic data cannot be written in calendar {calendar!r}",
            hint=f"use --calendar {'|'.join(SUPPORTED_CALENDARS)}",
        )
    return name


def synthesize(
    out_dir: str | Path,
    grid: Grid,
    start: str | np.datetime64 = "2020-01-01",
    days: float = 30,
    step: str | dt.timedelta = "6h",
    calendar: str = "standard",
    seed: int = 0,
    pack_int16: bool = False,
    progress: bool = True,
    spinup_days: float = 20.0,
    sst: bool = False,
) -> list[Path]:
    """Write synthetic ERA5-style NetCDF files, one per month.

    Parameters
    ----------
    out_dir : str or Path
        Directory for the files (created if missing). Files are named
        ``era5_synthetic_YYYY-MM.nc``; existing files of the same name are
        replaced.
    grid : Grid
        Global output grid (equiangular or legendre-gauss), e.g.
        ``Grid.parse("64x128")`` or ``Grid.parse("1.0deg")``.
    start : str or time
        First valid time, text (``"2020-01-01"``) or a time of the calendar.
    days : float
        Length of the period; times are ``start + k * step`` before
        ``start + days``.
    step : str or datetime.timedelta
        Time between fields (``"6h"``).
    calendar : str
        ``"standard"``, ``"noleap"`` or ``"360_day"``; the latter two are
        written with cftime and shape the seasonal cycle by their year length.
    seed : int
        Seed of the initial perturbation and of the stochastic stirring.
    pack_int16 : bool
        Pack variables as int16 with ``scale_factor``/``add_offset``.
    progress : bool
        Show a progress bar over simulated time (on stderr).
    spinup_days : float
        Days the model runs before ``start`` so that eddies are developed
        at the first time.
    sst : bool
        Also write ERA5's ``sst``, a slowly varying prescribed field
        (:func:`pipelines.synthetic_forcing.sst_field`, from ``seed``), for a
        forcing store (``forecast ingest --channels sst``).

    Returns
    -------
    list of Path
        The files written, in time order.

    Raises
    ------
    GridError, ConfigError, CalendarError
        For a regional grid, non-positive days, an unsupported calendar, or
        an unparsable start or step.
    """
    from tqdm.auto import tqdm

    calendar = _validate(grid, days, calendar, spinup_days)
    step = parse_step(step)
    start_time = parse_time(start, calendar) if isinstance(start, str) else start
    step_seconds = step.total_seconds()
    n_out = math.ceil(days * 86400.0 / step_seconds - 1e-9)
    n_spin = math.ceil(spinup_days * 86400.0 / step_seconds - 1e-9)
    first = _shift(start_time, -n_spin * step)
    all_times = time_range(first, _shift(start_time, (n_out - 1) * step), step, calendar)
    day_fraction, year_fraction = fraction_of_day_and_year(all_times)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    attrs = _global_attrs(grid, seed, step, calendar, spinup_days)

    written: list[Path] = []
    with _single_thread(), torch.no_grad():
        model = ForcedShallowWater(config_for_output(output_lmax(grid)), seed)
        lmax = model.lmax
        scalar_to_grid = InverseRealSHT(
            grid.nlat, grid.nlon, lmax=lmax, mmax=lmax, grid=grid.kind, csphase=False
        ).double()
        vector_to_grid = InverseRealVectorSHT(
            grid.nlat, grid.nlon, lmax=lmax, mmax=lmax, grid=grid.kind, csphase=False
        ).double()
        state = model.initial_state(float(year_fraction[0]))
        month_times: list = []
        month_fields: dict[str, list[np.ndarray]] = {}
        bar = tqdm(
            total=len(all_times) - 1,
            unit="step",
            desc="synth spin-up" if n_spin else "synth",
            disable=not progress,
        )
        for index, time in enumerate(all_times):
            if index >= n_spin:
                if month_times and _month(time) != _month(month_times[-1]):
                    written.append(
                        _write_month(
                            out_dir, month_times, month_fields, grid, calendar, attrs, pack_int16
                        )
                    )
                    month_times, month_fields = [], {}
                phi = scalar_to_grid(state[0]).numpy() - GRAVITY * MEAN_DEPTH
                wind = vector_to_grid(model.invlap * state[1:] / model.radius).numpy()
                fields = derive_fields(
                    phi,
                    wind[0],
                    wind[1],
                    grid.latitude,
                    grid.longitude,
                    float(day_fraction[index]),
                    float(year_fraction[index]),
                )
                if sst:
                    fields["sst"] = sst_field([time], grid, seed)[0].astype(np.float64)
                for name, values in fields.items():
                    month_fields.setdefault(name, []).append(values)
                month_times.append(time)
            if index + 1 < len(all_times):
                model.set_season(float(year_fraction[index]))
                # the stirring advances at every internal step of the solver
                state = model.advance(state, step_seconds)
                if not bool(torch.isfinite(state).all()):  # a numerical failure, not user input
                    raise RuntimeError(f"synthetic model became unstable at {format_time(time)}")
                bar.set_description("synth" if index + 1 >= n_spin else "synth spin-up")
                bar.set_postfix_str(format_time(all_times[index + 1]), refresh=False)
                bar.update(1)
        bar.close()
        written.append(
            _write_month(out_dir, month_times, month_fields, grid, calendar, attrs, pack_int16)
        )
    return written


def _month(time) -> tuple[int, int]:
    index = time_index([time])
    return int(index.year[0]), int(index.month[0])


def _global_attrs(
    grid: Grid, seed: int, step: dt.timedelta, calendar: str, spinup_days: float
) -> dict:
    return {
        "Conventions": "CF-1.7",
        "institution": "forecast project (synthetic data; not produced by ECMWF)",
        "title": "Synthetic ERA5-style reanalysis (not real data)",
        "source": (
            "forced shallow-water model (torch_harmonics.examples.ShallowWaterSolver with relaxation "
            "towards seasonal jets, drag and stochastic stirring); other variables derived from it"
        ),
        "synthetic": "true",
        "synthetic_seed": int(seed),
        "synthetic_generator": f"forecast synth {__version__}",
        "synthetic_step_hours": step.total_seconds() / 3600.0,
        "synthetic_spinup_days": float(spinup_days),
        "synthetic_calendar": calendar,
        **grid.to_attrs(),
    }


def _pack_encoding(values: np.ndarray) -> dict:
    """int16 encoding whose range covers ``values``: packed integers in [-32766, 32766]."""
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    scale = (high - low) / 65532.0 if high > low else 1.0
    return {
        "dtype": "int16",
        "scale_factor": scale,
        "add_offset": 0.5 * (high + low),
        "_FillValue": np.int16(-32767),
    }


def _write_month(
    out_dir: Path,
    times: list,
    fields: dict[str, list[np.ndarray]],
    grid: Grid,
    calendar: str,
    attrs: dict,
    pack_int16: bool,
) -> Path:
    """Write one month atomically (temporary name in the same directory, then rename)."""
    year, month = _month(times[0])
    path = out_dir / FILE_PATTERN.format(year=year, month=month)
    time_values = (
        np.asarray(times) if calendar != "standard" else np.asarray(times, dtype="datetime64[ns]")
    )
    coords = {
        "number": xr.Variable(
            (),
            np.int64(0),
            {
                "long_name": "ensemble member numerical id",
                "units": "1",
                "standard_name": "realization",
            },
        ),
        "valid_time": xr.Variable(
            "valid_time", time_values, {"long_name": "time", "standard_name": "time"}
        ),
        "pressure_level": xr.Variable(
            "pressure_level",
            np.asarray(PRESSURE_LEVELS),
            {
                "long_name": "pressure",
                "units": "hPa",
                "standard_name": "air_pressure",
                "positive": "down",
                "stored_direction": "decreasing",
            },
        ),
        "latitude": xr.Variable(
            "latitude",
            grid.latitude,
            {
                "long_name": "latitude",
                "units": "degrees_north",
                "standard_name": "latitude",
                "stored_direction": "decreasing",
            },
        ),
        "longitude": xr.Variable(
            "longitude",
            grid.longitude,
            {"long_name": "longitude", "units": "degrees_east", "standard_name": "longitude"},
        ),
        "expver": xr.Variable(
            "valid_time",
            np.asarray(["0001"] * len(times), dtype=object),
            {"long_name": "experiment version"},
        ),
    }
    data_vars = {}
    encoding: dict[str, dict] = {
        "valid_time": {
            "units": "seconds since 1970-01-01",
            "calendar": "proleptic_gregorian" if calendar == "standard" else calendar,
            "dtype": "int64",
        },
    }
    extra = tuple(name for name in ("sst",) if name in fields)
    for name in (*PRESSURE_VARIABLES, *SINGLE_VARIABLES, *extra):
        values = np.stack(fields.pop(name))  # frees the per-time arrays as it goes
        dims = (
            ("valid_time", "pressure_level", "latitude", "longitude")
            if name in PRESSURE_VARIABLES
            else ("valid_time", "latitude", "longitude")
        )
        data_vars[name] = xr.Variable(dims, values, variable_attrs(name, grid))
        encoding[name] = (
            _pack_encoding(values)
            if pack_int16
            else {"dtype": "float32", "_FillValue": np.float32(np.nan)}
        )
    dataset = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    return atomic_write(
        path,
        lambda temporary: dataset.to_netcdf(
            temporary, engine="netcdf4", format="NETCDF4", encoding=encoding
        ),
    )
