"""The channels FourCastNet needs beyond the original lexicon: 100 m winds, relative humidity, tcwv, sp."""

from __future__ import annotations

import pytest

from forecast.channels import channel_info, lookup_source_variable
from forecast.importers.fourcastnet import CHANNELS_26
from forecast.importers.fourcastnet_v2 import CHANNELS
from pipelines.lexicon import canonical_order


@pytest.mark.parametrize(
    ("name", "has_level", "expected"),
    [
        ("u100", False, "u100m"),
        ("100u", False, "u100m"),
        ("100m_u_component_of_wind", False, "u100m"),
        ("v100", False, "v100m"),
        ("100v", False, "v100m"),
        ("100m_v_component_of_wind", False, "v100m"),
        ("r", True, "r"),
        ("relative_humidity", True, "r"),
        ("tcwv", False, "tcwv"),
        ("total_column_water_vapour", False, "tcwv"),
        ("sp", False, "sp"),
        ("surface_pressure", False, "sp"),
        ("u100", True, None),  # on levels, u100 is no single-level name
    ],
)
def test_source_names(name, has_level, expected):
    assert lookup_source_variable(name, has_level) == expected


def test_metadata_of_the_new_channels():
    assert channel_info("u100m").attrs() == {
        "long_name": "100 metre U wind component",
        "units": "m s**-1",
        "standard_name": "eastward_wind",
    }
    assert channel_info("v100m").base == "v100" and channel_info("v100m").level is None
    assert channel_info("r850").units == "%" and channel_info("r850").level == 850
    assert channel_info("u100").level == 100  # u at 100 hPa is not the 100 m wind


def test_every_fourcastnet_channel_is_known_and_ordered():
    for channel in {*CHANNELS, *CHANNELS_26}:
        channel_info(channel)
    ordered = canonical_order(list(CHANNELS))
    assert sorted(ordered) == sorted(CHANNELS)
    assert (
        ordered.index("u10m")
        < ordered.index("v10m")
        < ordered.index("u100m")
        < ordered.index("v100m")
    )
