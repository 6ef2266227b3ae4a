"""Regridding: smooth fields survive a round trip; regional sources refuse to become global."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.errors import GridError
from forecast.grid import Grid
from forecast.regrid import Regridder, covers_globe
from tests.pipelines.sources_factory import smooth_field


def _field(grid: Grid) -> np.ndarray:
    return smooth_field(grid.latitude, grid.longitude, phase=0.7).astype(np.float32)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (Grid.equiangular(91, 180), Grid.legendre_gauss(48, 96)),
        (Grid.legendre_gauss(64, 128), Grid.equiangular(33, 64)),
    ],
)
def test_round_trip_of_a_smooth_field(source: Grid, target: Grid) -> None:
    there = Regridder(source, target)(_field(source)[None])
    np.testing.assert_allclose(there[0], _field(target), atol=2e-3)  # bilinear error ~ (spacing)^2
    back = Regridder(target, source)(there)
    # Back on the fine grid the error is set by the coarse spacing (~5.6 deg): stated tolerance 1.5e-2 of a unit field.
    assert np.abs(back[0] - _field(source)).max() < 1.5e-2


def test_global_grid_without_poles_uses_padded_interpolation() -> None:
    lat = np.linspace(87.1875, -87.1875, 32)  # WeatherBench2's 64x32 equiangular grid, no poles
    source = Grid("regional", lat, np.arange(64) * 5.625)
    assert covers_globe(source)
    target = Grid.equiangular(33, 64)
    regridder = Regridder(source, target)
    assert regridder.method.startswith("xarray interp")
    out = regridder(_field(source)[None])[0]
    assert np.abs(out - _field(target)).max() < 1.5e-2
    # Poles are single values: the ring mean of the nearest latitude.
    assert np.ptp(out[0]) == 0.0 and np.ptp(out[-1]) == 0.0


def test_identity_when_grids_match() -> None:
    grid = Grid.equiangular(17, 32)
    values = np.random.default_rng(0).standard_normal((2, 17, 32)).astype(np.float32)
    regridder = Regridder(grid, Grid.equiangular(17, 32))
    assert regridder.identity and regridder(values) is values


def test_regional_source_cannot_become_global() -> None:
    region = Grid("regional", np.linspace(75, 15, 25), np.linspace(200, 330, 53))
    with pytest.raises(
        GridError,
        match=r"regional .* cannot become the global grid equiangular 181x360; keep the regional grid \(ingest: --grid source",
    ):
        Regridder(region, Grid.parse("1.0deg"), path="air.zarr")
