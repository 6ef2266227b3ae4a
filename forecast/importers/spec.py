"""What an importer of published weights declares: its name, options and conversion."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forecast.importers.published import PublishedWeights
from forecast.steppers.backbone import BackboneStepper


@dataclass(frozen=True)
class Option:
    """A published default that the weights do not record, overridable by a flag.

    Attributes
    ----------
    name : str
        Hyperparameter name (``"scale_factor"``); the flag is ``--scale-factor``.
    type : callable
        Parses the flag's text.
    default : object
        The publisher's value.
    help : str
        One line for ``--help``.
    """

    name: str
    type: Callable[[str], Any]
    default: Any
    help: str


@dataclass
class Imported:
    """The result of a conversion: the stepper with the published weights, and its record.

    Attributes
    ----------
    stepper : BackboneStepper
        In eval mode on the CPU, ready for :func:`forecast.checkpoint.save_checkpoint`.
    provenance : dict
        JSON-able: what was read off the weights, what was taken as a default.
    """

    stepper: BackboneStepper
    provenance: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Importer:
    """One published model family that ``forecast import`` converts.

    Attributes
    ----------
    name : str
        Subcommand argument (``"fourcastnet-v2-small"``).
    description : str
        One line for ``--help``.
    source : str
        Where the files come from.
    licence : str
        The licence under which the publisher distributes the weights.
    options : tuple of Option
        Defaults the weights do not record.
    convert : callable
        ``convert(weights, means_path, stds_path, options) -> Imported``.
    """

    name: str
    description: str
    source: str
    licence: str
    options: tuple[Option, ...]
    convert: Callable[[PublishedWeights, Path, Path, dict[str, Any]], Imported]

    def defaults(self) -> dict[str, Any]:
        """Option name -> the publisher's value."""
        return {option.name: option.default for option in self.options}
