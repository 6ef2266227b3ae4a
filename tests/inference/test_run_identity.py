"""What identifies a run: every option that changes the output, perturbation options included.

These drive ``forecast run`` end to end, so that they state the behaviour a user sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.checkpoint import save_checkpoint
from forecast.cli.main import main
from tests.inference.conftest import CHANNELS, make_stepper

INIT = "2020-01-01T06"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, make_stepper(), provenance={"test": True})
    return path


def forecast(checkpoint: Path, store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--checkpoint", str(checkpoint), "--data", str(store), "--init", INIT,
        "--steps", "2", "--out", str(out), "--no-progress", *extra,
    ]  # fmt: skip


def test_changed_perturbation_options_are_another_forecast(
    tmp_path, store_path, checkpoint, capsys
):
    out = tmp_path / "grf.zarr"
    grf = ["--members", "2", "--perturbation", "grf", "--seed", "1"]
    assert main(forecast(checkpoint, store_path, out, *grf, "--length-scale", "3000")) == 0
    capsys.readouterr()
    # the same request again: nothing to do
    assert main(forecast(checkpoint, store_path, out, *grf, "--length-scale", "3000")) == 0
    assert "already finished; nothing to do" in capsys.readouterr().err
    # another correlation length is another forecast: never "skipped" with the old one kept
    assert main(forecast(checkpoint, store_path, out, *grf, "--length-scale", "300")) == 1
    err = capsys.readouterr().err.strip()
    assert "output holds a finished forecast with other settings (perturbation_options)" in err
    assert "\n" not in err
    # the generic form of the same option is the same request
    same = ["--perturbation-options", "length_scale_km=3000"]
    assert main(forecast(checkpoint, store_path, out, *grf, *same)) == 0
    assert "already finished" in capsys.readouterr().err


def test_unknown_perturbation_option_is_a_one_line_error(tmp_path, store_path, checkpoint, capsys):
    out = tmp_path / "gaussian.zarr"
    argv = forecast(
        checkpoint, store_path, out, "--members", "2", "--perturbation", "gaussian",
        "--length-scale", "300",
    )  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "forecast run: error: perturbation 'gaussian' takes no option 'length_scale_km'"
    )
    assert "\n" not in err
    assert not out.exists()
    typo = ["--perturbation", "grf", "--perturbation-options", "length_scale=300"]
    assert main(forecast(checkpoint, store_path, out, "--members", "2", *typo)) == 1
    assert "it takes length_scale_km, alpha" in capsys.readouterr().err


def test_reordered_channels_keep_their_names(tmp_path, store_path, checkpoint):
    """``--channels`` naming every channel in another order writes each under its own name."""
    full, reordered = tmp_path / "full.nc", tmp_path / "reordered.nc"
    assert main(forecast(checkpoint, store_path, full)) == 0
    order = ",".join(reversed(CHANNELS))
    assert main(forecast(checkpoint, store_path, reordered, "--channels", order)) == 0
    with xr.open_dataset(full) as a, xr.open_dataset(reordered) as b:
        assert {v for v in b.data_vars if v in CHANNELS} == set(CHANNELS)
        for channel in CHANNELS:
            np.testing.assert_array_equal(a[channel].values, b[channel].values)
