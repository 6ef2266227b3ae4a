"""Bred vectors: cycles of perturb, forecast, rescale.

Starting from white noise of the requested amplitude, each cycle runs the
model one step from the perturbed and from the unperturbed state and keeps
the difference, rescaled to the amplitude (area-weighted RMS per channel).
The growing directions of the model's dynamics survive the cycles; the noise
decays. This is the breeding of Toth and Kalnay (1993) done from the initial
state, as in earth2studio's ``BredVector``, so it needs no earlier analyses.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from forecast.errors import ConfigError
from forecast.grid import Grid
from inference.perturbations.base import Perturbation, area_rms
from inference.perturbations.gaussian import GaussianPerturbation
from inference.rollout import model_step


class BredPerturbation(Perturbation):
    """Bred vectors after ``cycles`` perturb-forecast-rescale cycles.

    Parameters
    ----------
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units.
    grid : Grid
        The model grid.
    seed : int
        Seed of the ensemble (seeds the first cycle's white noise).
    cycles : int
        Number of breeding cycles.
    """

    name = "bred"

    def __init__(self, amplitude: np.ndarray, grid: Grid, seed: int = 0, cycles: int = 3):
        super().__init__(amplitude, grid, seed)
        if cycles < 1:
            raise ConfigError(f"bred vectors need at least one cycle, not {cycles}")
        self.cycles = int(cycles)
        self.seed_noise = GaussianPerturbation(amplitude, grid, seed)
        self.weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32)

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int],
        stepper=None,
        times: np.ndarray | None = None,
    ) -> torch.Tensor:
        if stepper is None or times is None:
            raise ValueError("bred vectors need the stepper and the valid times of the state")
        amplitude = torch.as_tensor(self.amplitude, dtype=state.dtype, device=state.device).view(
            1, -1, 1, 1
        )
        weights = self.weights.to(state.device, state.dtype)
        delta = (
            self.seed_noise.noise(init_labels, members, state.shape[2]).to(
                state.device, state.dtype
            )
            * amplitude
        )
        control = model_step(stepper, state, times)
        for _ in range(self.cycles):
            grown = model_step(stepper, state + delta[:, None], times) - control
            norm = area_rms(grown, weights)[..., None, None]
            # A channel the model does not change keeps its previous perturbation.
            delta = torch.where(norm > 0, grown * (amplitude / norm.clamp_min(1e-30)), delta)
        return state + delta[:, None]
