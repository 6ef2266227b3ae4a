"""`forecast train --out`: one training per run directory, never into an input or a foreign folder, no leftovers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from forecast.cli.main import main
from forecast.locking import lock_path

from .conftest import write_toy_store

REPO = Path(__file__).resolve().parents[3]


def _argv(store: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data",
        str(store),
        "--model",
        "sfno",
        "--hparams",
        "embed_dim=8,num_layers=1",
        "--out",
        str(out),
        "--batch-size",
        "2",
        "--val-samples",
        "2",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-progress",
        *extra,
    ]


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_two_trainings_on_one_out_the_second_is_refused_and_a_killed_one_leaves_nothing_stale(
    toy_store, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "forecast",
            *_argv(
                toy_store,
                run_dir,
                "--max-steps",
                "100000",
                "--val-every",
                "100000",
                "--log-every",
                "1",
            ),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.jsonl").exists():  # it holds the lock and trains
            assert first.poll() is None, first.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert main(_argv(toy_store, run_dir, "--max-steps", "2")) == 1
        line = _error(capsys)
        assert line.startswith(
            f"forecast train: error: {run_dir}: another process is writing this output (forecast train pid {first.pid} on "
        )
        assert "wait for it to finish" in line
        assert (
            main(_argv(toy_store, run_dir, "--max-steps", "2", "--resume")) == 1
        )  # nor may a resume
        assert f"forecast train pid {first.pid}" in _error(capsys)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert (
        Path(lock_path(run_dir)).exists() and not (run_dir / "latest.ckpt").exists()
    )  # left by the kill
    # the killed run's lock is no lock any more, and its metrics are cleared by a fresh start
    assert main(_argv(toy_store, run_dir, "--max-steps", "2", "--val-every", "2")) == 0
    steps = [
        json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(steps) and max(steps) == 2
    assert not Path(lock_path(run_dir)).exists()


def test_out_must_not_be_the_store_nor_a_foreign_folder(tmp_path, capsys):
    store = write_toy_store(tmp_path / "toy.zarr", n_time=12)
    listing = sorted(p.name for p in store.rglob("*"))
    assert main(_argv(store, store, "--max-steps", "2")) == 1
    line = _error(capsys)
    assert line == (
        f"forecast train: error: {store}: --out would write into an input of this command ({store}); "
        "write the output somewhere else"
    )
    assert main(_argv(store, store / "runs", "--max-steps", "2")) == 1  # nor inside it
    assert "--out would write into an input" in _error(capsys)
    assert sorted(p.name for p in store.rglob("*")) == listing
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "config.yaml").write_text("chapters: 3\n")
    assert main(_argv(store, foreign, "--max-steps", "2")) == 1
    assert (
        "--out refuses to write into it: it is not a run directory written by forecast (it holds config.yaml)"
        in _error(capsys)
    )
    assert (foreign / "config.yaml").read_text() == "chapters: 3\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(_argv(store, empty, "--max-steps", "2", "--val-every", "2")) == 0
    )  # an empty folder is fine
    assert (empty / "latest.ckpt").exists()


def test_a_run_refused_by_validation_leaves_no_run_directory(toy_store, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(_argv(toy_store, run_dir, "--channels", "z500,q700")) == 1
    assert "store lacks channel(s) q700" in _error(capsys)
    assert not run_dir.exists()
    assert not Path(lock_path(run_dir)).exists()


def test_a_damaged_store_chunk_stops_training_with_one_line_naming_it(tmp_path, capsys):
    import warnings

    import xarray as xr
    from zarr.codecs import BloscCodec, Crc32cCodec

    plain = write_toy_store(tmp_path / "plain.zarr", n_time=16)
    store = tmp_path / "checked.zarr"  # with the CRC32C that forecast ingest writes
    ds = xr.open_zarr(plain).load()
    for variable in ds.variables.values():
        variable.encoding = {}
    encoding = {
        "data": {"chunks": (1, 2, 16, 32), "compressors": (BloscCodec(cname="lz4"), Crc32cCodec())}
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(store, zarr_format=3, consolidated=True, encoding=encoding)
    chunk = store / "data" / "c" / "5" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:30])
    for workers in ("0", "1"):  # read in the process and in a data-loader worker
        run_dir = tmp_path / f"run{workers}"
        argv = _argv(
            store,
            run_dir,
            "--max-steps",
            "40",
            "--val-every",
            "100",
            "--workers",
            workers,
            "--val-fraction",
            "0",
        )
        assert main(argv) == 1
        assert _error(capsys) == (
            f"forecast train: error: {store}: chunk data/c/5/0/0/0 is damaged (its CRC32C checksum does not "
            "match: truncated or overwritten); re-ingest the data (forecast ingest ... --overwrite), or "
            "restore the store from a copy"
        )
