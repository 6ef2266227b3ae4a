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
    return main(
        [*argv, "--steps", "1", "--out", str(out), "--device", "cpu", "--no-progress", *extra]
    )


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
    assert (
        "--overwrite refuses to delete it: it is not a forecast written by forecast (it holds thesis.txt)"
        in _error(capsys)
    )
    assert (foreign / "thesis.txt").read_text() == "chapter 1"
    other = tmp_path / "other.nc"
    xr.Dataset({"x": ("i", np.arange(3.0))}).to_netcdf(other)
    assert _run(store, checkpoint, other, "--overwrite") == 1
    assert "it is not a forecast written by forecast" in _error(capsys)
    for suffix in (".zarr", ".nc"):
        out = tmp_path / f"fc{suffix}"
        assert _run(store, checkpoint, out) == 0
        (
            out.with_name(out.name + ".manifest.json")
        ).unlink()  # even without its manifest, ours by its attributes
        assert _run(store, checkpoint, out, "--overwrite", "--members", "2") == 0, (
            capsys.readouterr().err
        )
        assert (
            xr.open_dataset(out, engine="zarr" if suffix == ".zarr" else None).sizes["member"] == 2
        )


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_line(inputs, tmp_path, capsys):
    store, checkpoint = inputs
    assert _run(store, checkpoint, tmp_path / "fc.zarr", "--device", "cuda") == 1
    assert (
        _error(capsys)
        == "forecast run: error: --device cuda but no CUDA device is available; use --device cpu or auto"
    )


def _damage(chunk) -> None:
    chunk.write_bytes(chunk.read_bytes()[:20])  # truncated, as by a full disk or a killed copy


def test_a_damaged_forecast_chunk_is_one_line_for_score_and_for_a_resume(inputs, tmp_path, capsys):
    import json

    store, checkpoint = inputs
    out = tmp_path / "fc.zarr"
    assert _run(store, checkpoint, out, "--steps", "2") == 0
    codecs = json.loads((out / "z500" / "zarr.json").read_text())["codecs"]
    assert codecs[-1]["name"] == "crc32c"  # every chunk carries its checksum
    clean = tmp_path / "clean.zarr"
    __import__("shutil").copytree(out, clean)
    chunk = out / "z500" / "c" / "0" / "1" / "0" / "0" / "0"  # init 0, lead 1
    _damage(chunk)
    capsys.readouterr()
    assert main(["score", str(out), "--truth", str(store), "--no-progress", "--no-spectra"]) == 1
    assert _error(capsys) == (
        f"forecast score: error: {out}: chunk z500/c/0/1/0/0/0 is damaged (its CRC32C checksum does "
        "not match: truncated or overwritten); rerun the forecast (forecast run ... --overwrite)"
    )
    assert main(["score", str(clean), "--truth", str(store), "--no-progress", "--no-spectra"]) == 0
    # an interrupted run whose last complete lead is 1: resuming reads that lead back
    manifest_file = out.with_name(out.name + ".manifest.json")
    manifest = json.loads(manifest_file.read_text())
    manifest_file.write_text(json.dumps({**manifest, "status": "running"}))
    progress = out.with_name(out.name + ".progress")
    progress.mkdir()
    (progress / "batch-000000.json").write_text('{"lead": 1}')
    capsys.readouterr()
    assert _run(store, checkpoint, out, "--steps", "2") == 1
    resuming, line = capsys.readouterr().err.strip().splitlines()
    assert resuming == f"forecast run: {out}: resuming an interrupted run"
    assert line == (
        f"forecast run: error: {out}: a chunk of z500 (init 0, lead 1) is damaged and cannot be read "
        "back to resume (its CRC32C checksum does not match: truncated or overwritten); rerun with "
        "--overwrite to write the forecast again"
    )
    assert _run(store, checkpoint, out, "--steps", "2", "--overwrite") == 0  # the fix works
    assert main(["score", str(out), "--truth", str(store), "--no-progress", "--no-spectra"]) == 0


def test_a_damaged_chunk_without_a_checksum_is_one_line_for_score(inputs, tmp_path, capsys):
    store, checkpoint = inputs
    out = tmp_path / "fc.zarr"
    assert _run(store, checkpoint, out, "--steps", "1") == 0
    forecast = xr.open_zarr(out, decode_timedelta=True).load()
    for variable in forecast.variables.values():
        variable.encoding = {}
    older = tmp_path / "older.zarr"  # as written before checksums: Zarr's default zstd, no CRC32C
    forecast.to_zarr(older, zarr_format=3, consolidated=True)
    _damage(next(p for p in (older / "z500" / "c").rglob("*") if p.is_file()))
    capsys.readouterr()
    assert main(["score", str(older), "--truth", str(store), "--no-progress", "--no-spectra"]) == 1
    line = _error(capsys)
    assert line.startswith(
        f"forecast score: error: {older} or {store}: a chunk cannot be decoded, the data are damaged ("
    )
    assert line.endswith("rerun the forecast (forecast run ... --overwrite) or re-ingest the store")


def test_score_refuses_an_unfinished_forecast_unless_allow_partial(
    tmp_path, store_path, store, stepper, capsys
):
    import json

    from forecast.scoring.score import score_files
    from inference.initial import parse_init_spec
    from inference.schedule import progress_dir
    from tests.inference.conftest import run as run_forecast
    from tests.inference.test_layouts_killed import INITS, RUN, STEPS, _start
    from tests.killing import kill_when

    out = tmp_path / "killed.zarr"
    # 2 inits x 3 members in batches of 2 members: batches 0, 1 hold init 0; 2, 3 init 1
    process = _start(tmp_path, store_path, out, "default")
    kill_when(process, lambda: (progress_dir(out) / "batch-000002.json").exists())
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["status"] == "running"
    argv = [
        "score",
        str(out),
        "--truth",
        str(store_path),
        "--no-progress",
        "--no-spectra",
        "--region",
        "global",
    ]
    assert main(argv) == 1
    assert _error(capsys) == (
        f"forecast score: error: {out}: the forecast is unfinished (its manifest says running; 1 of 2 "
        "init time(s) complete); let 'forecast run' finish (rerun it to resume), or pass "
        "--allow-partial to score the complete init times"
    )
    scores_file = tmp_path / "partial.nc"
    assert main([*argv, "--allow-partial", "--out", str(scores_file)]) == 0
    said = capsys.readouterr().err
    assert (
        f"forecast score: {out}: unfinished (running); scoring only its 1 of 2 init time(s) complete"
        in said
    )
    reference = run_forecast(
        stepper, store, parse_init_spec(INITS, "standard"), STEPS, tmp_path / "reference.zarr",
        layout="default", log=lambda m: None, **RUN,
    )  # fmt: skip
    expected, _, _ = score_files(
        reference.out, store_path, regions=["global"], spectra=False, init_indices=[0]
    )
    from forecast.scoring.scores_file import open_scores

    partial = open_scores(scores_file)
    assert int(partial["n_init"].max()) == 1
    np.testing.assert_allclose(partial["rmse"].values, expected["rmse"].values, rtol=1e-6)


def test_store_mismatch_missing_init_and_full_disk_name_the_files(
    inputs, tmp_path, capsys, monkeypatch
):
    import errno
    import json

    from inference.writers.zarr import ZarrWriter

    store, checkpoint = inputs
    other = write_store(tmp_path / "other.zarr", periods=4, nlat=8, nlon=16)
    assert _run(other, checkpoint, tmp_path / "a.zarr") == 1
    line = _error(capsys)
    assert line.startswith(
        f"forecast run: error: {checkpoint} with {other}: checkpoint does not match the store: "
    )
    assert _run(store, checkpoint, tmp_path / "b.zarr", "--init", "2021-01-01T00") == 1
    line = _error(capsys)
    assert line.startswith(
        f"forecast run: error: {store}: initial time(s) 2021-01-01T00:00 not in the store; the store covers "
    )

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ZarrWriter, "write", full)
    out = tmp_path / "c.zarr"
    assert _run(store, checkpoint, out) == 1
    assert _error(capsys) == (
        f"forecast run: error: {out}: No space left on device: the disk is full, the forecast could not be written; free some "
        "disk space and rerun the same command (a Zarr output resumes)"
    )
    assert json.loads(out.with_name("c.zarr.manifest.json").read_text())["status"] == "failed"
    monkeypatch.undo()
    assert _run(store, checkpoint, out) == 0  # the rerun completes it
