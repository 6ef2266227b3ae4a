"""Channel ids, CF attributes, the source lexicon and unit conversions."""

from __future__ import annotations

import pytest

from forecast.channels import (
    STANDARD_GRAVITY,
    channel_info,
    lookup_source_variable,
    unit_conversion,
)
from forecast.errors import DataError


def test_pressure_level_and_single_level_ids():
    z = channel_info("z500")
    assert (z.level, z.base, z.units, z.standard_name) == (500, "z", "m**2 s**-2", "geopotential")
    assert z.long_name == "Geopotential at 500 hPa"
    assert channel_info("q1000").level == 1000
    t2m = channel_info("t2m")
    assert t2m.level is None and t2m.attrs() == {
        "long_name": "2 metre temperature",
        "units": "K",
        "standard_name": "air_temperature",
    }


@pytest.mark.parametrize("bad", ["x500", "z", "500", "Z500", "t2mm", "sst500", ""])
def test_unknown_ids_name_the_rules(bad):
    with pytest.raises(DataError, match=r"unknown channel id .*e\.g\. z500"):
        channel_info(bad)


def test_source_names_map_to_channel_ids():
    assert lookup_source_variable("2t", has_level=False) == "t2m"
    assert lookup_source_variable("10m_u_component_of_wind", has_level=False) == "u10m"
    assert lookup_source_variable("prmsl", has_level=False) == "msl"
    assert lookup_source_variable("not_a_variable", has_level=False) is None


@pytest.mark.parametrize(
    ("channel", "units", "value", "expected"),
    [("t850", "degC", 0.0, 273.15), ("t2m", "K", 280.0, 280.0), ("msl", "hPa", 1013.25, 101325.0),
     ("z500", "m", 5500.0, 5500.0 * STANDARD_GRAVITY), ("z500", "m**2 s**-2", 1.0, 1.0),
     ("q700", "g/kg", 5.0, 0.005), ("u10m", "m s-1", 3.0, 3.0), ("tcwv", "mm", 20.0, 20.0),
     ("t2m", None, 280.0, 280.0)],
)  # fmt: skip
def test_unit_conversions(channel, units, value, expected):
    scale, offset = unit_conversion(channel_info(channel), units)
    assert value * scale + offset == pytest.approx(expected)


def test_unconvertible_units_are_an_error():
    with pytest.raises(
        DataError, match=r"channel t2m: units 'm s\*\*-1' cannot be converted to 'K'"
    ):
        unit_conversion(channel_info("t2m"), "m s**-1")
    with pytest.raises(DataError, match="cannot be converted"):
        unit_conversion(channel_info("t850"), "m")  # only geopotential takes a height
