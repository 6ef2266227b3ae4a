"""Rank histogram ties: truth equal to members splits its weight evenly, as WeatherBench2's mean.

WeatherBench2 (``metrics.RankHistogram(break_ties_randomly=True)``) and
xskillscore (``rank_histogram(random_for_tied=True)``) break ties at random;
the even split here is the expectation of that choice, without its noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
import xskillscore

from forecast.grid import Grid
from forecast.scoring import metrics
from forecast.scoring.kernels import rank_histogram_weights
from forecast.scoring.regions import REGIONS, region_weights

GRID = Grid.equiangular(9, 16)
SPACE = ("latitude", "longitude")


def _arrays(forecast: np.ndarray, truth: np.ndarray):
    coords = {"latitude": GRID.latitude, "longitude": GRID.longitude}
    f = xr.DataArray(forecast, dims=("time", "member", *SPACE), coords=coords)
    t = xr.DataArray(truth, dims=("time", *SPACE), coords=coords)
    return f, t


@pytest.fixture
def weights():
    return region_weights(GRID, [REGIONS["global"]])


def test_truth_equal_to_every_member_is_uniform(weights):
    members = 4
    forecast = np.full((1, members, *GRID.shape), 3.0)
    f, t = _arrays(forecast, np.full((1, *GRID.shape), 3.0))
    histogram = metrics.rank_histogram(f, t, weights).squeeze()
    np.testing.assert_allclose(histogram.values, np.full(members + 1, 1 / (members + 1)))


def test_partial_tie_spreads_over_the_tied_ranks(weights):
    # members 1, 2, 2, 5 and truth 2: one below, two tied -> ranks 1, 2, 3 with 1/3 each
    forecast = np.broadcast_to(
        np.array([1.0, 2.0, 2.0, 5.0])[None, :, None, None], (1, 4, *GRID.shape)
    )
    f, t = _arrays(forecast.copy(), np.full((1, *GRID.shape), 2.0))
    histogram = metrics.rank_histogram(f, t, weights).squeeze()
    np.testing.assert_allclose(histogram.values, [0, 1 / 3, 1 / 3, 1 / 3, 0], atol=1e-12)


def test_untied_ranks_count_members_below():
    ordered = np.sort(np.random.default_rng(0).normal(size=(3, 5, 7)), axis=1)
    truth = np.random.default_rng(1).normal(size=(3, 7))
    cells = np.full((7, 1), 1 / 7)
    histogram = rank_histogram_weights(ordered, truth, cells)[..., 0]
    below = (ordered < truth[:, None, :]).sum(axis=1)
    expected = np.stack([(below == r).mean(axis=1) for r in range(6)], axis=1)
    np.testing.assert_allclose(histogram, expected, atol=1e-12)


def test_even_split_is_the_mean_of_random_tie_breaking(weights):
    """Bounded data with many exact ties: close to xskillscore's random tie-breaking."""
    rng = np.random.default_rng(5)
    members, times = 5, 400
    # a variable clipped at zero (precipitation-like): most members and the truth tie at 0
    forecast = np.clip(rng.normal(-0.5, 1.0, size=(times, members, *GRID.shape)), 0, None)
    truth = np.clip(rng.normal(-0.5, 1.0, size=(times, *GRID.shape)), 0, None)
    f, t = _arrays(forecast, truth)
    ours = metrics.rank_histogram(f, t, weights).squeeze().values
    # plain counting of members below would pile the ties into rank 0
    below = (forecast < truth[:, None]).sum(axis=1)
    w = weights.squeeze().values
    counting = np.array([(w * (below == r)).sum(axis=(-2, -1)).mean() for r in range(members + 1)])
    assert counting[0] > ours[0] + 0.2
    # xskillscore: random choice among tied ranks, then counts (unweighted); weight by area here
    ranks = []
    for seed in range(3):
        np.random.seed(seed)  # noqa: NPY002 (xskillscore draws from numpy's global generator)
        per_cell = xskillscore.rank_histogram(
            t.expand_dims(cell=[0]), f.expand_dims(cell=[0]), dim=["cell"], random_for_tied=True
        )
        ranks.append(per_cell.values)
    random = np.mean(ranks, axis=0)  # (time, lat, lon, rank) counts of one cell each
    reference = np.einsum("tijr,ij->r", random, w) / times
    np.testing.assert_allclose(ours, reference, atol=0.01)
    assert ours.sum() == pytest.approx(1.0)
