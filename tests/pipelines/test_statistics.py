"""The streaming moment accumulators against numpy in float64, however the data are cut."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines import statistics
from pipelines.statistics import MomentAccumulator, TendencyAccumulator


def _reference(data: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean and population std per channel, every step weighted equally (float64)."""
    w = np.broadcast_to(weights[:, None], data.shape[-2:]).astype(np.float64)
    w = w / w.sum()
    x = data.astype(np.float64)
    mean = np.einsum("tcij,ij->c", x, w) / x.shape[0]
    var = np.einsum("tcij,ij->c", (x - mean[None, :, None, None]) ** 2, w) / x.shape[0]
    return mean, np.sqrt(var)


@pytest.mark.parametrize("piece_bytes", [1, 3 * 5 * 8 * 4 * 2, 2**20])  # one step, two steps, everything per piece
@pytest.mark.parametrize("cuts", [[11], [4, 7], [1, 1, 3, 6]])
def test_moments_and_tendencies_match_numpy(monkeypatch: pytest.MonkeyPatch, piece_bytes: int, cuts: list[int]) -> None:
    monkeypatch.setattr(statistics, "PIECE_BYTES", piece_bytes)
    rng = np.random.default_rng(3)
    nt, nc, nlat, nlon = 11, 3, 5, 8
    offsets = np.array([5.0e4, 280.0, -3.0])[None, :, None, None]  # geopotential-, temperature- and wind-like
    data = (offsets + rng.normal(0, 1, (nt, nc, nlat, nlon)) * np.array([300.0, 5.0, 8.0])[None, :, None, None]).astype(np.float32)
    weights = np.cos(np.deg2rad(np.linspace(80, -80, nlat)))
    moments, tendencies = MomentAccumulator(weights, nlon), TendencyAccumulator(weights, nlon)
    start = 0
    for size in cuts:
        moments.update(data[start : start + size])
        tendencies.update(data[start : start + size])
        start += size
    mean, std = _reference(data, weights)
    np.testing.assert_allclose(moments.mean, mean, rtol=1e-7)
    np.testing.assert_allclose(moments.std, std, rtol=2e-6)
    _, diff_std = _reference(np.diff(data.astype(np.float64), axis=0), weights)
    np.testing.assert_allclose(tendencies.std, diff_std, rtol=2e-6)
    assert moments.count == nt and tendencies.moments.count == nt - 1


@pytest.mark.parametrize(("piece", "batch_fields"), [(7, 2), (10**6, 1000)])  # many pieces and batches / one of each
def test_climatology_matches_a_brute_force_window_mean(tmp_path, monkeypatch: pytest.MonkeyPatch, piece: int, batch_fields: int) -> None:
    """500 days of a 360_day calendar at 00 and 12 UTC with a 50-day gap, in blocks that straddle bins:
    every (day, hour) with data gets the mean of all values within +-2 days (circular), others stay NaN."""
    import xarray as xr

    monkeypatch.setattr(statistics, "SMOOTH_PIECE", piece)
    times = xr.date_range("2001-11-20", periods=2 * 500, freq="12h", calendar="360_day", use_cftime=True)
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

    accumulator = statistics.ClimatologyAccumulator(tmp_path, [0, 12], 360, field)
    for start in range(0, len(times), 9):
        accumulator.update(data[start : start + 9], times[start : start + 9])
    out = np.full((360, 2, *field), np.nan, dtype=np.float32)
    written: list[int] = []
    accumulator.finalize(out, window_days=5, batch_bytes=batch_fields * 4 * int(np.prod(field)), on_written=written.append)
    assert not accumulator.path.exists()  # the temporary sums are deleted
    assert sum(written) == accumulator.bins_with_data == np.count_nonzero(~np.isnan(out[..., 0, 0, 0]))  # the progress bar's total
    assert accumulator.counts.max() == 2  # bins hit in two years: read, added to and written back

    expected = np.full_like(out, np.nan, dtype=np.float64)
    for d in range(1, 361):
        for h_index, h in enumerate((0, 12)):
            if not ((doy == d) & (hour == h)).any():
                continue
            near = (np.abs((doy - d + 180) % 360 - 180) <= 2) & (hour == h)
            expected[d - 1, h_index] = data[near].astype(np.float64).mean(axis=0)
    assert np.isnan(expected).any() and (~np.isnan(expected)).any()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    # float32 sums of departures, moved across the year: rounding within ~1e-6 of each channel's range
    # (int16-packed ERA5 resolves 1.5e-5 of it); far more than that would be a wrong window, not rounding
    for c in range(field[0]):
        spread = float(data[:, c].max() - data[:, c].min())
        np.testing.assert_allclose(out[:, :, c], expected[:, :, c], rtol=0, atol=3e-6 * spread)
