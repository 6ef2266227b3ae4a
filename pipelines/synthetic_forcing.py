"""A synthetic sea-surface temperature: a slowly varying prescribed field for forcing stores.

:func:`sst_field` is what ``forecast synth --sst`` writes as ERA5's ``sst``
(so that ``forecast ingest --channels sst`` makes a forcing store of it) and
what tests use to make forcing stores directly. It is slow beside the
weather: a zonal profile whose warmest latitude follows the sun over the
calendar's year (the fraction of the year of each time, so noleap and
360_day years are exact), plus large-scale anomalies that drift eastward
over weeks and change phase over months. It has no diurnal cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from forecast.grid import Grid
from forecast.periods import calendar_time, seconds_between
from forecast.time import fraction_of_day_and_year, time_calendar

__all__ = ["SST_MEAN", "sst_field"]

#: Tropical maximum (K) of the zonal profile.
SST_MEAN = 300.0
#: Equator-to-pole drop (K) of the zonal profile.
_MERIDIONAL_DROP = 30.0
#: Latitude (degrees) the warmest band reaches at the solstices.
_SEASONAL_SHIFT = 8.0
#: Amplitude (K) of the drifting anomalies.
_ANOMALY = 1.5
#: Days for an anomaly to travel once round the globe.
_DRIFT_DAYS = 60.0


def sst_field(times: Sequence | np.ndarray, grid: Grid, seed: int = 0) -> np.ndarray:
    """An SST-like field at each of ``times``.

    Parameters
    ----------
    times : sequence of datetime64 or cftime
        Shape ``(time,)``; the seasonal phase follows their calendar.
    grid : Grid
        The grid of the field.
    seed : int
        Picks the anomalies' phases; the same seed and times give the same field.

    Returns
    -------
    numpy.ndarray
        ``(time, lat, lon)`` float32 in K, between about 268 and 302 K.
    """
    values = np.atleast_1d(np.asarray(times))
    _, year = fraction_of_day_and_year(values)
    # days since 2000-01-01 of the times' own calendar: the field at a time is that time's alone
    reference = calendar_time(time_calendar(values), 2000, 1, 1)
    days = np.asarray([seconds_between(reference, t) / 86400.0 for t in values], dtype=np.float64)
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0.0, 2.0 * np.pi, size=3)
    origin_days = rng.uniform(0.0, 365.0)  # a seed-dependent start of the slow phase
    lat = np.deg2rad(grid.latitude)[None, :, None]
    lon = np.deg2rad(grid.longitude)[None, None, :]
    season = -np.cos(2.0 * np.pi * np.asarray(year, dtype=np.float64))[:, None, None]
    centre = np.deg2rad(_SEASONAL_SHIFT) * season  # south in January, north in July
    profile = SST_MEAN - _MERIDIONAL_DROP * np.sin(np.clip(np.abs(lat - centre), 0, np.pi / 2)) ** 2
    t = (days + origin_days)[:, None, None]
    drift = 2.0 * np.pi * t / _DRIFT_DAYS
    slow = 2.0 * np.pi * t / 365.0
    anomaly = np.cos(lat) ** 2 * (
        np.cos(2 * lon - drift + phases[0]) * np.cos(slow + phases[1])
        + 0.5 * np.sin(3 * lon - 0.5 * drift + phases[2]) * np.sin(2 * lat)
    )
    return (profile + _ANOMALY * anomaly).astype(np.float32)
