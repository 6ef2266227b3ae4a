"""The forced shallow-water model behind `forecast synth`: how the stirring advances."""

from __future__ import annotations

import math

import torch

from pipelines.synthetic_dynamics import SECONDS_PER_DAY, ForcedShallowWater, config_for_output

SIX_HOURS = 6 * 3600.0


def _spun_up(seed: int = 0) -> tuple[ForcedShallowWater, torch.Tensor]:
    model = ForcedShallowWater(config_for_output(16), seed)
    state = model.initial_state(0.1)
    for _ in range(4):  # one day: the stirring is no longer zero
        state = model.advance(state, SIX_HOURS)
    return model, state


def test_mean_stirring_decays_exactly_and_draws_no_noise() -> None:
    with torch.no_grad():
        model, state = _spun_up()
        before = model._stir.clone()
        generator = model.generator.get_state()
        model.advance(state, SIX_HOURS, stirring="mean")
    keep = math.exp(-SIX_HOURS / (model.config.stir_memory_days * SECONDS_PER_DAY))
    assert before.abs().max() > 0
    torch.testing.assert_close(model._stir, keep * before, rtol=1e-12, atol=0)
    assert torch.equal(model.generator.get_state(), generator)


def test_random_stirring_is_renewed_every_internal_step_and_reproducible() -> None:
    with torch.no_grad():
        a, state_a = _spun_up(seed=1)
        b, state_b = _spun_up(seed=1)
        mean, state_m = _spun_up(seed=1)
        generator = a.generator.get_state()
        out_a = a.advance(state_a, SIX_HOURS)
        out_b = b.advance(state_b, SIX_HOURS)
        out_m = mean.advance(state_m, SIX_HOURS, stirring="mean")
    assert torch.equal(out_a, out_b)  # same seed, same weather
    assert not torch.equal(a.generator.get_state(), generator)
    # six internal steps of 3600 s, two normal draws of (lmax, mmax) each
    replay = torch.Generator().set_state(generator)
    for _ in range(12):
        torch.randn((a.lmax, a.mmax), generator=replay, dtype=torch.float64)
    assert torch.equal(replay.get_state(), a.generator.get_state())
    assert not torch.allclose(out_a, out_m)  # new noise changes the flow
