"""The mergeable statistics partials against numpy in float64, however the data are cut and merged."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import statistics
from pipelines.statistics import (
    ClimatologyPlan,
    area_weights,
    bin_mean,
    last_step,
    merge_moments,
    moment_partial,
    tendency_partial,
    window_means,
)


def _reference(data: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean and population std per channel, every step weighted equally (float64)."""
    w = np.broadcast_to(weights[:, None], data.shape[-2:]).astype(np.float64)
    w = w / w.sum()
    x = data.astype(np.float64)
    mean = np.einsum("tcij,ij->c", x, w) / x.shape[0]
    var = np.einsum("tcij,ij->c", (x - mean[None, :, None, None]) ** 2, w) / x.shape[0]
    return mean, np.sqrt(var)


@pytest.mark.parametrize(
    "piece_bytes", [1, 3 * 5 * 8 * 4 * 2, 2**20]
)  # one step, two steps, everything per piece
@pytest.mark.parametrize("cuts", [[11], [4, 7], [1, 1, 3, 6]])
def test_moments_and_tendencies_match_numpy(
    monkeypatch: pytest.MonkeyPatch, piece_bytes: int, cuts: list[int]
) -> None:
    monkeypatch.setattr(statistics, "PIECE_BYTES", piece_bytes)
    rng = np.random.default_rng(3)
    nt, nc, nlat, nlon = 11, 3, 5, 8
    offsets = np.array([5.0e4, 280.0, -3.0])[
        None, :, None, None
    ]  # geopotential-, temperature- and wind-like
    data = (
        offsets
        + rng.normal(0, 1, (nt, nc, nlat, nlon)) * np.array([300.0, 5.0, 8.0])[None, :, None, None]
    ).astype(np.float32)
    row_weights = np.cos(np.deg2rad(np.linspace(80, -80, nlat)))
    weights = area_weights(row_weights, nlon)
    moments, tendencies = [], []
    start, previous = 0, None
    for size in cuts:
        block = data[start : start + size]
        moments.append(moment_partial(block, weights))
        tendencies.append(tendency_partial(block, previous, weights))
        previous = last_step(block)
        start += size
    total = merge_moments(*moments)
    mean, std = _reference(data, row_weights)
    np.testing.assert_allclose(total.mean, mean, rtol=1e-7)
    np.testing.assert_allclose(total.std, std, rtol=2e-6)
    _, diff_std = _reference(np.diff(data.astype(np.float64), axis=0), row_weights)
    diffs = merge_moments(*tendencies)
    np.testing.assert_allclose(diffs.std, diff_std, rtol=2e-6)
    assert total.count == nt and diffs.count == nt - 1
    # the merge is exact: any order and grouping of the partials gives the same moments
    regrouped = merge_moments(merge_moments(*moments[::-1][:1]), *moments[::-1][1:])
    np.testing.assert_allclose(regrouped.mean, total.mean, rtol=1e-13)
    np.testing.assert_allclose(regrouped.m2, total.m2, rtol=1e-12)


def test_a_steps_moments_do_not_depend_on_its_block() -> None:
    """Each field is centred on its own reference: the same step gives the same moments in any block, up to
    BLAS's blocking (a reference shared by the block, its first field's mean, gave differences of 3e-4 here)."""
    rng = np.random.default_rng(5)
    data = (5.5e4 + rng.normal(0, 300, (6, 2, 9, 18))).astype(np.float32)
    weights = area_weights(np.cos(np.deg2rad(np.linspace(80, -80, 9))), 18)
    whole = statistics.field_moments(data, weights)
    part = statistics.field_moments(data[3:], weights)
    np.testing.assert_allclose(whole[0][3:], part[0], rtol=1e-9)
    np.testing.assert_allclose(whole[1][3:], part[1], rtol=1e-6)


def test_merge_moments_is_chan_et_al() -> None:
    """Two groups of scalar 'fields' (one point each): the merged M2 is the pooled sum of squared departures."""
    a = np.array([1.0, 2.0, 4.0])
    b = np.array([10.0, 12.0])
    weights = np.ones(1, dtype=np.float32)
    parts = [moment_partial(x.reshape(-1, 1, 1, 1).astype(np.float32), weights) for x in (a, b)]
    merged = merge_moments(*parts)
    both = np.concatenate([a, b])
    assert merged.count == 5
    assert merged.mean[0] == pytest.approx(both.mean(), rel=1e-15)
    assert merged.m2[0] == pytest.approx(((both - both.mean()) ** 2).sum(), rel=1e-14)


def test_climatology_matches_a_brute_force_window_mean() -> None:
    """500 days of a 360_day calendar at 00 and 12 UTC with a 50-day gap: every (day, hour) with data
    gets the mean of all values within +-2 days (circular), others stay NaN."""
    import xarray as xr

    times = xr.date_range(
        "2001-11-20", periods=2 * 500, freq="12h", calendar="360_day", use_cftime=True
    )
    keep = np.ones(len(times), dtype=bool)
    keep[300:400] = False  # a gap: bins with two years, one, none
    times = np.asarray(times)[keep]
    rng = np.random.default_rng(4)
    field = (2, 3, 4)
    offsets = np.array([5.0e4, 280.0])[:, None, None]
    doy = np.array([t.dayofyr for t in times])
    hour = np.array([t.hour for t in times])
    seasonal = 400.0 * np.sin(2 * np.pi * doy / 360.0)[:, None, None, None]
    data = (offsets[None] + seasonal + rng.normal(0, 20, (len(times), *field))).astype(np.float32)

    plan = ClimatologyPlan(times, [0, 12], 360, window_days=5)
    bins = plan.bins()
    # every step in exactly one bin, the bin its day of year and hour say, in time order
    assert sorted(np.concatenate(list(bins.values())).tolist()) == list(range(len(times)))
    for (d, h), steps in bins.items():
        assert (doy[steps] == d + 1).all() and (hour[steps] == (0, 12)[h]).all()
        assert (np.diff(steps) > 0).all() and plan.counts[d, h] == steps.size
    means = np.full((360, 2, *field), np.nan, dtype=np.float32)
    for (d, h), steps in bins.items():  # as the graph's bin tasks store them: float32 means
        means[d, h] = bin_mean(lambda step: data[step], steps.tolist())
    assert plan.counts.max() == 2  # bins hit in two years
    out = np.full_like(means, np.nan)
    for h in range(2):
        for days in plan.segments(h, days_per_task=7):
            means_of = window_means(lambda d, h=h: means[d, h], plan.counts[:, h], days, plan)
            for day, mean in zip(days, means_of, strict=True):
                out[day, h] = mean

    expected = np.full_like(out, np.nan, dtype=np.float64)
    for d in range(1, 361):
        for h_index, h in enumerate((0, 12)):
            if not ((doy == d) & (hour == h)).any():
                continue
            near = (np.abs((doy - d + 180) % 360 - 180) <= 2) & (hour == h)
            expected[d - 1, h_index] = data[near].astype(np.float64).mean(axis=0)
    assert np.isnan(expected).any() and (~np.isnan(expected)).any()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    # summed in float64: the only roundings are the float32 bin means of two steps (half an ulp) and
    # the float32 result (half an ulp); a wrong window or weight would be off by far more
    for c in range(field[0]):
        ulp = np.spacing(np.float32(np.nanmax(np.abs(expected[:, :, c]))))
        np.testing.assert_allclose(out[:, :, c], expected[:, :, c], rtol=0, atol=ulp)
