"""Climate runs through the run workflow: means of the rollout's own states, and resume after SIGKILL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.time import time_index
from inference.climate import ClimateWriter, HistogramSpec, product_path
from inference.initial import parse_init_spec
from inference.restart import restart_dir
from inference.schedule import manifest_path
from inference.writers import writer_for
from tests.inference.conftest import CHANNELS, run
from tests.killing import kill_when, start_script

REPO = Path(__file__).resolve().parents[2]
INIT = "2000-02-29T00"  # 360_day: February has a 29th and a 30th
STEPS = 24  # to 2000-03-05T00: a partial February, a partial March
REDUCE = ("monthly", "time-mean")


def _climate_writer(out, stepper, bins=6, output_every=0):
    snapshots = writer_for(out) if output_every else None
    spec = HistogramSpec.from_normalizer(stepper.normalizer, CHANNELS, bins) if bins else None
    return ClimateWriter(out, REDUCE, spec, snapshots, output_every=max(output_every, 1))


def _options(bins=6, output_every=0):
    return dict(
        members=3,
        batch_size=2,
        perturbation="gaussian",
        seed=5,
        reduce=REDUCE,
        histogram_bins=bins,
        output_every=output_every,
        restart_every=3,
    )


def test_climate_products_are_the_means_of_the_rollout(tmp_path, store_360_path, stepper):
    from forecast.store import open_store

    store = open_store(store_360_path)
    init = parse_init_spec(INIT, "360_day")
    plain = run(
        stepper,
        store,
        init,
        STEPS,
        tmp_path / "every.zarr",
        members=3,
        batch_size=2,
        perturbation="gaussian",
        seed=5,
    )
    out = tmp_path / "climate.zarr"
    result = run(
        stepper,
        store,
        init,
        STEPS,
        out,
        writer=_climate_writer(out, stepper, output_every=4),
        **_options(output_every=4),
    )
    assert result.status == "finished"
    assert not restart_dir(out).exists()
    every = xr.open_zarr(plain.out)
    states = np.stack(
        [every[c].values[0] for c in CHANNELS], axis=2
    )  # (lead, member, channel, ...)
    months = np.asarray(time_index(every["valid_time"].values[0]).month)
    monthly = xr.open_zarr(product_path(out, "monthly"))
    for number, month in enumerate((2, 3)):
        chosen = np.flatnonzero(months[:STEPS] == month)
        expected = states[chosen].mean(axis=0, dtype=np.float64)
        for k, channel in enumerate(CHANNELS):
            np.testing.assert_allclose(monthly[channel].values[number], expected[:, k], rtol=1e-6)
    np.testing.assert_array_equal(monthly["complete"].values, [0, 0])
    whole = xr.open_zarr(product_path(out, "time-mean"))
    np.testing.assert_allclose(
        whole["t2m"].values[0], states[:STEPS, :, CHANNELS.index("t2m")].mean(axis=0), rtol=1e-6
    )
    snapshots = xr.open_zarr(out)
    assert snapshots.sizes["lead_time"] == STEPS // 4 + 1
    np.testing.assert_array_equal(snapshots["z500"].values, every["z500"].values[:, ::4])
    histograms = xr.open_zarr(product_path(out, "histograms"))
    assert int(
        histograms["t2m"].sum() + histograms["t2m_below"].sum() + histograms["t2m_above"].sum()
    ) == (3 * STEPS * store.sizes["latitude"] * store.sizes["longitude"])


SCRIPT = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from forecast.store import open_store
from inference.initial import parse_init_spec
from tests.inference.conftest import make_stepper, run
from tests.inference.test_climate_run import _climate_writer, _options

stepper = make_stepper()
inner = stepper.forward_normalized
def slow(*args, **kwargs):
    time.sleep(0.1)
    return inner(*args, **kwargs)
stepper.forward_normalized = slow
out = {out!r}
run(stepper, open_store({store!r}), parse_init_spec({init!r}, "360_day"), {steps}, out,
    writer=_climate_writer(out, stepper), **_options())
"""


def _restart_lead(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["lead"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return -1


def _kill_in_march(script: str, store_path: Path, out: Path, batch: int) -> int:
    """Run ``script`` (a template like :data:`SCRIPT`) into ``out`` in a subprocess and SIGKILL it
    once the restart file of batch ``batch`` is at lead 12 or later (March); that lead."""
    process = start_script(
        out.with_name("run.py"),
        script.format(repo=str(REPO), store=str(store_path), init=INIT, steps=STEPS, out=str(out)),
    )
    marker = restart_dir(out) / f"batch-{batch:06d}.pt"
    kill_when(process, lambda: marker.exists() and _restart_lead(marker) >= 12, timeout=180)
    return _restart_lead(marker)


def _assert_resumes_to_the_reference(models, store_path: Path, out: Path, reference: Path) -> None:
    """Resume the killed climate run at ``out``, run it again uninterrupted at ``reference``:
    every product of the two is bitwise equal.

    ``models``: a stepper, or the :class:`~inference.members.MemberModels` of the killed run.
    """
    from forecast.store import open_store
    from inference.members import MemberModels

    store = open_store(store_path)
    init = parse_init_spec(INIT, "360_day")
    first = MemberModels.of(models).first
    messages: list[str] = []
    resumed = run(
        models,
        store,
        init,
        STEPS,
        out,
        writer=_climate_writer(out, first),
        log=messages.append,
        **_options(),
    )
    assert resumed.status == "finished"
    assert any("resuming an interrupted run" in m for m in messages)
    run(
        models,
        store,
        init,
        STEPS,
        reference,
        writer=_climate_writer(reference, first),
        **_options(),
    )
    for product in (*REDUCE, "histograms"):
        a = xr.open_zarr(product_path(out, product))
        b = xr.open_zarr(product_path(reference, product))
        for name in b.data_vars:
            np.testing.assert_array_equal(
                a[name].values, b[name].values, err_msg=f"{product} {name}"
            )


def test_killed_climate_run_resumes_mid_month_to_the_same_means(tmp_path, store_360_path, stepper):
    out = tmp_path / "killed.zarr"
    # kill in the middle of March (leads 8.. are March): a month's sum is half done
    killed_at = _kill_in_march(SCRIPT, store_360_path, out, batch=0)
    assert 12 <= killed_at < STEPS
    assert xr.open_zarr(product_path(out, "monthly"))["t2m"].isnull().any()  # March not written yet

    _assert_resumes_to_the_reference(stepper, store_360_path, out, tmp_path / "reference.zarr")
    assert not restart_dir(out).exists()
    import json

    assert json.loads(manifest_path(out).read_text())["products"]["monthly"].endswith(
        "killed.monthly.zarr"
    )


@pytest.mark.parametrize("calendar", ["360_day", "noleap", "standard"])
def test_length_is_exact_in_the_calendar(calendar):
    from forecast.periods import steps_for_length
    from forecast.time import parse_time

    start = parse_time("2001-03-01", calendar)
    # the standard calendar's 10 years from March 2001 hold the leap days of 2004 and 2008
    days = {"360_day": 3600, "noleap": 3650, "standard": 3652}[calendar]
    assert steps_for_length("10y", start, dt.timedelta(hours=6)) == 4 * days
    assert steps_for_length("1mo", start, dt.timedelta(hours=6)) == 4 * (
        30 if calendar == "360_day" else 31
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    from forecast.checkpoint import save_checkpoint
    from tests.inference.conftest import make_stepper

    path = tmp_path_factory.mktemp("climate-ckpt") / "model.pt"
    save_checkpoint(path, make_stepper(), provenance={"test": True})
    return path


def test_cli_climate_run_and_its_errors(tmp_path, store_360_path, checkpoint, capsys):
    from forecast.cli.main import main

    base = ["run", "--checkpoint", str(checkpoint), "--data", str(store_360_path), "--no-progress"]
    out = tmp_path / "cli.nc"
    code = main(
        [
            *base,
            "--init",
            INIT,
            "--length",
            "5d",
            "--reduce",
            "monthly,time-mean",
            "--output-every",
            "1d",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "cli.monthly.nc" in capsys.readouterr().out
    monthly = xr.open_dataset(product_path(out, "monthly"))
    # 5 days of 6 h: 2 days (8 states) in February (360_day), 3 days (12) in March
    assert int(monthly["samples"].sum()) == 20
    assert list(monthly["samples"].values) == [8, 12]
    assert xr.open_dataset(out).sizes["lead_time"] == 6  # days 0..5
    failures = {
        "give exactly one of --steps and --length": [
            "--init",
            INIT,
            "--steps",
            "4",
            "--length",
            "1d",
        ],
        "starts from one init time": [
            "--init",
            "2000-02-29T00/2000-02-29T06/6h",
            "--steps",
            "2",
            "--reduce",
            "monthly",
        ],
        "is not a whole number of model steps": [
            "--init",
            INIT,
            "--steps",
            "4",
            "--output-every",
            "5h",
        ],
        "is not one of monthly": ["--init", INIT, "--steps", "4", "--reduce", "weekly"],
        "cannot parse --length": ["--init", INIT, "--length", "ten years"],
    }
    for message, arguments in failures.items():
        assert main([*base, *arguments, "--out", str(tmp_path / "bad.zarr")]) == 1
        assert message in capsys.readouterr().err, message
