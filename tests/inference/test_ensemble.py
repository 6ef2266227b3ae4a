"""Ensembles end to end: output layout in both formats, perturbations, seeds, subsets, blow-ups."""

from __future__ import annotations

import json

import cftime
import numpy as np
import pytest
import torch
import xarray as xr

from forecast.errors import ConfigError, DataError
from forecast.grid import Grid
from forecast.locking import LockedError, lock
from forecast.stepper import Stepper
from forecast.store import open_store
from inference.initial import parse_init_spec
from inference.rollout import BlowUp, BlowUpError
from inference.schedule import manifest_path
from tests.inference.conftest import CHANNELS, STDS, run

INITS = "2020-01-01T06/2020-01-01T12/6h"


def _run(stepper, store, out, **kwargs):
    options = {
        "members": 3,
        "batch_size": 2,
        "checkpoint_digest": "abc123",
        "model_name": "sfno",
        "store": "store.zarr",
    }
    options.update(kwargs)
    inits = options.pop("inits", INITS)
    return run(
        stepper, store, parse_init_spec(inits, "standard"), options.pop("steps", 3), out, **options
    )


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_layout_and_attributes_opened_by_plain_xarray(tmp_path, store, stepper, suffix):
    out = tmp_path / f"fc{suffix}"
    result = _run(stepper, store, out, perturbation="gaussian")
    assert result.status == "finished"
    ds = xr.open_zarr(out) if suffix == ".zarr" else xr.open_dataset(out)
    assert dict(ds.sizes) == {
        "time": 2,
        "lead_time": 4,
        "member": 3,
        "latitude": 16,
        "longitude": 32,
        "bnds": 2,
    }
    assert list(ds.data_vars) == sorted([*CHANNELS, "latitude_bnds", "longitude_bnds"])
    assert ds["z500"].dims == ("time", "lead_time", "member", "latitude", "longitude")
    assert ds["z500"].dtype == np.float32
    assert ds["lead_time"].dtype.kind == "m"
    assert list(ds["lead_time"].values.astype("timedelta64[h]").astype(int)) == [0, 6, 12, 18]
    assert ds["valid_time"].dims == ("time", "lead_time")
    assert ds["valid_time"].values[1, 3] == np.datetime64("2020-01-02T06:00")
    assert ds["time"].attrs["standard_name"] == "forecast_reference_time"
    assert ds["lead_time"].attrs["standard_name"] == "forecast_period"
    assert ds["member"].attrs["standard_name"] == "realization"
    assert ds["z500"].attrs == {
        "long_name": "Geopotential at 500 hPa",
        "units": "m**2 s**-2",
        "standard_name": "geopotential",
    }
    assert ds["u10m"].attrs["units"] == "m s**-1"
    for key, value in {
        "Conventions": "CF-1.8",
        "model": "sfno",
        "checkpoint_digest": "abc123",
        "perturbation": "gaussian",
        "source_store": "store.zarr",
        "software_version": "forecast 0.1.0",
        "calendar": "standard",
    }.items():
        assert ds.attrs[key] == value
    assert ds.attrs["creation_time"].endswith("Z")
    # every value written, and lead 0 is the (perturbed) store state at the init time
    assert np.isfinite(ds["t2m"].values).all()
    truth = store["data"].sel(time="2020-01-01T12", channel="t850").values
    spread = ds["t850"].isel(time=1, lead_time=0).values - truth
    assert 0.5 * 0.05 * STDS[1] < spread.std() < 1.5 * 0.05 * STDS[1]
    manifest = json.loads(manifest_path(out).read_text())
    assert (
        manifest["status"] == "finished"
        and manifest["members"] == 3
        and manifest["batch_size"] == 2
    )
    assert manifest["init_times"] == ["2020-01-01T06:00", "2020-01-01T12:00"]
    assert not (tmp_path / "fc.nc.partial").exists()
    ds.close()


def test_members_identical_without_perturbation_and_differ_with_each(tmp_path, store, stepper):
    none = xr.open_zarr(_run(stepper, store, tmp_path / "none.zarr", perturbation="none").out)
    z = none["z500"].values
    np.testing.assert_array_equal(z[:, :, 0], z[:, :, 1])
    np.testing.assert_array_equal(z[:, :, 0], z[:, :, 2])
    truth = store["data"].sel(time="2020-01-01T06", channel="z500").values
    np.testing.assert_array_equal(z[0, 0, 0], truth)
    for name in ("gaussian", "grf", "bred"):
        ds = xr.open_zarr(
            _run(
                stepper, store, tmp_path / f"{name}.zarr", perturbation=name, members=2, steps=2
            ).out
        )
        values = ds["z500"].values
        assert np.abs(values[:, :, 0] - values[:, :, 1]).max() > 1.0, name
        # perturbations of about 0.05 std around the analysis
        error = np.sqrt(((values[0, 0] - truth) ** 2).mean())
        assert 0.02 * STDS[0] < error < 0.1 * STDS[0], name


@pytest.mark.parametrize("perturbation", ["gaussian", "grf", "bred"])
def test_same_seed_same_ensemble_whatever_the_batch_size(tmp_path, store, stepper, perturbation):
    outs = [
        _run(
            stepper,
            store,
            tmp_path / f"b{size}.zarr",
            perturbation=perturbation,
            batch_size=size,
            seed=7,
            members=3,
        ).out
        for size in (1, 4)
    ]
    a, b = (xr.open_zarr(o)["t2m"].values for o in outs)
    if perturbation == "bred":  # the model runs on other batch shapes: equal to float rounding
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)
    else:
        np.testing.assert_array_equal(a[:, 0], b[:, 0])
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)
    other = xr.open_zarr(
        _run(stepper, store, tmp_path / "other.zarr", perturbation=perturbation, seed=8).out
    )["t2m"].values
    assert np.abs(other[:, 0] - a[:, 0]).max() > 0.01


def test_channel_subset_and_output_grid(tmp_path, store, stepper):
    full = xr.open_zarr(_run(stepper, store, tmp_path / "full.zarr", members=1).out)
    out = _run(
        stepper,
        store,
        tmp_path / "sub.nc",
        members=1,
        channels=["t2m", "z500"],
        output_grid=Grid.parse("8x16"),
    )
    ds = xr.open_dataset(out.out)
    assert sorted(ds.data_vars) == ["latitude_bnds", "longitude_bnds", "t2m", "z500"]
    assert ds.sizes["latitude"] == 8 and ds.sizes["longitude"] == 16
    np.testing.assert_allclose(ds["latitude"].values, Grid.equiangular(8, 16).latitude)
    # regridded, the field keeps its values where the grids share points, and its pattern elsewhere
    coarse = ds["t2m"].isel(time=0, lead_time=2, member=0).values
    fine = full["t2m"].isel(time=0, lead_time=2, member=0).values
    np.testing.assert_allclose(coarse[[0, -1], ::1], fine[[0, -1], ::2], rtol=1e-5)
    assert np.corrcoef(coarse[:, ::1].ravel(), fine[::2, ::2].ravel())[0, 1] > 0.9


def test_360_day_calendar_survives_into_valid_time(tmp_path, store_360_path, stepper):
    store = open_store(store_360_path)
    for suffix in (".zarr", ".nc"):
        out = run(
            stepper, store, parse_init_spec("2000-02-30T00", "360_day"), 4, tmp_path / f"c{suffix}"
        ).out
        ds = xr.open_zarr(out) if suffix == ".zarr" else xr.open_dataset(out)
        valid = ds["valid_time"].values
        assert isinstance(valid[0, 0], cftime.Datetime360Day)
        assert valid[0, 4] == cftime.Datetime360Day(2000, 3, 1, 0)
        assert ds["time"].values[0] == cftime.Datetime360Day(2000, 2, 30, 0)
        assert ds.attrs["calendar"] == "360_day"
        np.testing.assert_array_equal(
            ds["z500"].isel(lead_time=0).values[0, 0], store["data"].sel(channel="z500").values[4]
        )


class _Exploding:
    """A Stepper that wraps another; member 1 (batch item 1) turns NaN at lead 2 (or, drifting, moves 4 stds)."""

    kind = "exploding"

    def __init__(self, inner, drift: bool = False):
        self.inner = inner
        self.drift = drift
        self.channels, self.grid, self.history, self.normalizer = (
            inner.channels,
            inner.grid,
            inner.history,
            inner.normalizer,
        )
        self.step, self.device, self.forcing_names = inner.step, inner.device, inner.forcing_names
        self.calls = 0

    def forcings(self, times):
        return self.inner.forcings(times)

    def advance(self, state, times, *, check_finite=True):
        self.calls += 1
        new = self.inner.advance(state, times, check_finite=check_finite)
        if self.calls % 3 == 2 and self.drift:  # every value plausible, the global mean not
            std = torch.as_tensor(self.inner.normalizer.std, dtype=new.dtype)
            new[1] = new[1] + 4.0 * std[:, None, None]
        elif self.calls % 3 == 2:
            new[1, 0] = float("nan")
        return new

    def config(self):
        return {**self.inner.config(), "stepper": self.kind}

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state_dict, strict=True):
        return self.inner.load_state_dict(state_dict, strict)


@pytest.mark.parametrize("mode", ["continue", "stop"])
def test_blowup_is_reported_and_continues_or_stops(tmp_path, store, stepper, mode):
    out = tmp_path / f"blow-{mode}.zarr"
    messages = []
    kwargs = {
        "inits": "2020-01-01T06",
        "members": 3,
        "batch_size": 3,
        "on_blowup": mode,
        "log": messages.append,
    }
    if mode == "stop":
        with pytest.raises(
            BlowUpError,
            match=r"member 1 of the forecast from 2020-01-01T06:00 blew up at lead 2 in z500 \(non-finite\)",
        ) as caught:
            _run(_Exploding(stepper), store, out, **kwargs)
        assert caught.value.blowups == (
            BlowUp("2020-01-01T06:00", 1, 2, "z500", "non-finite"),
        )  # a field of the error
        manifest = json.loads(manifest_path(out).read_text())
        assert manifest["status"] == "failed" and manifest["blowups"][0]["member"] == 1
        return
    exploding = _Exploding(stepper)
    assert isinstance(exploding, Stepper)  # a wrapper is a model family of its own
    result = _run(exploding, store, out, **kwargs)
    assert [(b.member, b.lead, b.channel) for b in result.blowups] == [(1, 2, "z500")]
    assert messages == [
        "warning: member 1 of the forecast from 2020-01-01T06:00 blew up at lead 2 in z500 (non-finite)"
    ]
    ds = xr.open_zarr(out)
    assert np.isfinite(ds["z500"].sel(member=[0, 2]).values).all()
    assert np.isnan(ds["z500"].sel(member=1, lead_time=ds.lead_time[2]).values).all()
    assert json.loads(manifest_path(out).read_text())["blowups"][0]["member"] == 1


def test_bad_requests_fail_before_compute(tmp_path, store, stepper):
    with pytest.raises(
        ConfigError,
        match=r"cannot tell the output format of 'fc\.txt'; end --out with one of \.zarr, \.nc",
    ):
        _run(stepper, store, tmp_path / "fc.txt")
    with pytest.raises(
        ConfigError, match="--channels names channel\\(s\\) q700 the model does not forecast"
    ):
        _run(stepper, store, tmp_path / "fc.zarr", channels=["q700"])
    with pytest.raises(ConfigError, match="--steps must be at least 1"):
        _run(stepper, store, tmp_path / "fc.zarr", steps=0)
    with pytest.raises(DataError, match=r"initial time\(s\) 2021-01-01T00:00 not in the store"):
        _run(stepper, store, tmp_path / "fc.zarr", inits="2021-01-01")
    assert not (tmp_path / "fc.zarr").exists()


def test_lock_and_conflicting_outputs(tmp_path, store, stepper):
    out = tmp_path / "fc.zarr"
    with (
        lock(out, "forecast run"),
        pytest.raises(
            LockedError,
            match=r"fc.zarr: another process is writing this output \(forecast run pid \d+",
        ),
    ):
        _run(stepper, store, out)
    _run(stepper, store, out, members=1)
    with pytest.raises(
        DataError,
        match=r"output holds a finished forecast with other settings \(members\); choose another --out, or pass --overwrite",
    ):
        _run(stepper, store, out, members=2)
    assert _run(stepper, store, out, members=1).status == "skipped"
    assert _run(stepper, store, out, members=2, overwrite=True).status == "finished"


def test_batch_size_from_memory_budget(tmp_path, store, stepper):
    small = _run(
        stepper, store, tmp_path / "small.zarr", batch_size=None, max_memory="1MB", members=4
    )
    large = _run(
        stepper, store, tmp_path / "large.zarr", batch_size=None, max_memory="8GB", members=4
    )
    assert small.batch_size == 1
    assert large.batch_size == 8
    np.testing.assert_allclose(
        xr.open_zarr(small.out)["z500"].values,
        xr.open_zarr(large.out)["z500"].values,
        rtol=1e-5,
        atol=1e-2,
    )


@pytest.mark.parametrize("mode", ["continue", "stop"])
def test_a_member_that_leaves_the_climate_is_reported_like_a_blowup(tmp_path, store, stepper, mode):
    """A member 4 stds off in every channel's global mean, every value inside the bounds, is flagged."""
    out = tmp_path / f"drift-{mode}.zarr"
    messages = []
    kwargs = {"inits": "2020-01-01T06", "members": 3, "batch_size": 3, "on_blowup": mode}
    drifting = _Exploding(stepper, drift=True)
    if mode == "stop":
        with pytest.raises(
            BlowUpError,
            match=r"member 1 of the forecast from 2020-01-01T06:00 left the climate at lead 2 in ",
        ):
            _run(drifting, store, out, **kwargs)
        assert json.loads(manifest_path(out).read_text())["status"] == "failed"
        return
    result = _run(drifting, store, out, log=messages.append, **kwargs)
    assert [(b.member, b.lead) for b in result.blowups] == [(1, 2)]
    assert " stds from its mean " in result.blowups[0].reason
    assert messages == [f"warning: {result.blowups[0].describe()}"]
