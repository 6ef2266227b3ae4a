"""DYffusion: time-conditioned SFNO, dropout as the noise, cold sampling, the stepper, its checkpoint."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from forecast.checkpoint import load_checkpoint, save_checkpoint
from forecast.errors import CheckpointError, ConfigError, DataError
from forecast.grid import Grid
from forecast.models.conditioned import MemberDropout, TimeConditionedSFNO
from forecast.models.sfno import SFNO, SFNOHParams
from forecast.normalize import Normalizer
from forecast.stepper import SamplingStepper, StagedStepper, TrainableStepper
from forecast.steppers import DYffusionStepper, check_trained
from forecast.steppers.cold_sampling import cold_sample, network_calls_per_horizon

CHANNELS = ("z500", "t850")
GRID = Grid.equiangular(16, 32)
STEP = dt.timedelta(hours=6)
TIMES = np.array(["2020-01-01T00", "2020-01-01T06"], dtype="datetime64[ns]")
TINY = {"embed_dim": 8, "num_layers": 2, "horizon": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(seed: int = 0, history: int = 1, **hparams) -> DYffusionStepper:
    torch.manual_seed(seed)
    normalizer = Normalizer(
        CHANNELS, np.array([54000.0, 275.0]), np.array([3000.0, 15.0]), np.array([600.0, 3.0])
    )
    stepper = DYffusionStepper(
        {**TINY, **hparams}, CHANNELS, GRID, STEP, normalizer, history=history
    )
    for module in (stepper.interpolator, stepper.forecaster):
        trained(module)
    return stepper.eval()


def trained(network: TimeConditionedSFNO) -> TimeConditionedSFNO:
    """Weights where an untrained network has zeros (modulations, output layer), as if trained."""
    for layer in network.modulations:
        torch.nn.init.normal_(layer[1].weight, std=0.3)
    torch.nn.init.normal_(network.sfno.decoder[-1].weight, std=0.3)
    return network


def state(batch: int = 2, history: int = 1, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(batch, history, 2, *GRID.shape, generator=generator)
    return torch.tensor([54000.0, 275.0]).reshape(1, 1, 2, 1, 1) + noise * torch.tensor(
        [3000.0, 15.0]
    ).reshape(1, 1, 2, 1, 1)


# -- the conditioned network ---------------------------------------------------------------------
def test_conditioning_hook_leaves_the_plain_sfno_unchanged_and_the_time_matters():
    torch.manual_seed(0)
    hparams = SFNOHParams(embed_dim=8, num_layers=2)
    plain = SFNO(3, 2, GRID, hparams)
    x = torch.randn(2, 3, *GRID.shape)
    identity = plain(x, lambda index, features: features)
    np.testing.assert_array_equal(plain(x).detach().numpy(), identity.detach().numpy())
    conditioned = TimeConditionedSFNO(3, 2, GRID, hparams, dropout=0.0).eval()
    # a fresh network outputs zeros: the residual starts at its baseline
    assert conditioned(x, torch.tensor([0.25, 0.75])).abs().max() == 0
    conditioned.sfno.load_state_dict(plain.state_dict())
    tau = torch.tensor([0.25, 0.75])
    # zero-initialised modulations: the untrained conditioned model is the plain SFNO
    torch.testing.assert_close(conditioned(x, tau), plain(x))
    for layer in conditioned.modulations:
        torch.nn.init.normal_(layer[1].weight, std=0.3)
    early, late = (
        conditioned(x, torch.tensor([0.25, 0.25])),
        conditioned(x, torch.tensor([0.75, 0.75])),
    )
    assert (early - late).abs().max() > 1e-3


def test_dropout_on_samples_differ_off_identical():
    torch.manual_seed(0)
    x = torch.randn(2, 3, *GRID.shape)
    tau = torch.tensor([0.5, 0.5])
    network = trained(
        TimeConditionedSFNO(3, 2, GRID, SFNOHParams(embed_dim=8, num_layers=2), dropout=0.2)
    ).eval()

    def generators(*seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    on_a, on_b = network(x, tau, generators(1, 2)), network(x, tau, generators(3, 4))
    assert (on_a - on_b).abs().max() > 1e-3  # dropout on: two samples from the same inputs differ
    torch.testing.assert_close(
        network(x, tau, generators(1, 2)), on_a, rtol=0, atol=0
    )  # same seeds
    off_a, off_b = network(x, tau), network(x, tau)  # eval mode, no generators: dropout off
    np.testing.assert_array_equal(off_a.detach().numpy(), off_b.detach().numpy())
    zero = trained(
        TimeConditionedSFNO(3, 2, GRID, SFNOHParams(embed_dim=8, num_layers=2), dropout=0.0)
    )
    np.testing.assert_array_equal(
        zero(x, tau, generators(1, 2)).detach().numpy(),
        zero(x, tau, generators(3, 4)).detach().numpy(),
    )


def test_member_dropout_rows_depend_only_on_their_own_generator():
    dropout = MemberDropout(0.5)
    x = torch.ones(3, 4, 5, 6)
    rows = dropout(x, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    alone = dropout(x[1:2], [torch.Generator().manual_seed(8)])
    np.testing.assert_array_equal(rows[1:2].numpy(), alone.numpy())
    kept = (rows != 0).float().mean().item()
    assert 0.4 < kept < 0.6 and set(np.unique(rows.numpy())) <= {0.0, 2.0}
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        MemberDropout(1.0)


def test_channel_masks_drop_whole_maps_so_the_perturbation_keeps_the_fields_scales():
    p = 0.25
    dropout = MemberDropout(p, "channel")
    # a smooth field: the perturbation of a whole-map mask is a multiple of it, never new scales
    lat, lon = torch.meshgrid(
        torch.linspace(-1.5, 1.5, 16), torch.linspace(0, 6.2, 32), indexing="ij"
    )
    x = (torch.cos(lat) * torch.sin(lon)).expand(3, 64, 16, 32).clone()
    rows = dropout(x, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    factor = rows[..., 5, 7] / x[..., 5, 7]
    torch.testing.assert_close(rows, factor[..., None, None] * x, rtol=0, atol=1e-6)
    assert bool(((factor == 0) | torch.isclose(factor, torch.tensor(1 / (1 - p)))).all())
    assert 0.55 < (factor != 0).float().mean().item() < 0.95  # 192 maps, 3/4 kept
    alone = dropout(x[1:2], [torch.Generator().manual_seed(8)])
    np.testing.assert_array_equal(rows[1:2].numpy(), alone.numpy())
    element = MemberDropout(p)(x, [torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    assert not torch.allclose(element, (element[..., 5:6, 7:8] / x[..., 5:6, 7:8]) * x)
    dropout.train()
    trained_masks = dropout(x)  # torch's global generator: whole maps too
    torch.testing.assert_close(
        trained_masks, (trained_masks[..., 5:6, 7:8] / x[..., 5:6, 7:8]) * x, rtol=0, atol=1e-6
    )
    dropout.eval()
    assert dropout(x) is x
    with pytest.raises(ValueError, match="element"):
        MemberDropout(p, "pixel")


def test_block_masks_keep_or_drop_a_rows_whole_features():
    p = 0.5
    dropout = MemberDropout(p, "block")
    x = torch.randn(64, 4, 5, 6)
    rows = dropout(x, [torch.Generator().manual_seed(s) for s in range(64)])
    factor = rows[:, 0, 0, 0] / x[:, 0, 0, 0]
    torch.testing.assert_close(rows, factor[:, None, None, None] * x, rtol=0, atol=1e-6)
    assert set(np.unique(factor.numpy()).round(6)) == {0.0, 2.0}  # 64 rows: both occur
    alone = dropout(x[5:6], [torch.Generator().manual_seed(5)])
    np.testing.assert_array_equal(rows[5:6].numpy(), alone.numpy())
    batch = dropout(x, torch.Generator().manual_seed(1))  # one generator for the batch: whole rows
    factor = batch[:, 0, 0, 0] / x[:, 0, 0, 0]
    torch.testing.assert_close(batch, factor[:, None, None, None] * x, rtol=0, atol=1e-6)
    dropout.train()
    torch.manual_seed(2)
    trained_masks = dropout(x)  # torch's global generator in training mode: whole rows too
    factor = trained_masks[:, 0, 0, 0] / x[:, 0, 0, 0]
    torch.testing.assert_close(trained_masks, factor[:, None, None, None] * x, rtol=0, atol=1e-6)
    assert 0.25 < (factor != 0).float().mean().item() < 0.75
    dropout.eval()
    assert dropout(x) is x


@pytest.mark.parametrize("masks", ["channel", "block"])
def test_dropout_masks_reach_both_networks_and_the_checkpoint(tmp_path, masks):
    stepper = make(dropout=0.2, forecaster_dropout=0.2, dropout_masks=masks)
    assert stepper.interpolator.dropout.masks == stepper.forecaster.dropout.masks == masks
    save_checkpoint(tmp_path / "dy.ckpt", stepper, provenance={"step": 1})
    loaded, _ = load_checkpoint(tmp_path / "dy.ckpt")
    assert loaded.interpolator.dropout.masks == masks
    assert make().interpolator.dropout.masks == "element"  # the default: older checkpoints
    with pytest.raises(ConfigError, match="dropout_masks"):
        make(dropout_masks="pixel")


# -- cold sampling -------------------------------------------------------------------------------
def _linear_dynamics(size: int = 5, seed: int = 0):
    """A damped rotation ``x_{k+1} = A x_k`` and its exact interpolator and forecaster."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(size, size, generator=generator, dtype=torch.float64))
    a = 0.95 * q
    return a, torch.randn(size, generator=generator, dtype=torch.float64)


def test_cold_sampling_with_exact_networks_reproduces_linear_dynamics():
    a, start = _linear_dynamics()
    horizon = 4
    power = [torch.linalg.matrix_power(a, k) for k in range(horizon + 1)]
    inverse = torch.linalg.inv(a)

    def interpolate(end, i):  # exact from either end: blend the two reconstructions
        from_start = power[i] @ start
        from_end = torch.linalg.matrix_power(inverse, horizon - i) @ end
        return (1 - i / horizon) * from_start + (i / horizon) * from_end

    def forecast(state, i):
        return power[horizon - i] @ state

    states = cold_sample(start, interpolate, forecast, horizon)
    truth = [power[k] @ start for k in range(1, horizon + 1)]
    assert len(states) == horizon
    for got, want in zip(states, truth, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


# the same linear dynamics on departures from a seasonal and diurnal climatology, through the stepper
HOURS = [0.0, 6.0, 12.0, 18.0]


def _climatology_tables(seed: int = 3):
    """Physical seasonal coefficients (2 harmonics) and a diurnal table of the size of the state."""
    generator = np.random.default_rng(seed)
    scale = np.array([3000.0, 15.0])[None, :, None, None]
    seasonal = generator.normal(size=(5, 2, *GRID.shape)) * scale
    seasonal[0] += np.array([54000.0, 275.0])[:, None, None]
    diurnal = generator.normal(size=(4, 2, *GRID.shape)) * 0.5 * scale
    return seasonal, diurnal - diurnal.mean(axis=0)


class _ExactNetwork(torch.nn.Module):
    """Stands in for a TimeConditionedSFNO: the exact output for departures ``a_{k+1} = A a_k``.

    ``role`` ``"interpolator"``: the correction to the linear interpolation of
    the departures (in tendency units); ``"forecaster"``: the departure at
    ``t + h`` itself, or its change from ``t + i`` (``residual``).
    """

    def __init__(self, a, stepper, role, residual=True):
        super().__init__()
        self.a, self.stepper, self.role, self.residual = a.float(), stepper, role, residual

    def power(self, departure, k):
        matrix = torch.linalg.matrix_power(self.a.double(), k).float()
        return torch.einsum("ij,bjyx->biyx", matrix, departure)

    def forward(self, inputs, tau, generators=None):
        n, h, history = len(self.stepper.channels), self.stepper.horizon, self.stepper.history
        i = int(round(float(tau[0]) * h))
        scale = self.stepper.tendency_scale
        if self.role == "interpolator":
            start = inputs[:, (history - 1) * n : history * n]
            end = inputs[:, history * n : (history + 1) * n]
            f = i / h
            exact = (1 - f) * self.power(start, i) + f * self.power(end, i - h)
            return (exact - (start + f * (end - start))) / scale
        state = inputs[:, :n]
        exact = self.power(state, h - i)
        return (exact - state) / scale if self.residual else exact


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "no-residual"])
def test_cold_sampling_on_departures_with_exact_networks_reproduces_the_truth(residual):
    """With the seasonal (and diurnal) baseline, the states are C(t + k) + A^k (x_t - C(t))."""
    q, _ = _linear_dynamics(size=2, seed=4)
    a = q.float()
    seasonal, diurnal = _climatology_tables()
    normalizer = Normalizer(
        CHANNELS, np.array([54000.0, 275.0]), np.array([3000.0, 15.0]), np.array([600.0, 3.0])
    )
    stepper = DYffusionStepper(
        {**TINY, "horizon": 4}, CHANNELS, GRID, STEP, normalizer, history=2,
        diurnal=(HOURS, diurnal), residual=residual, seasonal=seasonal,
    ).eval()  # fmt: skip
    stepper.interpolator = _ExactNetwork(a, stepper, "interpolator")
    stepper.forecaster = _ExactNetwork(a, stepper, "forecaster", residual)
    h = stepper.horizon
    times = np.array(["2020-03-01T06", "2020-11-30T18"], "datetime64[ns]")  # one per row
    clim = [stepper.forcings(times)["climatology"][:, k] for k in range(h + 2)]  # t-1 .. t+h
    assert stepper.forcing_names[-1] == "climatology" and len(clim) == stepper.history + h
    departure = torch.randn(2, 2, *GRID.shape, generator=torch.Generator().manual_seed(5))
    power = stepper.interpolator.power
    inputs = torch.stack([clim[0] + power(departure, -1), clim[1] + departure], dim=1)
    truth = [clim[1 + k] + power(departure, k) for k in range(h + 1)]  # t .. t+h, normalised
    block = stepper.advance_block(stepper.denormalize(inputs), times, seeds=[1, 2])
    assert block.shape == (2, h, 2, *GRID.shape)
    for k in range(h):
        torch.testing.assert_close(stepper.normalize(block[:, k]), truth[k + 1], rtol=0, atol=2e-4)
    # the baseline is a real one: the climatology moves within the horizon by far more than the tolerance
    assert min((clim[1 + k] - clim[1]).abs().max() for k in range(1, h)) > 0.5
    # a second horizon starts from the written states at t + h - 1 and t + h and stays on the truth
    later = np.array([t + np.timedelta64(6 * h, "h") for t in times])
    after = stepper.forcings(later)["climatology"]
    again = stepper.advance_block(block[:, -2:], later, seeds=[1, 2])
    anomaly = power(departure, h)
    for k in range(h):
        torch.testing.assert_close(
            stepper.normalize(again[:, k]),
            after[:, 2 + k] + power(anomaly, k + 1),
            rtol=0,
            atol=5e-4,
        )


def _assert_same_model(stepper: DYffusionStepper, loaded: DYffusionStepper) -> None:
    """The same weights and buffers, and the same samples from the same inputs and seeds."""
    for name, tensor in stepper.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    x = state(history=2)
    np.testing.assert_array_equal(
        stepper.advance_block(x, TIMES, seeds=[3, 4]).numpy(),
        loaded.advance_block(x, TIMES, seeds=[3, 4]).numpy(),
    )


def test_seasonal_checkpoint_round_trip(tmp_path):
    seasonal, diurnal = _climatology_tables()
    torch.manual_seed(0)
    normalizer = Normalizer(
        CHANNELS, np.array([54000.0, 275.0]), np.array([3000.0, 15.0]), np.array([600.0, 3.0])
    )
    stepper = DYffusionStepper(
        TINY, CHANNELS, GRID, STEP, normalizer, history=2, diurnal=(HOURS, diurnal),
        residual=False, seasonal=seasonal,
    )  # fmt: skip
    for module in (stepper.interpolator, stepper.forecaster):
        trained(module)
    stepper.trained_steps.update(interpolator=2, forecaster=2)
    path = tmp_path / "seasonal.ckpt"
    save_checkpoint(path, stepper.eval())
    loaded, metadata = load_checkpoint(path)
    assert metadata["seasonal_harmonics"] == 2 and metadata["residual"] is False
    assert loaded.seasonal is not None and loaded.residual is False
    assert "seasonal.coefficients" in loaded.state_dict() and "diurnal.table" in loaded.state_dict()
    _assert_same_model(stepper, loaded)
    # a checkpoint from before the seasonal baseline (no such keys) loads as a residual model
    config = {
        k: v for k, v in stepper.config().items() if k not in ("residual", "seasonal_harmonics")
    }
    older = DYffusionStepper.from_config({**config, "diurnal_hours": None})
    assert older.residual and older.seasonal is None
    with pytest.raises(DataError, match="seasonal coefficients have shape"):
        DYffusionStepper(TINY, CHANNELS, GRID, STEP, normalizer, seasonal=seasonal[:, :1])
    with pytest.raises(DataError, match="diurnal table has shape"):
        DYffusionStepper(TINY, CHANNELS, GRID, STEP, normalizer, diurnal=(HOURS, diurnal[:, :1]))
    with pytest.raises(DataError, match="residual mode or a seasonal baseline"):
        DYffusionStepper(
            TINY, CHANNELS, GRID, STEP, normalizer, diurnal=(HOURS, diurnal), residual=False
        )
    with pytest.raises(DataError, match="need time forcings"):
        DYffusionStepper(TINY, CHANNELS, GRID, STEP, normalizer, forcings=False, seasonal=seasonal)


def test_network_calls_per_horizon():
    calls = {"interpolate": 0, "forecast": 0}

    def interpolate(end, i):
        calls["interpolate"] += 1
        assert 0 < i < 4
        return end

    def forecast(state, i):
        calls["forecast"] += 1
        assert 0 <= i < 4
        return state

    cold_sample(torch.zeros(1), interpolate, forecast, 4)
    assert (calls["forecast"], calls["interpolate"]) == network_calls_per_horizon(4) == (4, 6)


# -- the stepper ---------------------------------------------------------------------------------
def test_stepper_satisfies_the_protocols_and_samples_a_horizon():
    stepper = make()
    assert isinstance(stepper, SamplingStepper) and isinstance(stepper, StagedStepper)
    assert isinstance(stepper, TrainableStepper)
    assert stepper.block_steps == 3 and len(stepper.forcing_names) == 3 * 4
    block = stepper.advance_block(state(), TIMES, seeds=[1, 2])
    assert block.shape == (2, 3, 2, *GRID.shape) and torch.isfinite(block).all()
    first = stepper.advance(state(), TIMES)
    assert first.shape == (2, 2, *GRID.shape)


def test_same_seed_same_sample_whatever_the_batch():
    stepper = make()
    x = state(batch=3)
    times = np.repeat(TIMES[:1], 3)
    together = stepper.advance_block(x, times, seeds=[5, 6, 7])
    alone = stepper.advance_block(x[1:2], times[1:2], seeds=[6])
    torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-2)
    again = stepper.advance_block(x, times, seeds=[5, 6, 7])
    np.testing.assert_array_equal(together.numpy(), again.numpy())
    other = stepper.advance_block(x, times, seeds=[5, 9, 7])
    assert (other[1] - together[1]).abs().max() > 1.0  # z500 in m2 s-2
    no_dropout = make(dropout=0.0)
    a = no_dropout.advance_block(x, times, seeds=[1, 2, 3])
    b = no_dropout.advance_block(x, times, seeds=[4, 5, 6])
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_forecaster_sampling_keeps_the_forecasters_dropout_on():
    """``forecaster_sampling``: the forecaster's trained dropout is a second source of spread."""
    x = state(batch=2)
    times = np.repeat(TIMES[:1], 2)
    trained_only = make(dropout=0.0, forecaster_dropout=0.3)
    a = trained_only.advance_block(x, times, seeds=[1, 2])
    b = trained_only.advance_block(x, times, seeds=[3, 4])
    np.testing.assert_array_equal(a.numpy(), b.numpy())  # off when sampling by default
    sampled = make(dropout=0.0, forecaster_dropout=0.3, forecaster_sampling=True)
    sampled.load_state_dict(trained_only.state_dict())
    c = sampled.advance_block(x, times, seeds=[1, 2])
    d = sampled.advance_block(x, times, seeds=[3, 4])
    assert (c - d).abs().max() > 1.0  # z500 in m2 s-2: other seeds, other forecaster masks
    np.testing.assert_array_equal(c.numpy(), sampled.advance_block(x, times, seeds=[1, 2]).numpy())
    alone = sampled.advance_block(x[1:2], times[1:2], seeds=[2])
    torch.testing.assert_close(c[1:2], alone, rtol=1e-5, atol=1e-2)  # a member is its seed's
    # The first state of a horizon already comes from the forecaster (F(x_t, 0), then I).
    assert (c[:, 0] - a[:, 0]).abs().max() > 1.0


def test_stepper_block_is_cold_sampling_of_its_networks(monkeypatch):
    """The stepper hands cold sampling its interpolator and forecaster at the right times."""
    stepper = make(history=2)
    x = stepper.normalize(state(history=2))
    seen = []

    def interpolate(start, end, offset, forcings, generators=None):
        seen.append(("I", int(offset[0])))
        torch.testing.assert_close(start, x)
        i = offset[0].item()
        return start[:, -1] + i * 0.1  # the exact interpolator of x_{k+1} = x_k + 0.1

    def forecast(state, start, offset, forcings, generators=None):
        seen.append(("F", int(offset[0])))
        return state + (stepper.horizon - offset[0].item()) * 0.1

    monkeypatch.setattr(stepper, "interpolate", interpolate)
    monkeypatch.setattr(stepper, "forecast", forecast)
    block = stepper.forward_block_normalized(x, stepper.forcings(TIMES))
    for k in range(3):
        torch.testing.assert_close(block[k], x[:, -1] + (k + 1) * 0.1)
    assert seen == [("F", 0), ("I", 1), ("F", 1), ("I", 2), ("I", 1), ("F", 2), ("I", 2)]


def test_forcings_are_the_time_forcings_of_each_step_of_the_horizon():
    from forecast.forcings import time_forcings

    stepper = make()
    fields = stepper.forcings(TIMES[:1])
    later = time_forcings(TIMES[:1] + np.timedelta64(12, "h"), GRID)
    for name, value in later.items():
        np.testing.assert_array_equal(fields[f"{name}+2"].numpy(), value.numpy())


def test_training_pairs_of_each_stage():
    stepper = make(history=2).train()
    generator = torch.Generator().manual_seed(0)
    history = torch.randn(4, 2, 2, *GRID.shape)
    targets = torch.randn(4, 3, 2, *GRID.shape)
    forcings = stepper.forcings(np.repeat(TIMES[:1], 4))
    stepper.set_stage("interpolator")
    assert all(p.requires_grad for p in stepper.interpolator.parameters())
    assert not any(p.requires_grad for p in stepper.forecaster.parameters())
    prediction, target = stepper.training_pairs(history, targets, forcings, generator)
    assert prediction.shape == target.shape == (4, 2, *GRID.shape) and prediction.requires_grad
    # each target is one of the intermediate states x_{t+1} .. x_{t+h-1}
    assert all(any(torch.equal(target[b], targets[b, k]) for k in range(2)) for b in range(4))
    stepper.set_stage("forecaster")
    prediction, target = stepper.training_pairs(history, targets, forcings, generator)
    torch.testing.assert_close(target, targets[:, 2])  # the forecaster always aims at x_{t+h}
    prediction.sum().backward()
    assert all(p.grad is None for p in stepper.interpolator.parameters())
    assert any(p.grad is not None for p in stepper.forecaster.parameters())
    with pytest.raises(ValueError, match="unknown stage"):
        stepper.set_stage("denoiser")


def test_training_pairs_with_members_sample_each_window_at_one_time():
    stepper = make(history=2, dropout=0.3, forecaster_dropout=0.3).train()
    history = torch.randn(4, 2, 2, *GRID.shape)
    targets = torch.randn(4, 3, 2, *GRID.shape)
    forcings = stepper.forcings(np.repeat(TIMES[:1], 4))
    for stage in ("interpolator", "forecaster"):
        stepper.set_stage(stage)
        generator = torch.Generator().manual_seed(0)
        ensemble, target = stepper.training_pairs(history, targets, forcings, generator, members=3)
        assert ensemble.shape == (3, 4, 2, *GRID.shape) and target.shape == (4, 2, *GRID.shape)
        assert ensemble.requires_grad
        # the members of a window differ by their dropout masks only
        assert not torch.allclose(ensemble[0], ensemble[1])
        # one interpolation time per window, shared by its members: the same target as one sample
        single, single_target = stepper.training_pairs(
            history, targets, forcings, torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(target, single_target)
        assert single.shape == (4, 2, *GRID.shape)
    stepper.eval()
    stepper.interpolator.dropout.p = stepper.forecaster.dropout.p = 0.0
    ensemble, _ = stepper.training_pairs(
        history, targets, forcings, torch.Generator().manual_seed(0), members=2
    )
    torch.testing.assert_close(ensemble[0], ensemble[1])  # no dropout: identical members
    with pytest.raises(ValueError, match="at least 1"):
        stepper.training_pairs(history, targets, forcings, torch.Generator(), members=0)


def test_checkpoint_round_trip_says_what_it_is(tmp_path):
    stepper = make(history=2)
    stepper.trained_steps.update(interpolator=7, forecaster=3)
    path = tmp_path / "dy.ckpt"
    save_checkpoint(path, stepper, provenance={"step": 10})
    loaded, metadata = load_checkpoint(path)
    assert isinstance(loaded, DYffusionStepper)
    assert metadata["stepper"] == "dyffusion" and metadata["model"] == "dyffusion"
    assert metadata["horizon"] == 3 and metadata["trained_steps"] == {
        "interpolator": 7,
        "forecaster": 3,
    }
    assert {name.split(".")[0] for name in loaded.state_dict()} == {"interpolator", "forecaster"}
    _assert_same_model(stepper, loaded)
    check_trained(loaded, path)
    fresh = make()
    with pytest.raises(CheckpointError, match="untrained interpolator and forecaster"):
        check_trained(fresh)
    fresh.trained_steps["interpolator"] = 5
    with pytest.raises(CheckpointError, match=r"untrained forecaster \(only the interpolator"):
        check_trained(fresh)


def test_bad_hyperparameters_are_one_line_errors():
    with pytest.raises(ConfigError, match="horizon"):
        make(horizon=1)
    with pytest.raises(ConfigError, match="unknown hyperparameter 'depth'"):
        make(depth=3)
    with pytest.raises(ConfigError, match="embed_dim"):
        make(forecaster={"embed_dim": 0})


def test_diurnal_baseline_of_both_networks(tmp_path):
    hours = [0.0, 6.0, 12.0, 18.0]
    longitude = GRID.longitude[None, None, :]
    table = (
        np.stack(
            [
                np.broadcast_to(np.cos(2 * np.pi * (h + longitude / 15.0) / 24.0), (2, *GRID.shape))
                for h in hours
            ]
        )
        * np.array([300.0, 2.0])[None, :, None, None]
    )
    torch.manual_seed(0)
    normalizer = Normalizer(
        CHANNELS, np.array([54000.0, 275.0]), np.array([3000.0, 15.0]), np.array([600.0, 3.0])
    )
    stepper = DYffusionStepper(
        TINY, CHANNELS, GRID, STEP, normalizer, diurnal=(hours, table)
    ).eval()
    for network in (stepper.interpolator, stepper.forecaster):  # networks that output zero
        torch.nn.init.zeros_(network.sfno.decoder[-1].weight)
    times = np.array(["2020-01-01T03"], dtype="datetime64[ns]")
    forcings = stepper.forcings(times)
    assert (
        f"diurnal_change+{stepper.horizon}" in forcings and len(stepper.forcing_names) == 3 * 4 + 3
    )
    start, end = torch.randn(1, 1, 2, *GRID.shape), torch.randn(1, 2, *GRID.shape)
    from forecast.diurnal import DiurnalBaseline

    baseline = DiurnalBaseline.from_physical(hours, table, normalizer.std)
    change = [baseline.change(times, k * STEP) for k in range(4)]
    offset = torch.tensor([2])
    expected = start[:, -1] + (2 / 3) * (end - start[:, -1]) + change[2] - (2 / 3) * change[3]
    torch.testing.assert_close(stepper.interpolate(start, end, offset, forcings), expected)
    torch.testing.assert_close(
        stepper.forecast(end, start, offset, forcings), end + change[3] - change[2]
    )
    path = tmp_path / "d.ckpt"
    save_checkpoint(path, stepper)
    loaded, metadata = load_checkpoint(path)
    assert metadata["diurnal_hours"] == hours
    torch.testing.assert_close(loaded.diurnal.table, stepper.diurnal.table)
