"""Autoregressive rollouts of a stepper in normalised units (training and validation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from forecast.forcings import Forcings, select_step
from forecast.stepper import TrainableStepper

__all__ = ["Rollout", "repeat_forcings", "rollout_forcings"]


def rollout_forcings(
    stepper: TrainableStepper,
    times: np.ndarray,
    starts: Sequence[int] | np.ndarray,
    n_steps: int,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """Forcings of each rollout step: each named input laid out ``(n_steps, batch, ...)``.

    Step ``k`` (0-based) advances the state valid at
    ``times[start + history - 1 + k]``; its forcings are
    ``stepper.forcings`` of that time.

    Parameters
    ----------
    stepper : TrainableStepper
    times : numpy.ndarray
        The store's time coordinate.
    starts : sequence of int
        Window start indices, one per batch member.
    n_steps : int
        Rollout length.
    device : torch.device
    """
    first = np.asarray(starts, dtype=np.int64)
    # one call for every (step, window): the forcing of each time is independent of the others
    index = (first[None, :] + (stepper.history - 1) + np.arange(n_steps)[:, None]).ravel()
    forcings = stepper.forcings(times[index])
    return {
        name: value.reshape(n_steps, len(first), *value.shape[1:]).to(device)
        for name, value in forcings.items()
    }


def repeat_forcings(forcings: Forcings, members: int) -> dict[str, torch.Tensor]:
    """Forcings ``(n_steps, batch, ...)`` for ``members`` copies of the batch, member-major."""
    return {
        name: value.repeat(1, members, *([1] * (value.ndim - 2)))
        for name, value in forcings.items()
    }


class Rollout(nn.Module):
    """A stepper applied ``n_steps`` times, feeding back its own predictions.

    Wrapping the whole rollout in one module's ``forward`` lets
    DistributedDataParallel see one forward per backward.

    Parameters
    ----------
    stepper : TrainableStepper
        Has ``forward_normalized(x, forcings)`` with
        ``x`` ``(batch, history, channel, lat, lon)`` -> ``(batch, channel, lat, lon)``.
    """

    def __init__(self, stepper: TrainableStepper):
        super().__init__()
        self.stepper = stepper

    def forward(self, history: torch.Tensor, forcings: Forcings, n_steps: int) -> torch.Tensor:
        """Roll out in normalised units.

        Parameters
        ----------
        history : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised.
        forcings : Forcings
            From :func:`rollout_forcings`: each ``(n_steps, batch, ...)``.
        n_steps : int

        Returns
        -------
        torch.Tensor
            ``(n_steps, batch, channel, lat, lon)``, normalised.
        """
        state = history
        predictions = []
        for k in range(n_steps):
            prediction = self.stepper.forward_normalized(state, select_step(forcings, k))
            predictions.append(prediction)
            state = torch.cat([state[:, 1:], prediction.unsqueeze(1).to(state.dtype)], dim=1)
        return torch.stack(predictions)
