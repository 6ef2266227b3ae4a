"""The whole chain through ``forecast demo`` on tiny settings (the docs' commands: test_docs_commands.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.cli.main import main

TINY = {
    "synth.yaml": "grid: 16x32\nstart: '2020-01-01'\ndays: 12\nstep: 6h\nseed: 1\nspinup-days: 2\n",
    "ingest.yaml": "grid: source\nstep: 6h\n",
    "train.yaml": (
        # three of the store's 12 channels: a third of the training, forecast, scores and plots
        "model: sfno\nhparams: {embed_dim: 8, num_layers: 2}\nchannels: [z500, t850, t2m]\n"
        "diurnal-baseline: true\nmax-steps: 6\nrollout-steps: 2\nbatch-size: 2\n"
        "val-fraction: 0.3\nval-every: 6\nval-samples: 2\nworkers: 0\ndevice: cpu\n"
    ),
    "run.yaml": "init: 2020-01-10T00/2020-01-10T12/12h\nsteps: 4\nmembers: 3\nperturbation: gaussian\nseed: 0\n",
    "score.yaml": "lead-for-maps: 12h\n",
}


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("demo")
    configs = work / "configs-used"
    configs.mkdir()
    for name, text in TINY.items():
        (configs / name).write_text(text)
    assert main(["demo", "--workdir", str(work), "--configs", str(configs)]) == 0
    return work


def test_demo_leaves_every_product(demo_workdir: Path) -> None:
    for name in (
        "store.zarr",
        "sfno/best.ckpt",
        "forecast_sfno.zarr",
        "forecast_sfno.nc",
        "scores_sfno.nc",
    ):
        assert (demo_workdir / name).exists(), name
    assert any((demo_workdir / "plots" / "sfno").glob("*.png"))


def test_demo_forecasts_agree_between_zarr_and_netcdf(demo_workdir: Path) -> None:
    zarr_fc = xr.open_zarr(demo_workdir / "forecast_sfno.zarr")
    nc_fc = xr.open_dataset(demo_workdir / "forecast_sfno.nc")
    assert dict(zarr_fc.sizes) == dict(nc_fc.sizes)
    assert (
        zarr_fc.sizes["member"] == 3
        and zarr_fc.sizes["time"] == 2
        and zarr_fc.sizes["lead_time"] == 5
    )
    np.testing.assert_array_equal(zarr_fc["z500"].values, nc_fc["z500"].values)
    assert np.issubdtype(nc_fc["lead_time"].dtype, np.timedelta64)


def test_demo_scores_have_model_and_baselines(demo_workdir: Path) -> None:
    from forecast.scoring.scores_file import open_scores

    scores = open_scores(demo_workdir / "scores_sfno.nc")
    assert {"persistence", "climatology"} <= {str(m) for m in scores["model"].values}
    rmse = scores["rmse"]
    assert np.isfinite(rmse.values).any()
    # Persistence at lead 0 is the truth itself.
    lead0 = rmse.sel(model="persistence", lead_time=np.timedelta64(0, "h"))
    assert float(np.nanmax(lead0.values)) == pytest.approx(0.0, abs=1e-6)


def test_demo_rerun_skips_finished_stages(
    demo_workdir: Path, capsys: pytest.CaptureFixture
) -> None:
    configs = demo_workdir / "configs-used"
    before = (demo_workdir / "sfno" / "best.ckpt").stat().st_mtime_ns
    assert main(["demo", "--workdir", str(demo_workdir), "--configs", str(configs)]) == 0
    out = capsys.readouterr().out
    assert out.count("(already there:") == 6  # synth, ingest, train, run x2, score
    assert (demo_workdir / "sfno" / "best.ckpt").stat().st_mtime_ns == before
    assert "xr.open_zarr(" in out


def test_demo_checkpoint_carries_the_diurnal_baseline(demo_workdir: Path) -> None:
    from forecast.checkpoint import load_checkpoint

    stepper, metadata = load_checkpoint(demo_workdir / "sfno" / "best.ckpt")
    assert metadata["diurnal_hours"] == [0.0, 6.0, 12.0, 18.0]
    # t2m's table has a diurnal cycle of a few K (normalised here by t2m's std)
    t2m = stepper.channels.index("t2m")
    amplitude = float(stepper.diurnal.table[:, t2m].abs().max()) * float(stepper.std[0, t2m, 0, 0])
    assert 1.0 < amplitude < 8.0
