"""Model registry: names, typed hyperparameters, and a builder per backbone.

Each backbone module defines a pydantic ``HParams`` class (unknown keys are
rejected, values are typed and range-checked) and a ``build`` function. The
registry in :mod:`forecast.models` maps a name to a :class:`ModelSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from forecast.errors import ConfigError, describe_problems
from forecast.grid import Grid


class HParams(BaseModel):
    """Base of every backbone's hyperparameters: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


@dataclass(frozen=True)
class ModelSpec:
    """One entry of the model registry.

    Attributes
    ----------
    name : str
        Registry name (``"sfno"``).
    hparams : type of HParams
        Validated hyperparameters with their defaults.
    build : callable
        ``build(in_channels, out_channels, grid, hparams) -> nn.Module``.
    description : str
        One line for ``--help`` and the docs.
    global_only : bool
        Whether the backbone needs a global (spherical) grid.
    """

    name: str
    hparams: type[HParams]
    build: Callable[[int, int, Grid, Any], nn.Module]
    description: str
    global_only: bool = False


def describe_hparams(cls: type[HParams]) -> str:
    """``"embed_dim (int, default 256), ..."``: the allowed hyperparameters of a backbone."""
    parts = []
    for name, info in cls.model_fields.items():
        annotation = getattr(info.annotation, "__name__", None) or str(info.annotation).replace(
            "typing.", ""
        )
        parts.append(f"{name} ({annotation}, default {info.default!r})")
    return ", ".join(parts)


def validate_hparams(spec: ModelSpec, hparams: Mapping[str, Any] | HParams | None) -> HParams:
    """Check ``hparams`` against ``spec`` and fill in the defaults.

    Raises
    ------
    ConfigError
        Naming each bad or unknown key, and listing the allowed ones.
    """
    if isinstance(hparams, spec.hparams):
        return hparams
    if isinstance(hparams, HParams):
        hparams = hparams.model_dump()
    try:
        return spec.hparams(**dict(hparams or {}))
    except ValidationError as err:
        problems = describe_problems(err.errors(), "unknown hyperparameter {key!r}")
        raise ConfigError(
            f"invalid hyperparameters for model {spec.name!r}: {problems}",
            hint=f"allowed: {describe_hparams(spec.hparams)}",
        ) from err


def hparams_to_dict(hparams: HParams) -> dict[str, Any]:
    """Plain JSON-able values (tuples become lists) for configs and checkpoints."""
    return hparams.model_dump(mode="json")
