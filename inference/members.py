"""The models of an ensemble's members: one checkpoint, or several (a multi-seed ensemble).

With ``K`` checkpoints, member ``m`` runs checkpoint ``m mod K``: members
``0 .. K-1`` are one of each, and a larger ensemble cycles through them
again. Every member keeps its own seed (:func:`inference.perturbations.member_seed`
of the run's seed, its init time and its member index), so member ``m`` of a
multi-checkpoint run is the member ``m`` that a run of its checkpoint alone
would compute with the same options.

:func:`load_member_models` loads the checkpoints of ``forecast run`` (each
one as a single-checkpoint run loads it) and checks that they describe
interchangeable models: the same channels, grid, time step, history,
forcings and stepper family, so that every member reads the same initial
states and forcings and writes the same fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from forecast.errors import CheckpointError
from forecast.stepper import Stepper
from forecast.time import format_step


@dataclass(frozen=True)
class MemberModels:
    """The steppers of a run's members: member ``m`` runs ``steppers[m % len(steppers)]``.

    Attributes
    ----------
    steppers : tuple of Stepper
        One per checkpoint, on the run's device, in the order given.
    names : tuple of str
        The checkpoints as given (paths or URLs), for messages and the output.
    digests : tuple of str
        SHA-256 of each checkpoint file (provenance), or empty strings when
        built from steppers without files.
    metadata : tuple of dict
        Each checkpoint's metadata (:func:`forecast.checkpoint.load_checkpoint`).
    """

    steppers: tuple[Stepper, ...]
    names: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()
    metadata: tuple[dict[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if not self.steppers:
            raise ValueError("an ensemble needs at least one model")
        count = len(self.steppers)
        for label, values in (("names", self.names), ("digests", self.digests)):
            if values and len(values) != count:
                raise ValueError(f"{len(values)} {label} for {count} steppers")

    @classmethod
    def of(cls, models: Stepper | MemberModels | Sequence[Stepper]) -> MemberModels:
        """``models`` as :class:`MemberModels` (one stepper, or a sequence of them)."""
        if isinstance(models, MemberModels):
            return models
        if isinstance(models, (list, tuple)):
            return cls(tuple(models))
        return cls((models,))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.steppers)

    @property
    def first(self) -> Stepper:
        """The first checkpoint's stepper: the channels, grid and step every member shares."""
        return self.steppers[0]

    def member_checkpoints(self, members: int) -> np.ndarray:
        """Shape ``(members,)``, int32: the checkpoint index of each member."""
        return np.arange(members, dtype=np.int32) % len(self.steppers)

    def digest(self) -> str:
        """The checkpoints' SHA-256 digests, space-separated in checkpoint order (one for one)."""
        return " ".join(self.digests)


def _describe(stepper: Stepper) -> dict[str, str]:
    """What every member's model must share, as text for the mismatch message."""
    prescribed = tuple(getattr(stepper, "prescribed_names", ()) or ())
    return {
        "channels": ",".join(stepper.channels),
        "grid": stepper.grid.describe(),
        "time step": format_step(stepper.step),
        "history": str(stepper.history),
        "forcings": ",".join([*stepper.forcing_names, *prescribed]) or "none",
        "stepper family": stepper.kind,
        "steps per sampled block": str(getattr(stepper, "block_steps", 1)),
    }


def check_members_agree(steppers: Sequence[Stepper], names: Sequence[str]) -> None:
    """Raise unless every stepper matches the first in what the members share.

    Parameters
    ----------
    steppers : sequence of Stepper
        One per checkpoint.
    names : sequence of str
        The checkpoints, for the message.

    Raises
    ------
    CheckpointError
        Naming the first checkpoint, the one that differs and every mismatch
        (channels, grid, time step, history, forcings, stepper family and,
        for a sampling stepper, its block of steps).
    """
    reference = _describe(steppers[0])
    for stepper, name in zip(steppers[1:], names[1:], strict=True):
        other = _describe(stepper)
        problems = [
            f"{key} {other[key]} against {value}"
            for key, value in reference.items()
            if other[key] != value
        ]
        if problems:
            raise CheckpointError(
                f"checkpoint {name} does not match the first checkpoint {names[0]}: "
                + "; ".join(problems),
                hint="every --checkpoint of one run must be trained on the same channels, grid, "
                "step, history and forcings, with the same stepper family",
            )


def load_member_models(locations: Sequence[str], device: torch.device | str) -> MemberModels:
    """Load the checkpoints of a run, each a path or URL (a URL is downloaded once).

    Parameters
    ----------
    locations : sequence of str
        The checkpoints, in member order (member ``m`` runs ``locations[m % K]``).
    device : torch.device or str
        Where the models run.

    Returns
    -------
    MemberModels

    Raises
    ------
    CheckpointError
        A checkpoint that cannot be loaded, an untrained stage, or one that
        does not match the first (:func:`check_members_agree`).
    """
    from forecast import staging
    from forecast.checkpoint import checkpoint_digest, load_checkpoint
    from forecast.steppers import check_trained

    steppers, digests, metadata = [], [], []
    for location in locations:
        path = staging.local_copy(location)  # a download when it is a URL
        stepper, meta = load_checkpoint(path, map_location=device)
        check_trained(stepper, location)
        steppers.append(stepper)
        digests.append(checkpoint_digest(path))
        metadata.append(meta)
    check_members_agree(steppers, list(locations))
    return MemberModels(tuple(steppers), tuple(locations), tuple(digests), tuple(metadata))
