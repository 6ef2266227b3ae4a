"""What every stepper family shares: coordinates, the normaliser, checks of states and times.

:class:`StateStepper` holds a stepper's channels, grid, step, history length
and normaliser (with the per-channel mean, std and tendency scale as float32
buffers), converts states between physical and normalised units, and checks
the states and valid times handed to ``advance``. A family
(:class:`~forecast.steppers.backbone.BackboneStepper`,
:class:`~forecast.steppers.dyffusion.DYffusionStepper`, ...) subclasses it and
adds its networks and its step.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError, DataError, GridError
from forecast.grid import Grid
from forecast.normalize import Normalizer

__all__ = ["StateStepper", "as_channel_buffer"]


class StateStepper(nn.Module):
    """Coordinates, normaliser and input checks of a stepper.

    Parameters
    ----------
    channels : sequence of str
        Channel ids of the state, in tensor order (distinct).
    grid : Grid
        Grid of the state.
    step : datetime.timedelta
        Time advanced by one step (positive).
    normalizer : Normalizer
        Statistics covering at least ``channels`` (extra channels are dropped).
    history : int
        Number of consecutive states a step sees (at least 1).

    Raises
    ------
    DataError
        Repeated channels, channels without statistics, a non-positive std or
        diff_std, ``history < 1`` or a non-positive step.
    """

    mean: torch.Tensor  # buffers (see __init__)
    std: torch.Tensor

    def __init__(
        self,
        channels: Sequence[str],
        grid: Grid,
        step: dt.timedelta,
        normalizer: Normalizer,
        history: int = 1,
    ):
        super().__init__()
        names = tuple(str(c) for c in channels)
        if not names or len(set(names)) != len(names):
            raise DataError(f"a stepper needs distinct channels, got {list(names)}")
        missing = [c for c in names if c not in normalizer.channels]
        if missing:
            raise DataError(
                f"the normaliser has no statistics for {', '.join(missing)}",
                hint="compute statistics for every model channel",
            )
        if history < 1:
            raise DataError(f"history must be at least 1, got {history}")
        if not isinstance(step, dt.timedelta) or step <= dt.timedelta(0):
            raise DataError(f"step must be a positive datetime.timedelta, got {step!r}")
        index = [normalizer.channels.index(c) for c in names]
        self.normalizer = Normalizer(
            names, normalizer.mean[index], normalizer.std[index], normalizer.diff_std[index]
        )
        if np.any(self.normalizer.std <= 0) or np.any(self.normalizer.diff_std <= 0):
            raise DataError("normaliser std and diff_std must be positive for every channel")
        self.channels = names
        self.grid = grid
        self.step = dt.timedelta(seconds=step.total_seconds())
        self.history = int(history)
        # statistics as float32 buffers, not saved: the checkpoint's config holds the normaliser
        self.register_buffer("mean", as_channel_buffer(self.normalizer.mean), persistent=False)
        self.register_buffer("std", as_channel_buffer(self.normalizer.std), persistent=False)
        self.register_buffer(
            "tendency_scale",
            as_channel_buffer(self.normalizer.diff_std / self.normalizer.std),
            persistent=False,
        )

    @property
    def device(self) -> torch.device:
        """Where the stepper's tensors live."""
        return self.mean.device

    @property
    def prescribed_names(self) -> tuple[str, ...]:
        """Prescribed fields read from a forcing store (none unless a family takes them)."""
        return ()

    def use_forcing_store(self, store) -> None:
        """Refuse a forcing store: this stepper takes no prescribed fields.

        Raises
        ------
        ConfigError
            Always (a family that takes prescribed fields overrides this).
        """
        raise ConfigError(
            f"this {getattr(self, 'kind', 'model')} model takes no prescribed forcings",
            path=getattr(store, "location", None),
            hint="drop the forcing store",
        )

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        """``(..., channel, lat, lon)`` physical -> normalised (float32)."""
        state = state.to(torch.float32)
        return (state - self.mean.to(state.device)) / self.std.to(state.device)

    def denormalize(self, state: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        state = state.to(torch.float32)
        return state * self.std.to(state.device) + self.mean.to(state.device)

    def check_inputs(self, channels: Sequence[str] | None = None, grid: Grid | None = None) -> None:
        """Raise if ``channels`` (in order) or ``grid`` differ from the stepper's."""
        if channels is not None and tuple(channels) != self.channels:
            missing = [c for c in self.channels if c not in channels]
            detail = (
                f"missing {', '.join(missing)}"
                if missing
                else "same channels in another order or with extras"
            )
            raise DataError(
                f"state channels {list(channels)} do not match the model's {list(self.channels)} ({detail})",
                hint="select and order the channels as the model expects",
            )
        if grid is not None and not grid.same_as(self.grid):
            raise GridError(
                f"state is on {grid.describe()}, the model on {self.grid.describe()}",
                hint="regrid the data to the model grid",
            )

    def _check_shape(self, state: torch.Tensor, label: str) -> None:
        expected = (self.history, len(self.channels), *self.grid.shape)
        if state.ndim != 5 or tuple(state.shape[1:]) != expected:
            raise DataError(
                f"{label} has shape {tuple(state.shape)}, expected (batch, history, channel, lat, lon) = (batch, {', '.join(map(str, expected))})",
                hint=f"channels {list(self.channels)} on {self.grid.describe()} with history {self.history}",
            )

    def prepare_advance(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        check_finite: bool = True,
        channels: Sequence[str] | None = None,
        grid: Grid | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """The checks of ``advance``: the state as float32 on the device, and one time per row.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)`` physical (``(batch, channel,
            lat, lon)`` is accepted when ``history == 1``).
        times : sequence of datetime64 or cftime
            One valid time per row (or one for all).
        check_finite : bool
            Raise on NaN/inf input.
        channels, grid : optional
            The caller's coordinates, checked against the stepper's.

        Returns
        -------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)`` float32 on :attr:`device`.
        times : numpy.ndarray
            ``(batch,)``.

        Raises
        ------
        DataError, GridError
            Wrong shape, channels, grid, number of times, or non-finite input.
        """
        self.check_inputs(channels, grid)
        if state.ndim == 4 and self.history == 1:
            state = state.unsqueeze(1)
        self._check_shape(state, "state")
        values = np.atleast_1d(np.asarray(times))
        batch = state.shape[0]
        if values.size == 1 and batch > 1:
            values = np.repeat(values, batch)
        if values.size != batch:
            raise DataError(
                f"got {values.size} valid times for a batch of {batch}",
                hint="give one time per batch item",
            )
        state = state.to(device=self.device, dtype=torch.float32)
        if check_finite and not torch.isfinite(state).all():
            raise DataError(
                "state contains NaN or infinite values", hint="fill missing values before stepping"
            )
        return state, values

    def coordinates_config(self) -> dict:
        """The shared part of ``config()``: channels, grid, step, history, normaliser."""
        return {
            "channels": list(self.channels),
            "grid": self.grid.to_dict(),
            "step_seconds": int(self.step.total_seconds()),
            "history": self.history,
            "normalizer": self.normalizer.to_dict(),
        }


def as_channel_buffer(values: np.ndarray) -> torch.Tensor:
    """Per-channel values as a float32 ``(1, channel, 1, 1)`` tensor."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32).reshape(
        1, -1, 1, 1
    )
