"""What ``forecast train --model NAME`` builds, by name: a backbone stepper or a model family.

:data:`FAMILIES` maps each name ``--model`` takes to a :class:`Family`: its
hyperparameter class (which the train config validates), how to build a
fresh stepper from a :class:`~forecast.training.request.TrainRequest` and a
store, and how many future states a training window holds. The backbones of
:data:`forecast.models.MODELS` each build a
:class:`~forecast.steppers.BackboneStepper`; ``dyffusion`` builds a
:class:`~forecast.steppers.DYffusionStepper` (two time-conditioned SFNOs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.errors import ConfigError
from forecast.models import MODELS, HParams
from forecast.models.registry import ModelSpec, check_hparams
from forecast.normalize import Normalizer
from forecast.stepper import TrainableStepper
from forecast.steppers import BackboneStepper, DYffusionStepper
from forecast.steppers.dyffusion import DYffusionHParams
from forecast.store import diurnal_cycle, seasonal_cycle, store_grid, store_step
from forecast.training.request import TrainRequest

__all__ = ["FAMILIES", "Family", "family", "family_names", "validate_family_hparams"]

#: ``build(request, store, channels, training_start_times, prescribed) -> fresh stepper``;
#: ``prescribed`` the statistics of the prescribed forcings (``--forcing-vars``) or None.
Builder = Callable[
    [TrainRequest, xr.Dataset, list[str], np.ndarray, Normalizer | None], TrainableStepper
]


@dataclass(frozen=True)
class Family:
    """One name of ``forecast train --model``.

    Attributes
    ----------
    hparams : type of HParams
        Validated hyperparameters with their defaults.
    build : callable
        ``build(request, store, channels, start_times, prescribed)``: a freshly
        initialised stepper; ``prescribed`` (a :class:`Normalizer` of the
        ``--forcing-vars``, or None) its prescribed forcings.
    window_targets : callable
        ``window_targets(request)``: future states a training window needs.
    description : str
        One line for the docs.
    staged : bool
        Whether it trains stage by stage on windows of its horizon (DYffusion):
        ``--rollout-steps``/``--rollout-schedule`` do not apply, and its
        ensemble members (``--ensemble-size``) differ by their dropout masks,
        not by ``--ensemble-noise``.
    """

    hparams: type[HParams]
    build: Builder
    window_targets: Callable[[TrainRequest], int]
    description: str
    staged: bool = False


def _backbone(
    request: TrainRequest,
    ds: xr.Dataset,
    channels: list[str],
    start_times: np.ndarray,
    prescribed: Normalizer | None = None,
) -> BackboneStepper:
    """A freshly initialised backbone stepper on the store's grid and step."""
    diurnal = diurnal_cycle(ds, channels, start_times) if request.diurnal_baseline else None
    seasonal = seasonal_cycle(ds, channels) if request.seasonal_baseline else None
    return BackboneStepper(
        request.model,
        dict(request.hparams),
        channels,
        store_grid(ds),
        store_step(ds),
        Normalizer.from_store(ds, channels),
        history=request.history,
        forcings=request.forcings,
        residual=request.residual,
        diurnal=diurnal,
        seasonal=seasonal,
        prescribed=prescribed,
    )


def _dyffusion(
    request: TrainRequest,
    ds: xr.Dataset,
    channels: list[str],
    start_times: np.ndarray,
    prescribed: Normalizer | None = None,
) -> DYffusionStepper:
    """A freshly initialised DYffusion stepper (interpolator and forecaster SFNOs)."""
    if prescribed is not None:
        raise ConfigError(
            "prescribed forcings (--forcing-vars) are fed to the backbones sfno, afno and fno; "
            "dyffusion does not take them yet",
            hint="drop --forcing-vars/--forcing-store, or train --model sfno",
        )
    diurnal = diurnal_cycle(ds, channels, start_times) if request.diurnal_baseline else None
    seasonal = seasonal_cycle(ds, channels) if request.seasonal_baseline else None
    return DYffusionStepper(
        dict(request.hparams),
        channels,
        store_grid(ds),
        store_step(ds),
        Normalizer.from_store(ds, channels),
        history=request.history,
        forcings=request.forcings,
        diurnal=diurnal,
        residual=request.residual,
        seasonal=seasonal,
    )


def _dyffusion_targets(request: TrainRequest) -> int:
    hparams = check_hparams("dyffusion", DYffusionHParams, request.hparams)
    assert isinstance(hparams, DYffusionHParams)
    return int(hparams.horizon)


def _backbone_family(spec: ModelSpec) -> Family:
    return Family(spec.hparams, _backbone, lambda request: request.rollout_steps, spec.description)


#: ``--model`` name -> what it builds.
FAMILIES: dict[str, Family] = {
    **{name: _backbone_family(spec) for name, spec in MODELS.items()},
    "dyffusion": Family(
        DYffusionHParams,
        _dyffusion,
        _dyffusion_targets,
        "Spherical DYffusion: time-conditioned SFNO interpolator and forecaster, sampled",
        staged=True,
    ),
}


def family_names() -> list[str]:
    """The names ``--model`` takes, sorted."""
    return sorted(FAMILIES)


def family(name: str) -> Family:
    """The family ``name``.

    Raises
    ------
    ConfigError
        For an unknown name, listing the known ones.
    """
    if name not in FAMILIES:
        raise ConfigError(f"unknown model {name!r}", hint=f"use one of {', '.join(family_names())}")
    return FAMILIES[name]


def validate_family_hparams(name: str, hparams) -> HParams:
    """``hparams`` of ``--model name`` validated, defaults filled in (ConfigError naming the bad keys)."""
    return check_hparams(name, family(name).hparams, hparams)
