"""What all initial-condition perturbations share: seeding, amplitudes, area-weighted scaling.

Every member draws its noise from its own generator, seeded from the run's
seed, the member's init time and its member index; so an ensemble is the same
for a seed whatever the batch size, the order of batches or the number of
ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from forecast.errors import ConfigError, describe_problems
from forecast.grid import Grid
from forecast.stepper import Stepper


class PerturbationOptions(BaseModel):
    """Base of each perturbation's options: typed, defaults filled in, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class PerturbationSpec:
    """What a perturbation is, as a run's identity records it.

    Attributes
    ----------
    name : str
        Key of :data:`inference.perturbations.PERTURBATIONS`.
    amplitude : tuple of (str, float)
        ``(channel, amplitude)`` pairs, amplitudes in units of the channel's std.
    options : tuple of (str, value)
        Every option of the perturbation, defaults included, sorted by name.
    seed : int
        Seed of the ensemble.
    """

    name: str = "none"
    amplitude: tuple[tuple[str, float], ...] = ()
    options: tuple[tuple[str, Any], ...] = ()
    seed: int = 0

    def manifest(self) -> dict[str, Any]:
        """The manifest's view: ``perturbation``, ``perturbation_options``, ``amplitude``, ``seed``."""
        return {
            "perturbation": self.name,
            "perturbation_options": dict(self.options),
            "amplitude": {channel: float(value) for channel, value in self.amplitude},
            "seed": int(self.seed),
        }


@runtime_checkable
class Perturbation(Protocol):
    """What :func:`inference.ensemble.run_forecast` needs of a perturbation."""

    spec: PerturbationSpec | None

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        stepper: Stepper | None = None,
        times: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Perturbed copies of ``state`` ``(batch, history, channel, lat, lon)``."""
        ...


def member_seed(seed: int, init_label: str, member: int) -> int:
    """A 63-bit seed for one member of one initialisation, stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}|{init_label}|{int(member)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def member_generator(seed: int, init_label: str, member: int) -> torch.Generator:
    """A CPU generator for one member (draw on CPU, then move: identical on any device)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(member_seed(seed, init_label, member))
    return generator


#: Perturbation amplitude, in units of each channel's std, where none is given.
DEFAULT_AMPLITUDE = 0.05


def parse_amplitude(
    text: str | float | None, channels: Sequence[str], default: float = DEFAULT_AMPLITUDE
) -> np.ndarray:
    """Amplitudes per channel in units of the channel's std.

    Parameters
    ----------
    text : str or float or None
        ``"0.05"`` (every channel), ``"z500=0.02,t850=0.1"`` (the others take
        ``default``) or ``"0.05,z500=0.02"`` (a number sets the default).
    channels : sequence of str
        Channel ids in state order.

    Returns
    -------
    numpy.ndarray
        Shape ``(channel,)``, non-negative.
    """
    if text is None or text == "":
        return np.full(len(channels), default, dtype=np.float64)
    if isinstance(text, (int, float)):
        return np.full(len(channels), float(text), dtype=np.float64)
    per_channel: dict[str, float] = {}
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "=" in part:
                name, value = part.split("=", 1)
                per_channel[name.strip()] = float(value)
            elif part:
                default = float(part)
    except ValueError as err:
        raise ConfigError(
            f"cannot parse --amplitude {text!r}",
            hint="write a number (0.05) or channel=number pairs (z500=0.02,t850=0.1)",
        ) from err
    unknown = [c for c in per_channel if c not in channels]
    if unknown:
        raise ConfigError(
            f"--amplitude names unknown channel(s) {', '.join(unknown)}",
            hint=f"the model's channels are {', '.join(channels)}",
        )
    values = np.asarray([per_channel.get(c, default) for c in channels], dtype=np.float64)
    if (values < 0).any():
        raise ConfigError(f"--amplitude {text!r} must not be negative")
    return values


def area_rms(field: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Area-weighted root mean square over the last two dims.

    Parameters
    ----------
    field : torch.Tensor
        Shape ``(..., lat, lon)``.
    weights : torch.Tensor
        Shape ``(lat,)``, mean 1.

    Returns
    -------
    torch.Tensor
        Shape ``(...)``.
    """
    return (field.square().mean(dim=-1) * weights).mean(dim=-1).sqrt()


class BasePerturbation:
    """Base class of the built-in perturbations: adds noise of a given amplitude per channel to initial states.

    Parameters
    ----------
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units (amplitude in std times the std).
    grid : Grid
        The model grid.
    seed : int
        Seed of the ensemble.
    options : Options, optional
        The class's options (its :class:`PerturbationOptions` subclass
        ``Options``); defaults when not given.

    Notes
    -----
    A subclass sets ``name`` (its key in the registry), declares its options as
    a nested ``Options(PerturbationOptions)`` model (defaults there, once), and
    implements :meth:`noise` (or overrides :meth:`__call__`).
    """

    name = "base"

    class Options(PerturbationOptions):
        """No options."""

    #: The spec this perturbation was built from (set by ``build_perturbation``).
    spec: PerturbationSpec | None = None

    def __init__(
        self,
        amplitude: np.ndarray,
        grid: Grid,
        seed: int = 0,
        options: PerturbationOptions | None = None,
    ):
        self.amplitude = np.asarray(amplitude, dtype=np.float64)
        self.grid = grid
        self.seed = int(seed)
        self.options = options if options is not None else self.Options()

    @classmethod
    def validate_options(cls, options: Mapping[str, Any] | None) -> PerturbationOptions:
        """Check ``options`` against :attr:`Options` and fill in the defaults.

        Raises
        ------
        ConfigError
            Naming an option the perturbation does not take, or a bad value.
        """
        from pydantic import ValidationError

        try:
            return cls.Options(**dict(options or {}))
        except ValidationError as err:
            allowed = ", ".join(cls.Options.model_fields) or "no options"
            problems = describe_problems(
                err.errors(), "takes no option {key!r}", "option {key}={value!r}: {message}"
            )
            raise ConfigError(
                f"perturbation {cls.name!r} {problems}",
                hint=f"it takes {allowed}",
            ) from err

    def noise(
        self, init_labels: Sequence[str], members: Sequence[int] | np.ndarray, channels: int
    ) -> torch.Tensor:
        """Noise of unit scale per member: shape ``(batch, channel, lat, lon)`` float32 on CPU."""
        raise NotImplementedError

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        stepper: Stepper | None = None,
        times: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Perturb initial states.

        Parameters
        ----------
        state : torch.Tensor
            Shape ``(batch, history, channel, lat, lon)``, physical units.
        init_labels : sequence of str
            Shape ``(batch,)``: each member's init time as text (part of its seed).
        members : sequence of int
            Shape ``(batch,)``: member indices (part of the seed).
        stepper, times
            The model and the valid times of ``state[:, -1]``, for
            perturbations that run it (bred vectors).

        Returns
        -------
        torch.Tensor
            Same shape; every history slice gets the same perturbation.
        """
        noise = self.noise(init_labels, members, state.shape[2]).to(state.device, state.dtype)
        scale = torch.as_tensor(self.amplitude, dtype=state.dtype, device=state.device).view(
            1, -1, 1, 1
        )
        return state + (noise * scale)[:, None]
