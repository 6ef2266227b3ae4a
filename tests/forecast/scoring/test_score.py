"""score_forecast end to end on tiny stores: valid-time matching, baselines, calendars, missing truth, errors."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.errors import DataError, GridError
from forecast.scoring.regions import parse_region
from forecast.scoring.score import format_table, score_forecast, write_scores
from forecast.scoring.scores_file import open_scores
from forecast.store import open_store
from tests.forecast.scoring.conftest import make_forecast


def _hand_rmse(a: np.ndarray, b: np.ndarray, grid) -> float:
    w = grid.area_weights()[:, None] * np.ones(grid.nlon)
    return float(np.sqrt((w * (a.astype(np.float64) - b) ** 2).sum() / w.sum()))


def test_perfect_forecast_and_baselines_by_hand(tiny_store):
    path, truth, grid = tiny_store()
    store = open_store(path)
    forecast = make_forecast(truth, [0, 3], n_leads=4, members=3)
    scores = score_forecast(forecast, store, spectra=False)
    assert scores["rmse"].dims == ("model", "channel", "lead_time", "region")
    assert list(scores["model"].values) == ["forecast", "persistence", "climatology"]
    perfect = scores.sel(model="forecast")
    assert np.allclose(perfect["rmse"], 0.0, atol=1e-6 * 800)
    assert np.allclose(perfect["acc"], 1.0, atol=1e-6)
    assert np.allclose(perfect["crps"], 0.0, atol=1e-2)
    assert np.allclose(perfect["spread"], 0.0)
    # persistence at lead 2 (12 h): init 0 -> truth[0] vs truth[2], init 3 -> truth[3] vs truth[5]
    z = truth.sel(channel="z500").values
    expected = np.sqrt(
        np.mean([_hand_rmse(z[0], z[2], grid) ** 2, _hand_rmse(z[3], z[5], grid) ** 2])
    )
    got = scores["rmse"].sel(model="persistence", channel="z500", region="global").isel(lead_time=2)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(scores["rmse"].sel(model="persistence").isel(lead_time=0).max()) == pytest.approx(
        0.0, abs=1e-3
    )
    # climatology baseline at lead 1 against the store's climatology (hour 6, constant over days)
    clim = store["climatology"].sel(channel="z500", hour=6, dayofyear=1).values
    expected = np.sqrt(
        np.mean([_hand_rmse(clim, z[1], grid) ** 2, _hand_rmse(clim, z[4], grid) ** 2])
    )
    got = scores["rmse"].sel(model="climatology", channel="z500", region="global").isel(lead_time=1)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert scores["n_init"].values.tolist() == [2, 2, 2, 2]
    assert scores.attrs["leads_without_truth"] == ""


def test_leads_spaced_wider_than_the_store_step_line_up(tiny_store):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0, 1], n_leads=4, members=None, lead_step=2)  # 0, 12, 24, 36 h
    scores = score_forecast(forecast, open_store(path), spectra=False, baselines=())
    assert np.allclose(scores["rmse"], 0.0, atol=1e-2)
    assert scores.attrs["ensemble_size"] == 1
    # deterministic: CRPS equals MAE, spread 0
    assert np.allclose(scores["crps"], scores["mae"], atol=1e-9)


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_cftime_calendars(tiny_store, calendar):
    path, truth, grid = tiny_store(calendar=calendar, n_times=16)  # crosses Feb 28/30 -> Mar 1
    store = open_store(path)
    forecast = make_forecast(truth, [0, 4, 8], n_leads=5, members=2, noise=0.01)
    scores = score_forecast(forecast, store, spectra=False)
    assert np.all(scores["rmse"].sel(model="forecast") < 0.02 * 800)
    t = truth.sel(channel="t850").values
    expected = np.sqrt(np.mean([_hand_rmse(t[i], t[i + 4], grid) ** 2 for i in (0, 4, 8)]))
    got = scores["rmse"].sel(model="persistence", channel="t850", region="global").isel(lead_time=4)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_missing_truth_is_reported_not_dropped(tiny_store):
    path, truth, _ = tiny_store(n_times=8)
    forecast = make_forecast(
        truth, [4, 6], n_leads=5, members=2
    )  # valid up to index 10; store ends at 7
    scores = score_forecast(forecast, open_store(path), spectra=False)
    assert scores["n_init"].values.tolist() == [2, 2, 1, 1, 0]
    assert scores.attrs["leads_without_truth"] == "24h"
    assert np.isnan(scores["rmse"].isel(lead_time=4)).all()
    assert np.isfinite(scores["rmse"].sel(model="forecast").isel(lead_time=3)).all()
    table = format_table(scores)
    assert "no truth in the store at lead(s): 24h" in table
    assert "truth for only some of the 2 initialisations at lead(s) 12h: 1, 18h: 1" in table


def test_errors_are_one_line_and_actionable(tiny_store):
    path, truth, _ = tiny_store()
    store = open_store(path)
    forecast = make_forecast(truth, [0], n_leads=2, members=2)
    with pytest.raises(DataError, match="store lacks channel\\(s\\) q700"):
        score_forecast(forecast.assign(q700=forecast["z500"]), store)
    with pytest.raises(GridError, match="latitudes are ascending"):
        score_forecast(forecast.isel(latitude=slice(None, None, -1)), store)
    other = forecast.isel(latitude=slice(0, 5))
    with pytest.raises(
        GridError, match="forecast grid 5x16 does not match the store's equiangular 9x16 grid"
    ):
        score_forecast(other, store)
    shifted = forecast.assign_coords(valid_time=forecast["valid_time"] + np.timedelta64(365, "D"))
    with pytest.raises(DataError, match=r"no valid time of the forecast .* is in the store"):
        score_forecast(shifted, store)


def test_scores_file_layout_and_atomic_write(tiny_store, tmp_path):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0, 1], n_leads=3, members=4, noise=0.1)
    scores = score_forecast(forecast, open_store(path))
    out = write_scores(scores, tmp_path / "out" / "scores.nc")
    assert sorted(p.name for p in out.parent.iterdir()) == ["scores.nc"]
    reread = open_scores(out)
    for name in ("rmse", "bias", "mae", "acc", "spread", "ssr", "crps"):
        assert reread[name].dims == ("model", "channel", "lead_time", "region")
    assert reread["rank_histogram"].dims == ("channel", "lead_time", "region", "rank")
    assert np.allclose(reread["rank_histogram"].sum("rank"), 1.0)
    assert reread["power_spectrum"].dims == ("channel", "lead_time", "wavenumber")
    assert reread["truth_power_spectrum"].dims == ("channel", "lead_time", "wavenumber")
    # noise of 10% on every member lifts the forecast's small scales above the truth's
    assert float(reread["power_spectrum"].isel(wavenumber=-1).mean()) > float(
        reread["truth_power_spectrum"].isel(wavenumber=-1).mean()
    )
    assert reread["lead_time"].dtype.kind == "m"
    assert reread["channel_units"].sel(channel="z500").item() == "m**2 s**-2"
    assert np.allclose(reread["rmse"], scores["rmse"], equal_nan=True)
    table = format_table(scores)
    assert "RMSE (global)" in table and "z500 [m**2 s**-2]" in table and "12h" in table


def test_nan_forecast_values_are_counted_and_reported(tiny_store):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0, 1, 2], n_leads=3, members=2)
    forecast["t850"][1, 2, 0, 3, 4] = np.nan  # one unwritten value at init 1, lead 12 h
    scores = score_forecast(forecast, open_store(path), spectra=False)
    assert scores["n_nan_forecast"].sel(channel="t850").values.tolist() == [0, 0, 1]
    assert int(scores["n_nan_forecast"].sel(channel="z500").sum()) == 0
    assert np.isfinite(scores["rmse"].sel(model="forecast")).all()
    assert "NaN values at lead(s) 12h: 1 (init, channel)" in format_table(scores)


def test_cftime_forecast_file_round_trip(tiny_store, tmp_path):
    from forecast.scoring.score import open_forecast

    path, truth, _ = tiny_store(calendar="noleap", n_times=10)
    forecast = make_forecast(truth, [0, 3], n_leads=4, members=2)
    forecast.to_netcdf(tmp_path / "fc.nc")
    reopened = open_forecast(tmp_path / "fc.nc")
    assert reopened["valid_time"].values[0, 0].calendar == "noleap"
    scores = score_forecast(reopened, open_store(path), spectra=False, baselines=())
    assert np.allclose(scores["rmse"], 0.0, atol=1e-2)


def test_regional_deterministic_forecast_with_zonal_spectra_and_plots(tiny_store, tmp_path):
    from forecast.scoring.plots import draw_all

    path, truth, grid = tiny_store(kind="regional", shape=(7, 17), n_times=8)
    store = open_store(path)
    forecast = make_forecast(truth, [0, 2], n_leads=3, members=None, noise=0.02)
    scores = score_forecast(forecast, store, regions=[parse_region("box=40,60,0,20")])
    assert list(scores["region"].values) == ["box"]
    assert scores["power_spectrum"].sizes["wavenumber"] == grid.nlon // 2 + 1
    assert "zonal" in scores["power_spectrum"].attrs["long_name"]
    assert np.all(scores["rmse"].sel(model="forecast") < 0.05 * 800)
    written = draw_all(
        scores, forecast, store, tmp_path / "plots", np.timedelta64(6, "h"), region="box"
    )
    assert sorted(p.name for p in written) == sorted(
        [
            "rmse_vs_lead.png",
            "acc_vs_lead.png",
            "bias_vs_lead.png",
            "spectra.png",
            "maps_z500_6h.png",
            "maps_t850_6h.png",
        ]
    )
