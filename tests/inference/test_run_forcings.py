"""``forecast run --forcing-store``: prescribed fields read at each step's valid time, checked before any compute."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.checkpoint import save_checkpoint
from forecast.cli.main import main
from forecast.errors import ConfigError, DataError
from forecast.normalize import Normalizer
from forecast.prescribed import ForcingStore
from forecast.steppers import BackboneStepper
from forecast.store import open_store
from inference.climate import product_path
from inference.initial import parse_init_spec, run_valid_times
from inference.schedule import manifest_path
from tests.forcing_stores import store_times, write_forcing_store
from tests.inference.conftest import make_stepper
from tests.killing import kill_when
from tests.object_storage import s3, s3_server  # noqa: F401

SST = Normalizer(("sst",), np.array([290.0]), np.array([10.0]), np.array([0.05]))


def forced_stepper(seed: int = 0) -> BackboneStepper:
    """The tiny SFNO of the conftest, with ``sst`` as a prescribed input."""
    plain = make_stepper(seed=seed)
    torch.manual_seed(seed)
    stepper = BackboneStepper(
        "sfno", plain.hparams, plain.channels, plain.grid, plain.step, plain.normalizer,
        prescribed=SST,
    )  # fmt: skip
    return stepper.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "sst.ckpt"
    save_checkpoint(path, forced_stepper())
    return path


@pytest.fixture(scope="module")
def sst(tmp_path_factory):
    """SST over the conftest store's 12 six-hourly times from 2020-01-01."""
    return write_forcing_store(tmp_path_factory.mktemp("sst") / "sst.zarr", periods=12)


def _run(checkpoint, store, out, *extra, init="2020-01-01T06", steps="4"):
    return main([
        "run", "--checkpoint", str(checkpoint), "--data", str(store), "--init", init,
        "--steps", steps, "--out", str(out), "--device", "cpu", "--no-progress", *extra,
    ])  # fmt: skip


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_forcing_values_reach_the_backbone(tmp_path, store_path, checkpoint, sst):
    other = write_forcing_store(tmp_path / "other.zarr", periods=12, seed=3)
    outs = [tmp_path / f"{name}.zarr" for name in ("a", "b", "c")]
    for out, forcing in zip(outs, (sst, sst, other), strict=True):
        assert _run(checkpoint, store_path, out, "--forcing-store", str(forcing)) == 0
    a, b, c = (xr.open_zarr(out) for out in outs)
    for channel in ("z500", "t2m"):
        np.testing.assert_array_equal(a[channel].values, b[channel].values)
        np.testing.assert_array_equal(a[channel].values[:, 0], c[channel].values[:, 0])  # lead 0
        assert not np.allclose(a[channel].values[:, 1], c[channel].values[:, 1])
    manifest = json.loads(manifest_path(outs[0]).read_text())
    assert manifest["forcing_store"] == str(sst)
    # another forcing store is another run: it does not resume or skip the old output
    assert _run(checkpoint, store_path, outs[0], "--forcing-store", str(other)) == 1


def test_the_stepper_reads_exactly_the_valid_times(store_path, sst):
    """A step's forcing is the store's field at the state's valid time, normalised as recorded."""
    stepper = forced_stepper()
    store = ForcingStore(sst, ("sst",), stepper.grid, "standard")
    stepper.use_forcing_store(store)
    times = np.asarray(open_store(sst)["time"].values)[[5, 2, 5]]
    fields = stepper.forcings(times)
    expected = (open_store(sst)["data"].sel(channel="sst").values[[5, 2, 5]] - 290.0) / 10.0
    np.testing.assert_allclose(fields["sst"].numpy(), expected, rtol=1e-6)
    assert set(fields) == {"cos_local_time", "sin_local_time", "cos_year", "sin_year", "sst"}
    assert not store.dataset["data"].variable._in_memory  # read lazily, never loaded whole
    with pytest.raises(DataError, match="first missing time 2020-01-04T00:00"):
        stepper.forcings(parse_init_spec("2020-01-04T00", "standard"))
    with pytest.raises(
        ConfigError, match=r"takes the prescribed forcing\(s\) sst and has no forcing store"
    ):
        forced_stepper().forcings(times)


def test_a_checkpoint_with_forcings_needs_the_option(tmp_path, store_path, checkpoint, capsys):
    out = tmp_path / "fc.zarr"
    assert _run(checkpoint, store_path, out) == 1
    assert _error(capsys) == (
        f"forecast run: error: checkpoint {checkpoint} was trained with the prescribed forcing(s) "
        "sst, but no --forcing-store was given; add --forcing-store STORE.zarr holding sst over "
        "the whole period"
    )
    assert not out.exists() and not manifest_path(out).exists()


def _gap(path):
    times = store_times("2020-01-01", 12)
    return write_forcing_store(path, times=np.delete(times, 3))


BAD = {
    "missing variable": (
        lambda path: write_forcing_store(path, periods=12, names=("sic",)),
        "forcing store lacks variable(s) sst (it has sic); ingest a forcing store with --channels sst",
    ),
    "wrong grid": (
        lambda path: write_forcing_store(path, periods=12, nlat=8, nlon=16),
        "forcing store is on equiangular 8x16, the model on equiangular 16x32; ingest the forcing "
        "store on the model grid (forecast ingest ... --grid 16x32)",
    ),
    "calendar": (
        lambda path: write_forcing_store(path, periods=12, calendar="noleap"),
        "forcing store is in the noleap calendar, the run in the standard calendar; use a forcing "
        "store in the standard calendar",
    ),
    "short": (
        lambda path: write_forcing_store(path, periods=6),  # the last lead is missing
        "forcing store does not cover the run: first missing time 2020-01-02T12:00 (1 of 5 valid "
        "times missing; it covers 2020-01-01T00:00 to 2020-01-02T06:00 every 6h); extend the "
        "forcing store over the whole period",
    ),
    "gap": (
        _gap,
        "forcing store does not cover the run: first missing time 2020-01-01T18:00 (1 of 5 valid "
        "times missing",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_forcing_stores_are_one_line_errors_before_any_compute(
    tmp_path, store_path, checkpoint, capsys, case
):
    make, message = BAD[case]
    forcing = make(tmp_path / "forcing.zarr")
    out = tmp_path / "fc.zarr"
    assert (
        _run(checkpoint, store_path, out, "--forcing-store", str(forcing), init="2020-01-01T12")
        == 1
    )
    line = _error(capsys)
    assert line.startswith(f"forecast run: error: {forcing}: {message}"), line
    assert not out.exists() and not manifest_path(out).exists()


def test_a_checkpoint_without_forcings_refuses_a_forcing_store(tmp_path, store_path, sst, capsys):
    plain = tmp_path / "plain.ckpt"
    save_checkpoint(plain, make_stepper())
    out = tmp_path / "fc.zarr"
    assert _run(plain, store_path, out, "--forcing-store", str(sst)) == 1
    assert _error(capsys) == (
        f"forecast run: error: checkpoint {plain} takes no prescribed forcings, but --forcing-store "
        f"{sst} was given; drop --forcing-store, or use a model trained with --forcing-vars"
    )
    assert not out.exists()
    assert _run(plain, store_path, out) == 0  # and runs as before without it


@pytest.mark.parametrize(
    ("calendar", "start", "last"),
    [
        ("360_day", "2000-02-29", "2000-03-02"),  # 29, 30 February, 1 March
        ("noleap", "2000-02-27", "2000-03-02"),  # no 29 February
        ("standard", "2000-02-27", "2000-03-01"),  # 2000 is a leap year
    ],
)
def test_run_valid_times_of_a_length_are_exact_in_the_calendar(calendar, start, last):
    from forecast.periods import steps_for_length
    from forecast.time import format_time

    step = make_stepper().step
    init = parse_init_spec(f"{start}T00", calendar)
    steps = steps_for_length("3d", init[0], step)
    times = run_valid_times(init, steps, step, calendar)
    assert steps == 12 and len(times) == 13
    assert [format_time(times[0]), format_time(times[-1])] == [f"{start}T00:00", f"{last}T00:00"]
    two = run_valid_times(parse_init_spec(f"{start}T00/{start}T06/6h", calendar), 4, step, calendar)
    assert len(two) == 6  # the two forecasts' times, each once


def test_climate_length_run_checks_coverage_in_its_calendar(tmp_path, store_360_path, capsys):
    """360_day: 2 days from 02-29 run through 02-30 to 03-01T00 (8 steps, 9 valid times)."""
    checkpoint = tmp_path / "sst.ckpt"
    save_checkpoint(checkpoint, forced_stepper())
    short = write_forcing_store(
        tmp_path / "short.zarr", start="2000-02-29", periods=8, calendar="360_day"
    )
    enough = write_forcing_store(
        tmp_path / "enough.zarr", start="2000-02-29", periods=9, calendar="360_day"
    )
    out = tmp_path / "climate.zarr"

    def run_with(forcings) -> int:
        return main([
            "run", "--checkpoint", str(checkpoint), "--data", str(store_360_path), "--init",
            "2000-02-29T00", "--out", str(out), "--device", "cpu", "--no-progress",
            "--length", "2d", "--reduce", "monthly", "--forcing-store", str(forcings),
        ])  # fmt: skip

    assert run_with(short) == 1
    assert _error(capsys).startswith(
        f"forecast run: error: {short}: forcing store does not cover the run: first missing time "
        "2000-03-01T00:00 (1 of 9 valid times missing"
    )
    assert not product_path(out, "monthly").exists() and not manifest_path(out).exists()
    assert run_with(enough) == 0
    monthly = xr.open_zarr(product_path(out, "monthly"))
    assert monthly.sizes["time"] == 1 and np.isfinite(monthly["t2m"].values).all()


SCRIPT = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from forecast.prescribed import connect_forcing_store
from forecast.store import open_store
from inference.initial import parse_init_spec, run_valid_times
from tests.inference.conftest import run
from tests.inference.test_climate_run import INIT, STEPS, _climate_writer, _options
from tests.inference.test_run_forcings import forced_stepper

stepper = forced_stepper()
init = parse_init_spec(INIT, "360_day")
connect_forcing_store(stepper, {forcing!r}, "360_day", run_valid_times(init, STEPS, stepper.step, "360_day"), model="test")
inner = stepper.forward_normalized
def slow(*args, **kwargs):
    time.sleep({sleep})
    return inner(*args, **kwargs)
stepper.forward_normalized = slow
out = {out!r}
run(stepper, open_store({store!r}), init, STEPS, out, writer=_climate_writer(out, stepper), **_options())
"""


@pytest.mark.slow  # three climate runs in subprocesses: ~1 minute on a shared 2-core machine
def test_a_killed_climate_run_with_forcings_resumes_to_the_uninterrupted_result(
    tmp_path, store_360_path
):
    import subprocess
    import sys
    import textwrap

    from inference.restart import restart_dir
    from tests.inference.test_climate_run import INIT, REDUCE, REPO, STEPS, _restart_lead

    forcing = write_forcing_store(
        tmp_path / "sst.zarr", start=INIT[:10], periods=STEPS + 1, calendar="360_day"
    )

    def launch(out, sleep):
        script = tmp_path / f"{out.stem}.py"
        script.write_text(textwrap.dedent(SCRIPT.format(
            repo=str(REPO), forcing=str(forcing), store=str(store_360_path), out=str(out), sleep=sleep
        )))  # fmt: skip
        return subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    killed = tmp_path / "killed.zarr"
    process = launch(killed, 0.1)
    marker = restart_dir(killed) / "batch-000000.pt"
    kill_when(process, lambda: marker.exists() and _restart_lead(marker) >= 12, timeout=180)
    assert 12 <= _restart_lead(marker) < STEPS
    for out in (killed, tmp_path / "whole.zarr"):  # resume the killed run; run another whole
        process = launch(out, 0)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err.decode()
    for product in REDUCE:
        a = xr.open_zarr(product_path(killed, product))
        b = xr.open_zarr(product_path(tmp_path / "whole.zarr", product))
        for name in b.data_vars:
            np.testing.assert_array_equal(
                a[name].values, b[name].values, err_msg=f"{product} {name}"
            )


def test_a_forcing_store_on_object_storage_gives_the_same_forecast(
    tmp_path,
    store_path,
    checkpoint,
    sst,
    s3,  # noqa: F811
):
    import fsspec

    fsspec.filesystem("s3").put(str(sst) + "/", f"{s3[5:]}/sst.zarr", recursive=True)
    local, remote = tmp_path / "local.zarr", tmp_path / "remote.zarr"
    assert _run(checkpoint, store_path, local, "--forcing-store", str(sst)) == 0
    assert _run(checkpoint, store_path, remote, "--forcing-store", f"{s3}/sst.zarr") == 0
    a, b = xr.open_zarr(local), xr.open_zarr(remote)
    for channel in ("z500", "t2m"):
        np.testing.assert_array_equal(a[channel].values, b[channel].values)
    assert json.loads(manifest_path(remote).read_text())["forcing_store"] == f"{s3}/sst.zarr"
