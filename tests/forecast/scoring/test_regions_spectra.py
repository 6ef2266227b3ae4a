"""Area weights and regions on both global grid kinds; power spectra."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.errors import ConfigError, GridError
from forecast.grid import Grid
from forecast.scoring.regions import REGIONS, Region, parse_region, region_weights
from forecast.scoring.spectra import power_spectrum


@pytest.mark.parametrize("kind", ["equiangular", "legendre-gauss"])
def test_area_weights_sum_correctly(kind):
    grid = Grid.from_kind(kind, 16 if kind == "legendre-gauss" else 17, 32)
    # unnormalised band areas integrate cos(lat) over [-90, 90]: exactly 2
    assert grid.cell_area_fractions().sum() == pytest.approx(2.0, abs=1e-12)
    assert grid.area_weights().mean() == pytest.approx(1.0, abs=1e-12)
    weights = region_weights(grid, [REGIONS[name] for name in REGIONS])
    assert np.allclose(weights.sum(("latitude", "longitude")), 1.0)
    # the tropics' share of the global weight is the fraction of their cells' bands
    areas = grid.cell_area_fractions()
    tropical = (grid.latitude >= -20) & (grid.latitude <= 20)
    share = (weights.sel(region="global") * (weights.sel(region="tropics") > 0)).sum()
    assert float(share) == pytest.approx(areas[tropical].sum() / 2.0, rel=1e-12)


def test_legendre_gauss_weights_are_close_to_quadrature_weights():
    grid = Grid.legendre_gauss(32, 64)
    gauss = np.polynomial.legendre.leggauss(32)[1]  # sums to 2
    # WeatherBench2's cell areas match the Gauss weights to 0.2% except at the polar caps (6%)
    assert np.allclose(grid.cell_area_fractions()[1:-1], gauss[1:-1], rtol=2e-3)
    assert np.allclose(grid.cell_area_fractions(), gauss, rtol=0.07)


def test_parse_region_names_and_boxes():
    assert parse_region("tropics") == REGIONS["tropics"]
    box = parse_region("europe=35,72,-15,45")
    assert (box.name, box.lat_min, box.lat_max, box.lon_min, box.lon_max) == (
        "europe",
        35.0,
        72.0,
        345.0,
        45.0,
    )
    grid = Grid.equiangular(19, 36)
    mask = box.mask(grid.latitude, grid.longitude)
    lons = grid.longitude[mask.any(axis=0)]
    assert set(np.round(lons)) == {0, 10, 20, 30, 40, 350}  # wraps through Greenwich
    with pytest.raises(ConfigError, match="unknown region 'mars'"):
        parse_region("mars")
    with pytest.raises(ConfigError, match="not an increasing range"):
        parse_region("x=50,10,0,10")


def test_empty_region_is_an_error():
    grid = Grid.equiangular(5, 8)
    with pytest.raises(GridError, match="contains no cell"):
        region_weights(grid, [Region("tiny", 10.0, 11.0, 1.0, 2.0)])


@pytest.mark.parametrize("kind", ["equiangular", "legendre-gauss"])
def test_sht_spectrum_of_a_single_harmonic(kind):
    grid = Grid.from_kind(kind, 16 if kind == "legendre-gauss" else 17, 32)
    lat = np.deg2rad(grid.latitude)[:, None]
    # P_2(sin lat) = (3 sin^2 - 1) / 2, a pure l = 2 field; its sphere mean square is 1/5
    field = np.broadcast_to(0.5 * (3 * np.sin(lat) ** 2 - 1), grid.shape)
    spectrum = power_spectrum(field[None], grid)[0]
    assert spectrum[2] == pytest.approx(0.2, rel=1e-6)
    assert np.delete(spectrum, 2).max() < 1e-10


def test_zonal_spectrum_on_a_regional_grid():
    grid = Grid("regional", np.linspace(60, 30, 7), np.arange(0, 40, 2.5))
    field = 2.0 + 3.0 * np.cos(2 * np.pi * 3 * np.arange(grid.nlon) / grid.nlon)[None, :] * np.ones(
        (grid.nlat, 1)
    )
    spectrum = power_spectrum(field, grid)
    assert spectrum[0] == pytest.approx(4.0)
    assert spectrum[3] == pytest.approx(4.5)  # mean square of 3 cos
    assert spectrum.sum() == pytest.approx((field**2).mean())


def test_default_regions_keep_only_those_a_limited_area_reaches() -> None:
    import numpy as np

    from forecast.grid import Grid
    from forecast.scoring.score import default_regions

    europe = Grid("regional", np.linspace(70.0, 35.0, 15), np.linspace(350.0, 390.0, 17))
    assert [r.name for r in default_regions(europe)] == ["global", "extratropics_north"]
    assert [r.name for r in default_regions(Grid.equiangular(17, 32))] == [
        "global",
        "tropics",
        "extratropics_north",
        "extratropics_south",
    ]
