"""Scheduled runs: latest init time, skip when finished, resume after SIGKILL, the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from forecast.checkpoint import save_checkpoint
from forecast.cli.main import main
from inference.initial import available_init_times, parse_init_spec
from inference.schedule import manifest_path, output_for, progress_dir, resolve_latest
from tests.inference.conftest import CHANNELS, make_stepper, run
from tests.killing import kill_when

REPO = Path(__file__).resolve().parents[2]
RUN = dict(members=3, batch_size=2, perturbation="gaussian", seed=5)
INITS = "2020-01-01T06/2020-01-01T12/6h"
STEPS = 6

SCRIPT = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from forecast.store import open_store
from inference.initial import parse_init_spec
from tests.inference.conftest import make_stepper, run

stepper = make_stepper()
inner = stepper.forward_normalized
def slow(*args, **kwargs):
    time.sleep(0.15)
    return inner(*args, **kwargs)
stepper.forward_normalized = slow
run(stepper, open_store({store!r}), parse_init_spec({inits!r}, "standard"), {steps}, {out!r},
    members=3, batch_size=2, perturbation="gaussian", seed=5)
"""


def test_killed_run_resumes_and_equals_uninterrupted_run(tmp_path, store_path, store, stepper):
    out = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            SCRIPT.format(
                repo=str(REPO), store=str(store_path), inits=INITS, steps=STEPS, out=str(out)
            )
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    marker = progress_dir(out) / "batch-000001.json"
    kill_when(
        process,
        lambda: marker.exists() and json.loads(marker.read_text())["lead"] >= 2,
        timeout=120,
    )
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "running"
    done = json.loads(marker.read_text())["lead"]
    assert 2 <= done < STEPS
    assert (
        not (progress_dir(out) / "batch-000002.json").exists()
        or json.loads((progress_dir(out) / "batch-000002.json").read_text())["lead"] < STEPS
    )

    messages = []
    resumed = run(
        stepper,
        store,
        parse_init_spec(INITS, "standard"),
        STEPS,
        out,
        **{**RUN, "log": messages.append},
    )
    assert resumed.status == "finished"
    assert any("resuming an interrupted run" in m for m in messages)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "finished" and manifest["resumed"] is True
    assert not progress_dir(out).exists()

    reference = run(
        stepper,
        store,
        parse_init_spec(INITS, "standard"),
        STEPS,
        tmp_path / "reference.zarr",
        **RUN,
    )
    a, b = xr.open_zarr(out), xr.open_zarr(reference.out)
    for channel in CHANNELS:
        np.testing.assert_array_equal(a[channel].values, b[channel].values)
    assert np.isfinite(a["z500"].values).all()


def test_latest_picks_newest_time_and_skips_finished_runs(tmp_path, store, stepper):
    template = str(tmp_path / "fc" / "{init}.zarr")
    available = available_init_times(store, stepper.history)
    init_times, out, finished = resolve_latest(available, template)
    assert init_times[0] == np.datetime64("2020-01-03T18:00")
    assert out == tmp_path / "fc" / "20200103T18.zarr"
    assert not finished
    result = run(stepper, store, init_times, 2, out)
    assert result.status == "finished"
    assert resolve_latest(available, template)[2] is True
    # with history 2 the newest time is the same; an earlier store end moves it
    assert resolve_latest(available[:-2], template)[0][0] == np.datetime64("2020-01-03T06:00")
    assert output_for("fc.zarr", init_times[0]) == Path("fc.zarr")


def test_netcdf_interrupted_run_restarts(tmp_path, store, stepper):
    out = tmp_path / "fc.nc"
    init = parse_init_spec("2020-01-01T06", "standard")
    first = run(stepper, store, init, 2, out)
    expected = xr.open_dataset(out)["z500"].values
    # as a killed run leaves it: a partial file, no final file, a manifest saying "running"
    out.unlink()
    partial = tmp_path / "fc.nc.partial"
    partial.write_bytes(b"left by a killed run")
    manifest_path(out).write_text(json.dumps({**first.manifest, "status": "running"}))
    result = run(stepper, store, init, 2, out)
    assert result.status == "finished" and not partial.exists()
    np.testing.assert_array_equal(xr.open_dataset(out)["z500"].values, expected)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, make_stepper(), provenance={"test": True})
    return path


def run_argv(checkpoint: Path, store_path: Path) -> list[str]:
    """``forecast run`` with the test checkpoint and store; the caller adds the rest."""
    return ["run", "--checkpoint", str(checkpoint), "--data", str(store_path)]


def test_cli_run_latest_twice_and_errors(tmp_path, store_path, checkpoint, capsys):
    out = str(tmp_path / "{init}.nc")
    args = [
        *run_argv(checkpoint, store_path),
        "--init",
        "latest",
        "--steps",
        "2",
        "--members",
        "2",
        "--perturbation",
        "grf",
        "--out",
        out,
        "--no-progress",
    ]
    assert main(args) == 0
    written = tmp_path / "20200103T18.nc"
    assert "wrote" in capsys.readouterr().out
    ds = xr.open_dataset(written)
    assert (
        ds.sizes["member"] == 2
        and len(ds.attrs["checkpoint_digest"]) == 64
        and ds.attrs["model"] == "sfno"
    )
    ds.close()
    assert main(args) == 0
    assert "already finished; nothing to do" in capsys.readouterr().out
    manifest = json.loads(manifest_path(written).read_text())
    assert {
        "checkpoint_digest",
        "store",
        "init_times",
        "members",
        "perturbation",
        "seed",
        "timings",
        "software_version",
        "status",
    } <= set(manifest)

    bad = [
        *run_argv(checkpoint, store_path),
        "--init",
        "2030-01-01",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "x.zarr"),
    ]
    assert main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(
            f"forecast run: error: {store_path}: initial time(s) 2030-01-01T00:00 not in the store"
        )
        and "\n" not in err
    )
    assert main([*bad[:-1], str(tmp_path / "x.grib")]) == 1
    assert "cannot tell the output format" in capsys.readouterr().err


def test_cli_config_file(tmp_path, store_path, checkpoint):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"checkpoint: {checkpoint}\ndata: {store_path}\ninit: 2020-01-01T06\nsteps: 1\nmembers: 2\nperturbation: gaussian\nout: {tmp_path / 'c.zarr'}\nno_progress: true\n"
    )
    assert main(["run", "--config", str(config), "--seed", "3"]) == 0
    assert json.loads(manifest_path(tmp_path / "c.zarr").read_text())["seed"] == 3


@pytest.mark.slow
def test_torchrun_two_ranks_write_one_store(tmp_path, store_path, store, checkpoint):
    out = tmp_path / "dist.zarr"
    command = [
        str(Path(sys.executable).with_name("torchrun")),
        "--nproc-per-node",
        "2",
        "--master-port",
        "29611",
        "-m",
        "forecast.cli.main",
        *run_argv(checkpoint, store_path),
        "--init",
        INITS,
        "--steps",
        "2",
        "--members",
        "3",
        "--batch-size",
        "2",
        "--perturbation",
        "gaussian",
        "--seed",
        "5",
        "--out",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "finished" and manifest["ranks"] == 2
    reference = run(
        make_stepper(),
        store,
        parse_init_spec(INITS, "standard"),
        2,
        tmp_path / "one.zarr",
        **{**RUN, "batch_size": 2},
    )
    a, b = xr.open_zarr(out), xr.open_zarr(reference.out)
    for channel in CHANNELS:
        np.testing.assert_allclose(a[channel].values, b[channel].values, rtol=1e-6, atol=1e-3)


def test_full_disk_fails_in_one_line_and_the_rerun_resumes(
    tmp_path, store_path, store, checkpoint, monkeypatch, capsys
):
    """ENOSPC while writing lead 3: exit 1 naming the file and the fix; the rerun keeps what was written."""
    from inference.writers.zarr import ZarrWriter

    out = tmp_path / "full.zarr"
    real = ZarrWriter.write

    def write(self, init_index, member_start, lead, block):
        if lead == 3:
            raise OSError(
                28, "No space left on device", str(self.path / "z500" / f"c/0/{lead}/0/0/0")
            )
        real(self, init_index, member_start, lead, block)

    monkeypatch.setattr(ZarrWriter, "write", write)
    argv = ["run", "--checkpoint", str(checkpoint), "--data", str(store_path), "--init", INITS,
            "--steps", str(STEPS), "--members", "3", "--batch-size", "2", "--perturbation", "gaussian",
            "--seed", "5", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "No space left on device" in err[0] and "free some disk space" in err[0]
    )
    assert str(out / "z500") in err[0]
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["status"] == "failed" and "No space left" in manifest["error"]
    kept = xr.open_zarr(out)["z500"].values  # leads 0-2 of the first batch are on disk
    assert np.isfinite(kept[:, :3]).any()

    monkeypatch.setattr(ZarrWriter, "write", real)  # space freed
    assert main(argv) == 0
    assert "resuming an interrupted run" in capsys.readouterr().err
    reference = tmp_path / "reference.zarr"
    assert main([*argv[:-3], "--out", str(reference), "--no-progress"]) == 0
    a, b = xr.open_zarr(out), xr.open_zarr(reference)
    for channel in CHANNELS:
        np.testing.assert_array_equal(a[channel].values, b[channel].values)
