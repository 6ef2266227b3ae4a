"""Initial-condition perturbations: amplitudes, spatial structure, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from forecast.errors import ConfigError
from forecast.grid import Grid
from inference.initial import load_initial_state, parse_init_spec
from inference.perturbations import PERTURBATIONS, create_perturbation, parse_amplitude
from inference.perturbations.base import area_rms
from tests.inference.conftest import CHANNELS, STDS

GRID = Grid.equiangular(16, 32)


def _neighbour_correlation(field: torch.Tensor) -> float:
    """Correlation of east-west neighbours, averaged over fields ``(..., lat, lon)``."""
    a, b = field, torch.roll(field, 1, dims=-1)
    return float(((a * b).mean() / (a * a).mean()).item())


def test_registry_names():
    assert list(PERTURBATIONS) == ["none", "gaussian", "grf", "bred"]
    with pytest.raises(
        ConfigError, match="unknown perturbation 'spray'; use one of none, gaussian, grf, bred"
    ):
        create_perturbation("spray", np.ones(4), GRID)


def test_gaussian_amplitude_per_channel_and_member_seeds():
    amplitude = np.array([1.0, 2.0, 0.5, 0.0])
    perturb = create_perturbation("gaussian", amplitude, GRID, seed=3)
    state = torch.zeros(2, 1, 4, 16, 32)
    out = perturb(state, ["2020-01-01T00:00"] * 2, [0, 1])
    std = out.std(dim=(0, 1, 3, 4)).numpy()
    np.testing.assert_allclose(std[:3], amplitude[:3], rtol=0.1)
    assert std[3] == 0.0
    # a member's noise depends on its seed, init and index only
    alone = perturb(state[:1], ["2020-01-01T00:00"], [1])
    assert torch.equal(alone[0], out[1])
    assert not torch.equal(out[0], out[1])
    other_seed = create_perturbation("gaussian", amplitude, GRID, seed=4)(
        state[:1], ["2020-01-01T00:00"], [1]
    )
    assert not torch.equal(other_seed[0], out[1])


def test_grf_is_smooth_with_unit_area_rms_and_chosen_length():
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    members = list(range(8))
    long = create_perturbation("grf", np.ones(4), GRID, seed=0, length_scale_km=3000.0)
    short = create_perturbation("grf", np.ones(4), GRID, seed=0, length_scale_km=300.0)
    long_noise = long.noise(["t"] * 8, members, 4)
    short_noise = short.noise(["t"] * 8, members, 4)
    white = create_perturbation("gaussian", np.ones(4), GRID).noise(["t"] * 8, members, 4)
    torch.testing.assert_close(area_rms(long_noise, weights), torch.ones(8, 4))
    assert _neighbour_correlation(long_noise) > 0.8
    assert _neighbour_correlation(long_noise) > _neighbour_correlation(short_noise)
    assert abs(_neighbour_correlation(white)) < 0.1


def test_grf_on_grid_that_is_not_twice_as_wide():
    grid = Grid.equiangular(16, 48)
    noise = create_perturbation("grf", np.ones(2), grid).noise(["t"], [0], 2)
    assert noise.shape == (1, 2, 16, 48) and torch.isfinite(noise).all()


def test_bred_vectors_have_the_amplitude_and_differ_from_white_noise(store, stepper):
    init = parse_init_spec("2020-01-01T06", "standard")
    state = load_initial_state(store, CHANNELS, init, 1).expand(3, -1, -1, -1, -1)
    amplitude = 0.05 * STDS
    bred = create_perturbation("bred", amplitude, GRID, seed=1, cycles=2)
    out = bred(state, ["x"] * 3, [0, 1, 2], stepper=stepper, times=np.repeat(init, 3))
    delta = (out - state)[:, 0]
    weights = torch.as_tensor(GRID.area_weights(), dtype=torch.float32)
    rms = area_rms(delta, weights).numpy()
    np.testing.assert_allclose(rms, np.broadcast_to(amplitude, (3, 4)), rtol=1e-4)
    # the cycles changed the seed noise (the model's response was added), and members differ
    seed_delta = bred.seed_noise.noise(["x"] * 3, [0, 1, 2], 4) * torch.as_tensor(
        amplitude, dtype=torch.float32
    ).view(1, 4, 1, 1)
    assert (delta - seed_delta).abs().amax() > 1e-3 * float(amplitude.min())
    assert not torch.allclose(delta[0], delta[1])
    with pytest.raises(ValueError, match="need the stepper"):
        bred(state, ["x"] * 3, [0, 1, 2])


def test_parse_amplitude():
    np.testing.assert_array_equal(parse_amplitude("0.1", CHANNELS), [0.1] * 4)
    np.testing.assert_array_equal(parse_amplitude("0.1,z500=0.02", CHANNELS), [0.02, 0.1, 0.1, 0.1])
    np.testing.assert_array_equal(parse_amplitude("t2m=0.3", CHANNELS), [0.05, 0.05, 0.05, 0.3])
    with pytest.raises(ConfigError, match="unknown channel\\(s\\) q700"):
        parse_amplitude("q700=0.1", CHANNELS)
    with pytest.raises(ConfigError, match="cannot parse --amplitude"):
        parse_amplitude("z500=big", CHANNELS)
