"""Two-stage training of DYffusion and SpecBoost's boosted training, end to end on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from forecast.checkpoint import load_checkpoint
from forecast.cli.main import main
from forecast.errors import ConfigError, DataError
from forecast.steppers import BoostedStepper, DYffusionStepper
from forecast.training import TrainRequest, train
from forecast.training.stages import StagePlan

DYFFUSION = {"embed_dim": 8, "num_layers": 1, "horizon": 3}
OPTIONS = dict(
    batch_size=4, lr=5e-3, warmup_steps=1, val_samples=4, log_every=1, device="cpu", progress=False
)


def _records(run_dir, kind):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_stage_plan_splits_the_run_and_restarts_the_schedule():
    plan = StagePlan.split(("interpolator", "forecaster"), 10, 4)
    assert [plan.stage_at(s) for s in (0, 3, 4, 9, 10)] == [
        "interpolator", "interpolator", "forecaster", "forecaster", "forecaster",
    ]  # fmt: skip
    assert plan.lr_factor(0, 2, 0.01) == plan.lr_factor(4, 2, 0.01) == 0.5  # warm-up again
    assert plan.lr_factor(3, 0, 0.01) == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * 3 / 4))
    )
    assert StagePlan.split(("a", "b"), 9, None).bounds == ((0, 4), (4, 9))
    with pytest.raises(ConfigError, match="leaves no step to the forecaster"):
        StagePlan.split(("interpolator", "forecaster"), 10, 10)


def test_stage_plan_ends_with_the_joint_stage_when_asked():
    plan = StagePlan.split(("interpolator", "forecaster"), 12, 5, 3, "chain")
    assert plan.names == ("interpolator", "forecaster", "chain")
    assert plan.bounds == ((0, 5), (5, 9), (9, 12))
    assert [plan.stage_at(s) for s in (4, 5, 8, 9, 11, 12)] == [
        "interpolator", "forecaster", "forecaster", "chain", "chain", "chain",
    ]  # fmt: skip
    assert plan.lr_factor(9, 2, 0.01) == plan.lr_factor(0, 2, 0.01) == 0.5  # its own warm-up
    assert plan.is_last("chain") and not plan.is_last("forecaster")
    # the default first stage is half of what the joint stage leaves
    assert StagePlan.split(("a", "b"), 12, None, 4, "c").bounds == ((0, 4), (4, 8), (8, 12))
    assert StagePlan.split(("a", "b"), 12, 5, 0, "c") == StagePlan.split(("a", "b"), 12, 5)
    with pytest.raises(ConfigError, match="leaves no step to the forecaster"):
        StagePlan.split(("interpolator", "forecaster"), 12, 9, 3, "chain")
    with pytest.raises(ConfigError, match="--chain-steps 11 leaves fewer than 2"):
        StagePlan.split(("interpolator", "forecaster"), 12, None, 11, "chain")
    with pytest.raises(ConfigError, match="has none"):
        StagePlan.split(("a", "b"), 12, None, 3, None)


def _tiny_dyffusion(
    toy_store, **hparams
) -> tuple[DYffusionStepper, torch.Tensor, torch.Tensor, dict]:
    """A 16x32 DYffusion of horizon 3 on the toy store, and one window of it (normalised)."""
    from forecast.normalize import Normalizer
    from forecast.store import open_store, store_channels, store_grid, store_step

    ds = open_store(toy_store)
    channels = store_channels(ds)
    torch.manual_seed(0)
    stepper = DYffusionStepper(
        {**DYFFUSION, **hparams}, channels, store_grid(ds), store_step(ds),
        Normalizer.from_store(ds, channels), history=2,
    )  # fmt: skip
    data = torch.as_tensor(ds["data"].values[: 2 * 5].reshape(2, 5, *ds["data"].shape[1:]))
    states = stepper.normalize(data)
    forcings = stepper.forcings(ds["time"].values[[1, 6]])
    return stepper, states[:, :2], states[:, 2:], forcings


def test_chain_stage_samples_the_horizon_with_gradients_through_both_networks(toy_store):
    stepper, history, targets, forcings = _tiny_dyffusion(toy_store, dropout=0.0)
    stepper.set_stage("chain")
    assert all(p.requires_grad for p in stepper.parameters())
    generator = torch.Generator().manual_seed(0)
    prediction, target = stepper.training_pairs(history, targets, forcings, generator)
    # rows k * batch + b: state k of window b, the cold-sampled horizon against its truth
    with torch.no_grad():
        sampled = stepper.forward_block_normalized(history, forcings)  # (h, batch, ...)
    assert prediction.shape == (3 * 2, *targets.shape[2:])
    torch.testing.assert_close(prediction.detach(), sampled.reshape(prediction.shape))
    for k in range(3):
        for b in range(2):
            assert torch.equal(target[k * 2 + b], targets[b, k])
    ((prediction - target) ** 2).mean().backward()
    for network in (stepper.interpolator, stepper.forecaster):
        grads = [p.grad for p in network.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads)
    # an ensemble: members x (h * batch) rows, each member with its own masks
    noisy, _, _, _ = _tiny_dyffusion(toy_store, dropout=0.3)
    with torch.no_grad():  # a fresh network's output layer is zero, where masks change nothing
        for parameter in noisy.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    noisy.set_stage("chain")
    members, target = noisy.training_pairs(history, targets, forcings, generator, members=2)
    assert members.shape == (2, 3 * 2, *targets.shape[2:]) and target.shape == members.shape[1:]
    assert not torch.allclose(members[0], members[1])
    # the stage after the two others: both networks trained, only the frozen stages freeze
    noisy.set_stage("forecaster")
    assert not any(p.requires_grad for p in noisy.interpolator.parameters())
    # as forecast run samples: without forecaster_sampling the forecaster's dropout is off
    quiet, _, _, _ = _tiny_dyffusion(toy_store, dropout=0.0, forecaster_dropout=0.5)
    with torch.no_grad():
        for parameter in quiet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    quiet.set_stage("chain")
    quiet.train()
    draws = [
        quiet.training_pairs(history, targets, forcings, torch.Generator().manual_seed(seed))[0]
        for seed in (1, 2)
    ]
    torch.testing.assert_close(draws[0], draws[1])
    assert quiet.forecaster.training  # back in training mode
    quiet.spec = quiet.spec.model_copy(update={"forecaster_sampling": True})
    loud = quiet.training_pairs(history, targets, forcings, torch.Generator().manual_seed(1))[0]
    assert not torch.allclose(loud, draws[0])


def test_chain_stage_trains_both_networks_and_resumes_exactly(toy_store, tmp_path):
    hparams = {**DYFFUSION, "dropout": 0.2, "forecaster_dropout": 0.2, "forecaster_sampling": True}
    options = dict(
        hparams=hparams, max_steps=9, interpolator_steps=3, chain_steps=3, val_every=3,
        ensemble_size=2, **OPTIONS,
    )  # fmt: skip
    whole = TrainRequest(toy_store, "dyffusion", tmp_path / "whole", workers=0, **options)
    train(whole, stop_after=6)
    before, meta = load_checkpoint(tmp_path / "whole" / "latest.ckpt")
    assert meta["trained_steps"] == {"interpolator": 3, "forecaster": 3}
    assert train(whole.replace(resume=True)).steps == 9
    after, meta = load_checkpoint(tmp_path / "whole" / "latest.ckpt")
    assert meta["trained_steps"] == {"interpolator": 3, "forecaster": 3, "chain": 3}
    for network in ("interpolator", "forecaster"):  # the chain stage moves both
        old, new = getattr(before, network).state_dict(), getattr(after, network).state_dict()
        assert any(not torch.equal(old[name], new[name]) for name in old), network
    validation = _records(tmp_path / "whole", "validation")
    assert [(r["step"], r["stage"]) for r in validation] == [
        (3, "interpolator"), (6, "forecaster"), (9, "chain"),
    ]  # fmt: skip
    assert "rmse_3" in validation[1] and "rmse_3" in validation[2]  # rollouts after stage 1
    _, best = load_checkpoint(tmp_path / "whole" / "best.ckpt")
    assert best["provenance"]["step"] == 9
    lrs = {r["step"]: r["lr"] for r in _records(tmp_path / "whole", "train")}
    assert lrs[7] == pytest.approx(lrs[1]) and lrs[7] > lrs[6]  # the chain warms up anew
    # killed in the middle of the chain stage, resumed: the same weights and records
    split = TrainRequest(toy_store, "dyffusion", tmp_path / "split", workers=1, **options)
    assert train(split, stop_after=7).steps == 7
    assert load_checkpoint(tmp_path / "split" / "latest.ckpt")[1]["trained_steps"]["chain"] == 1
    assert train(split.replace(resume=True)).steps == 9
    again = load_checkpoint(tmp_path / "split" / "latest.ckpt")[0].state_dict()
    for name, tensor in after.state_dict().items():
        assert torch.equal(tensor, again[name]), name
    assert _records(tmp_path / "whole", "train") == _records(tmp_path / "split", "train")


def test_chain_lr_sets_the_peak_learning_rate_of_the_chain_stage_only(toy_store, tmp_path):
    run_dir = tmp_path / "gentle"
    train(TrainRequest(
        toy_store, "dyffusion", run_dir, hparams=DYFFUSION, max_steps=6, interpolator_steps=2,
        chain_steps=2, chain_lr=1e-4, val_every=6, workers=0, **{**OPTIONS, "warmup_steps": 0},
    ))  # fmt: skip
    lrs = {r["step"]: r["lr"] for r in _records(run_dir, "train")}
    # no warm-up: each stage starts at its peak; the chain's is --chain-lr, the others --lr
    assert lrs[1] == lrs[3] == pytest.approx(5e-3) and lrs[5] == pytest.approx(1e-4)
    assert lrs[6] < lrs[5]


def test_chain_options_are_refused_where_they_do_not_apply(toy_store, tmp_path, capsys):
    with pytest.raises(ConfigError, match="--model sfno has one"):
        TrainRequest(toy_store, "sfno", tmp_path / "b", max_steps=4, chain_steps=2)
    with pytest.raises(ConfigError, match="--chain-lr 0.001 is the learning rate of the"):
        TrainRequest(toy_store, "dyffusion", tmp_path / "c", max_steps=4, chain_lr=1e-3)
    code = main([
        "train", "--data", str(toy_store), "--model", "fno", "--out", str(tmp_path / "runs" / "d"),
        "--max-steps", "4", "--chain-steps", "2", "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1 and not (tmp_path / "runs").exists()
    assert len(err.strip().splitlines()) == 1 and "drop --chain-steps" in err


def test_two_stages_in_one_run_with_one_checkpoint(toy_store, tmp_path):
    run_dir = tmp_path / "dy"
    result = train(TrainRequest(
        toy_store, "dyffusion", run_dir, hparams=DYFFUSION, max_steps=16, interpolator_steps=8,
        val_every=8, workers=0, **OPTIONS,
    ))  # fmt: skip
    assert result.steps == 16
    stepper, metadata = load_checkpoint(run_dir / "latest.ckpt")
    assert isinstance(stepper, DYffusionStepper)
    assert metadata["trained_steps"] == {"interpolator": 8, "forecaster": 8}
    validation = _records(run_dir, "validation")
    assert [(r["step"], r["stage"]) for r in validation] == [
        (8, "interpolator"),
        (16, "forecaster"),
    ]
    # stage 1 is scored at i = 1 .. h-1 against the linear interpolation, stage 2 at 1 .. h
    assert set(validation[0]) >= {"rmse_1", "rmse_2"} and "rmse_3" not in validation[0]
    assert "rmse_3" in validation[1]
    train_losses = [r["loss"] for r in _records(run_dir, "train")]
    assert all(np.isfinite(train_losses))
    # best.ckpt is chosen among the forecaster stage's checkpoints only
    _, best = load_checkpoint(run_dir / "best.ckpt")
    assert best["provenance"]["step"] == 16 and best["trained_steps"]["forecaster"] == 8
    # each stage warms up and decays on its own: the learning rate restarts at step 9
    lrs = {r["step"]: r["lr"] for r in _records(run_dir, "train")}
    assert lrs[9] == pytest.approx(lrs[1]) and lrs[9] > lrs[8]


#: the climate recipe (configs/climate/train_dyffusion.yaml): departures from the seasonal and diurnal
#: baseline, a forecaster of the departure itself, input noise, extra weight on the zonal means
CLIMATE = dict(
    history=2, seasonal_baseline=True, diurnal_baseline=True, residual=False, input_noise=0.5,
    zonal_mean_weight=10.0,
)  # fmt: skip


@pytest.mark.parametrize(
    ("stop", "climate"),
    [(3, {}), (6, {}), (9, {}), (3, CLIMATE), (9, CLIMATE)],
    ids=["in-stage-1", "at-the-switch", "in-stage-2", "climate-in-stage-1", "climate-in-stage-2"],
)
def test_resume_of_each_stage_matches_uninterrupted(toy_store, tmp_path, stop, climate):
    options = dict(
        hparams=DYFFUSION, max_steps=12, interpolator_steps=6, val_every=6, **climate, **OPTIONS
    )
    train(TrainRequest(toy_store, "dyffusion", tmp_path / "whole", workers=0, **options))
    split = TrainRequest(toy_store, "dyffusion", tmp_path / "split", workers=1, **options)
    assert train(split, stop_after=stop).steps == stop
    _, meta = load_checkpoint(tmp_path / "split" / "latest.ckpt")
    assert meta["trained_steps"] == {"interpolator": min(stop, 6), "forecaster": max(stop - 6, 0)}
    assert train(split.replace(resume=True)).steps == 12
    whole = load_checkpoint(tmp_path / "whole" / "latest.ckpt")[0].state_dict()
    again = load_checkpoint(tmp_path / "split" / "latest.ckpt")[0].state_dict()
    for name in whole:
        assert torch.equal(whole[name], again[name]), name
    assert _records(tmp_path / "whole", "train") == _records(tmp_path / "split", "train")
    assert _records(tmp_path / "whole", "validation") == _records(tmp_path / "split", "validation")


def test_interpolator_is_frozen_in_stage_2(toy_store, tmp_path):
    options = dict(
        hparams=DYFFUSION, max_steps=8, interpolator_steps=4, val_every=4, workers=0, **OPTIONS
    )
    run = TrainRequest(toy_store, "dyffusion", tmp_path / "run", **options)
    train(run, stop_after=4)
    before = load_checkpoint(tmp_path / "run" / "latest.ckpt")[0]
    train(run.replace(resume=True))
    after = load_checkpoint(tmp_path / "run" / "latest.ckpt")[0]
    for name, tensor in before.interpolator.state_dict().items():
        assert torch.equal(tensor, after.interpolator.state_dict()[name]), name
    changed = [
        name for name, tensor in before.forecaster.state_dict().items()
        if not torch.equal(tensor, after.forecaster.state_dict()[name])
    ]  # fmt: skip
    assert changed


def test_ensemble_size_trains_each_stage_on_the_crps_of_its_dropout(toy_store, tmp_path):
    hparams = {**DYFFUSION, "dropout": 0.2, "forecaster_dropout": 0.2}
    options = dict(
        hparams=hparams, max_steps=6, interpolator_steps=3, val_every=3, workers=0, **OPTIONS
    )
    crps = train(
        TrainRequest(toy_store, "dyffusion", tmp_path / "crps", ensemble_size=3, **options)
    )
    mse = train(TrainRequest(toy_store, "dyffusion", tmp_path / "mse", **options))
    assert crps.steps == mse.steps == 6
    losses = {
        name: [r["loss"] for r in _records(tmp_path / name, "train")] for name in ("crps", "mse")
    }
    assert all(np.isfinite(losses["crps"])) and len(losses["crps"]) == 6
    # a CRPS is linear in the error, an MSE quadratic: the two losses differ from the first step
    assert losses["crps"][0] != pytest.approx(losses["mse"][0], rel=1e-3)


def test_dyffusion_ensemble_takes_ensemble_noise_0_and_any_value_is_unused(toy_store, tmp_path):
    """Its members differ by their dropout masks: --ensemble-noise 0 trains, as any other value."""
    options = dict(
        hparams={**DYFFUSION, "dropout": 0.2}, max_steps=2, interpolator_steps=1, val_every=2,
        workers=0, ensemble_size=2, **OPTIONS,
    )  # fmt: skip
    for name, noise in (("none", 0.0), ("some", 0.5)):
        assert train(TrainRequest(
            toy_store, "dyffusion", tmp_path / name, ensemble_noise=noise, **options
        )).steps == 2  # fmt: skip
    losses = {n: [r["loss"] for r in _records(tmp_path / n, "train")] for n in ("none", "some")}
    assert len(losses["none"]) == 2 and all(np.isfinite(losses["none"]))
    assert losses["none"] == losses["some"]
    # a backbone's ensemble members differ by that noise alone: 0 is still refused there
    with pytest.raises(ConfigError, match="an ensemble needs --ensemble-noise > 0"):
        TrainRequest(toy_store, "sfno", tmp_path / "b", ensemble_size=2, ensemble_noise=0.0)


@pytest.mark.parametrize(
    ("flags", "named"),
    [(["--rollout-steps", "2"], "--rollout-steps 2 does"),
     (["--rollout-steps", "2", "--rollout-schedule", "0:1,2:2"],
      "--rollout-steps 2 and --rollout-schedule 0:1,2:2 do"),
     (["--rollout-schedule", "0:1"], "--rollout-schedule 0:1 does")],
)  # fmt: skip
def test_cli_refuses_rollout_options_for_dyffusion_before_any_work(
    toy_store, tmp_path, capsys, monkeypatch, flags, named
):
    """Refused when the request is made: no run folder, no lock, no store opened, no climatology."""
    import forecast.training.api as api

    def no_work(*args, **kwargs):
        raise AssertionError("the training started")

    monkeypatch.setattr(api, "open_store", no_work)
    run_dir = tmp_path / "runs" / "dy"
    code = main([
        "train", "--data", str(toy_store), "--model", "dyffusion", "--out", str(run_dir),
        "--hparams", "embed_dim=8,num_layers=1,horizon=3", "--max-steps", "4", *flags,
        "--workers", "0", "--device", "cpu", "--no-progress",
    ])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert not (tmp_path / "runs").exists()
    assert f"{named} not apply to --model dyffusion" in err
    assert "drop" in err and "horizon" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    with pytest.raises(ConfigError, match="does not apply to --model dyffusion"):
        TrainRequest(toy_store, "dyffusion", tmp_path / "b", rollout_steps=2)
    assert not (tmp_path / "b").exists()


def test_dyffusion_refuses_options_that_do_not_apply(toy_store, tmp_path):
    with pytest.raises(ConfigError, match="--rollout-steps 2 does not apply to --model dyffusion"):
        train(TrainRequest(
            toy_store, "dyffusion", tmp_path / "b", hparams=DYFFUSION, max_steps=4,
            rollout_steps=2, workers=0, **OPTIONS,
        ))  # fmt: skip
    with pytest.raises(DataError, match="residual mode or a seasonal baseline"):
        train(TrainRequest(
            toy_store, "dyffusion", tmp_path / "c", hparams=DYFFUSION, max_steps=4,
            residual=False, diurnal_baseline=True, workers=0, **OPTIONS,
        ))  # fmt: skip


def test_dyffusion_climate_options_change_the_stage_loss(toy_store, tmp_path, zonal_parts):
    """--input-noise changes each stage's loss; --zonal-mean-weight W adds W x its zonal part."""
    options = dict(
        hparams=DYFFUSION, max_steps=2, interpolator_steps=1, val_every=2, workers=0, **OPTIONS
    )
    runs = {
        "plain": {},
        "noise": dict(input_noise=0.5),
        # the noise gives the linear interpolation (the untrained interpolator) a zonal-mean error,
        # which the toy store's patterns alone do not have
        "zonal": dict(input_noise=0.5, zonal_mean_weight=10.0),
        "seasonal": dict(seasonal_baseline=True, residual=False),
    }
    records = {}
    for name, extra in runs.items():
        train(TrainRequest(toy_store, "dyffusion", tmp_path / name, **extra, **options))
        records[name] = _records(tmp_path / name, "train")
        assert len(records[name]) == 2 and all(np.isfinite(r["loss"]) for r in records[name])
    assert len(zonal_parts) == 2  # one per stage, only in the weighted run
    stepper, _ = load_checkpoint(tmp_path / "zonal" / "latest.ckpt")
    scale = np.asarray(stepper.normalizer.diff_std) / np.asarray(stepper.normalizer.std)
    for step, zonal in enumerate(zonal_parts):  # step 1 the interpolator, step 2 the forecaster
        plain = records["noise"][step]["loss_per_channel"]
        weighted = records["zonal"][step]["loss_per_channel"]
        expected = [
            plain[c] + 10.0 * z / s**2
            for c, z, s in zip(stepper.channels, zonal.tolist(), scale, strict=True)
        ]
        np.testing.assert_allclose([weighted[c] for c in stepper.channels], expected, rtol=1e-5)
        assert float(zonal.min()) > 0 and all(weighted[c] > plain[c] for c in stepper.channels)
    for step in range(2):
        assert records["noise"][step]["loss"] != pytest.approx(records["plain"][step]["loss"])
    stepper, metadata = load_checkpoint(tmp_path / "seasonal" / "latest.ckpt")
    assert metadata["seasonal_harmonics"] == 4 and stepper.residual is False


def test_cli_trains_dyffusion_and_run_refuses_an_untrained_forecaster(toy_store, tmp_path, capsys):
    run_dir = tmp_path / "cli"
    argv = [
        "train", "--data", str(toy_store), "--model", "dyffusion", "--out", str(run_dir),
        "--hparams", "embed_dim=8,num_layers=1,horizon=3", "--max-steps", "6",
        "--interpolator-steps", "5", "--batch-size", "4", "--val-every", "5", "--val-samples", "4",
        "--workers", "0", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    assert main(argv) == 0
    assert "trained 6 steps" in capsys.readouterr().out
    _, meta = load_checkpoint(run_dir / "latest.ckpt")
    assert meta["stepper"] == "dyffusion" and meta["trained_steps"] == {
        "interpolator": 5,
        "forecaster": 1,
    }
    # stopped at the end of stage 1, the checkpoint holds an untrained forecaster
    stage_1 = tmp_path / "stage1"
    train(TrainRequest(
        toy_store, "dyffusion", stage_1, hparams=DYFFUSION, max_steps=6, interpolator_steps=5,
        val_every=5, workers=0, **OPTIONS,
    ), stop_after=5)  # fmt: skip
    code = main([
        "run", "--checkpoint", str(stage_1 / "latest.ckpt"), "--data", str(toy_store),
        "--init", "2020-01-02T00", "--steps", "3", "--out", str(tmp_path / "fc.zarr"),
    ])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err
    assert "untrained forecaster (only the interpolator is trained)" in err
    assert "--resume" in err and "Traceback" not in err


# -- SpecBoost -----------------------------------------------------------------------------------
TINY = {"embed_dim": 8, "num_layers": 1}


def test_boost_trains_a_second_backbone_on_the_frozen_first_models_residual(toy_store, tmp_path):
    from forecast.training.boost import residual_scale
    from forecast.training.data import TrainingWindows

    first_dir = tmp_path / "first"
    train(TrainRequest(
        toy_store, "sfno", first_dir, hparams=TINY, max_steps=6, val_every=6, workers=0, history=2, **OPTIONS,
    ))  # fmt: skip
    first, _ = load_checkpoint(first_dir / "latest.ckpt")
    run_dir = tmp_path / "boosted"
    result = train(TrainRequest(
        toy_store, "fno", run_dir, hparams={"embed_dim": 8, "num_layers": 1}, boost=first_dir / "latest.ckpt",
        max_steps=6, val_every=6, workers=0, **OPTIONS,
    ))  # fmt: skip
    assert result.steps == 6
    boosted, metadata = load_checkpoint(run_dir / "latest.ckpt")
    assert isinstance(boosted, BoostedStepper)
    assert metadata["stepper"] == "boosted" and metadata["model"] == "sfno+fno"
    assert metadata["history"] == 2 and metadata["first"]["model"] == "sfno"
    assert metadata["provenance"]["boost"] == str((first_dir / "latest.ckpt").resolve())
    # the first model is frozen: its weights are those of its own checkpoint
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, boosted.first.state_dict()[name]), name
    # the residual scale is the RMS of the first model's one-step residual on training windows
    import numpy as np

    scale = np.asarray(metadata["residual_scale"])
    assert scale.shape == (2,) and np.all(scale > 0)
    from forecast.store import open_store
    from forecast.training.data import split_windows

    ds = open_store(toy_store)
    times = ds["time"].values
    starts, val = split_windows(times, 3, val_fraction=0.1)
    windows = TrainingWindows(toy_store, times, (0, 1), starts, val)
    np.testing.assert_allclose(
        residual_scale(first, windows, torch.device("cpu")), scale, rtol=1e-6
    )
    # the boosted step is the first model's step plus the scaled booster output
    x = torch.randn(3, 2, 2, 16, 32)
    forcings = boosted.forcings(np.repeat(times[:1], 3))
    with torch.no_grad():
        base = first.forward_normalized(x, forcings)
        inputs = torch.cat([first.backbone_inputs(x, forcings), base], dim=1)
        expected = base + boosted.booster(inputs) * torch.as_tensor(
            scale, dtype=torch.float32
        ).reshape(1, -1, 1, 1)
        torch.testing.assert_close(boosted.forward_normalized(x, forcings), expected)


def test_boost_resumes_and_refuses_a_non_backbone(toy_store, tmp_path):
    first_dir = tmp_path / "first"
    train(
        TrainRequest(
            toy_store,
            "sfno",
            first_dir,
            hparams=TINY,
            max_steps=2,
            val_every=2,
            workers=0,
            **OPTIONS,
        )
    )
    options = dict(
        hparams=TINY, boost=first_dir / "latest.ckpt", max_steps=6, val_every=3, **OPTIONS
    )
    train(TrainRequest(toy_store, "fno", tmp_path / "whole", workers=0, **options))
    split = TrainRequest(toy_store, "fno", tmp_path / "split", workers=1, **options)
    train(split, stop_after=2)
    train(split.replace(resume=True))
    whole = load_checkpoint(tmp_path / "whole" / "latest.ckpt")[0].state_dict()
    again = load_checkpoint(tmp_path / "split" / "latest.ckpt")[0].state_dict()
    for name in whole:
        assert torch.equal(whole[name], again[name]), name
    dy_dir = tmp_path / "dy"
    train(TrainRequest(
        toy_store, "dyffusion", dy_dir, hparams=DYFFUSION, max_steps=2, val_every=2, workers=0, **OPTIONS,
    ))  # fmt: skip
    with pytest.raises(
        ConfigError, match="boosts a backbone checkpoint, this one is a 'dyffusion'"
    ):
        train(
            TrainRequest(
                toy_store,
                "fno",
                tmp_path / "x",
                hparams=TINY,
                boost=dy_dir / "latest.ckpt",
                **OPTIONS,
            )
        )
    with pytest.raises(ConfigError, match="'dyffusion' is not one"):
        train(
            TrainRequest(
                toy_store, "dyffusion", tmp_path / "y", boost=first_dir / "latest.ckpt", **OPTIONS
            )
        )


def test_boosted_checkpoint_runs_and_scores_as_one_model(toy_store, tmp_path, capsys):
    """``forecast train --boost``, then ``forecast run`` and ``forecast score`` of the pair."""
    import xarray as xr

    from forecast.store import open_store

    first_dir, run_dir = tmp_path / "first", tmp_path / "boosted"
    train(TrainRequest(
        toy_store, "sfno", first_dir, hparams=TINY, max_steps=2, val_every=2, workers=0, **OPTIONS,
    ))  # fmt: skip
    common = ["--batch-size", "4", "--val-samples", "4", "--workers", "0", "--device", "cpu"]
    assert main([
        "train", "--data", str(toy_store), "--boost", str(first_dir / "latest.ckpt"), "--model",
        "fno", "--hparams", "embed_dim=8,num_layers=1", "--max-steps", "3", "--val-every", "3",
        "--out", str(run_dir), "--no-progress", *common,
    ]) == 0  # fmt: skip
    checkpoint = run_dir / "latest.ckpt"
    out, scores = tmp_path / "fc.zarr", tmp_path / "scores.nc"
    assert main([
        "run", "--checkpoint", str(checkpoint), "--data", str(toy_store), "--init",
        "2020-01-10T00", "--steps", "2", "--out", str(out), "--no-progress",
    ]) == 0  # fmt: skip
    boosted, _ = load_checkpoint(checkpoint)
    store = open_store(toy_store)
    initial = torch.as_tensor(store["data"].sel(time=["2020-01-10T00"]).values, dtype=torch.float32)
    expected = boosted.advance(initial, store["time"].sel(time=["2020-01-10T00"]).values)
    written = xr.open_zarr(out)
    for index, channel in enumerate(boosted.channels):
        np.testing.assert_allclose(
            written[channel].isel(time=0, lead_time=1, member=0).values,
            expected[0, index].numpy(),
            rtol=1e-5,
            atol=1e-4,
        )
    assert (
        main(["score", str(out), "--truth", str(toy_store), "--out", str(scores), "--no-progress"])
        == 0
    )
    from forecast.scoring.scores_file import open_scores

    rmse = open_scores(scores)["rmse"].sel(model="forecast")
    assert np.isfinite(rmse.values).all() and float(rmse.max()) > 0
