"""Channel ids, their units and CF names, and the lexicon of source names.

A *channel* is one 2-D field of the model state, named by a short id:
pressure-level variables are a base letter followed by the level in hPa
(``z500``, ``t850``, ``u250``); single-level variables have fixed ids
(``t2m``, ``u10m``, ``v10m``, ``u100m``, ``v100m``, ``msl``, ``sp``, ``tcwv``).

The lexicon maps the names under which sources deliver these fields (ERA5
short names from the CDS, GRIB/cfgrib names, WeatherBench2 long names, NCEP
names) to channel ids, and converts units to the canonical ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forecast.errors import DataError

#: Standard gravity (m s**-2), WMO value used by ECMWF to turn height into geopotential.
STANDARD_GRAVITY = 9.80665


@dataclass(frozen=True)
class ChannelInfo:
    """Metadata of one channel.

    Attributes
    ----------
    id : str
        Channel id, e.g. ``"z500"``.
    long_name : str
        Human-readable name, e.g. ``"Geopotential at 500 hPa"``.
    units : str
        Canonical units in ECMWF spelling, e.g. ``"m**2 s**-2"``.
    standard_name : str
        CF standard name ("" where CF has none).
    level : int or None
        Pressure level in hPa, or None for a single-level channel.
    base : str
        The ERA5 short name of the variable (``"z"``, ``"t2m"``, ...).
    """

    id: str
    long_name: str
    units: str
    standard_name: str
    level: int | None
    base: str

    def attrs(self) -> dict[str, str]:
        """CF attributes for a variable holding this channel."""
        out = {"long_name": self.long_name, "units": self.units}
        if self.standard_name:
            out["standard_name"] = self.standard_name
        return out


@dataclass(frozen=True)
class _Variable:
    base: str
    long_name: str
    units: str
    standard_name: str
    aliases: tuple[str, ...]


# Pressure-level variables: channel id is base + level in hPa.
_PRESSURE_LEVEL = {
    v.base: v
    for v in (
        _Variable("z", "Geopotential", "m**2 s**-2", "geopotential", ("z", "geopotential", "hgt")),
        _Variable("t", "Temperature", "K", "air_temperature", ("t", "temperature", "air", "ta")),
        _Variable(
            "u",
            "U component of wind",
            "m s**-1",
            "eastward_wind",
            ("u", "u_component_of_wind", "uwnd", "ua"),
        ),
        _Variable(
            "v",
            "V component of wind",
            "m s**-1",
            "northward_wind",
            ("v", "v_component_of_wind", "vwnd", "va"),
        ),
        _Variable(
            "q",
            "Specific humidity",
            "kg kg**-1",
            "specific_humidity",
            ("q", "specific_humidity", "shum", "hus"),
        ),
        _Variable(
            "r",
            "Relative humidity",
            "%",
            "relative_humidity",
            ("r", "relative_humidity", "rhum", "hur"),
        ),
        _Variable(
            "w",
            "Vertical velocity",
            "Pa s**-1",
            "lagrangian_tendency_of_air_pressure",
            ("w", "vertical_velocity", "omega", "wap"),
        ),
    )
}

# Single-level variables: channel id is fixed (the first alias is the ERA5 CDS short name).
_SINGLE_LEVEL = {
    "t2m": _Variable(
        "t2m",
        "2 metre temperature",
        "K",
        "air_temperature",
        ("t2m", "2t", "2m_temperature", "air", "tas"),
    ),
    "u10m": _Variable(
        "u10",
        "10 metre U wind component",
        "m s**-1",
        "eastward_wind",
        ("u10", "10u", "10m_u_component_of_wind", "uas"),
    ),
    "v10m": _Variable(
        "v10",
        "10 metre V wind component",
        "m s**-1",
        "northward_wind",
        ("v10", "10v", "10m_v_component_of_wind", "vas"),
    ),
    "u100m": _Variable(
        "u100",
        "100 metre U wind component",
        "m s**-1",
        "eastward_wind",
        ("u100", "100u", "100m_u_component_of_wind"),
    ),
    "v100m": _Variable(
        "v100",
        "100 metre V wind component",
        "m s**-1",
        "northward_wind",
        ("v100", "100v", "100m_v_component_of_wind"),
    ),
    "msl": _Variable(
        "msl",
        "Mean sea level pressure",
        "Pa",
        "air_pressure_at_mean_sea_level",
        ("msl", "mean_sea_level_pressure", "slp", "psl", "prmsl"),
    ),
    "sp": _Variable(
        "sp",
        "Surface pressure",
        "Pa",
        "surface_air_pressure",
        ("sp", "surface_pressure", "pres", "ps"),
    ),
    "tcwv": _Variable(
        "tcwv",
        "Total column vertically-integrated water vapour",
        "kg m**-2",
        "atmosphere_mass_content_of_water_vapor",
        ("tcwv", "total_column_water_vapour", "prw"),
    ),
    "d2m": _Variable(
        "d2m",
        "2 metre dewpoint temperature",
        "K",
        "dew_point_temperature",
        ("d2m", "2d", "2m_dewpoint_temperature"),
    ),
    "sst": _Variable(
        "sst",
        "Sea surface temperature",
        "K",
        "sea_surface_temperature",
        ("sst", "sea_surface_temperature"),
    ),
}

_LEVEL_ID = re.compile(r"^([a-z]+?)(\d+)$")


def channel_info(channel_id: str) -> ChannelInfo:
    """Return the metadata of a channel id.

    Parameters
    ----------
    channel_id : str
        ``"z500"``, ``"t2m"``, ...

    Raises
    ------
    DataError
        If the id is neither a known single-level id nor a known
        pressure-level base followed by a level in hPa.
    """
    if channel_id in _SINGLE_LEVEL:
        var = _SINGLE_LEVEL[channel_id]
        return ChannelInfo(channel_id, var.long_name, var.units, var.standard_name, None, var.base)
    match = _LEVEL_ID.match(channel_id)
    if match and match.group(1) in _PRESSURE_LEVEL:
        var = _PRESSURE_LEVEL[match.group(1)]
        level = int(match.group(2))
        return ChannelInfo(
            channel_id,
            f"{var.long_name} at {level} hPa",
            var.units,
            var.standard_name,
            level,
            var.base,
        )
    raise DataError(
        f"unknown channel id {channel_id!r}",
        hint=(
            f"use a single-level id ({', '.join(sorted(_SINGLE_LEVEL))}) or a pressure-level "
            f"variable ({', '.join(sorted(_PRESSURE_LEVEL))}) followed by the level in hPa, e.g. z500"
        ),
    )


def known_single_level_order() -> list[str]:
    """Ids of the single-level channels in the lexicon's order (t2m, u10m, v10m, msl, ...)."""
    return list(_SINGLE_LEVEL)


def lookup_source_variable(name: str, has_level: bool) -> str | None:
    """Map a source variable name to a channel base or single-level id.

    Parameters
    ----------
    name : str
        The variable name as the source spells it (``"z"``, ``"geopotential"``,
        ``"2m_temperature"``, ``"air"`` ...). Case-insensitive.
    has_level : bool
        Whether the variable has a pressure-level dimension. Some names
        (NCEP ``air``) mean temperature on levels and near-surface
        temperature without.

    Returns
    -------
    str or None
        For a variable on levels, the base letter (``"z"``); for a
        single-level variable, the channel id (``"t2m"``); None if unknown.
    """
    key = name.lower()
    if has_level:
        for base, var in _PRESSURE_LEVEL.items():
            if key in var.aliases:
                return base
        return None
    for channel_id, var in _SINGLE_LEVEL.items():
        if key in var.aliases:
            return channel_id
    return None


def _canonical_unit_spelling(units: str) -> str:
    text = units.strip().replace("**", "").replace("^", "")
    text = re.sub(r"\s+", " ", text)
    return text.lower()


# For each canonical unit: spellings (after _canonical_unit_spelling) and (scale, offset)
# with value_canonical = value * scale + offset.
_UNIT_CONVERSIONS: dict[str, dict[str, tuple[float, float]]] = {
    "m**2 s**-2": {"m2 s-2": (1.0, 0.0), "m2/s2": (1.0, 0.0), "m2s-2": (1.0, 0.0)},
    "K": {
        "k": (1.0, 0.0),
        "kelvin": (1.0, 0.0),
        "degk": (1.0, 0.0),
        "degc": (1.0, 273.15),
        "c": (1.0, 273.15),
        "celsius": (1.0, 273.15),
        "deg c": (1.0, 273.15),
    },
    "m s**-1": {"m s-1": (1.0, 0.0), "m/s": (1.0, 0.0), "ms-1": (1.0, 0.0)},
    "Pa": {
        "pa": (1.0, 0.0),
        "pascal": (1.0, 0.0),
        "hpa": (100.0, 0.0),
        "mbar": (100.0, 0.0),
        "millibars": (100.0, 0.0),
        "mb": (100.0, 0.0),
    },
    "kg kg**-1": {
        "kg kg-1": (1.0, 0.0),
        "kg/kg": (1.0, 0.0),
        "1": (1.0, 0.0),
        "g kg-1": (1e-3, 0.0),
        "g/kg": (1e-3, 0.0),
    },
    "%": {"%": (1.0, 0.0), "percent": (1.0, 0.0)},
    "Pa s**-1": {"pa s-1": (1.0, 0.0), "pa/s": (1.0, 0.0)},
    "kg m**-2": {"kg m-2": (1.0, 0.0), "kg/m2": (1.0, 0.0), "mm": (1.0, 0.0)},
}
# Geopotential delivered as geopotential height (NCEP hgt, some WB2 stores).
_GEOPOTENTIAL_HEIGHT = {"m": STANDARD_GRAVITY, "gpm": STANDARD_GRAVITY, "m1": STANDARD_GRAVITY}


def unit_conversion(channel: ChannelInfo, source_units: str | None) -> tuple[float, float]:
    """Scale and offset that turn a source's values into the channel's units.

    Parameters
    ----------
    channel : ChannelInfo
        The target channel.
    source_units : str or None
        The ``units`` attribute of the source variable. None or "" is taken
        to be the canonical unit (ERA5 files always carry units; tests do not).

    Returns
    -------
    (scale, offset) : tuple of float
        ``canonical = source * scale + offset``.

    Raises
    ------
    DataError
        If the units are not convertible to the channel's units.
    """
    if not source_units:
        return 1.0, 0.0
    spelled = _canonical_unit_spelling(source_units)
    table = _UNIT_CONVERSIONS[channel.units]
    if spelled in table:
        return table[spelled]
    if channel.units == "m**2 s**-2" and spelled in _GEOPOTENTIAL_HEIGHT:
        return _GEOPOTENTIAL_HEIGHT[spelled], 0.0
    raise DataError(
        f"channel {channel.id}: units {source_units!r} cannot be converted to {channel.units!r}",
        hint=f"provide the variable in one of: {', '.join(sorted(table))}",
    )
