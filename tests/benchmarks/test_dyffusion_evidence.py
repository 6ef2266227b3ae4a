"""benchmarks/dyffusion_evidence.py: its options become the right ``forecast`` commands.

The script's ``forecast`` calls are recorded instead of run; the recorded
``forecast train`` and ``forecast run`` command lines are then resolved by the
real command-line parser and config merging, so what is checked is what the
commands would train and sample with.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.benchmarks.scripts import REPO, loaded, resolved


@pytest.fixture(scope="module")
def evidence():
    yield from loaded("dyffusion_evidence")


@pytest.fixture
def recorded(evidence, monkeypatch):
    """The ``forecast`` command lines the script runs (each creates its ``--out`` directory)."""
    calls: list[list[str]] = []

    def fake(*argv: str, log=None) -> float:
        calls.append(list(argv))
        if "--out" in argv and argv[0] == "train":
            out = Path(argv[argv.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "latest.ckpt").write_bytes(b"")
        return 12.5

    monkeypatch.setattr(evidence, "forecast", fake)
    return calls


def test_dropout_trains_a_separate_dyffusion_with_that_rate(evidence, recorded, tmp_path):
    recipe = evidence.Recipe(dropout=0.3)
    cpu = evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe, ["--max-steps=500"])
    assert cpu == 12.5
    (argv,) = recorded
    assert argv[argv.index("--out") + 1] == str(tmp_path / "dyffusion_dropout0.3")
    config = resolved(argv).to_request()
    assert config.model == "dyffusion"
    assert config.hparams["dropout"] == 0.3
    # The rest of configs/train/dyffusion_demo.yaml's section stays.
    assert config.hparams["embed_dim"] == 32 and config.hparams["horizon"] == 4
    assert config.max_steps == 500
    assert json.loads((tmp_path / "dyffusion_dropout0.3" / "cpu.json").read_text()) == {
        "cpu_s": 12.5
    }
    # Trained once: a rerun reuses it; the config's own rate trains in "dyffusion".
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe)
    assert len(recorded) == 1
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr")
    assert recorded[1][recorded[1].index("--out") + 1] == str(tmp_path / "dyffusion")
    assert resolved(recorded[1]).to_request().hparams["dropout"] == 0.1


def test_forecaster_dropout_trains_it_and_keeps_it_on_when_sampling(evidence, recorded, tmp_path):
    recipe = evidence.Recipe(dropout=0.3, forecaster_dropout=0.2)
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe)
    (argv,) = recorded
    assert argv[argv.index("--out") + 1] == str(tmp_path / "dyffusion_dropout0.3_fdropout0.2")
    hparams = resolved(argv).to_request().hparams
    assert (hparams["dropout"], hparams["forecaster_dropout"]) == (0.3, 0.2)
    assert hparams["forecaster_sampling"] is True
    args = evidence.parser().parse_args(["--forecaster-dropout", "0.2"])
    assert evidence.Recipe.from_args(args) == evidence.Recipe(forecaster_dropout=0.2)


def test_ensemble_size_trains_on_the_crps_in_its_own_directory(evidence, recorded, tmp_path):
    recipe = evidence.Recipe(dropout=0.3, forecaster_dropout=0.3, ensemble_size=4)
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe)
    (argv,) = recorded
    assert argv[argv.index("--out") + 1] == str(tmp_path / "dyffusion_dropout0.3_fdropout0.3_ens4")
    request = resolved(argv).to_request()
    assert request.ensemble_size == 4 and request.hparams["forecaster_sampling"] is True
    assert evidence.parser().parse_args([]).ensemble_size == 1
    assert evidence.Recipe().name == "dyffusion"  # one sample's MSE: the old directories


def test_a_training_seed_trains_a_second_run_in_its_own_directory(evidence, recorded, tmp_path):
    recipe = evidence.Recipe(0.1, 0.1, ensemble_size=4, masks="block", seed=1)
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe)
    (argv,) = recorded
    name = "dyffusion_dropout0.1_fdropout0.1_ens4_block_seed1"
    assert argv[argv.index("--out") + 1] == str(tmp_path / name)
    request = resolved(argv).to_request()
    assert request.seed == 1 and request.hparams["dropout_masks"] == "block"
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", replace(recipe, seed=0))
    assert "--seed" not in recorded[1]  # seed 0: the earlier runs' directory and command
    assert recorded[1][recorded[1].index("--out") + 1] == str(tmp_path / name[: -len("_seed1")])
    args = evidence.parser().parse_args(["--train-seed", "2", "--dropout-masks", "block"])
    assert evidence.Recipe.from_args(args) == evidence.Recipe(masks="block", seed=2)


def test_chain_steps_train_in_their_own_directory(evidence, recorded, tmp_path):
    recipe = evidence.Recipe(0.1, 0.1, ensemble_size=2, masks="block", chain_steps=100)
    evidence.train_dyffusion(tmp_path, tmp_path / "store.zarr", recipe, ["--max-steps=3100"])
    (argv,) = recorded
    name = "dyffusion_dropout0.1_fdropout0.1_ens2_block_chain100"
    assert argv[argv.index("--out") + 1] == str(tmp_path / name)
    request = resolved(argv).to_request()
    assert request.chain_steps == 100 and request.max_steps == 3100
    args = evidence.parser().parse_args(["--chain-steps", "50"])
    assert evidence.Recipe.from_args(args) == evidence.Recipe(chain_steps=50)
    assert "--chain-steps" not in evidence.Recipe().options()
    gentle = evidence.Recipe(chain_steps=200, chain_lr=0.001)
    assert gentle.name == "dyffusion_chain200_lr0.001"
    assert gentle.options()[-4:] == ["--chain-steps", "200", "--chain-lr", "0.001"]


def test_sfno_steps_skip_the_calibration(evidence, recorded, tmp_path):
    cpu, steps = evidence.train_sfno(tmp_path, tmp_path / "store.zarr", 170.0, steps=360)
    assert (cpu, steps) == (12.5, 360)
    (argv,) = recorded  # no calibration runs
    request = resolved(argv).to_request()
    assert request.max_steps == 360
    assert argv[argv.index("--rollout-schedule") + 1] == "0:1,180:2,288:4"


@pytest.mark.parametrize(
    ("flag", "suffix", "amplitude"),
    [
        ([], "", None),
        (["--dyffusion-grf"], "_grf", "demo"),
        (["--dyffusion-grf", "0.1,t2m=0.04"], "_grf0.1_t2m0.04", "0.1,t2m=0.04"),
    ],
)
def test_dyffusion_grf_samples_with_the_sfno_perturbations(evidence, flag, suffix, amplitude):
    args = evidence.parser().parse_args(flag)
    assert args.dyffusion_grf == amplitude
    name, options = evidence.grf_options(args.dyffusion_grf)
    assert name == suffix
    base = ["run", "--checkpoint", "m.ckpt", "--data", "s.zarr", "--out", "f.zarr", "--init",
            "2020-04-12T06"]  # fmt: skip
    request = resolved([*base, *options])
    if amplitude is None:
        assert request.perturbation == "none"
        return
    sfno = resolved([*base, "--config", str(REPO / "configs" / "demo" / "run.yaml")])
    assert request.perturbation == sfno.perturbation == "grf"
    assert request.perturbation_option_values() == sfno.perturbation_option_values()
    if amplitude == "demo":
        assert request.amplitude == sfno.amplitude
    else:
        assert request.amplitude != sfno.amplitude
        assert request.amplitude == resolved([*base, "--amplitude", amplitude]).amplitude


def test_annual_bias_is_the_run_mean_global_mean_bias_over_std(evidence, tmp_path):
    """Known offsets come back in std units, though the forecast's latitudes differ in the last bits."""
    import numpy as np
    import xarray as xr

    from forecast.store import open_store
    from tests.forecast.training.conftest import write_toy_store

    truth_path = write_toy_store(tmp_path / "truth.zarr", n_time=12)
    truth = open_store(truth_path)
    std = truth["std"].values
    times = truth["time"].values
    offsets = np.array([[0.3, -0.1], [0.1, 0.2]])  # (member, channel), in stds
    data = truth["data"].values[:9]  # (lead, channel, lat, lon): leads 0 .. 8 from the first time
    # (time, lead, member, channel, lat, lon): the truth plus each member's offsets
    fields = data[None, :, None] + (offsets * std)[None, None, :, :, None, None]
    # and a north-south dipole of zero area mean: rows left out of the mean would show it
    dipole = np.sin(np.deg2rad(truth["latitude"].values))[:, None] * std[:, None, None]
    fields = fields + dipole
    latitude = truth["latitude"].values.copy()
    latitude[1:8:2] += 1.4e-14  # as a forecast's own grid writes them (northern rows)
    coords = {
        "time": times[:1],
        "lead_time": times[:9] - times[0],
        "member": [0, 1],
        "latitude": latitude,
        "longitude": truth["longitude"].values,
        "valid_time": (("time", "lead_time"), times[None, :9]),
    }
    dims = ("time", "lead_time", "member", "latitude", "longitude")
    forecast = xr.Dataset(
        {c: (dims, fields[:, :, :, k]) for k, c in enumerate(truth["channel"].values)}, coords
    )
    forecast.to_zarr(tmp_path / "fc.zarr")
    for member in (0, 1):
        result = evidence.annual_bias(tmp_path / "fc.zarr", truth_path, member)
        got = [result[c]["bias_over_std"] for c in ("z500", "t850")]
        np.testing.assert_allclose(got, offsets[member], atol=1e-5)
        assert all(v["finite"] for v in result.values())
    mean = evidence.annual_bias(tmp_path / "fc.zarr", truth_path, None)
    np.testing.assert_allclose(
        [mean[c]["bias_over_std"] for c in ("z500", "t850")], offsets.mean(axis=0), atol=1e-5
    )


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0, 2.0])
def test_gaussian_crps_is_the_fair_crps_of_sampled_gaussian_ensembles(evidence, ratio):
    """The closed form against the scorer's fair CRPS of 16-member Gaussian ensembles."""
    import numpy as np

    from forecast.scoring.kernels import fair_crps

    rng = np.random.default_rng(0)
    error = 2.5  # the ensemble mean's RMSE, in the data's units
    truth = rng.normal(0.0, error, 200_000)
    members = rng.normal(0.0, ratio * error, (16, truth.size))
    sampled = fair_crps(members, truth).mean() / error
    assert sampled == pytest.approx(evidence.gaussian_crps(ratio), rel=5e-3)


def test_the_needed_rmse_ratio_is_the_target_where_the_sfno_is_calibrated(evidence):
    import numpy as np

    assert evidence.gaussian_crps(1.0) == pytest.approx(1 / np.sqrt(np.pi))
    assert evidence.gaussian_crps(0.0) == pytest.approx(np.sqrt(2 / np.pi))
    assert evidence.rmse_ratio_needed(1.0) == pytest.approx(0.9)
    # a deterministic SFNO: calibration alone is worth 1 / sqrt(2) of its CRPS
    assert evidence.rmse_ratio_needed(0.0) == pytest.approx(0.9 * np.sqrt(2))
    assert evidence.rmse_ratio_needed(0.3) > evidence.rmse_ratio_needed(0.9) > 0.9


def test_scores_are_reused_only_for_the_same_inits_and_checkpoint(evidence, monkeypatch, tmp_path):
    """A rerun takes the scores already there only when they are of its inits and checkpoint."""
    import forecast.scoring.scores_file as scores_file

    commands: list[str] = []

    def fake(*argv: str, log=None) -> float:
        commands.append(argv[0])
        if argv[0] == "score":
            Path(argv[argv.index("--out") + 1]).write_bytes(b"scores")
        return 3.0

    monkeypatch.setattr(evidence, "forecast", fake)
    monkeypatch.setattr(scores_file, "open_scores", lambda path: path)
    checkpoint = tmp_path / "m.ckpt"
    checkpoint.write_bytes(b"one")
    inits = "2020-04-12T06:00/2020-04-24T18:00/24h"

    def run() -> list[str]:
        commands.clear()
        evidence.run_and_score(tmp_path, tmp_path / "s.zarr", "dy", checkpoint, inits)
        return list(commands)

    assert run() == ["run", "score"]
    assert run() == []  # the same inits and checkpoint: reused
    inits = "2020-04-12T06:00/2020-04-24T18:00/12h"
    assert run() == ["run", "score"]
    assert run() == []
    checkpoint.write_bytes(b"two")  # retrained
    assert run() == ["run", "score"]
    record = json.loads((tmp_path / "dy_run_cpu.json").read_text())
    assert record["inits"] == inits and record["cpu_s"] == 3.0
