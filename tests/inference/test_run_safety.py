"""`forecast run --out ... --overwrite` replaces only a forecast of ours, never the store it reads."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from forecast.checkpoint import save_checkpoint
from forecast.cli.main import main
from tests.inference.conftest import make_stepper, write_store


@pytest.fixture
def inputs(tmp_path):
    store = write_store(tmp_path / "X.zarr", periods=4)
    checkpoint = tmp_path / "model.ckpt"
    save_checkpoint(checkpoint, make_stepper())
    return store, checkpoint


def _run(store, checkpoint, out, *extra):
    argv = ["run", "--checkpoint", str(checkpoint), "--data", str(store), "--init", "2020-01-01T06"]
    return main([*argv, "--steps", "1", "--out", str(out), "--device", "cpu", "--no-progress", *extra])


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_overwrite_never_replaces_the_store_it_reads(inputs, capsys):
    store, checkpoint = inputs
    before = xr.open_zarr(store)["data"].values.copy()
    assert _run(store, checkpoint, store, "--overwrite") == 1
    assert _error(capsys) == (
        f"forecast run: error: {store}: --overwrite would delete an input of this command "
        f"({store.resolve()}); write the output somewhere else"
    )
    np.testing.assert_array_equal(xr.open_zarr(store)["data"].values, before)


def test_overwrite_refuses_a_foreign_output_and_replaces_our_own(inputs, tmp_path, capsys):
    store, checkpoint = inputs
    foreign = tmp_path / "notes.zarr"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("chapter 1")
    assert _run(store, checkpoint, foreign, "--overwrite") == 1
    assert "--overwrite refuses to delete it: it is not a forecast written by forecast (it holds thesis.txt)" in _error(capsys)
    assert (foreign / "thesis.txt").read_text() == "chapter 1"
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(other)
    assert _run(store, checkpoint, other, "--overwrite") == 1
    assert "it is not a forecast written by forecast" in _error(capsys)
    for suffix in (".zarr", ".nc"):
        out = tmp_path / f"fc{suffix}"
        assert _run(store, checkpoint, out) == 0
        (out.with_name(out.name + ".manifest.json")).unlink()  # even without its manifest, ours by its attributes
        assert _run(store, checkpoint, out, "--overwrite", "--members", "2") == 0, capsys.readouterr().err
        assert xr.open_dataset(out, engine="zarr" if suffix == ".zarr" else None).sizes["member"] == 2


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(inputs, tmp_path, capsys):
    store, checkpoint = inputs
    assert _run(store, checkpoint, tmp_path / "fc.zarr", "--device", "cuda") == 1
    assert _error(capsys) == "forecast run: error: --device cuda but no CUDA device is available; use --device cpu or auto"
