"""Autoregressive rollouts of a stepper in normalised units (training and validation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Rollout", "denormalize", "normalize", "rollout_forcings", "uses_forcings"]


def uses_forcings(stepper: nn.Module) -> bool:
    """Whether the stepper takes forcing fields (its ``use_forcings`` flag, default True)."""
    return bool(getattr(stepper, "use_forcings", getattr(stepper, "forcings", True)))


def normalize(stepper: nn.Module, state: torch.Tensor) -> torch.Tensor:
    """Physical ``(..., channel, lat, lon)`` -> normalised, with the stepper's statistics."""
    if hasattr(stepper, "normalize"):
        return stepper.normalize(state)
    return stepper.normalizer.normalize(state)


def denormalize(stepper: nn.Module, state: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize`."""
    if hasattr(stepper, "denormalize"):
        return stepper.denormalize(state)
    return stepper.normalizer.denormalize(state)


def rollout_forcings(
    stepper: nn.Module, times: np.ndarray, starts: Sequence[int], n_steps: int, device: torch.device
) -> torch.Tensor | None:
    """Forcings of each rollout step: ``(n_steps, batch, n_forcing, lat, lon)`` or None.

    Step ``k`` (0-based) advances the state valid at
    ``times[start + history - 1 + k]``; its forcing is computed for that time
    by ``stepper.make_forcing``.

    Parameters
    ----------
    stepper : Stepper
    times : numpy.ndarray
        The store's time coordinate.
    starts : sequence of int
        Window start indices, one per batch member.
    n_steps : int
        Rollout length.
    device : torch.device
    """
    if not uses_forcings(stepper):
        return None
    history = int(getattr(stepper, "history", 1))
    starts = np.asarray(starts, dtype=np.int64)
    # one call for every (step, window): the forcing of each time is independent of the others
    index = (starts[None, :] + (history - 1) + np.arange(n_steps)[:, None]).ravel()
    forcing = stepper.make_forcing(times[index])
    if forcing is None:
        return None
    return forcing.reshape(n_steps, len(starts), *forcing.shape[1:]).to(device)


class Rollout(nn.Module):
    """A stepper applied ``n_steps`` times, feeding back its own predictions.

    Wrapping the whole rollout in one module's ``forward`` lets
    DistributedDataParallel see one forward per backward.

    Parameters
    ----------
    stepper : Stepper
        Has ``forward_normalized(x, forcing)`` with
        ``x`` ``(batch, history, channel, lat, lon)`` -> ``(batch, channel, lat, lon)``.
    """

    def __init__(self, stepper: nn.Module):
        super().__init__()
        self.stepper = stepper

    def forward(
        self, history: torch.Tensor, forcings: torch.Tensor | None, n_steps: int
    ) -> torch.Tensor:
        """Roll out in normalised units.

        Parameters
        ----------
        history : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised.
        forcings : torch.Tensor or None
            ``(n_steps, batch, n_forcing, lat, lon)``.
        n_steps : int

        Returns
        -------
        torch.Tensor
            ``(n_steps, batch, channel, lat, lon)``, normalised.
        """
        state = history
        predictions = []
        for k in range(n_steps):
            forcing = None if forcings is None else forcings[k]
            prediction = self.stepper.forward_normalized(state, forcing)
            predictions.append(prediction)
            state = torch.cat([state[:, 1:], prediction.unsqueeze(1).to(state.dtype)], dim=1)
        return torch.stack(predictions)
