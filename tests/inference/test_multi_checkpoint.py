"""Multi-checkpoint ensembles: member m runs checkpoint m mod K, as the run of that checkpoint alone."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import xarray as xr

from forecast.checkpoint import checkpoint_digest, save_checkpoint
from forecast.errors import CheckpointError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.steppers import BackboneStepper, BoostedStepper, DYffusionStepper
from forecast.store import open_store
from inference.batching import plan_batches
from inference.climate import product_path
from inference.initial import parse_init_spec
from inference.members import MemberModels, check_members_agree
from inference.schedule import manifest_path
from tests.inference.conftest import CHANNELS, MEANS, NLAT, NLON, STDS, STEP, make_stepper, run
from tests.inference.test_climate_run import (
    INIT,
    REDUCE,
    STEPS,
    _assert_resumes_to_the_reference,
    _kill_in_march,
)
from tests.object_storage import s3, s3_server  # noqa: F401


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    """Two tiny SFNOs with other random weights (as two training seeds give)."""
    folder = tmp_path_factory.mktemp("members")
    paths = [folder / "seed0.pt", folder / "seed1.pt"]
    for seed, path in enumerate(paths):
        save_checkpoint(path, make_stepper(seed=seed), provenance={"seed": seed})
    return paths


def _cli(*args: str) -> int:
    from forecast.cli.main import main

    return main(["run", "--no-progress", *map(str, args)])


def test_plan_holds_one_checkpoint_per_batch():
    batches = plan_batches(n_init=2, n_members=5, batch_size=2, models=2)
    pairs = sorted(
        (int(i), int(m)) for b in batches for i, m in zip(b.init_index, b.member, strict=True)
    )
    assert pairs == [(i, m) for i in range(2) for m in range(5)]  # every pair once
    for batch in batches:
        assert len(batch) <= 2 and set(batch.member % 2) == {batch.model}
    assert [b.index for b in batches] == list(range(len(batches)))
    # members 0, 2, 4 of checkpoint 0 are written one member at a time
    assert batches[0].regions() == [(0, 0, 1, 0), (0, 2, 3, 1)]
    # a batch larger than a checkpoint's members holds whole init times
    whole = plan_batches(n_init=3, n_members=4, batch_size=4, models=2)
    assert [(b.model, b.init_index.tolist(), b.member.tolist()) for b in whole] == [
        (0, [0, 0, 1, 1], [0, 2, 0, 2]),
        (0, [2, 2], [0, 2]),
        (1, [0, 0, 1, 1], [1, 3, 1, 3]),
        (1, [2, 2], [1, 3]),
    ]
    with pytest.raises(ValueError, match="one member per chunk"):
        plan_batches(n_init=1, n_members=4, batch_size=4, chunk=2, models=2)


def test_member_k_is_the_run_of_checkpoint_k(tmp_path, store_path, checkpoints, capsys):
    common = ["--data", store_path, "--init", "2020-01-01T06", "--steps", 3]
    common += ["--perturbation", "gaussian", "--seed", 4]
    ensemble = tmp_path / "ensemble.zarr"
    args = ["--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1]]
    assert _cli(*args, *common, "--out", ensemble) == 0  # --members defaults to 2
    assert "(batch size 2, 2 checkpoints stacked: vmap)" in capsys.readouterr().out
    ds = xr.open_zarr(ensemble)
    assert ds.sizes["member"] == 2
    assert ds["checkpoint"].dims == ("member",) and ds["checkpoint"].values.tolist() == [0, 1]
    digests = [checkpoint_digest(p) for p in checkpoints]
    assert ds.attrs["checkpoint_digest"] == " ".join(digests)
    manifest = json.loads(manifest_path(ensemble).read_text())
    assert manifest["checkpoint_digest"] == " ".join(digests)
    # two seeds of one recipe: one batch, both networks in one vmapped call
    assert manifest["checkpoint_batches"] == "mixed" and manifest["batch_size"] == 2
    stacking = manifest["checkpoint_stacking"]
    assert stacking["strategy"] == "vmap" and stacking["reason"].startswith(
        "agrees with the loop to"
    )
    # the same checkpoints in the other order are another ensemble: refused, the output kept
    swapped = ["--checkpoint", checkpoints[1], "--checkpoint", checkpoints[0]]
    assert _cli(*swapped, *common, "--out", ensemble) == 1
    err = capsys.readouterr().err
    assert "with other settings (checkpoint_digest)" in err and "Traceback" not in err
    np.testing.assert_array_equal(xr.open_zarr(ensemble)["t2m"].values, ds["t2m"].values)
    alone = []
    for k, path in enumerate(checkpoints):
        out = tmp_path / f"alone{k}.zarr"
        options = ["--members", 2, "--batch-size", 1]
        assert _cli("--checkpoint", path, *common, *options, "--out", out) == 0
        single = xr.open_zarr(out)
        assert "checkpoint" not in single.coords  # the one-checkpoint output is unchanged
        assert single.attrs["checkpoint_digest"] == digests[k]
        alone.append(single)
        for channel in CHANNELS:  # the same model and the same member seed: bitwise
            np.testing.assert_array_equal(
                ds[channel].isel(member=k).values, single[channel].isel(member=k).values
            )
    # and not the other checkpoint's member: the two models differ
    assert (
        np.abs(
            ds["t2m"].isel(member=1, lead_time=3) - alone[0]["t2m"].isel(member=1, lead_time=3)
        ).max()
        > 0.1
    )


def test_checkpoints_that_do_not_match_are_refused(tmp_path, store_path, checkpoints, capsys):
    other = tmp_path / "history2.pt"
    save_checkpoint(other, make_stepper(history=2, seed=3), provenance={})
    fewer = tmp_path / "three-channels.pt"
    save_checkpoint(fewer, make_stepper(channels=CHANNELS[:3]), provenance={})
    common = ["--data", store_path, "--init", "2020-01-01T06", "--steps", 2]
    for path, problem in ((other, "history 2 against 1"), (fewer, "channels z500,t850,u10m")):
        code = _cli(
            "--checkpoint",
            checkpoints[0],
            "--checkpoint",
            path,
            *common,
            "--out",
            tmp_path / "x.zarr",
        )
        err = capsys.readouterr().err.strip()
        assert code == 1
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        assert f"checkpoint {path} does not match the first checkpoint {checkpoints[0]}" in err
        assert problem in err
    # fewer members than checkpoints: one would run none
    code = _cli(
        *["--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1]],
        *common,
        "--members",
        1,
        "--out",
        tmp_path / "x.zarr",
    )
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "--members 1 runs only 1 of the 2 checkpoints" in err
    assert not (tmp_path / "x.zarr").exists()  # refused before any output
    with pytest.raises(CheckpointError, match="grid equiangular 8x16 against equiangular 16x32"):
        check_members_agree([make_stepper(), make_stepper(nlat=8, nlon=16)], ["a.pt", "b.pt"])


def test_every_difference_the_members_cannot_share_is_named():
    first = make_stepper()
    forcings = ",".join(first.forcing_names)
    cases = [
        (make_stepper(step=dt.timedelta(hours=12)), "time step 12h against 6h"),
        (make_stepper(forcings=False), f"forcings none against {forcings}"),
        (make_stepper(seed=1), None),  # other weights: a member of the same ensemble
    ]
    for other, problem in cases:
        if problem is None:
            check_members_agree([first, other], ["a.pt", "b.pt"])
            continue
        with pytest.raises(CheckpointError) as raised:
            check_members_agree([first, other], ["a.pt", "b.pt"])
        assert "checkpoint b.pt does not match the first checkpoint a.pt" in str(raised.value)
        assert problem in str(raised.value)
    # the third checkpoint is checked against the first too, and every mismatch is listed
    with pytest.raises(CheckpointError) as raised:
        check_members_agree(
            [first, make_stepper(seed=1), make_stepper(history=2, nlat=8, nlon=16)],
            ["a.pt", "b.pt", "c.pt"],
        )
    message = str(raised.value)
    assert "checkpoint c.pt" in message and "history 2 against 1" in message
    assert "grid equiangular 8x16 against equiangular 16x32" in message


def _dyffusion(horizon: int, forcings: bool = True) -> DYffusionStepper:
    torch.manual_seed(0)
    normalizer = Normalizer(tuple(CHANNELS), MEANS, STDS, STDS * 0.2)
    return DYffusionStepper(
        {"embed_dim": 8, "num_layers": 1, "horizon": horizon},
        list(CHANNELS),
        Grid.equiangular(NLAT, NLON),
        STEP,
        normalizer,
        forcings=forcings,
    ).eval()


def test_another_stepper_family_or_block_of_steps_is_named():
    """The parts of the mismatch check that need a second stepper type: family and block."""
    first = make_stepper()
    boosted = BoostedStepper(make_stepper(seed=1), "sfno", {"embed_dim": 8, "num_layers": 1})
    with pytest.raises(CheckpointError) as raised:
        check_members_agree([first, boosted], ["sfno.pt", "boosted.pt"])
    message = str(raised.value)
    assert "checkpoint boosted.pt does not match the first checkpoint sfno.pt" in message
    assert message.count(" against ") == 1  # the family alone differs
    assert "stepper family boosted against backbone" in message
    check_members_agree([boosted, BoostedStepper(first, "fno", {})], ["a.pt", "b.pt"])
    # a sampling stepper: its family and its block of steps
    dyffusion = _dyffusion(horizon=3)
    with pytest.raises(CheckpointError) as raised:
        check_members_agree([first, dyffusion], ["sfno.pt", "dy.pt"])
    message = str(raised.value)
    assert "stepper family dyffusion against backbone" in message
    assert "steps per sampled block 3 against 1" in message
    # with time forcings a block's forcings name its steps; without, the block alone differs
    three, four = _dyffusion(horizon=3, forcings=False), _dyffusion(horizon=4, forcings=False)
    with pytest.raises(CheckpointError) as raised:
        check_members_agree([three, four], ["dy3.pt", "dy4.pt"])
    message = str(raised.value)
    assert "checkpoint dy4.pt does not match the first checkpoint dy3.pt" in message
    assert message.count(" against ") == 1
    assert "steps per sampled block 4 against 3" in message
    with pytest.raises(CheckpointError, match="steps per sampled block 4 against 3"):
        check_members_agree([dyffusion, _dyffusion(horizon=4)], ["dy3.pt", "dy4.pt"])
    check_members_agree([dyffusion, _dyffusion(horizon=3)], ["a.pt", "b.pt"])


def _constant_stepper(mean, std, residual: bool) -> BackboneStepper:
    """A tiny SFNO whose network outputs zero: residual, persistence; not, its normaliser's mean."""
    stepper = BackboneStepper(
        "sfno", {"embed_dim": 8, "num_layers": 1}, list(CHANNELS), Grid.equiangular(NLAT, NLON),
        STEP, Normalizer(tuple(CHANNELS), mean, std, std * 0.2), residual=residual,
    )  # fmt: skip
    torch.nn.init.zeros_(stepper.model.decoder[-1].weight)
    return stepper.eval()


def test_each_member_is_checked_for_blowups_with_its_own_checkpoints_normaliser(
    tmp_path, store_path, checkpoints
):
    """Bounds mean +- 50 std of each member's own checkpoint, not of the first checkpoint.

    Member 1 persists the store's states (within 1.3 std of the first checkpoint's mean) but its
    checkpoint's std is 100 times smaller: a blow-up for it, from its initial state (lead 0) on.
    Member 2 starts from the store's state and then holds its checkpoint's mean, 60 stds of the
    first checkpoint above the first's mean but within 50 of its own (twice as large) stds: no
    blow-up for it.
    """
    tight, shifted = tmp_path / "tight.pt", tmp_path / "shifted.pt"
    save_checkpoint(tight, _constant_stepper(MEANS, STDS / 100, residual=True), provenance={})
    save_checkpoint(
        shifted, _constant_stepper(MEANS + 60 * STDS, 2 * STDS, residual=False), provenance={}
    )
    out = tmp_path / "three.zarr"
    code = _cli(
        *["--checkpoint", checkpoints[0], "--checkpoint", tight, "--checkpoint", shifted],
        *["--data", store_path, "--init", "2020-01-01T06", "--steps", 2, "--out", out],
        *["--on-blowup", "continue"],
    )  # fmt: skip
    assert code == 0
    ds = xr.open_zarr(out)
    z500 = ds["z500"].isel(time=0, lead_time=2).values
    assert np.abs(z500[2] - (MEANS[0] + 60 * STDS[0])).max() < 1.0  # its own mean
    assert np.abs(z500[1] - MEANS[0]).max() < 1.5 * STDS[0]  # the store's state, persisted
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["checkpoint_batches"] == "per-checkpoint"  # three normalisers: not stacked
    assert "checkpoint_stacking" not in manifest
    blowups = manifest["blowups"]
    assert [(b["member"], b["lead"]) for b in blowups] == [(1, 0)]
    lower = MEANS - 50 * STDS / 100  # of member 1's own checkpoint
    assert blowups[0]["reason"].endswith(
        f"below {lower[CHANNELS.index(blowups[0]['channel'])]:.4g}"
    )


def test_each_member_is_perturbed_in_its_own_checkpoints_stds(tmp_path, store_path):
    """Two persistence models whose stds differ 4x: with a Gaussian perturbation, member 1 is the
    one-checkpoint run of its own checkpoint bit for bit (its amplitudes are in its own stds), and
    its perturbation is 4 times member 0's."""
    narrow, wide = tmp_path / "narrow.pt", tmp_path / "wide.pt"
    save_checkpoint(narrow, _constant_stepper(MEANS, STDS, residual=True), provenance={})
    save_checkpoint(wide, _constant_stepper(MEANS, 4 * STDS, residual=True), provenance={})
    common = ["--data", store_path, "--init", "2020-01-01T06", "--steps", 1]
    common += ["--perturbation", "gaussian", "--seed", 4]
    both, alone = tmp_path / "both.zarr", tmp_path / "alone.zarr"
    assert _cli("--checkpoint", narrow, "--checkpoint", wide, *common, "--out", both) == 0
    options = ["--members", 2, "--batch-size", 1]
    assert _cli("--checkpoint", wide, *common, *options, "--out", alone) == 0
    ds, single = xr.open_zarr(both), xr.open_zarr(alone)
    truth = open_store(store_path)["data"].sel(time="2020-01-01T06").values
    for channel in CHANNELS:
        np.testing.assert_array_equal(
            ds[channel].isel(member=1).values, single[channel].isel(member=1).values
        )
    c = CHANNELS.index("z500")
    spread = [
        float(np.std(ds["z500"].isel(time=0, member=m, lead_time=1).values - truth[c]))
        for m in (0, 1)
    ]
    assert 3.0 < spread[1] / spread[0] < 5.0


SCRIPT = """
import sys, time
import torch
sys.path.insert(0, {repo!r})
torch.set_num_threads(1)
from forecast.store import open_store
from inference.initial import parse_init_spec
from inference.members import MemberModels
from tests.inference.conftest import make_stepper, run
from tests.inference.test_climate_run import _climate_writer, _options

def slowed(stepper):  # in its forcings: a mixed batch steps the first checkpoint's stepper
    inner = stepper.forcings
    def slow(*args, **kwargs):
        time.sleep(0.05)
        return inner(*args, **kwargs)
    stepper.forcings = slow
    return stepper

models = MemberModels((slowed(make_stepper(seed=0)), slowed(make_stepper(seed=1))))
out = {out!r}
run(models, open_store({store!r}), parse_init_spec({init!r}, "360_day"), {steps}, out,
    writer=_climate_writer(out, models.first), **_options())
"""


def test_killed_multi_checkpoint_climate_run_resumes_to_the_same_means(tmp_path, store_360_path):
    models = MemberModels((make_stepper(seed=0), make_stepper(seed=1)))
    out = tmp_path / "killed.zarr"
    # 3 members, batch size 2: the two checkpoints step as one, members 0 and 1 in batch 0,
    # member 2 (checkpoint 0) in batch 1; kill in the middle of March of the second batch
    assert 12 <= _kill_in_march(SCRIPT, store_360_path, out, batch=1) < STEPS
    reference = tmp_path / "reference.zarr"
    _assert_resumes_to_the_reference(models, store_360_path, out, reference)
    for product in (*REDUCE, "histograms"):
        assert xr.open_zarr(product_path(out, product))["checkpoint"].values.tolist() == [0, 1, 0]
    # the members of the two checkpoints differ
    monthly = xr.open_zarr(product_path(reference, "monthly"))["t2m"]
    assert float(np.abs(monthly.isel(member=0) - monthly.isel(member=1)).max()) > 0.01


def test_monthly_means_of_the_ensemble(tmp_path, store_360_path, checkpoints):
    common = ["--data", store_360_path, "--init", INIT, "--length", "5d", "--reduce", "monthly"]
    common += ["--perturbation", "gaussian", "--seed", 2]
    ensemble = tmp_path / "ensemble.zarr"
    args = ["--checkpoint", checkpoints[1], "--checkpoint", checkpoints[0]]  # member 0: seed 1
    # one member per model call, as in the runs alone below (other batch shapes: equal to rounding)
    assert _cli(*args, "--members", 3, "--batch-size", 1, *common, "--out", ensemble) == 0
    monthly = xr.open_zarr(product_path(ensemble, "monthly"))
    assert monthly.sizes["member"] == 3 and monthly.sizes["time"] == 2  # February, March
    assert monthly["checkpoint"].values.tolist() == [0, 1, 0]
    assert monthly.attrs["checkpoint_digest"] == " ".join(
        checkpoint_digest(p) for p in (checkpoints[1], checkpoints[0])
    )
    assert monthly["t2m"].attrs["cell_methods"] == "time: mean"
    for k, path in ((0, checkpoints[1]), (1, checkpoints[0]), (2, checkpoints[1])):
        out = tmp_path / f"alone{k}.zarr"
        options = ["--members", k + 1, "--batch-size", 1]
        assert _cli("--checkpoint", path, *common, *options, "--out", out) == 0
        single = xr.open_zarr(product_path(out, "monthly"))
        for channel in CHANNELS:
            np.testing.assert_array_equal(
                monthly[channel].isel(member=k).values, single[channel].isel(member=k).values
            )


def test_checkpoints_on_s3_are_staged_as_one(tmp_path, store_path, checkpoints, s3, monkeypatch):  # noqa: F811
    import fsspec

    monkeypatch.setenv("FORECAST_STAGING", str(tmp_path / "staging"))
    fs = fsspec.filesystem("s3")
    urls = [f"{s3}/seed{k}/best.ckpt" for k in range(2)]  # the same file name in two folders
    for path, url in zip(checkpoints, urls, strict=True):
        fs.put_file(str(path), url)
    common = ["--data", store_path, "--init", "2020-01-01T06", "--steps", 2, "--seed", 3]
    common += ["--perturbation", "gaussian"]
    remote, local = tmp_path / "remote.zarr", tmp_path / "local.zarr"
    assert _cli("--checkpoint", urls[0], "--checkpoint", urls[1], *common, "--out", remote) == 0
    assert (
        _cli(
            "--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1], *common, "--out", local
        )
        == 0
    )
    got, want = xr.open_zarr(remote), xr.open_zarr(local)
    assert got.attrs["checkpoint_digest"] == " ".join(checkpoint_digest(p) for p in checkpoints)
    assert got.attrs["checkpoint_digest"] == want.attrs["checkpoint_digest"]
    for channel in CHANNELS:
        np.testing.assert_array_equal(got[channel].values, want[channel].values)
    downloads = sorted((tmp_path / "staging" / "downloads").glob("*/best.ckpt"))
    assert sorted(checkpoint_digest(p) for p in downloads) == sorted(
        checkpoint_digest(p) for p in checkpoints
    )  # each checkpoint downloaded once, neither over the other


@pytest.mark.parametrize("layout", ["default", "wb2", "cdo"])
def test_every_layout_reads_back_the_checkpoint_of_each_member(tmp_path, store_path, layout):
    from forecast.scoring.layouts import open_forecast
    from forecast.store import open_store

    models = MemberModels((make_stepper(seed=0), make_stepper(seed=1)))
    init = parse_init_spec("2020-01-01T06", "standard")
    out = tmp_path / ("fc" if layout == "cdo" else "fc.zarr")
    result = run(models, open_store(store_path), init, 1, out, layout=layout, members=3)
    ds = open_forecast(result.out)  # as forecast score reads it
    assert ds["checkpoint"].dims == ("member",)
    assert ds["checkpoint"].values.tolist() == [0, 1, 0]


def test_a_run_resumed_from_an_earlier_versions_plan_keeps_one_checkpoint_per_batch(
    tmp_path, store_path, checkpoints
):
    """An interrupted run of a version that planned a batch per checkpoint (no
    ``checkpoint_batches`` in its manifest) resumes with that plan: its finished batches stay
    valid, and the output equals a fresh run's to float rounding."""
    common = ["--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1], "--members", 4]
    common += ["--data", store_path, "--init", "2020-01-01T06", "--steps", 3, "--batch-size", 2]
    fresh, resumed = tmp_path / "fresh.zarr", tmp_path / "resumed.zarr"
    assert _cli(*common, "--out", fresh) == 0
    assert json.loads(manifest_path(fresh).read_text())["checkpoint_batches"] == "mixed"
    # an unfinished run of the earlier plan: its manifest without the key, nothing completed
    assert _cli(*common, "--out", resumed) == 0
    manifest = json.loads(manifest_path(resumed).read_text())
    del manifest["checkpoint_batches"]
    manifest["status"] = "running"
    manifest_path(resumed).write_text(json.dumps(manifest))
    assert _cli(*common, "--out", resumed) == 0
    again = json.loads(manifest_path(resumed).read_text())
    assert again["resumed"] and again["checkpoint_batches"] == "per-checkpoint"
    a, b = xr.open_zarr(fresh), xr.open_zarr(resumed)
    for channel in CHANNELS:
        np.testing.assert_allclose(a[channel].values, b[channel].values, rtol=1e-5, atol=1e-3)


def test_a_memory_sized_batch_of_stacked_checkpoints_holds_a_multiple_of_them(
    tmp_path, store_path, checkpoints
):
    """Memory for 5 members, 8 members of 2 stacked checkpoints: batches of 4 (2 of each)."""
    out = tmp_path / "sized.zarr"
    args = ["--checkpoint", checkpoints[0], "--checkpoint", checkpoints[1], "--members", 8]
    args += ["--data", store_path, "--init", "2020-01-01T06", "--steps", 1, "--out", out]
    with mock.patch("inference.ensemble.auto_batch_size", return_value=5) as sized:
        assert _cli(*args) == 0
    # both models' weights are counted by the planner, once: stacking moves them, not copies
    assert len(sized.call_args.args[0]) == 2 and len(sized.call_args.args) == 4
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["batch_size"] == 4 and manifest["checkpoint_batches"] == "mixed"
