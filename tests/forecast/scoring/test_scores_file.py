"""The scores NetCDF: CF-clean (both checkers), units per channel, labels Iris reads, round trip."""

from __future__ import annotations

import netCDF4
import numpy as np
import xarray as xr

from forecast.scoring.score import score_forecast
from forecast.scoring.scores_file import from_cf, open_scores, squared_units, to_cf, write_scores
from forecast.store import open_store
from tests.cf_tools import cfchecks_messages, compliance_errors, iris_cubes
from tests.forecast.scoring.conftest import make_forecast


def _scores(tiny_store):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0, 1], n_leads=3, members=3, noise=0.1)
    return score_forecast(forecast, open_store(path))


def test_one_variable_per_metric_and_channel_with_real_units(tiny_store, tmp_path):
    scores = _scores(tiny_store)
    out = write_scores(scores, tmp_path / "scores.nc")
    with netCDF4.Dataset(out) as nc:
        assert nc.Conventions == "CF-1.8" and "forecast score" in nc.history
        units = {name: getattr(v, "units", None) for name, v in nc.variables.items()}
        assert "data" not in units.values()
        assert units["rmse_z500"] == "m**2 s**-2" and units["crps_t850"] == "K"
        assert units["acc_z500"] == "1" and units["ssr_t850"] == "1"
        assert units["power_spectrum_z500"] == "(m**2 s**-2)**2"
        assert units["power_spectrum_t850"] == "K**2"
        assert nc["lead_time"].standard_name == "forecast_period"
        assert nc["lead_time"].dtype == np.int32 and nc["lead_time"].units == "hours"
        assert nc["model"].dtype == "S1" and "_Encoding" not in nc["model"].ncattrs()
        assert nc["rmse_z500"].dimensions == ("model", "lead_time", "region")
        assert nc["rmse_z500"].coordinates == "model region"
        assert nc["rank_histogram_t850"].dimensions == ("lead_time", "region", "rank")
        assert not any(isinstance(v.datatype, netCDF4.VLType) for v in nc.variables.values())
    raw = xr.open_dataset(out)
    np.testing.assert_allclose(
        raw["rmse_z500"].values, scores["rmse"].sel(channel="z500").values, equal_nan=True
    )
    raw.close()


def test_round_trip_gives_back_the_scores(tiny_store, tmp_path):
    scores = _scores(tiny_store)
    back = open_scores(write_scores(scores, tmp_path / "scores.nc"))
    assert list(back["model"].values) == list(scores["model"].values)
    assert list(back["region"].values) == list(scores["region"].values)
    for name in scores.data_vars:
        a, b = scores[name], back[name]
        assert a.dims == b.dims, name
        if a.dtype.kind in "fi":
            np.testing.assert_allclose(b.values, a.values, equal_nan=True, err_msg=name)
        else:
            assert list(b.values.ravel()) == list(a.values.ravel()), name
    # in memory as well
    xr.testing.assert_allclose(from_cf(to_cf(scores))["crps"], scores["crps"])


def test_cf_checkers_accept_the_scores_file(tiny_store, tmp_path):
    out = write_scores(_scores(tiny_store), tmp_path / "scores.nc")
    messages = cfchecks_messages(out)
    assert messages == {"version": "CF-1.8", "ERROR": [], "WARN": []}
    assert compliance_errors(out, "1.8") == []


def test_iris_reads_the_labels_and_units(tiny_store, tmp_path):
    out = write_scores(_scores(tiny_store), tmp_path / "scores.nc")
    cubes = {c["var_name"]: c for c in iris_cubes(out)}
    rmse = cubes["rmse_z500"]
    assert rmse["units"] == "m**2 s**-2"
    assert rmse["aux"]["model"] == ["forecast", "persistence", "climatology"]
    assert rmse["aux"]["region"][0] == "global"
    assert "forecast_period" in rmse["dims"]
    assert "model" not in cubes  # a label, not a cube of its own


def test_squared_units():
    assert squared_units("K") == "K**2"
    assert squared_units("m s**-1") == "(m s**-1)**2"
    assert squared_units("1") == "1" and squared_units("") == "1"
