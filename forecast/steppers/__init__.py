"""Model families that satisfy :class:`forecast.stepper.Stepper`, by name.

:data:`STEPPERS` maps a stepper ``kind`` (recorded as ``"stepper"`` in a
checkpoint's metadata) to its class; each class has
``from_config(config) -> stepper``, the inverse of its ``config()``. A new
family is a module here and one line in this dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from forecast.errors import CheckpointError
from forecast.stepper import StagedStepper, Stepper, TrainableStepper
from forecast.steppers.backbone import BackboneStepper
from forecast.steppers.boosted import BoostedStepper
from forecast.steppers.dyffusion import DYffusionStepper

#: Stepper kind -> class (with ``from_config``).
STEPPERS: dict[str, Any] = {
    BackboneStepper.kind: BackboneStepper,
    DYffusionStepper.kind: DYffusionStepper,
    BoostedStepper.kind: BoostedStepper,
}

#: The kind of checkpoints written before steppers recorded theirs.
DEFAULT_KIND = BackboneStepper.kind


def check_trained(stepper: Stepper, path: str | Path | None = None) -> None:
    """Raise if a staged stepper (DYffusion) has a stage that was never trained.

    Raises
    ------
    CheckpointError
        Naming the untrained stages and how to finish training.
    """
    if not isinstance(stepper, StagedStepper):
        return
    missing = [name for name in stepper.stages if stepper.trained_steps.get(name, 0) == 0]
    if missing:
        done = [name for name in stepper.stages if name not in missing]
        raise CheckpointError(
            f"this {stepper.kind} checkpoint has an untrained {' and '.join(missing)}"
            + (f" (only the {', '.join(done)} is trained)" if done else ""),
            path=path,
            hint="finish its training: forecast train ... --resume in its run directory",
        )


def stepper_from_config(config: dict[str, Any]) -> TrainableStepper:
    """Rebuild a stepper (freshly initialised tensors) from its ``config()``.

    Raises
    ------
    CheckpointError
        For a kind this software does not know.
    """
    kind = config.get("stepper", DEFAULT_KIND)
    if kind not in STEPPERS:
        raise CheckpointError(
            f"unknown stepper kind {kind!r}",
            hint=f"this software knows {', '.join(sorted(STEPPERS))}; upgrade the forecast package",
        )
    return STEPPERS[kind].from_config(config)


__all__ = [
    "DEFAULT_KIND",
    "STEPPERS",
    "BackboneStepper",
    "BoostedStepper",
    "DYffusionStepper",
    "check_trained",
    "stepper_from_config",
]
