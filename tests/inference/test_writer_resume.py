"""A Zarr forecast resumes only into an output of the same shape and variables."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from forecast.errors import DataError
from forecast.grid import Grid
from forecast.time import parse_time
from inference.writers import forecast_template
from inference.writers.zarr import ZarrWriter

GRID = Grid.equiangular(3, 4)


def _template(channels, steps):
    init = np.asarray([parse_time("2020-01-01T00", "standard")])
    return forecast_template(
        channels, GRID, init, steps, dt.timedelta(hours=6), 2, "standard", {"model": "test"}
    )


def test_resume_refuses_another_shape_or_missing_variables(tmp_path):
    path = tmp_path / "fc.zarr"
    writer = ZarrWriter(path)
    writer.create(_template(["t2m", "z500"], 4))
    writer.close()
    ZarrWriter(path).resume(_template(["t2m", "z500"], 4))  # the same request: fine
    with pytest.raises(
        DataError, match=r"fc.zarr: existing output has 5 lead_time, this run writes 7"
    ):
        ZarrWriter(path).resume(_template(["t2m", "z500"], 6))
    with pytest.raises(DataError, match=r"fc.zarr: existing output lacks variable\(s\) u10m"):
        ZarrWriter(path).resume(_template(["t2m", "u10m", "z500"], 4))
