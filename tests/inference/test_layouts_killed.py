"""Killed runs (SIGKILL) in the new layouts: wb2 Zarr resumes to the same forecast; cdo keeps the old output."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import xarray as xr

from forecast.scoring.layouts import open_forecast
from inference.initial import parse_init_spec
from inference.schedule import lock_path, progress_dir
from tests.inference.conftest import CHANNELS
from tests.inference.conftest import run as run_forecast
from tests.killing import kill_when

REPO = Path(__file__).resolve().parents[2]
INITS = "2020-01-01T06/2020-01-01T12/6h"
STEPS = 6
RUN = dict(members=3, batch_size=2, perturbation="gaussian", seed=5, show_progress=False)

SCRIPT = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from forecast.store import open_store
from inference.initial import parse_init_spec
from tests.inference.conftest import make_stepper
from tests.inference.conftest import run as run_forecast

stepper = make_stepper()
inner = stepper.forward_normalized
def slow(*args, **kwargs):
    time.sleep(0.15)
    return inner(*args, **kwargs)
stepper.forward_normalized = slow
run_forecast(stepper, open_store({store!r}), parse_init_spec({inits!r}, "standard"), {steps}, {out!r},
             members=3, batch_size=2, perturbation="gaussian", seed=5, show_progress=False,
             layout={layout!r}, overwrite={overwrite!r})
"""


def _start(tmp_path, store_path, out, layout, overwrite=False):
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(
            SCRIPT.format(
                repo=str(REPO), store=str(store_path), inits=INITS, steps=STEPS, out=str(out),
                layout=layout, overwrite=overwrite,
            )
        )
    )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def test_killed_wb2_run_resumes_to_the_uninterrupted_forecast(tmp_path, store_path, store, stepper):
    out = tmp_path / "killed.zarr"
    marker = progress_dir(out) / "batch-000001.json"
    process = _start(tmp_path, store_path, out, "wb2")
    kill_when(process, lambda: marker.exists() and json.loads(marker.read_text())["lead"] >= 2)
    assert lock_path(out).exists()  # the killed run could not remove it; it is no lock any more
    messages = []
    resumed = run_forecast(
        stepper, store, parse_init_spec(INITS, "standard"), STEPS, out, layout="wb2",
        log=messages.append, **RUN,
    )  # fmt: skip
    assert resumed.status == "finished" and any("resuming" in m for m in messages)
    assert not lock_path(out).exists() and not progress_dir(out).exists()
    reference = run_forecast(
        stepper, store, parse_init_spec(INITS, "standard"), STEPS, tmp_path / "reference.zarr",
        layout="wb2", log=lambda m: None, **RUN,
    )  # fmt: skip
    a, b = xr.open_zarr(out), xr.open_zarr(reference.out)
    for name in ("geopotential", "temperature", "2m_temperature", "10m_u_component_of_wind"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    assert np.isfinite(a["geopotential"].sel(level=500).values).all()
    assert np.isnan(a["geopotential"].sel(level=850).values).all()  # z850 was not forecast


def test_killed_cdo_overwrite_leaves_the_old_output_whole(tmp_path, store_path, store, stepper):
    out = tmp_path / "fc_cdo"
    run_forecast(
        stepper, store, parse_init_spec(INITS, "standard"), STEPS, out, layout="cdo",
        log=lambda m: None, **RUN,
    )  # fmt: skip
    before = {p.name: p.read_bytes() for p in sorted(out.glob("*.nc"))}
    assert len(before) == 2 * 3
    partial = out.with_name(out.name + ".partial")
    process = _start(tmp_path, store_path, out, "cdo", overwrite=True)
    kill_when(process, lambda: partial.exists() and len(list(partial.glob("*.nc"))) >= 2)
    assert {p.name: p.read_bytes() for p in sorted(out.glob("*.nc"))} == before
    again = run_forecast(
        stepper, store, parse_init_spec(INITS, "standard"), STEPS, out, layout="cdo",
        overwrite=True, log=lambda m: None, **RUN,
    )  # fmt: skip
    assert again.status == "finished" and not partial.exists()
    back = open_forecast(out)
    assert back.sizes["member"] == 3 and np.isfinite(back[CHANNELS[0]].values).all()
