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
from typing import Annotated, cast

import numpy as np
import torch
from pydantic import Field

from forecast.grid import Grid
from forecast.stepper import Stepper
from inference.perturbations.base import BasePerturbation, PerturbationOptions, area_rms
from inference.perturbations.gaussian import GaussianPerturbation


class BredPerturbation(BasePerturbation):
    """Bred vectors after ``cycles`` perturb-forecast-rescale cycles.

    Parameters
    ----------
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units.
    grid : Grid
        The model grid.
    seed : int
        Seed of the ensemble (seeds the first cycle's white noise).
    options : BredPerturbation.Options, optional
        ``cycles``.
    """

    name = "bred"

    class Options(PerturbationOptions):
        """Options of bred vectors.

        Attributes
        ----------
        cycles : int
            Number of breeding cycles.
        """

        cycles: Annotated[int, Field(ge=1)] = 3

    def __init__(
        self,
        amplitude: np.ndarray,
        grid: Grid,
        seed: int = 0,
        options: PerturbationOptions | None = None,
    ):
        super().__init__(amplitude, grid, seed, options)
        options = cast(BredPerturbation.Options, self.options)
        self.cycles = int(options.cycles)
        self.seed_noise = GaussianPerturbation(amplitude, grid, seed)
        self.weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32)

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        stepper: Stepper | None = None,
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
        control = _step(stepper, state, times)
        for _ in range(self.cycles):
            grown = _step(stepper, state + delta[:, None], times) - control
            norm = area_rms(grown, weights)[..., None, None]
            # A channel the model does not change keeps its previous perturbation.
            delta = torch.where(norm > 0, grown * (amplitude / norm.clamp_min(1e-30)), delta)
        return state + delta[:, None]


def _step(stepper: Stepper, state: torch.Tensor, times: np.ndarray) -> torch.Tensor:
    """One model step of every member, finite or not, in the dtype of ``state``."""
    with torch.inference_mode():
        return stepper.advance(state, times, check_finite=False).to(state.dtype)
