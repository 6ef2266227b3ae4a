"""Training with prescribed forcings read from a forcing store (``--forcing-store``, ``--forcing-vars``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.checkpoint import load_checkpoint, read_metadata
from forecast.cli.main import main
from forecast.errors import ConfigError, DataError
from forecast.training import TrainRequest, train
from forecast.training.trainer import LATEST
from tests.forcing_stores import write_forcing_store

TINY = {"embed_dim": 8, "num_layers": 1}
OPTIONS = dict(
    hparams=TINY, max_steps=4, batch_size=2, warmup_steps=1, val_every=2, val_samples=2,
    log_every=1, device="cpu", progress=False, workers=0,
)  # fmt: skip


@pytest.fixture(scope="module")
def sst_store(tmp_path_factory):
    """The toy store's 96 six-hourly times from 2020-01-01, with an SST-like field."""
    return write_forcing_store(tmp_path_factory.mktemp("sst") / "sst.zarr", periods=96)


def test_training_with_a_forcing_store_records_the_forcings(toy_store, sst_store, tmp_path):
    request = TrainRequest(
        toy_store,
        "sfno",
        tmp_path / "run",
        forcing_store=sst_store,
        forcing_vars=("sst",),
        **OPTIONS,
    )
    train(request, stop_after=2)
    metadata = read_metadata(tmp_path / "run" / LATEST)
    assert metadata["prescribed"]["channels"] == ["sst"]
    assert metadata["prescribed"]["mean"] == [290.0] and metadata["prescribed"]["std"] == [10.0]
    assert metadata["provenance"]["forcing_store"] == str(sst_store)
    stepper, _ = load_checkpoint(tmp_path / "run" / LATEST)
    # two state channels, four time forcings, one prescribed field
    assert stepper.in_channels == 2 + 4 + 1 and stepper.prescribed_names == ("sst",)
    # resuming without the store is refused before any step; with it the run finishes
    with pytest.raises(
        ConfigError,
        match=r"the run in .* was trained with the prescribed forcing\(s\) sst, but no --forcing-store was given",
    ):
        train(request.replace(resume=True, forcing_store=None, forcing_vars=None))
    with pytest.raises(
        ConfigError,
        match=r"the model takes the prescribed forcings \['sst'\], not --forcing-vars sic",
    ):
        train(request.replace(resume=True, forcing_vars=("sic",)))
    assert train(request.replace(resume=True)).steps == 4
    stepper, _ = load_checkpoint(tmp_path / "run" / LATEST)
    assert stepper.forcing_store is None  # a loaded checkpoint holds no store: runs name theirs


def test_forcing_store_problems_stop_training_before_the_first_step(toy_store, sst_store, tmp_path):
    short = write_forcing_store(tmp_path / "short.zarr", periods=90)
    run_dir = tmp_path / "run"
    with pytest.raises(
        DataError,
        match=r"short.zarr: forcing store does not cover the training store: first missing time 2020-01-23T12:00 \(6 of 96 valid times missing; it covers 2020-01-01T00:00 to 2020-01-23T06:00 every 6h\); extend the forcing store over every time of --data",
    ):
        train(
            TrainRequest(
                toy_store, "sfno", run_dir, forcing_store=short, forcing_vars=("sst",), **OPTIONS
            )
        )
    assert not (run_dir / LATEST).exists()
    with pytest.raises(DataError, match=r"forcing store lacks variable\(s\) sic"):
        train(
            TrainRequest(
                toy_store, "sfno", run_dir, forcing_store=short, forcing_vars=("sic",), **OPTIONS
            )
        )
    with pytest.raises(ConfigError, match=r"--forcing-vars sst needs --forcing-store"):
        TrainRequest(toy_store, "sfno", run_dir, forcing_vars=("sst",), **OPTIONS)
    with pytest.raises(
        ConfigError, match=r"--model sfno without --forcing-vars takes no prescribed forcings"
    ):
        train(TrainRequest(toy_store, "sfno", run_dir, forcing_store=short, **OPTIONS))
    with pytest.raises(ConfigError, match=r"dyffusion does not take them yet"):
        train(
            TrainRequest(
                toy_store,
                "dyffusion",
                run_dir,
                forcing_store=sst_store,
                forcing_vars=("sst",),
                **{**OPTIONS, "hparams": {}},
            )
        )
    assert not (run_dir / LATEST).exists()


def test_cli_train_flags(toy_store, sst_store, tmp_path, capsys):
    args = ["train", "--data", str(toy_store), "--model", "sfno", "--out", str(tmp_path / "run"),
            "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "2", "--val-every", "2",
            "--batch-size", "2", "--workers", "0", "--device", "cpu", "--no-progress"]  # fmt: skip
    assert main([*args, "--forcing-store", str(sst_store), "--forcing-vars", "sst"]) == 0
    assert read_metadata(tmp_path / "run" / LATEST)["prescribed"]["channels"] == ["sst"]
    assert main([*args[:6], str(tmp_path / "other"), *args[7:], "--forcing-vars", "sst"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "forecast train: error: --forcing-vars sst needs --forcing-store; "
        "add --forcing-store STORE.zarr holding those variables"
    )
    assert not (tmp_path / "other").exists()


def test_the_forcing_values_change_the_training(toy_store, sst_store, tmp_path):
    """Same seed, other SST: other weights (the field reaches the loss)."""
    other = write_forcing_store(tmp_path / "other.zarr", periods=96, seed=7)
    weights = []
    for name, store in (("a", sst_store), ("b", sst_store), ("c", other)):
        train(
            TrainRequest(
                toy_store,
                "sfno",
                tmp_path / name,
                forcing_store=store,
                forcing_vars=("sst",),
                **{**OPTIONS, "max_steps": 2, "val_every": 2},
            )
        )
        weights.append(torch.load(tmp_path / name / LATEST, weights_only=True)["state_dict"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert np.isfinite([float(v.float().abs().sum()) for v in weights[2].values()]).all()


def _forced_toy(tmp_path, n_time: int = 160, coupling: float = 3.0):
    """A state whose t2m jumps by ``coupling * a_t * P`` after time t, where the forcing holds ``a_t * P``.

    ``a_t`` is white noise, so without the forcing the jump cannot be
    predicted (its area-weighted RMS is the floor of such a model); t850 is
    a pattern rotating eastward, predictable from the state.
    """
    from forecast.grid import Grid
    from tests.forcing_stores import store_times, write_fields_store

    grid = Grid.equiangular(16, 32)
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    pattern = np.cos(lat) ** 2 * np.cos(lon)  # P
    amplitude = np.random.default_rng(0).standard_normal(n_time)  # a_t
    times = store_times("2020-01-01", n_time)
    forcing = 290.0 + 10.0 * amplitude[:, None, None, None] * pattern[None, None]
    state = np.empty((n_time, 2, 16, 32))
    for t in range(n_time):
        rotating = np.cos(lat) * np.sin(2 * lon - 0.4 * t)
        state[t, 0] = 285.0 + 2.0 * rotating + (coupling * amplitude[t - 1] * pattern if t else 0)
        state[t, 1] = 275.0 + 8.0 * np.cos(lat) * np.sin(lon - 0.3 * t)
    weights = grid.area_weights()[:, None] / grid.area_weights().mean()
    floor = float(np.sqrt(((coupling * pattern) ** 2 * weights).mean()))
    names = ("t2m", "t850")
    std = state.std(axis=(0, 2, 3))
    data = write_fields_store(
        tmp_path / "state.zarr", times, grid, state, names, state.mean(axis=(0, 2, 3)), std
    )
    sst = write_fields_store(tmp_path / "forcing.zarr", times, grid, forcing, ("sst",), 290.0, 10.0)
    return data, sst, floor


def test_the_model_learns_what_the_forcing_tells(tmp_path):
    data, sst, floor = _forced_toy(tmp_path)
    options = {**OPTIONS, "max_steps": 150, "val_every": 150, "val_samples": 16, "lr": 3e-3,
               "warmup_steps": 10, "batch_size": 4, "hparams": {"embed_dim": 16, "num_layers": 2}}  # fmt: skip
    plain = train(TrainRequest(data, "sfno", tmp_path / "plain", **options))
    forced = train(
        TrainRequest(
            data, "sfno", tmp_path / "forced", forcing_store=sst, forcing_vars=("sst",), **options
        )
    )
    index = plain.last_validation.channels.index("t2m")
    without = float(plain.last_validation.model[0, index])
    with_forcing = float(forced.last_validation.model[0, index])
    print(
        f"t2m validation RMSE: without {without:.3f}, with the forcing {with_forcing:.3f}, floor without {floor:.3f}"
    )
    assert without > 0.8 * floor  # the model without the forcing cannot beat the unpredictable jump
    assert with_forcing < 0.5 * without
