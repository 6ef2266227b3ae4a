"""Prescribed forcings in the stepper: inputs, checkpoint round trip, boosted models, bad names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.checkpoint import load_checkpoint, save_checkpoint
from forecast.errors import ConfigError
from forecast.forcings import TIME_FORCINGS, time_forcings
from forecast.normalize import Normalizer
from forecast.prescribed import ForcingStore, connect_forcing_store
from forecast.stepper import PrescribedStepper
from forecast.steppers import BackboneStepper, BoostedStepper
from tests.forcing_stores import write_forcing_store
from tests.inference.conftest import make_stepper

SST = Normalizer(("sst",), np.array([290.0]), np.array([10.0]), np.array([0.05]))


def _forced(prescribed=SST, seed=0) -> BackboneStepper:
    plain = make_stepper(seed=seed)
    torch.manual_seed(seed)
    return BackboneStepper(
        "sfno", plain.hparams, plain.channels, plain.grid, plain.step, plain.normalizer,
        prescribed=prescribed,
    ).eval()  # fmt: skip


@pytest.fixture(scope="module")
def sst(tmp_path_factory):
    return write_forcing_store(tmp_path_factory.mktemp("sst") / "sst.zarr", periods=12)


def test_the_prescribed_field_is_one_more_input_after_the_time_forcings(sst):
    stepper = _forced()
    assert isinstance(stepper, PrescribedStepper)
    assert stepper.in_channels == make_stepper().in_channels + 1
    assert stepper.forcing_names[-1] == "sst" and stepper.prescribed_names == ("sst",)
    store = ForcingStore(sst, ("sst",), stepper.grid, "standard")
    stepper.use_forcing_store(store)
    times = store.dataset["time"].values[[1, 4]]
    x = torch.zeros(2, 1, 4, *stepper.grid.shape)
    inputs = stepper.backbone_inputs(x, stepper.forcings(times))
    expected = (store.dataset["data"].values[[1, 4], 0] - 290.0) / 10.0
    np.testing.assert_allclose(inputs[:, -1].numpy(), expected, rtol=1e-6)
    fields = time_forcings(times, stepper.grid)  # the time forcings come first, unchanged
    np.testing.assert_array_equal(
        inputs[:, 4:8].numpy(), np.stack([fields[n].numpy() for n in TIME_FORCINGS], axis=1)
    )


def test_checkpoint_round_trip_keeps_the_forcings_and_gives_the_same_step(tmp_path, sst):
    stepper = _forced()
    save_checkpoint(tmp_path / "a.ckpt", stepper)
    loaded, metadata = load_checkpoint(tmp_path / "a.ckpt")
    assert metadata["prescribed"] == SST.to_dict() and loaded.prescribed_names == ("sst",)
    state = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 4, 16, 32))).float()
    state = stepper.denormalize(state)
    times = ForcingStore(sst, ("sst",), stepper.grid, "standard").dataset["time"].values[[3]]
    outputs = []
    for model in (stepper, loaded):
        connect_forcing_store(model, sst, "standard", times, model="test")
        outputs.append(model.advance(state, times))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    # a checkpoint of a model without prescribed forcings has none, as before
    save_checkpoint(tmp_path / "plain.ckpt", make_stepper())
    plain, metadata = load_checkpoint(tmp_path / "plain.ckpt")
    assert metadata["prescribed"] is None and plain.prescribed_names == ()
    del metadata["prescribed"]  # a checkpoint written before prescribed forcings existed
    assert BackboneStepper.from_config(metadata).prescribed_names == ()


def test_a_boosted_model_hands_the_store_to_its_first_model(tmp_path, sst):
    first = _forced()
    boosted = BoostedStepper(first, "fno", {"embed_dim": 8, "num_layers": 1})
    assert boosted.prescribed_names == ("sst",)
    times = ForcingStore(sst, ("sst",), first.grid, "standard").dataset["time"].values[[2]]
    connect_forcing_store(boosted, sst, "standard", times, model="test")
    assert first.forcing_store is not None
    state = torch.full((1, 4, 16, 32), 1.0) * first.mean.reshape(1, 4, 1, 1)
    step = boosted.advance(state, times)
    other = write_forcing_store(tmp_path / "other.zarr", periods=12, seed=5)
    connect_forcing_store(boosted, other, "standard", times, model="test")
    assert torch.isfinite(step).all() and not torch.equal(step, boosted.advance(state, times))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("t2m",), r"must be distinct and not state channels or time forcings \(t2m clash\)"),
        (("cos_year",), r"\(cos_year clash\)"),
        (("sst", "sst"), "must be distinct"),
    ],
)
def test_bad_prescribed_names(names, message):
    n = len(names)
    with pytest.raises(ConfigError, match=message):
        _forced(Normalizer(names, np.full(n, 290.0), np.ones(n), np.ones(n)))


def test_a_store_with_other_variables_is_refused_by_the_stepper(tmp_path):
    other = write_forcing_store(tmp_path / "sic.zarr", periods=4, names=("sic",))
    stepper = _forced()
    with pytest.raises(ConfigError, match="the forcing store serves sic, the model takes sst"):
        stepper.use_forcing_store(ForcingStore(other, ("sic",), stepper.grid, "standard"))
    with pytest.raises(ConfigError, match="takes no prescribed forcings"):
        make_stepper().use_forcing_store(ForcingStore(other, ("sic",), stepper.grid, "standard"))
