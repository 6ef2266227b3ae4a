"""Initial-condition perturbations for ensembles, chosen by name from :data:`PERTURBATIONS`."""

from __future__ import annotations

from typing import Any

import numpy as np

from forecast.errors import ConfigError
from forecast.grid import Grid
from inference.perturbations.base import Perturbation, member_seed, parse_amplitude
from inference.perturbations.bred import BredPerturbation
from inference.perturbations.gaussian import GaussianPerturbation, NoPerturbation
from inference.perturbations.grf import GRFPerturbation

#: Perturbation name -> class.
PERTURBATIONS: dict[str, type[Perturbation]] = {
    NoPerturbation.name: NoPerturbation,
    GaussianPerturbation.name: GaussianPerturbation,
    GRFPerturbation.name: GRFPerturbation,
    BredPerturbation.name: BredPerturbation,
}


def create_perturbation(
    name: str, amplitude: np.ndarray, grid: Grid, seed: int = 0, **options: Any
) -> Perturbation:
    """Build the perturbation called ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`PERTURBATIONS`.
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units.
    grid : Grid
        The model grid.
    seed : int
        Seed of the ensemble.
    **options
        Class-specific options (``length_scale_km`` and ``alpha`` for grf,
        ``cycles`` for bred); ``None`` values are left at their defaults.
    """
    if name not in PERTURBATIONS:
        raise ConfigError(
            f"unknown perturbation {name!r}", hint=f"use one of {', '.join(PERTURBATIONS)}"
        )
    cls = PERTURBATIONS[name]
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in options.items() if v is not None and k in accepted}
    return cls(amplitude, grid, seed, **kwargs)


__all__ = ["PERTURBATIONS", "Perturbation", "create_perturbation", "member_seed", "parse_amplitude"]
