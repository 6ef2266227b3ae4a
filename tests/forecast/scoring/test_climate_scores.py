"""forecast score --climate: a perfect run scores zero, a shifted run its shift, drift as numpy computes it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import xarray as xr

from forecast.grid import Grid
from forecast.scoring.climate import climate_scores, open_products
from forecast.scoring.climate_reference import reference_reductions
from forecast.store import open_store
from forecast.time import time_index
from inference.climate import ClimateWriter, HistogramSpec
from inference.writers import forecast_template
from tests.inference.conftest import write_store

CHANNELS = ["z500", "t850", "u10m", "t2m"]
STEPS = 4 * 365 * 2  # two noleap years
NLAT, NLON = 8, 16


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two noleap years whose t2m has a seasonal cycle and a warmer second year (3 K)."""
    import zarr

    path = tmp_path_factory.mktemp("climate") / "store.zarr"
    write_store(
        path,
        calendar="noleap",
        start="2001-01-01",
        periods=STEPS + 1,
        nlat=NLAT,
        nlon=NLON,
        time_chunk=730,
    )
    data = zarr.open_group(path, mode="r+")["data"]
    values = data[:]
    step = np.arange(STEPS + 1)
    signal = 3.0 * (step >= 4 * 365) + 5.0 * np.sin(2 * np.pi * step / (4 * 365))
    values[:, CHANNELS.index("t2m")] += signal[:, None, None].astype(np.float32)
    data[:] = values
    return open_store(path)


def _run(store, out, shift=0.0, bins=20, scale=1.0):
    """Products of a 'model' that replays the store (times ``scale``, plus ``shift`` on t2m), through ClimateWriter."""
    grid = Grid.equiangular(NLAT, NLON)
    init = store["time"].values[:1]
    template = forecast_template(
        CHANNELS, grid, init, STEPS, dt.timedelta(hours=6), 1, "noleap", {}
    )
    spec = HistogramSpec(
        bins,
        store["mean"].values - 3 * store["std"].values,
        store["mean"].values + 3 * store["std"].values,
    )
    writer = ClimateWriter(out, ("monthly", "annual"), spec)
    writer.create(template)
    data = store["data"].values
    offset = np.zeros((1, len(CHANNELS), 1, 1), dtype=np.float32)
    offset[0, CHANNELS.index("t2m")] = shift
    for lead in range(STEPS + 1):
        writer.write(0, 0, lead, data[lead][None] * np.float32(scale) + offset)
    writer.finish()
    # open_products reads the manifest's list of products; write the list as a run would
    import json

    out.with_name(out.name + ".manifest.json").write_text(
        json.dumps({"products": writer.products()})
    )
    return open_products(out)


def test_perfect_run_scores_zero_and_shift_scores_shift(tmp_path, store):
    perfect = climate_scores(_run(store, tmp_path / "perfect.zarr"), store)
    np.testing.assert_allclose(perfect["time_mean_rmse"].values, 0.0, atol=1e-3)
    np.testing.assert_allclose(perfect["annual_cycle_rmse"].values, 0.0, atol=1e-3)
    np.testing.assert_allclose(perfect["wasserstein"].values, 0.0, atol=1e-9)
    # drift: (second year - first year) of the store's area-weighted annual means / their std
    grid = Grid.equiangular(NLAT, NLON)
    weights = grid.area_weights()[:, None]
    years = np.asarray(time_index(store["time"].values[:STEPS]).year)
    means = np.stack(
        [
            (store["data"].values[:STEPS][years == y] * weights).mean(axis=(0, 2, 3))
            / weights.mean()
            for y in (2001, 2002)
        ]
    )
    spread = means.std(axis=0, ddof=1)
    t2m = CHANNELS.index("t2m")
    assert means[1, t2m] - means[0, t2m] == pytest.approx(3.0, rel=1e-3)
    assert float(perfect["drift"].sel(channel="t2m")) == pytest.approx(
        (means[1, t2m] - means[0, t2m]) / spread[t2m], rel=1e-4
    )
    assert float(perfect["interannual_std"].sel(channel="t2m")) == pytest.approx(
        spread[t2m], rel=1e-4
    )

    shifted = climate_scores(_run(store, tmp_path / "shifted.zarr", shift=2.0), store)
    t2m = {"channel": "t2m"}
    assert float(shifted["time_mean_bias"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    assert float(shifted["time_mean_rmse"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    assert float(shifted["annual_cycle_rmse"].sel(t2m)) == pytest.approx(2.0, rel=1e-5)
    bin_width = 6 * float(store["std"].sel(channel="t2m")) / 20
    assert (
        abs(float(shifted["wasserstein"].sel(t2m)) - 2.0) <= bin_width
    )  # W1 of a shift is the shift
    others = shifted["time_mean_rmse"].sel(channel=["z500", "t850", "u10m"]).values
    np.testing.assert_allclose(others, 0.0, atol=1e-3)


def test_cli_climate_scores_file_and_plots(tmp_path, store, capsys):
    from forecast.cli.main import main

    out = tmp_path / "run.zarr"
    _run(store, out, shift=1.0)
    store_path = tmp_path / "store_copy.zarr"
    store.to_zarr(store_path, zarr_format=3)
    code = main(
        [
            "score",
            str(out),
            "--truth",
            str(store_path),
            "--climate",
            "--out",
            str(tmp_path / "scores.nc"),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert code == 0
    assert "time-mean RMSE" in capsys.readouterr().out
    scores = xr.open_dataset(tmp_path / "scores.nc")
    assert float(scores["time_mean_rmse"].sel(channel="t2m")) == pytest.approx(1.0, rel=1e-5)
    assert (tmp_path / "plots" / "time_mean_bias.png").stat().st_size > 10_000
    assert (tmp_path / "plots" / "annual_cycle.png").stat().st_size > 10_000


def _numpy_scores(
    store, channels: list[str], scale: float, shift: float, bins: int
) -> dict[str, np.ndarray]:
    """Every climate score of ``_run(store, scale=, shift=)`` from the store's values with numpy alone.

    The run averages leads ``0 .. STEPS - 1``, the store's first ``STEPS``
    states; its products are monthly and annual means and histograms in
    ``bins`` bins over mean +- 3 std. Channels in the order of ``channels``.
    """
    values = store["data"].sel(channel=channels).values[:STEPS]
    truth = values.astype(np.float64)  # (time, channel, lat, lon)
    offset = np.zeros(len(channels))
    offset[channels.index("t2m")] = shift
    run = (values * np.float32(scale)).astype(np.float64)
    run += offset[None, :, None, None]
    index = time_index(store["time"].values[:STEPS])
    years, months = np.asarray(index.year), np.asarray(index.month)
    weights = Grid.equiangular(NLAT, NLON).area_weights()
    area = weights[:, None] / (weights.sum() * NLON)  # sums to 1 over the grid

    def globe(fields):  # (..., lat, lon) -> (...)
        return (fields * area).sum(axis=(-2, -1))

    bias = run.mean(axis=0) - truth.mean(axis=0)
    cycle, annual = {}, {}
    for name, fields in (("forecast", run), ("reference", truth)):
        monthly = np.stack(
            [
                globe(fields[(years == y) & (months == m)].mean(axis=0))
                for y in (2001, 2002)
                for m in range(1, 13)
            ]
        )  # (24, channel)
        cycle[name] = monthly.reshape(2, 12, -1).mean(axis=0)
        annual[name] = np.stack([globe(fields[years == y].mean(axis=0)) for y in (2001, 2002)])
    spread = annual["reference"].std(axis=0, ddof=1)
    mean, std = (
        store["mean"].sel(channel=channels).values,
        store["std"].sel(channel=channels).values,
    )
    low, high = mean - 3 * std, mean + 3 * std
    wasserstein = []
    for k in range(len(channels)):
        edges = np.linspace(low[k], high[k], bins + 1)
        probabilities = []
        for fields in (run, truth):
            # per latitude row, values outside the bins in the end bins, rows weighted by area
            counts = np.stack(
                [
                    np.histogram(np.clip(fields[:, k, row], low[k], high[k]), edges)[0]
                    for row in range(NLAT)
                ]
            )
            weighted = (counts * weights[:, None]).sum(axis=0)
            probabilities.append(weighted / weighted.sum())
        wasserstein.append(
            np.abs(np.cumsum(probabilities[0]) - np.cumsum(probabilities[1])).sum()
            * (high[k] - low[k])
            / bins
        )
    return {
        "time_mean_bias_map": bias,
        "time_mean_reference": truth.mean(axis=0),
        "time_mean_rmse": np.sqrt(globe(bias**2)),
        "time_mean_bias": globe(bias),
        "annual_cycle": np.stack([cycle["forecast"], cycle["reference"]]),  # source, month, channel
        "annual_cycle_rmse": np.sqrt(((cycle["forecast"] - cycle["reference"]) ** 2).mean(axis=0)),
        "annual_global_mean": np.stack([annual["forecast"], annual["reference"]]),
        "interannual_std": spread,
        "drift": (annual["forecast"][1] - annual["forecast"][0]) / spread,
        "wasserstein": np.asarray(wasserstein),
    }


def test_every_climate_score_equals_numpy_over_the_reference(tmp_path, store):
    """The one-pass reduction of the store against plain numpy: means, cycle, drift, histograms."""
    scale, shift, bins = 1.01, 0.7, 20
    scores = climate_scores(
        _run(store, tmp_path / "run.zarr", shift=shift, bins=bins, scale=scale), store
    )
    channels = [str(c) for c in scores["channel"].values]
    expected = _numpy_scores(store, channels, scale, shift, bins)
    assert set(expected) == set(scores.data_vars)
    scores = scores.transpose("source", "month", "year", "channel", "latitude", "longitude")
    # tolerances relative to each channel's magnitude: global means of winds are ~1e-9
    magnitude = np.abs(store["data"].sel(channel=channels).values).max(axis=(0, 2, 3))

    def close(name, relative, source=None):
        actual, desired = scores[name], expected[name]
        if source is not None:
            actual, desired = (
                actual.sel(source=source),
                desired[("forecast", "reference").index(source)],
            )
        axis = actual.dims.index("channel")
        shape = [1] * actual.ndim
        shape[axis] = len(channels)
        error = np.abs(actual.values - desired)
        assert np.all(error <= relative * magnitude.reshape(shape)), (name, source, error.max())

    # the reference's own reductions: float64 sums of the store's float32 values
    close("time_mean_reference", 1e-12)
    close("annual_cycle", 1e-12, source="reference")
    close("annual_global_mean", 1e-12, source="reference")
    close("interannual_std", 1e-12)
    # against the run's float32 products
    for name in ("time_mean_bias_map", "time_mean_bias", "time_mean_rmse", "annual_cycle_rmse"):
        close(name, 1e-6)
    close("annual_cycle", 1e-6, source="forecast")
    close("annual_global_mean", 1e-6, source="forecast")
    t2m = channels.index("t2m")  # the only channel with interannual variability (3 K)
    assert float(scores["drift"][t2m]) == pytest.approx(expected["drift"][t2m], rel=1e-5)
    np.testing.assert_allclose(scores["wasserstein"].values, expected["wasserstein"], rtol=1e-6)
    assert np.all(expected["wasserstein"] > 0)
    biased = [channels.index(c) for c in ("z500", "t850", "t2m")]  # u10m's time mean is ~0
    assert np.all(expected["time_mean_rmse"][biased] > 1.0)  # not a trivial case


def test_the_reference_pass_does_not_depend_on_its_blocks(tmp_path, store):
    """Blocks of one store chunk (730 states: months and the year cross their edges) give the same means and counts."""
    products = _run(store, tmp_path / "run.zarr")
    monthly = {"monthly": products["monthly"], "annual": products["annual"]}
    whole = reference_reductions(store, monthly, CHANNELS, products["histograms"])
    small = reference_reductions(store, monthly, CHANNELS, products["histograms"], block_bytes=1)
    index = time_index(store["time"].values[:STEPS])
    data = store["data"].values[:STEPS].astype(np.float64)
    march_2002 = (np.asarray(index.year) == 2002) & (np.asarray(index.month) == 3)
    np.testing.assert_allclose(
        small.means["monthly"].values[14], data[march_2002].mean(axis=0), rtol=1e-12
    )
    for name in monthly:
        np.testing.assert_allclose(small.means[name].values, whole.means[name].values, rtol=1e-12)
    np.testing.assert_array_equal(small.histogram.counts, whole.histogram.counts)
    assert (
        small.histogram.counts.sum() + small.histogram.below.sum() + small.histogram.above.sum()
        == (STEPS * len(CHANNELS) * NLAT * NLON)
    )
