"""The lexicon: source names and units to channel ids."""

from __future__ import annotations

import pytest

from forecast.channels import (
    STANDARD_GRAVITY,
    channel_info,
    lookup_source_variable,
    unit_conversion,
)
from forecast.errors import DataError
from pipelines.lexicon import canonical_order


@pytest.mark.parametrize(
    ("name", "has_level", "expected"),
    [
        ("z", True, "z"),
        ("geopotential", True, "z"),
        ("isobaricInhPa_t", True, None),
        ("u_component_of_wind", True, "u"),
        ("t2m", False, "t2m"),
        ("2t", False, "t2m"),
        ("2m_temperature", False, "t2m"),
        ("air", False, "t2m"),
        ("air", True, "t"),
        ("10m_u_component_of_wind", False, "u10m"),
        ("u10", False, "u10m"),
        ("mean_sea_level_pressure", False, "msl"),
        ("sea_ice_cover", False, None),
    ],
)
def test_source_names(name: str, has_level: bool, expected: str | None) -> None:
    assert lookup_source_variable(name, has_level) == expected


def test_channel_info_and_unknown_id() -> None:
    info = channel_info("z500")
    assert (info.level, info.units, info.standard_name) == (500, "m**2 s**-2", "geopotential")
    assert channel_info("u10m").attrs() == {
        "long_name": "10 metre U wind component",
        "units": "m s**-1",
        "standard_name": "eastward_wind",
    }
    with pytest.raises(DataError, match="unknown channel id 'x500'.*followed by the level in hPa"):
        channel_info("x500")


@pytest.mark.parametrize(
    ("channel", "units", "scale", "offset"),
    [
        ("msl", "hPa", 100.0, 0.0),
        ("msl", "Pa", 1.0, 0.0),
        ("t2m", "degC", 1.0, 273.15),
        ("t2m", "degK", 1.0, 0.0),
        ("z500", "m", STANDARD_GRAVITY, 0.0),
        ("z500", "m**2 s**-2", 1.0, 0.0),
        ("u850", "m/s", 1.0, 0.0),
        ("q700", "g/kg", 1e-3, 0.0),
    ],
)
def test_unit_conversions(channel: str, units: str, scale: float, offset: float) -> None:
    assert unit_conversion(channel_info(channel), units) == (scale, offset)


def test_inconvertible_units() -> None:
    with pytest.raises(DataError, match=r"channel t2m: units 'Pa' cannot be converted to 'K'"):
        unit_conversion(channel_info("t2m"), "Pa")


def test_canonical_order() -> None:
    assert canonical_order(["msl", "t2m", "u500", "z850", "z500", "t850"]) == [
        "z500",
        "z850",
        "t850",
        "u500",
        "t2m",
        "msl",
    ]
