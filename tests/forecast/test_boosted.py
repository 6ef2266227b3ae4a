"""SpecBoost's boosted stepper: a fresh booster adds nothing, and training moves it."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import torch

from forecast.grid import Grid
from forecast.models import MODELS
from forecast.models.layers import zero_output_layer
from forecast.normalize import Normalizer
from forecast.steppers import BackboneStepper, BoostedStepper

#: a small configuration of each registered backbone on a 16x32 grid
SMALL = {
    "sfno": {"embed_dim": 8, "num_layers": 1},
    "sfno-nonlinear": {"embed_dim": 8, "num_layers": 1},
    "fno": {"embed_dim": 8, "num_layers": 1},
    "afno": {"patch_size": 4, "embed_dim": 8, "depth": 1, "num_blocks": 2},
}


def _first() -> BackboneStepper:
    channels = ("z500", "t850")
    normalizer = Normalizer(channels, np.zeros(2), np.ones(2), np.full(2, 0.1))
    torch.manual_seed(0)
    return BackboneStepper(
        "fno", SMALL["fno"], channels, Grid.equiangular(16, 32), dt.timedelta(hours=6),
        normalizer, history=2,
    )  # fmt: skip


def test_every_backbone_is_covered():
    assert set(SMALL) == set(MODELS)


@pytest.mark.parametrize("booster", sorted(SMALL))
def test_a_fresh_boosted_stepper_steps_exactly_as_the_first_model(booster):
    """Zero output layer: the untrained pair is the first model (a random booster added noise)."""
    first = _first()
    torch.manual_seed(1)
    boosted = BoostedStepper(first, booster, SMALL[booster], residual_scale=[0.5, 2.0])
    x = torch.randn(3, 2, 2, 16, 32)
    times = np.array(["2020-01-01T00", "2020-01-01T06", "2020-03-01T12"], dtype="datetime64[ns]")
    forcings = first.forcings(times)
    with torch.no_grad():
        assert torch.equal(
            boosted.forward_normalized(x, forcings), first.forward_normalized(x, forcings)
        )
    # the output layer still learns: one gradient step on a residual target moves the pair
    target = first.forward_normalized(x, forcings).detach() + torch.randn(3, 2, 16, 32)
    loss = ((boosted.forward_normalized(x, forcings) - target) ** 2).mean()
    loss.backward()
    grads = [p.grad for p in boosted.booster.parameters() if p.grad is not None]
    assert grads and max(float(g.abs().max()) for g in grads) > 0
    assert all(p.grad is None for p in boosted.first.parameters())
    optimizer = torch.optim.SGD(boosted.booster.parameters(), lr=1e-3)
    optimizer.step()
    with torch.no_grad():
        moved = boosted.forward_normalized(x, forcings)
        after = ((moved - target) ** 2).mean()
    assert not torch.equal(moved, first.forward_normalized(x, forcings))
    assert after < loss.detach()


def test_zero_output_layer_zeroes_the_last_layer_only():
    network = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 1), torch.nn.GELU(), torch.nn.Conv2d(4, 2, 1)
    )
    before = network[0].weight.detach().clone()
    zero_output_layer(network)
    assert torch.equal(network[0].weight, before)
    assert not network[2].weight.any() and not network[2].bias.any()
    assert not network(torch.randn(1, 3, 5, 5)).any()
    with pytest.raises(ValueError, match="no convolution or linear"):
        zero_output_layer(torch.nn.GELU())
