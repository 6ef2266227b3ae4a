"""Losses, curriculum and learning-rate schedule."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from forecast.grid import Grid
from forecast.training.losses import (
    RolloutCurriculum,
    area_weighted_mse,
    channel_weight_tensor,
    fair_crps,
    per_channel_mse,
    per_channel_zonal_mse,
)
from forecast.training.optim import cosine_warmup_factor


@pytest.fixture
def weights() -> torch.Tensor:
    return torch.as_tensor(Grid.equiangular(16, 32).area_weights(), dtype=torch.float64)


def test_area_weighted_mse_weights_rows_by_area(weights):
    prediction = torch.zeros(1, 1, 16, 32, dtype=torch.float64)
    target = torch.zeros_like(prediction)
    target[0, 0, 8] = 2.0  # an error of 2 on one row near the equator
    expected = 4.0 * weights[8].item() / 16
    assert area_weighted_mse(prediction, target, weights).item() == pytest.approx(expected)
    target_pole = torch.zeros_like(prediction)
    target_pole[0, 0, 0] = 2.0  # the same error on the polar row weighs almost nothing
    assert area_weighted_mse(prediction, target_pole, weights).item() < 0.05 * expected


def test_channel_weights_are_relative(weights):
    prediction = torch.zeros(2, 2, 16, 32, dtype=torch.float64)
    target = torch.ones_like(prediction)
    target[:, 1] = 3.0
    per_channel = per_channel_mse(prediction, target, weights)
    np.testing.assert_allclose(per_channel.numpy(), [1.0, 9.0])
    channel_weights = channel_weight_tensor(["z500", "t850"], {"t850": 3.0}).double()
    assert area_weighted_mse(prediction, target, weights, channel_weights).item() == pytest.approx(
        (1.0 + 27.0) / 4.0
    )
    with pytest.raises(ValueError, match="unknown channel"):
        channel_weight_tensor(["z500"], {"q700": 1.0})


def test_zonal_mse_is_the_zonal_mean_part_of_the_mse(weights):
    lon = torch.linspace(0.0, 2.0 * np.pi, 33, dtype=torch.float64)[:-1]
    prediction = torch.zeros(1, 2, 16, 32, dtype=torch.float64)
    target = torch.zeros_like(prediction)
    target[0, 0, 8] = 2.0 + 3.0 * torch.cos(lon)  # zonal mean 2, eddy amplitude 3 on one row
    target[0, 1] = 3.0 * torch.sin(2.0 * lon)  # eddies only: no zonal-mean error at all
    zonal = per_channel_zonal_mse(prediction, target, weights).numpy()
    np.testing.assert_allclose(zonal, [4.0 * weights[8].item() / 16, 0.0], atol=1e-12)
    # the MSE is the zonal part plus the eddy part (mean square of cos: 1/2)
    eddy = np.array([4.5 * weights[8].item() / 16, 4.5 * weights.mean().item()])
    np.testing.assert_allclose(per_channel_mse(prediction, target, weights).numpy(), zonal + eddy)
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 2, 16, 32, generator=generator, dtype=torch.float64)
    zonal_mean = noise.mean(dim=-1, keepdim=True)
    np.testing.assert_allclose(
        per_channel_zonal_mse(noise, torch.zeros_like(noise), weights).numpy()
        + per_channel_mse(noise - zonal_mean, torch.zeros_like(noise), weights).numpy(),
        per_channel_mse(noise, torch.zeros_like(noise), weights).numpy(),
    )


def test_fair_crps_matches_pairwise_definition(weights):
    generator = torch.Generator().manual_seed(0)
    ensemble = torch.randn(4, 2, 3, 16, 32, generator=generator, dtype=torch.float64)
    target = torch.randn(2, 3, 16, 32, generator=generator, dtype=torch.float64)
    members = ensemble.shape[0]
    skill = (ensemble - target).abs().mean(0)
    spread = sum(
        (ensemble[i] - ensemble[j]).abs() for i, j in itertools.product(range(members), repeat=2)
    )
    pointwise = skill - spread / (2 * members * (members - 1))
    expected = (pointwise * weights.reshape(-1, 1)).mean(dim=(0, 2, 3)).mean()
    assert fair_crps(ensemble, target, weights).item() == pytest.approx(expected.item(), rel=1e-12)


def test_fair_crps_of_identical_members_is_absolute_error(weights):
    target = torch.zeros(1, 1, 16, 32, dtype=torch.float64)
    ensemble = torch.full((3, 1, 1, 16, 32), 0.5, dtype=torch.float64)
    assert fair_crps(ensemble, target, weights).item() == pytest.approx(0.5)


def test_curriculum_raises_rollout_length():
    curriculum = RolloutCurriculum(max_steps=100, rollout_steps=4)
    lengths = [curriculum(step) for step in range(100)]
    assert lengths[0] == 1 and lengths[39] == 1 and lengths[-1] == 4
    assert lengths == sorted(lengths) and set(lengths) == {1, 2, 3, 4}
    explicit = RolloutCurriculum(
        100, 4, milestones=RolloutCurriculum.parse_milestones("0:1,10:2,20:4")
    )
    assert [explicit(s) for s in (0, 9, 10, 19, 20, 99)] == [1, 1, 2, 2, 4, 4]
    with pytest.raises(ValueError, match="step:K"):
        RolloutCurriculum.parse_milestones("ten:2")


def test_cosine_schedule_with_warmup():
    factors = [cosine_warmup_factor(step, 100, 10, 0.0) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5)
    assert factors[100] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
