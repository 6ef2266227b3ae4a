"""`forecast score` on the command line: table, scores file, plots, one-line errors."""

from __future__ import annotations

import numpy as np
import xarray as xr

from forecast.cli.main import main
from forecast.scoring.scores_file import open_scores
from tests.forecast.scoring.conftest import make_forecast


def test_score_command_writes_scores_table_and_plots(tiny_store, tmp_path, capsys):
    path, truth, _ = tiny_store(shape=(17, 32), n_times=10)
    forecast = make_forecast(truth, [0, 2], n_leads=6, members=4, noise=0.05)
    forecast_path = tmp_path / "fc.nc"
    forecast.to_netcdf(forecast_path)
    out = tmp_path / "scores.nc"
    plots = tmp_path / "plots"
    code = main(
        [
            "score",
            str(forecast_path),
            "--truth",
            str(path),
            "--out",
            str(out),
            "--plots",
            str(plots),
            "--lead-for-maps",
            "12h",
            "--region",
            "global",
            "europe=30,75,340,40",
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "RMSE (global)" in printed and "t850 [K]" in printed and "persistence" in printed
    raw = xr.open_dataset(out)  # the file: one variable per metric and channel, char labels
    assert [bytes(r).decode() for r in raw["region"].values] == ["global", "europe"]
    assert raw["rmse_t850"].attrs["units"] == "K"
    raw.close()
    scores = open_scores(out)
    assert list(scores["region"].values) == ["global", "europe"]
    assert np.all(scores["rmse"].sel(model="forecast") < scores["rmse"].sel(model="climatology"))
    names = sorted(p.name for p in plots.iterdir())
    assert names == sorted(
        [
            "rmse_vs_lead.png",
            "acc_vs_lead.png",
            "bias_vs_lead.png",
            "crps_vs_lead.png",
            "spread_skill.png",
            "rank_histograms.png",
            "spectra.png",
            "maps_z500_12h.png",
            "maps_t850_12h.png",
        ]
    )
    assert all((plots / n).stat().st_size > 10_000 for n in names)


def test_score_command_errors_are_one_line(tiny_store, tmp_path, capsys):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0], n_leads=2, members=2)
    forecast = forecast.assign_coords(valid_time=forecast["valid_time"] + np.timedelta64(3650, "D"))
    forecast_path = tmp_path / "late.nc"
    forecast.to_netcdf(forecast_path)
    assert main(["score", str(forecast_path), "--truth", str(path), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith("forecast score: error: no valid time of the forecast (2029-")
    assert main(["score", str(tmp_path / "missing.zarr"), "--truth", str(path)]) == 1
    assert "missing.zarr: no such file or directory" in capsys.readouterr().err
    assert main(["score", str(forecast_path), "--truth", str(path), "--region", "atlantis"]) == 1
    assert "unknown region 'atlantis'" in capsys.readouterr().err
