"""Model families that satisfy :class:`forecast.stepper.Stepper`, by name.

:data:`STEPPERS` maps a stepper ``kind`` (recorded as ``"stepper"`` in a
checkpoint's metadata) to its class; each class has
``from_config(config) -> stepper``, the inverse of its ``config()``. A new
family is a module here and one line in this dict.
"""

from __future__ import annotations

from typing import Any

from forecast.errors import CheckpointError
from forecast.stepper import TrainableStepper
from forecast.steppers.backbone import BackboneStepper

#: Stepper kind -> class (with ``from_config``).
STEPPERS: dict[str, Any] = {BackboneStepper.kind: BackboneStepper}

#: The kind of checkpoints written before steppers recorded theirs.
DEFAULT_KIND = BackboneStepper.kind


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


__all__ = ["DEFAULT_KIND", "STEPPERS", "BackboneStepper", "stepper_from_config"]
