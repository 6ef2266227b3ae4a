"""ERA5 variables derived from the shallow-water state of the synthetic generator.

The shallow-water layer stands for the 500 hPa surface: its geopotential
anomaly ``phi`` and winds ``u, v`` are ``z``, ``u``, ``v`` at 500 hPa. The
other variables are derived consistently (see docs/synthetic.md):

- 850 hPa: geopotential anomaly and winds are half those at 500 hPa
  (equivalent-barotropic structure, so 850 hPa winds stay geostrophic);
- temperature: the layer-mean temperature of 850-500 hPa from the
  hypsometric equation, ``z500 - z850 = R_d * T_mean * ln(850/500)``, and a
  fixed lapse rate (6.5 K/km) for the level temperatures;
- ``msl``: a zonal climatology (subtropical highs, subpolar lows, moving
  with the season) plus ``rho * 0.6 * phi_eddy``, the surface imprint of the
  eddies, plus a semidiurnal tide;
- ``u10, v10``: a zonal climatology (trades, westerlies) plus the eddy winds
  reduced by friction (x0.42) and turned 20 degrees towards low pressure;
- ``t2m``: a latitude profile with a seasonal cycle (stronger in the north)
  plus 0.8 x the 850 hPa temperature eddies plus a diurnal cycle that peaks
  at 14:30 local solar time with an amplitude of 1.6-4 K.
"""

from __future__ import annotations

import math

import numpy as np

from pipelines.synthetic_dynamics import season_of

#: Pressure levels written, in hPa, in the CDS order (decreasing pressure).
PRESSURE_LEVELS = (850.0, 500.0)
#: Global-mean geopotential at 500 and 850 hPa (m**2 s**-2).
Z500_MEAN = 5.55e4
Z850_MEAN = 1.43e4
#: Fraction of the 500 hPa anomaly and wind found at 850 hPa.
LOWER_FRACTION = 0.5
#: Gas constant of dry air (J kg**-1 K**-1) and standard gravity (m s**-2).
R_DRY = 287.05
GRAVITY = 9.80665
LAPSE_RATE = 6.5e-3
#: Near-surface air density (kg m**-3) and the fraction of 500 hPa eddies felt at the surface.
SURFACE_DENSITY = 1.25
SURFACE_FRACTION = 0.6
#: Reduction of the surface eddy wind by friction and its turning towards low pressure.
FRICTION_FACTOR = 0.7
TURNING_ANGLE = math.radians(20.0)
#: Hour of local solar time at which t2m peaks.
T2M_PEAK_HOUR = 14.5

PRESSURE_VARIABLES = ("z", "t", "u", "v")
SINGLE_VARIABLES = ("t2m", "u10", "v10", "msl")


def _bump(lat: np.ndarray, centre: float | np.ndarray, width: float) -> np.ndarray:
    return np.exp(-(((lat - centre) / width) ** 2))


def derive_fields(
    phi: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    day_fraction: float,
    year_fraction: float,
) -> dict[str, np.ndarray]:
    """All synthetic ERA5 variables at one time.

    Parameters
    ----------
    phi : numpy.ndarray
        Geopotential anomaly of the shallow-water layer (m**2 s**-2), shape
        ``(nlat, nlon)``, latitude descending.
    u, v : numpy.ndarray
        Eastward and northward wind of the layer (m s**-1), same shape.
    latitude, longitude : numpy.ndarray
        Coordinates in degrees, shapes ``(nlat,)`` and ``(nlon,)``.
    day_fraction, year_fraction : float
        Time of day (UTC) and of year as fractions in [0, 1).

    Returns
    -------
    dict of str to numpy.ndarray
        ``z, t, u, v`` of shape ``(level, nlat, nlon)`` for
        :data:`PRESSURE_LEVELS`; ``t2m, u10, v10, msl`` of shape
        ``(nlat, nlon)``; float32, ERA5 units.
    """
    lat = latitude.reshape(-1, 1)
    lat_rad = np.deg2rad(lat)
    lon = longitude.reshape(1, -1)
    season = season_of(year_fraction)  # +1 in northern winter
    winterness = np.where(lat >= 0, season, -season)  # +1 in the local winter
    hemisphere = np.where(lat >= 0, 1.0, -1.0)
    solar_hour = (24.0 * day_fraction + lon / 15.0) % 24.0
    declination = math.radians(23.44) * math.sin(2.0 * math.pi * (year_fraction - 0.218))

    # -- pressure levels ---------------------------------------------------------------
    z500 = Z500_MEAN + phi
    z850 = Z850_MEAN + LOWER_FRACTION * phi
    layer_temperature = (z500 - z850) / (R_DRY * math.log(850.0 / 500.0))
    half_depth = 0.5 * (z500 - z850) / GRAVITY  # m
    t850 = layer_temperature + LAPSE_RATE * half_depth
    t500 = layer_temperature - LAPSE_RATE * half_depth

    # -- eddies (departures from the zonal mean) --------------------------------------
    phi_eddy = phi - phi.mean(axis=1, keepdims=True)
    u_eddy = u - u.mean(axis=1, keepdims=True)
    v_eddy = v - v.mean(axis=1, keepdims=True)
    t850_eddy = t850 - t850.mean(axis=1, keepdims=True)

    # -- mean sea level pressure (Pa) -------------------------------------------------
    abs_lat = np.abs(lat)
    msl = (
        101325.0
        + 900.0 * _bump(abs_lat, 32.0 - 3.0 * winterness, 12.0)
        - 1500.0 * _bump(abs_lat, 62.0 - 2.0 * winterness, 10.0)
        - 500.0 * _bump(lat, 0.0, 12.0)
        + SURFACE_DENSITY * SURFACE_FRACTION * phi_eddy
        + 80.0 * np.cos(lat_rad) ** 2 * np.cos(2.0 * math.pi * (solar_hour - 10.0) / 12.0)
    )

    # -- 10 m wind (m s**-1) ----------------------------------------------------------
    scale = SURFACE_FRACTION * FRICTION_FACTOR
    angle = TURNING_ANGLE * hemisphere  # towards low pressure: left of the flow in the north
    u10 = scale * (u_eddy * np.cos(angle) - v_eddy * np.sin(angle))
    v10 = scale * (u_eddy * np.sin(angle) + v_eddy * np.cos(angle))
    u10 = (
        u10 + 7.0 * _bump(abs_lat, 48.0 - 3.0 * winterness, 11.0) - 6.0 * _bump(abs_lat, 13.0, 9.0)
    )
    v10 = v10 - 2.5 * hemisphere * _bump(abs_lat, 14.0, 9.0)

    # -- 2 m temperature (K) ----------------------------------------------------------
    sin2 = np.sin(lat_rad) ** 2
    seasonal_amplitude = 15.0 * sin2 * np.where(lat >= 0, 1.0, 0.5)
    diurnal_amplitude = 4.0 * (0.4 + 0.6 * np.clip(np.cos(lat_rad - declination), 0.0, None))
    t2m = (
        300.0
        - 48.0 * sin2
        - seasonal_amplitude * winterness
        + 0.8 * t850_eddy
        + diurnal_amplitude * np.cos(2.0 * math.pi * (solar_hour - T2M_PEAK_HOUR) / 24.0)
    )

    def f32(array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(array, phi.shape), dtype=np.float32)

    return {
        "z": np.stack([f32(z850), f32(z500)]),
        "t": np.stack([f32(t850), f32(t500)]),
        "u": np.stack([f32(LOWER_FRACTION * u), f32(u)]),
        "v": np.stack([f32(LOWER_FRACTION * v), f32(v)]),
        "t2m": f32(t2m),
        "u10": f32(u10),
        "v10": f32(v10),
        "msl": f32(msl),
    }
