"""Initial-condition perturbations for ensembles, chosen by name from :data:`PERTURBATIONS`.

A run describes its perturbation by a :class:`PerturbationSpec` (name,
amplitude per channel, every option, seed), made by :func:`perturbation_spec`
from user input and turned into a perturbation by :func:`build_perturbation`;
the spec is part of the run's identity (see :class:`inference.request.RunRequest`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from forecast.errors import ConfigError
from forecast.grid import Grid
from forecast.stepper import Stepper
from inference.perturbations.base import (
    BasePerturbation,
    Perturbation,
    PerturbationOptions,
    PerturbationSpec,
    member_seed,
    parse_amplitude,
)
from inference.perturbations.bred import BredPerturbation
from inference.perturbations.gaussian import GaussianPerturbation, NoPerturbation
from inference.perturbations.grf import GRFPerturbation

#: Perturbation name -> class.
PERTURBATIONS: dict[str, type[BasePerturbation]] = {
    NoPerturbation.name: NoPerturbation,
    GaussianPerturbation.name: GaussianPerturbation,
    GRFPerturbation.name: GRFPerturbation,
    BredPerturbation.name: BredPerturbation,
}


def perturbation_class(name: str) -> type[BasePerturbation]:
    """The class registered as ``name``.

    Raises
    ------
    ConfigError
        For an unknown name, listing the known ones.
    """
    if name not in PERTURBATIONS:
        raise ConfigError(
            f"unknown perturbation {name!r}", hint=f"use one of {', '.join(PERTURBATIONS)}"
        )
    return PERTURBATIONS[name]


def create_perturbation(
    name: str, amplitude: np.ndarray, grid: Grid, seed: int = 0, **options: Any
) -> BasePerturbation:
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
        The class's options (``length_scale_km`` and ``alpha`` for grf,
        ``cycles`` for bred); the others take their defaults.

    Raises
    ------
    ConfigError
        Unknown name, or an option that perturbation does not take.
    """
    cls = perturbation_class(name)
    return cls(amplitude, grid, seed, cls.validate_options(options))


def perturbation_spec(
    name: str,
    amplitude: str | float | Sequence[float] | None,
    channels: Sequence[str],
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
) -> PerturbationSpec:
    """Validate user input into a :class:`PerturbationSpec`.

    Parameters
    ----------
    name : str
        A key of :data:`PERTURBATIONS`.
    amplitude : str, float or sequence of float
        In units of each channel's std: ``"0.05"``, ``"0.05,z500=0.02"``
        (:func:`parse_amplitude`), or one value per channel.
    channels : sequence of str
        The model's channels, in state order.
    seed : int
        Seed of the ensemble.
    options : mapping, optional
        The perturbation's options; defaults fill the others.

    Raises
    ------
    ConfigError
        Unknown name, unknown option or bad value, bad amplitude.
    """
    cls = perturbation_class(name)
    if amplitude is None or isinstance(amplitude, (str, int, float)):
        values = parse_amplitude(amplitude, channels)
    else:
        values = np.asarray(amplitude, dtype=np.float64)
        if values.shape != (len(channels),) or (values < 0).any():
            raise ConfigError(
                f"amplitude needs {len(channels)} non-negative values (one per channel), got {values.tolist()}"
            )
    resolved = cls.validate_options(options).model_dump()
    return PerturbationSpec(
        name,
        tuple((str(c), float(v)) for c, v in zip(channels, values, strict=True)),
        tuple(sorted(resolved.items())),
        int(seed),
    )


def build_perturbation(spec: PerturbationSpec, stepper: Stepper) -> BasePerturbation:
    """The perturbation ``spec`` describes, for ``stepper``'s channels, statistics and grid.

    Its ``spec`` attribute is ``spec``, so that a run can check that request and
    perturbation agree.
    """
    channels = [channel for channel, _ in spec.amplitude]
    if channels != list(stepper.channels):
        raise ConfigError(
            f"the perturbation's amplitudes are for channels {channels}, the model's are {list(stepper.channels)}"
        )
    index = [list(stepper.normalizer.channels).index(c) for c in channels]
    std = np.asarray(stepper.normalizer.std)[index]
    amplitude = np.asarray([value for _, value in spec.amplitude], dtype=np.float64) * std
    perturbation = create_perturbation(
        spec.name, amplitude, stepper.grid, spec.seed, **dict(spec.options)
    )
    perturbation.spec = spec
    return perturbation


__all__ = [
    "PERTURBATIONS",
    "BasePerturbation",
    "Perturbation",
    "PerturbationOptions",
    "PerturbationSpec",
    "build_perturbation",
    "create_perturbation",
    "member_seed",
    "parse_amplitude",
    "perturbation_class",
    "perturbation_spec",
]
