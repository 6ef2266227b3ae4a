"""WeatherBench2's equiangular grids with poles: construction, names, weights and regridding shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.errors import GridError
from forecast.grid import WB2_GRIDS, Grid
from forecast.regrid import Regridder

# (our --grid, WeatherBench2's name, spacing in degrees)
CASES = [
    ("33x64", "64x33_equiangular_with_poles", 5.625),
    ("121x240", "240x121_equiangular_with_poles", 1.5),
    ("721x1440", "1440x721", 0.25),
]


@pytest.mark.parametrize(("spec", "name", "spacing"), CASES)
def test_grid_matches_weatherbench2_coordinates(spec, name, spacing):
    grid = Grid.parse(spec)
    nlat, nlon = WB2_GRIDS[name]
    assert grid.shape == (nlat, nlon) and grid.kind == "equiangular"
    # WeatherBench2's regridding.latitude_values / longitude_values: linspace with poles, from 0
    np.testing.assert_allclose(grid.latitude[::-1], np.linspace(-90, 90, nlat), atol=1e-9)
    np.testing.assert_allclose(grid.longitude, np.arange(nlon) * spacing, atol=1e-9)
    assert grid.wb2_name() == name
    assert Grid.parse(f"{spacing}deg").same_as(grid)
    assert Grid.from_wb2_name(name).same_as(grid)
    assert Grid.from_wb2_name(f"{name}_conservative").same_as(grid)
    # recognised from WeatherBench2's ascending coordinates once flipped, as ingest does
    assert Grid.from_coords(np.linspace(90, -90, nlat), np.arange(nlon) * spacing).same_as(grid)


@pytest.mark.parametrize(("spec", "name", "spacing"), CASES)
def test_area_weights_are_weatherbench2s(spec, name, spacing):
    grid = Grid.parse(spec)
    lat = np.deg2rad(grid.latitude[::-1])  # WeatherBench2 works south to north
    edges = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.diff(np.sin(edges))
    np.testing.assert_allclose(grid.area_weights()[::-1], area / area.mean(), rtol=1e-12)


def test_names_in_weatherbench2_order_are_refused():
    with pytest.raises(GridError, match="more latitudes than longitudes.*33x64"):
        Grid.parse("64x33")
    with pytest.raises(GridError, match="64x32_equiangular has no poles"):
        Grid.from_wb2_name("64x32_equiangular_conservative")
    assert Grid.parse("32x64").wb2_name() is None  # no poles-and-33 match
    assert Grid.legendre_gauss(33, 64).wb2_name() is None


@pytest.mark.parametrize(
    ("source", "target"), [("721x1440", "33x64"), ("121x240", "33x64"), ("33x64", "121x240")]
)
def test_regridding_between_weatherbench2_grids_keeps_smooth_fields(source, target):
    src, dst = Grid.parse(source), Grid.parse(target)
    regridder = Regridder(src, dst, path="test")

    def field(grid):
        lat = np.deg2rad(grid.latitude)[:, None]
        lon = np.deg2rad(grid.longitude)[None, :]
        return np.cos(lat) * np.cos(lon) + 0.5 * np.sin(lat)

    out = regridder.regrid_tensor(torch.from_numpy(field(src)[None, None]).float())
    assert tuple(out.shape) == (1, 1, *dst.shape)
    spacing = max(180 / (src.nlat - 1), 180 / (dst.nlat - 1))
    error = np.abs(out[0, 0].numpy() - field(dst)).max()
    assert error < 0.5 * np.deg2rad(spacing) ** 2 + 1e-5  # second order in the coarser spacing
