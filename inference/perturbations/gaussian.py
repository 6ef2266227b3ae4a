"""White noise: independent Gaussian values at each grid point, scaled per channel."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from forecast.stepper import Stepper
from inference.perturbations.base import BasePerturbation, member_generator


class NoPerturbation(BasePerturbation):
    """Every member starts from the analysis: members are identical (a deterministic model)."""

    name = "none"

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        stepper: Stepper | None = None,
        times: np.ndarray | None = None,
    ) -> torch.Tensor:
        return state


class GaussianPerturbation(BasePerturbation):
    """White Gaussian noise with std ``amplitude`` per channel."""

    name = "gaussian"

    def noise(
        self, init_labels: Sequence[str], members: Sequence[int] | np.ndarray, channels: int
    ) -> torch.Tensor:
        shape = (channels, *self.grid.shape)
        return torch.stack(
            [
                torch.randn(shape, generator=member_generator(self.seed, label, m))
                for label, m in zip(init_labels, members, strict=True)
            ]
        )
