"""`forecast score` on the command line: table, scores file, plots, one-line errors."""

from __future__ import annotations

import urllib.error
import warnings

import cartopy.crs as ccrs
import numpy as np
import pytest
import xarray as xr
from cartopy.io import DownloadWarning, shapereader
from cartopy.mpl.feature_artist import FeatureArtist
from matplotlib.figure import Figure

from forecast.cli.main import main
from forecast.scoring import plots as plots_module
from forecast.scoring.scores_file import open_scores
from tests.conftest import SHARED_CARTOPY
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


@pytest.fixture
def fresh_coastline_check():
    """Forget what :func:`coastlines_available` found, before and after the test."""
    plots_module.coastlines_available.cache_clear()
    yield
    plots_module.coastlines_available.cache_clear()


def test_maps_are_drawn_without_coastlines_where_cartopy_cannot_get_them(
    tiny_store, tmp_path, capsys, monkeypatch, fresh_coastline_check
):
    def offline(**kwargs):
        warnings.warn("Downloading: https://naturalearth...", DownloadWarning, stacklevel=1)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    # cartopy reads and downloads Natural Earth through this function: offline, no data dir
    monkeypatch.setattr(shapereader, "natural_earth", offline)
    path, truth, _ = tiny_store(shape=(17, 32), n_times=10)
    forecast_path = tmp_path / "fc.nc"
    make_forecast(truth, [0, 2], n_leads=6, members=4, noise=0.05).to_netcdf(forecast_path)
    plots = tmp_path / "plots"
    argv = ["score", str(forecast_path), "--truth", str(path), "--plots", str(plots),
            "--lead-for-maps", "12h", "--no-progress"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(argv) == 0  # it failed here: the scores were lost to the coastlines
    assert not [w for w in caught if issubclass(w.category, DownloadWarning)]  # ours says it
    said = [line for line in capsys.readouterr().err.splitlines() if "coastlines" in line]
    assert len(said) == 1  # once, not once per map
    assert said[0].startswith("warning: maps drawn without coastlines")
    assert "CARTOPY_DATA_DIR" in said[0] and "Name or service not known" in said[0]
    for name in ("maps_z500_12h.png", "maps_t850_12h.png"):
        assert (plots / name).stat().st_size > 10_000


def test_coastlines_are_drawn_where_cartopy_has_them(fresh_coastline_check):
    if not SHARED_CARTOPY.exists():
        pytest.skip(f"no offline Natural Earth data at {SHARED_CARTOPY}")
    axis = Figure().add_subplot(projection=ccrs.PlateCarree())
    plots_module.add_coastlines(axis)
    assert sum(isinstance(child, FeatureArtist) for child in axis.get_children()) == 1


def test_score_command_errors_are_one_line(tiny_store, tmp_path, capsys):
    path, truth, _ = tiny_store()
    forecast = make_forecast(truth, [0], n_leads=2, members=2)
    forecast = forecast.assign_coords(valid_time=forecast["valid_time"] + np.timedelta64(3650, "D"))
    forecast_path = tmp_path / "late.nc"
    forecast.to_netcdf(forecast_path)
    assert main(["score", str(forecast_path), "--truth", str(path), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith(
        f"forecast score: error: {forecast_path} against {path}: no valid time of the forecast (2029-"
    )
    assert main(["score", str(tmp_path / "missing.zarr"), "--truth", str(path)]) == 1
    assert "missing.zarr: no such file or directory" in capsys.readouterr().err
    assert main(["score", str(forecast_path), "--truth", str(path), "--region", "atlantis"]) == 1
    assert "unknown region 'atlantis'" in capsys.readouterr().err


def _score_argv(forecast_path, store, out, *extra):
    return [
        "score",
        str(forecast_path),
        "--truth",
        str(store),
        "--out",
        str(out),
        "--no-spectra",
        "--no-progress",
        *extra,
    ]


def test_score_out_never_replaces_an_input_or_a_foreign_file(tiny_store, tmp_path, capsys):
    from forecast.locking import lock

    path, truth, _ = tiny_store()
    forecast_path = tmp_path / "fc.nc"
    make_forecast(truth, [0], n_leads=2, members=2).to_netcdf(forecast_path)
    before = forecast_path.read_bytes()
    assert main(_score_argv(forecast_path, path, forecast_path)) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"forecast score: error: {forecast_path}: --out would replace an input of this command "
        f"({forecast_path}); write the output somewhere else"
    ]
    assert forecast_path.read_bytes() == before
    assert main(_score_argv(forecast_path, path, path / "scores.nc")) == 1  # inside the store
    assert "--out would replace an input" in capsys.readouterr().err
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(other)
    other_bytes = other.read_bytes()
    assert main(_score_argv(forecast_path, path, other)) == 1
    assert (
        "--out refuses to replace it: it is not a scores file written by forecast"
        in capsys.readouterr().err
    )
    assert other.read_bytes() == other_bytes
    out = tmp_path / "scores.nc"
    assert main(_score_argv(forecast_path, path, out)) == 0
    assert (
        main(_score_argv(forecast_path, path, out, "--no-baselines")) == 0
    )  # our own scores: replaced
    assert list(open_scores(out)["model"].values) == ["forecast"]
    capsys.readouterr()
    with lock(out, "forecast score"):
        assert main(_score_argv(forecast_path, path, out)) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert (
        len(error) == 1
        and f"{out}: another process is writing this output (forecast score pid " in error[0]
    )


def test_score_grid_and_channel_mismatches_name_the_files(tiny_store, tmp_path, capsys):
    path, truth, _ = tiny_store()
    coarse = make_forecast(truth, [0], n_leads=2, members=2).isel(latitude=slice(0, 8))
    coarse_path = tmp_path / "coarse.nc"
    coarse.to_netcdf(coarse_path)
    assert main(["score", str(coarse_path), "--truth", str(path), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [
        f"forecast score: error: {coarse_path} against {path}: forecast grid 8x16 does not match the "
        "store's equiangular 9x16 grid; score against the store the model was run from, or regrid the forecast"
    ]
    other, _, _ = tiny_store(channels=("z500",))
    forecast_path = tmp_path / "fc.nc"
    make_forecast(truth, [0], n_leads=2, members=2).to_netcdf(forecast_path)
    assert main(["score", str(forecast_path), "--truth", str(other), "--no-progress"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(
        f"forecast score: error: {forecast_path} against {other}: "
    )
    assert "t850" in error[0]
