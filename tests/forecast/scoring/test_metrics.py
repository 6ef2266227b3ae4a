"""Metrics on hand-computed cases and against independent implementations (scores, xskillscore)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from forecast.grid import Grid
from forecast.scoring import metrics
from forecast.scoring.kernels import fair_crps
from forecast.scoring.regions import REGIONS, region_weights

GRID = Grid.equiangular(9, 16)
DIMS = ("time", "lead_time", "member", "latitude", "longitude")


def _coords():
    return {"latitude": GRID.latitude, "longitude": GRID.longitude}


def _ensemble(shape=(3, 2, 5), seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    forecast = xr.DataArray(
        rng.normal(scale=scale, size=(*shape, *GRID.shape)), dims=DIMS, coords=_coords()
    )
    truth = xr.DataArray(
        rng.normal(size=(*shape[:2], *GRID.shape)), dims=DIMS[:2] + DIMS[3:], coords=_coords()
    )
    return forecast, truth


@pytest.fixture
def global_weights():
    return region_weights(GRID, [REGIONS["global"]])


def test_constant_error_gives_that_rmse_bias_mae(global_weights):
    _, truth = _ensemble()
    forecast = (truth + 2.5).expand_dims(member=1, axis=2)
    assert np.allclose(metrics.rmse(forecast, truth, global_weights), 2.5, atol=1e-12)
    assert np.allclose(metrics.bias(forecast, truth, global_weights), 2.5, atol=1e-12)
    assert np.allclose(metrics.mae(forecast, truth + 5.0, global_weights), 2.5, atol=1e-12)
    assert np.allclose(metrics.bias(forecast, truth + 5.0, global_weights), -2.5, atol=1e-12)


def test_rmse_is_sqrt_of_init_mean_of_mse(global_weights):
    # init 0 has error 1 everywhere, init 1 has error 3: RMSE = sqrt((1 + 9) / 2), not (1 + 3) / 2
    truth = xr.DataArray(
        np.zeros((2, 1, *GRID.shape)),
        dims=("time", "lead_time", "latitude", "longitude"),
        coords=_coords(),
    )
    forecast = truth.copy(data=np.stack([np.ones((1, *GRID.shape)), 3 * np.ones((1, *GRID.shape))]))
    assert float(metrics.rmse(forecast, truth, global_weights).squeeze()) == pytest.approx(
        np.sqrt(5.0), abs=1e-12
    )


def test_perfect_forecast_rmse_zero_acc_one(global_weights):
    _, truth = _ensemble()
    climatology = truth * 0.3 + 1.0
    assert np.allclose(metrics.rmse(truth, truth, global_weights), 0.0)
    assert np.allclose(metrics.acc(truth, truth, global_weights, climatology), 1.0, atol=1e-12)
    # a forecast of the negated anomaly has ACC -1
    opposite = 2 * climatology - truth
    assert np.allclose(metrics.acc(opposite, truth, global_weights, climatology), -1.0, atol=1e-12)


def test_area_weighting_of_a_latitude_dependent_error(global_weights):
    # error 1 north of the equator, 0 elsewhere: MSE = area fraction of the northern cells
    truth = xr.DataArray(
        np.zeros((1, 1, *GRID.shape)),
        dims=("time", "lead_time", "latitude", "longitude"),
        coords=_coords(),
    )
    error = np.where(GRID.latitude[:, None] > 0, 1.0, 0.0) * np.ones(GRID.shape)
    forecast = truth + error
    areas = GRID.cell_area_fractions()
    expected = areas[GRID.latitude > 0].sum() / areas.sum()
    assert float(metrics.mae(forecast, truth, global_weights).squeeze()) == pytest.approx(
        expected, rel=1e-12
    )
    assert float(metrics.rmse(forecast, truth, global_weights).squeeze()) == pytest.approx(
        np.sqrt(expected), rel=1e-12
    )


def test_crps_of_one_member_is_mae(global_weights):
    forecast, truth = _ensemble(shape=(3, 2, 1))
    crps = metrics.crps(forecast, truth, global_weights)
    mae = metrics.mae(forecast, truth, global_weights)
    assert np.allclose(crps, mae, rtol=1e-12)
    assert float(crps.mean()) > 0.5


def test_fair_crps_pointwise_matches_the_double_sum():
    rng = np.random.default_rng(3)
    members = rng.normal(size=(7, 50))
    truth = rng.normal(size=50)
    brute = np.abs(members - truth).mean(0) - np.abs(members[:, None] - members[None]).sum(
        (0, 1)
    ) / (2 * 7 * 6)
    assert np.allclose(fair_crps(members, truth), brute, atol=1e-13)


def test_crps_matches_scores_fair_crps(global_weights):
    import scores

    forecast, truth = _ensemble(shape=(4, 3, 11), seed=5, scale=1.3)
    ours = metrics.crps(forecast, truth, global_weights).sel(region="global")
    weights = xr.DataArray(GRID.area_weights(), dims="latitude", coords={"latitude": GRID.latitude})
    reference = scores.probability.crps_for_ensemble(
        forecast, truth, "member", method="fair", preserve_dims=["lead_time"], weights=weights
    )
    assert np.allclose(ours.values, reference.values, rtol=0, atol=1e-6)
    assert np.abs(ours.values - reference.values).max() < 1e-12


def test_crps_relates_to_xskillscore_ecdf_crps(global_weights):
    import xskillscore as xs

    # xskillscore's crps_ensemble is the (biased) ecdf CRPS: skill - sum|xi-xj| / (2 M^2);
    # fair = ecdf - spread_term * (1 / (M - 1)) ... checked pointwise with one init and lead
    forecast, truth = _ensemble(shape=(1, 1, 6), seed=9)
    m = 6
    ecdf = xs.crps_ensemble(truth, forecast, member_dim="member", dim=[])
    members = forecast.values[0, 0]
    y = truth.values[0, 0]
    skill = np.abs(members - y).mean(0)
    pair_term = skill - ecdf.values[0, 0]  # = sum|xi - xj| / (2 M^2)
    fair = skill - pair_term * m / (m - 1)
    assert np.allclose(fair_crps(members, y), fair, atol=1e-6)


def test_spread_and_ssr_match_xskillscore(global_weights):
    import xskillscore as xs

    forecast, truth = _ensemble(shape=(5, 2, 8), seed=11)
    weights = xr.DataArray(GRID.area_weights(), dims="latitude", coords={"latitude": GRID.latitude})
    weights2d = weights.broadcast_like(truth.isel(time=0, lead_time=0))
    m = forecast.sizes["member"]
    ensemble_mean = forecast.mean("member")
    mse = xs.mse(ensemble_mean, truth, dim=["latitude", "longitude"], weights=weights2d).mean(
        "time"
    )
    variance = (
        xs.mse(
            forecast,
            ensemble_mean.broadcast_like(forecast),
            dim=["member", "latitude", "longitude"],
            weights=weights2d.broadcast_like(forecast.isel(time=0, lead_time=0)),
        )
        * m
        / (m - 1)
    ).mean("time")
    expected_spread = np.sqrt(variance)
    expected_ssr = np.sqrt((m + 1) / m) * expected_spread / np.sqrt(mse)
    ours_spread = metrics.spread(forecast, truth, global_weights).sel(region="global")
    ours_ssr = metrics.ssr(forecast, truth, global_weights).sel(region="global")
    assert np.allclose(ours_spread, expected_spread, atol=1e-6)
    assert np.allclose(ours_ssr, expected_ssr, atol=1e-6)


def test_ssr_near_one_for_a_reliable_ensemble(global_weights):
    # truth and members drawn from the same distribution: SSR -> 1 (with the finite-size correction)
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(40, 1, 5, *GRID.shape))
    forecast = xr.DataArray(samples[:, :, :4], dims=DIMS, coords=_coords())
    truth = xr.DataArray(samples[:, :, 4], dims=DIMS[:2] + DIMS[3:], coords=_coords())
    value = float(metrics.ssr(forecast, truth, global_weights).squeeze())
    assert value == pytest.approx(1.0, abs=0.03)


def test_rank_histogram_hand_cases(global_weights):
    forecast, truth = _ensemble(shape=(2, 1, 4))
    above = forecast.max("member") + 1.0
    histogram = metrics.rank_histogram(forecast, above, global_weights).squeeze()
    assert histogram.values.tolist() == pytest.approx([0, 0, 0, 0, 1])
    below = forecast.min("member") - 1.0
    assert metrics.rank_histogram(forecast, below, global_weights).squeeze().values[
        0
    ] == pytest.approx(1.0)
    random = metrics.rank_histogram(forecast, truth, global_weights)
    assert np.allclose(random.sum("rank"), 1.0)


def test_metrics_are_lazy_with_dask(global_weights):
    forecast, truth = _ensemble()
    lazy_forecast = forecast.chunk({"time": 1, "lead_time": 1, "member": 2})
    lazy_truth = truth.chunk({"time": 1, "lead_time": 1})
    result = metrics.crps(lazy_forecast, lazy_truth, global_weights)
    assert isinstance(result.data, da.Array)
    assert np.allclose(
        result.values, metrics.crps(forecast, truth, global_weights).values, atol=1e-12
    )


def test_registry_holds_every_metric_by_name():
    assert list(metrics.METRICS) == ["rmse", "bias", "mae", "acc", "spread", "ssr", "crps"]
    assert all(metric.units in ("data", "1") for metric in metrics.METRICS.values())
