"""Grids: constructors, parsing, recognition from coordinates, area weights, equality, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.errors import GridError
from forecast.grid import Grid


def test_equiangular_includes_both_poles_and_starts_at_greenwich():
    grid = Grid.equiangular(5, 8)
    np.testing.assert_allclose(grid.latitude, [90.0, 45.0, 0.0, -45.0, -90.0], atol=1e-12)
    np.testing.assert_allclose(grid.longitude, np.arange(8) * 45.0, atol=1e-12)
    assert grid.shape == (5, 8) and grid.is_global and grid.describe() == "equiangular 5x8"


def test_legendre_gauss_latitudes_are_the_roots_of_the_legendre_polynomial():
    grid = Grid.legendre_gauss(6, 12)
    nodes, _ = np.polynomial.legendre.leggauss(6)  # ascending sin(latitude)
    np.testing.assert_allclose(np.sin(np.deg2rad(grid.latitude)), nodes[::-1], atol=1e-12)


@pytest.mark.parametrize("kind", ["equiangular", "legendre-gauss"])
@pytest.mark.parametrize("nlat", [5, 32, 181, 721])
def test_grid_nodes_are_torch_harmonics_own(kind: str, nlat: int) -> None:
    """The models' spherical transforms take torch-harmonics' nodes: ours (computed without torch)
    must be those, or Grid.from_coords would call a torch-harmonics grid regional."""
    from torch_harmonics.quadrature import precompute_latitudes, precompute_longitudes

    colatitude, _ = precompute_latitudes(nlat, grid=kind)
    grid = getattr(Grid, kind.replace("-", "_"))(nlat, 2 * nlat)
    np.testing.assert_allclose(
        grid.latitude, 90.0 - np.rad2deg(colatitude.double().numpy()), rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(
        grid.longitude, np.rad2deg(precompute_longitudes(2 * nlat).double().numpy()), atol=1e-12
    )
    assert Grid.from_coords(grid.latitude, grid.longitude).kind == kind


@pytest.mark.parametrize(
    ("spec", "shape", "kind"),
    [("32x64", (32, 64), "equiangular"), ("1.0deg", (181, 360), "equiangular"),
     ("0.25deg", (721, 1440), "equiangular"), (" 5.625DEG ", (33, 64), "equiangular")],
)  # fmt: skip
def test_parse(spec, shape, kind):
    grid = Grid.parse(spec)
    assert grid.shape == shape and grid.kind == kind
    assert Grid.parse("8x16", kind="legendre-gauss").kind == "legendre-gauss"


@pytest.mark.parametrize(
    ("spec", "message"),
    [("32by64", "cannot parse grid '32by64'"), ("0.7deg", "does not divide 180 and 360"),
     ("0deg", r"resolution '0deg' does not divide"), ("0.0deg", "does not divide")],
)  # fmt: skip
def test_parse_errors(spec, message):
    with pytest.raises(GridError, match=message):
        Grid.parse(spec)


def test_invalid_coordinates_are_refused():
    with pytest.raises(GridError, match="strictly descending"):
        Grid("regional", np.array([10.0, 20.0]), np.array([0.0, 1.0]))
    with pytest.raises(GridError, match="strictly ascending"):
        Grid("regional", np.array([20.0, 10.0]), np.array([1.0, 0.0]))
    with pytest.raises(GridError, match="at least two points"):
        Grid("regional", np.array([10.0]), np.array([0.0, 1.0]))
    with pytest.raises(GridError, match="unknown grid kind 'hexagonal'"):
        Grid("hexagonal", np.array([20.0, 10.0]), np.array([0.0, 1.0]))
    with pytest.raises(GridError, match="cannot build a 'regional' grid from a shape"):
        Grid.from_kind("regional", 4, 8)


def test_from_coords_recognises_global_kinds_and_falls_back_to_regional():
    for grid in (Grid.equiangular(9, 16), Grid.legendre_gauss(8, 16)):
        assert Grid.from_coords(grid.latitude + 1e-4, grid.longitude).kind == grid.kind
    # WeatherBench2-style equiangular grid without poles: another rectangle
    lat = np.linspace(87.1875, -87.1875, 32)
    assert Grid.from_coords(lat, np.arange(64) * 5.625).kind == "regional"


def test_area_weights_of_global_grids_integrate_cos_latitude():
    for grid in (Grid.equiangular(33, 64), Grid.legendre_gauss(32, 64)):
        fractions = grid.cell_area_fractions()
        assert fractions.sum() == pytest.approx(2.0, abs=1e-12)  # integral of cos over latitude
        weights = grid.area_weights()
        assert weights.mean() == pytest.approx(1.0) and weights[0] < weights[len(weights) // 2]
        np.testing.assert_allclose(weights, weights[::-1], atol=1e-12)  # symmetric
    # the band of the equator of a 3-point grid spans -45..45: sin(45) - sin(-45)
    assert Grid.equiangular(3, 4).cell_area_fractions()[1] == pytest.approx(np.sqrt(2.0))


def test_regional_area_weights_extend_half_a_spacing():
    grid = Grid("regional", np.array([50.0, 40.0, 30.0]), np.array([0.0, 10.0]))
    expected = np.sin(np.deg2rad([55.0, 45.0, 35.0])) - np.sin(np.deg2rad([45.0, 35.0, 25.0]))
    np.testing.assert_allclose(grid.cell_area_fractions(), expected)


def test_equality_hash_and_round_trip():
    a, b = Grid.equiangular(8, 16), Grid.equiangular(8, 16)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Grid.legendre_gauss(8, 16) and a != "equiangular 8x16"
    regional = Grid("regional", 55.0 - np.arange(4) * 0.5, 5.0 + np.arange(6) * 0.5)
    for grid in (a, Grid.legendre_gauss(8, 16), regional):
        assert Grid.from_dict(grid.to_dict()) == grid
    assert a.to_dict() == {"kind": "equiangular", "nlat": 8, "nlon": 16}
    assert a.to_attrs() == {"grid_kind": "equiangular", "grid_nlat": 8, "grid_nlon": 16}
