"""What all initial-condition perturbations share: seeding, amplitudes, area-weighted scaling.

Every member draws its noise from its own generator, seeded from the run's
seed, the member's init time and its member index; so an ensemble is the same
for a seed whatever the batch size, the order of batches or the number of
ranks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from forecast.errors import ConfigError
from forecast.grid import Grid


def member_seed(seed: int, init_label: str, member: int) -> int:
    """A 63-bit seed for one member of one initialisation, stable across runs and machines."""
    digest = hashlib.sha256(f"{int(seed)}|{init_label}|{int(member)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def member_generator(seed: int, init_label: str, member: int) -> torch.Generator:
    """A CPU generator for one member (draw on CPU, then move: identical on any device)."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(member_seed(seed, init_label, member))
    return generator


def parse_amplitude(
    text: str | float | None, channels: Sequence[str], default: float = 0.05
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
    except ValueError:
        raise ConfigError(
            f"cannot parse --amplitude {text!r}",
            hint="write a number (0.05) or channel=number pairs (z500=0.02,t850=0.1)",
        ) from None
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


class Perturbation:
    """Base class: adds noise of a given amplitude per channel to initial states.

    Parameters
    ----------
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units (amplitude in std times the std).
    grid : Grid
        The model grid.
    seed : int
        Seed of the ensemble.
    """

    name = "base"

    def __init__(self, amplitude: np.ndarray, grid: Grid, seed: int = 0):
        self.amplitude = np.asarray(amplitude, dtype=np.float64)
        self.grid = grid
        self.seed = int(seed)

    def noise(
        self, init_labels: Sequence[str], members: Sequence[int], channels: int
    ) -> torch.Tensor:
        """Noise of unit scale per member: shape ``(batch, channel, lat, lon)`` float32 on CPU."""
        raise NotImplementedError

    def __call__(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int],
        stepper=None,
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
