"""Ensembles of a sampling stepper (DYffusion): seeds, batches, perturbations, resume mid-horizon."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.normalize import Normalizer
from forecast.steppers import DYffusionStepper
from inference.initial import parse_init_spec
from inference.rollout import block_seed, rollout
from inference.schedule import progress_dir
from inference.writers.zarr import ZarrWriter
from tests.inference.conftest import CHANNELS, MEANS, NLAT, NLON, STDS, STEP, run

INITS = "2020-01-01T06/2020-01-01T12/6h"
STEPS = 7  # horizons of 3: leads 1-3, 4-6, and the first of the third


@pytest.fixture(scope="module")
def sampler() -> DYffusionStepper:
    from forecast.grid import Grid

    torch.manual_seed(0)
    normalizer = Normalizer(tuple(CHANNELS), MEANS, STDS, STDS * 0.2)
    stepper = DYffusionStepper(
        {"embed_dim": 8, "num_layers": 1, "horizon": 3, "dropout": 0.2},
        CHANNELS,
        Grid.equiangular(NLAT, NLON),
        STEP,
        normalizer,
    )
    for network in (
        stepper.interpolator,
        stepper.forecaster,
    ):  # weights where a fresh one has zeros
        torch.nn.init.normal_(network.sfno.decoder[-1].weight, std=0.3)
    return stepper.eval()


def _run(stepper, store, out, **options):
    settings = {"members": 3, "batch_size": 2, "seed": 3, **options}
    inits = parse_init_spec(settings.pop("inits", INITS), "standard")
    return run(stepper, store, inits, settings.pop("steps", STEPS), out, **settings)


def test_members_are_stochastic_trajectories_reproducible_whatever_the_batch(
    tmp_path, store, sampler
):
    outs = {
        size: _run(sampler, store, tmp_path / f"b{size}.zarr", batch_size=size).out
        for size in (1, 2, 6)
    }
    values = {size: xr.open_zarr(out)["z500"].values for size, out in outs.items()}
    for size in (2, 6):
        np.testing.assert_allclose(values[size], values[1], rtol=1e-5, atol=1e-2)
    z = values[1]  # (init, lead, member, lat, lon)
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z[:, 0, 0], z[:, 0, 1])  # no perturbation: one initial state
    for lead in (1, 3, 4, 7):
        assert np.abs(z[:, lead, 0] - z[:, lead, 1]).max() > 1.0, lead  # members differ
    other = xr.open_zarr(_run(sampler, store, tmp_path / "s4.zarr", seed=4).out)["z500"].values
    assert np.abs(other[:, 1:] - z[:, 1:]).max() > 1.0


def test_initial_perturbation_combines_with_sampling(tmp_path, store, sampler):
    plain = xr.open_zarr(_run(sampler, store, tmp_path / "plain.zarr").out)["t850"].values
    grf = xr.open_zarr(
        _run(sampler, store, tmp_path / "grf.zarr", perturbation="grf", amplitude="0.05").out
    )["t850"].values
    assert np.abs(grf[:, 0, 0] - grf[:, 0, 1]).max() > 0.05  # perturbed initial states
    assert np.abs(grf[:, 3] - plain[:, 3]).max() > 0.05


def test_rollout_samples_blocks_and_restarts_only_at_a_block(sampler, store):
    initial = torch.as_tensor(
        store["data"].sel(time=["2020-01-01T06"]).values[:, None], dtype=torch.float32
    )
    times = np.asarray(store["time"].sel(time=["2020-01-01T06"]).values)
    leads = list(rollout(sampler, initial, times, 5, seeds=[11]))
    assert [state.lead for state in leads] == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(leads[2].valid_time, times + np.timedelta64(12, "h"))
    block = sampler.advance_block(initial, times, seeds=[block_seed(11, 0)])
    np.testing.assert_array_equal(leads[3].state.numpy(), block[:, 2].numpy())
    # from lead 3 (a block start) the second block is drawn from block seed 1
    again = list(rollout(sampler, leads[3].state[:, None], times, 5, start_lead=3, seeds=[11]))
    np.testing.assert_array_equal(again[2].state.numpy(), leads[5].state.numpy())
    with pytest.raises(ValueError, match="start of a block of 3 leads"):
        list(rollout(sampler, initial, times, 5, start_lead=2, seeds=[11]))


class _FailingWriter(ZarrWriter):
    """A Zarr writer that fails once, at one lead of one member block (a crash mid-horizon)."""

    fail_at: tuple[int, int] | None = (1, 5)  # (init index, lead)

    def write(self, init_index, member_start, lead, block):
        if self.fail_at == (init_index, lead):
            raise OSError("disk full")
        super().write(init_index, member_start, lead, block)


def test_interrupted_mid_horizon_resumes_to_the_uninterrupted_output(tmp_path, store, sampler):
    from inference.ensemble import run_forecast
    from inference.initial import InitialStates
    from inference.perturbations import build_perturbation, perturbation_spec
    from inference.request import RunRequest

    reference = xr.open_zarr(_run(sampler, store, tmp_path / "reference.zarr").out)
    out = tmp_path / "interrupted.zarr"
    initial = InitialStates(store, parse_init_spec(INITS, "standard"), sampler)
    spec = perturbation_spec("none", "0.05", sampler.channels, 3)

    def attempt(writer):
        request = RunRequest.for_stepper(
            sampler,
            initial.labels,
            STEPS,
            members=3,
            batch_size=2,
            perturbation=spec,
            compression=writer.compression,
        )
        return run_forecast(
            sampler, initial, build_perturbation(spec, sampler), writer, request,
            show_progress=False, log=messages.append,
        )  # fmt: skip

    messages: list[str] = []
    with pytest.raises(OSError, match="disk full"):
        attempt(_FailingWriter(out))
    done = {
        path.name: json.loads(path.read_text())["lead"] for path in progress_dir(out).glob("*.json")
    }
    assert sorted(done.values()) == [4, 7, 7]  # one batch crashed inside its second horizon (4-6)
    writer = _FailingWriter(out)
    writer.fail_at = None
    assert attempt(writer).status == "finished"
    assert any("resuming" in m for m in messages)
    resumed = xr.open_zarr(out)
    for channel in CHANNELS:
        np.testing.assert_array_equal(resumed[channel].values, reference[channel].values)
