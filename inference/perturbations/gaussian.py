"""White noise: independent Gaussian values at each grid point, scaled per channel."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from inference.perturbations.base import Perturbation, member_generator


class NoPerturbation(Perturbation):
    """Every member starts from the analysis: members are identical (a deterministic model)."""

    name = "none"

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int],
        stepper=None,
        times=None,
    ) -> torch.Tensor:
        return state


class GaussianPerturbation(Perturbation):
    """White Gaussian noise with std ``amplitude`` per channel."""

    name = "gaussian"

    def noise(
        self, init_labels: Sequence[str], members: Sequence[int], channels: int
    ) -> torch.Tensor:
        shape = (channels, *self.grid.shape)
        return torch.stack(
            [
                torch.randn(shape, generator=member_generator(self.seed, label, m))
                for label, m in zip(init_labels, members, strict=True)
            ]
        )
