"""One model step, shared by training and inference.

A :class:`Stepper` owns a backbone and everything needed to use it on
physical fields: the channels and their normaliser, the grid, the time step,
the history length and the time forcings. Training calls
:meth:`Stepper.forward_normalized` on normalised tensors; the rollout engine
calls :meth:`Stepper.step` on physical fields and valid times.

Input to the backbone, per batch item: the ``history`` most recent states
(normalised, oldest first) stacked along channels, then the forcings
``cos/sin`` of local solar time (time of day shifted by longitude) and
``cos/sin`` of the fraction of the year (calendar aware). In residual mode the
backbone predicts the normalised tendency divided by ``diff_std / std``; the
next state is the last state plus the rescaled tendency.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from forecast.errors import DataError, GridError
from forecast.grid import Grid
from forecast.models import build_model, get_spec, hparams_to_dict, validate_hparams
from forecast.normalize import Normalizer
from forecast.time import fraction_of_day_and_year

#: Names of the forcing channels, in tensor order.
FORCING_NAMES = ("cos_local_time", "sin_local_time", "cos_year", "sin_year")


class StepFunction(dt.timedelta):
    """A stepper's time step: a ``datetime.timedelta`` which, called, advances a state by it.

    ``stepper.step`` is both the step length (compare it, add it to times) and
    the inference method (``stepper.step(state, times)`` is ``stepper.advance(state, times)``).
    """

    def __new__(cls, step: dt.timedelta, stepper: Stepper) -> StepFunction:
        value = super().__new__(
            cls, days=step.days, seconds=step.seconds, microseconds=step.microseconds
        )
        value._stepper = stepper
        return value

    def __call__(
        self, state: torch.Tensor, times: Sequence | np.ndarray, **coords: Any
    ) -> torch.Tensor:
        """Same as :meth:`Stepper.advance`."""
        return self._stepper.advance(state, times, **coords)

    def __reduce__(self):
        return (dt.timedelta, (self.days, self.seconds, self.microseconds))


class Stepper(nn.Module):
    """A backbone wrapped into one physical time step.

    Parameters
    ----------
    model_name : str
        Registry name of the backbone (``"sfno"``, ``"afno"``, ``"fno"``).
    hparams : dict
        Backbone hyperparameters (validated; defaults filled in).
    channels : list of str
        Channel ids of the state, in tensor order.
    grid : Grid
        Grid of the state.
    step : datetime.timedelta
        Time step of one model step.
    normalizer : Normalizer
        Statistics covering at least ``channels`` (extra channels are dropped).
    history : int
        Number of past states the model sees (1: only the current one).
    forcings : bool
        Whether to feed the cos/sin time-of-day and time-of-year forcings.
    residual : bool
        Predict the tendency (scaled by ``diff_std``) rather than the full state.
    """

    def __init__(
        self,
        model_name: str,
        hparams: dict[str, Any],
        channels: list[str],
        grid: Grid,
        step: dt.timedelta,
        normalizer: Normalizer,
        history: int = 1,
        forcings: bool = True,
        residual: bool = True,
    ):
        super().__init__()
        channels = [str(c) for c in channels]
        if not channels or len(set(channels)) != len(channels):
            raise DataError(f"a stepper needs distinct channels, got {channels}")
        missing = [c for c in channels if c not in normalizer.channels]
        if missing:
            raise DataError(
                f"the normaliser has no statistics for {', '.join(missing)}",
                hint="compute statistics for every model channel",
            )
        if history < 1:
            raise DataError(f"history must be at least 1, got {history}")
        if not isinstance(step, dt.timedelta) or step <= dt.timedelta(0):
            raise DataError(f"step must be a positive datetime.timedelta, got {step!r}")
        index = [normalizer.channels.index(c) for c in channels]
        self.normalizer = Normalizer(
            tuple(channels),
            normalizer.mean[index],
            normalizer.std[index],
            normalizer.diff_std[index],
        )
        if np.any(self.normalizer.std <= 0) or np.any(self.normalizer.diff_std <= 0):
            raise DataError("normaliser std and diff_std must be positive for every channel")
        self.model_name = model_name
        self.hparams = hparams_to_dict(validate_hparams(get_spec(model_name), hparams))
        self.channels = channels
        self.grid = grid
        self.step_size = step
        self.history = int(history)
        self.use_forcings = bool(forcings)
        self.residual = bool(residual)
        self.n_forcing = len(FORCING_NAMES) if forcings else 0
        in_channels = self.history * len(channels) + self.n_forcing
        self.model = build_model(model_name, in_channels, len(channels), grid, **self.hparams)
        # statistics as float32 buffers (not saved: the checkpoint holds the normaliser as plain numbers)
        self.register_buffer("mean", _as_buffer(self.normalizer.mean), persistent=False)
        self.register_buffer("std", _as_buffer(self.normalizer.std), persistent=False)
        self.register_buffer(
            "tendency_scale",
            _as_buffer(self.normalizer.diff_std / self.normalizer.std),
            persistent=False,
        )
        longitude = torch.tensor(grid.longitude, dtype=torch.float64)  # a copy: store coordinates are read-only
        self.register_buffer(
            "longitude_fraction", (longitude / 360.0).reshape(1, 1, -1), persistent=False
        )

    # -- descriptive ------------------------------------------------------------------------------
    @property
    def step(self) -> StepFunction:
        """The model time step: a ``datetime.timedelta`` that, called, is :meth:`advance`.

        ``stepper.step == timedelta(hours=6)`` and ``stepper.step(state, times)``
        both work.
        """
        return StepFunction(self.step_size, self)

    @property
    def forcing_names(self) -> tuple[str, ...]:
        """Names of the forcing channels fed to the backbone."""
        return FORCING_NAMES if self.use_forcings else ()

    def extra_repr(self) -> str:
        return f"model={self.model_name}, channels={len(self.channels)}, grid={self.grid.describe()}, step={self.step_size}, history={self.history}, residual={self.residual}"

    # -- forcings ---------------------------------------------------------------------------------
    def make_forcing(self, times: Sequence | np.ndarray) -> torch.Tensor | None:
        """Forcing fields at the valid times of the current state.

        Parameters
        ----------
        times : sequence of datetime64 or cftime
            One valid time per batch item (the time of the latest state).

        Returns
        -------
        torch.Tensor or None
            ``(batch, 4, lat, lon)`` float32 on the stepper's device: cos/sin of
            local solar time (UTC fraction of day plus longitude / 360) and
            cos/sin of the fraction of the calendar year; None without forcings.
        """
        if not self.use_forcings:
            return None
        values = np.atleast_1d(np.asarray(times))
        day, year = fraction_of_day_and_year(values)
        day = torch.as_tensor(
            np.asarray(day, dtype=np.float64), device=self.longitude_fraction.device
        ).reshape(-1, 1, 1)
        year = torch.as_tensor(
            np.asarray(year, dtype=np.float64), device=self.longitude_fraction.device
        ).reshape(-1, 1, 1)
        nlat = self.grid.nlat
        local = 2.0 * np.pi * (day + self.longitude_fraction)  # (batch, 1, lon)
        local = local.expand(-1, nlat, -1)
        annual = (2.0 * np.pi * year).expand(-1, nlat, self.grid.nlon)
        fields = torch.stack(
            [torch.cos(local), torch.sin(local), torch.cos(annual), torch.sin(annual)], dim=1
        )
        return fields.to(torch.float32)

    def forcing(self, times: Sequence | np.ndarray) -> torch.Tensor | None:
        """Alias of :meth:`make_forcing`."""
        return self.make_forcing(times)

    # -- normalised step (training) ---------------------------------------------------------------
    def forward_normalized(
        self, x: torch.Tensor, forcing: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Next normalised state from normalised history.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised, oldest first.
        forcing : torch.Tensor or None
            ``(batch, n_forcing, lat, lon)`` from :meth:`make_forcing`; required
            when the stepper uses forcings.

        Returns
        -------
        torch.Tensor
            ``(batch, channel, lat, lon)``, normalised state one step after ``x[:, -1]``.
        """
        self._check_shape(x, "normalised input")
        batch = x.shape[0]
        inputs = x.reshape(batch, self.history * len(self.channels), *self.grid.shape)
        if self.use_forcings:
            if forcing is None:
                raise DataError(
                    "this stepper uses time forcings but none were given",
                    hint="pass stepper.make_forcing(times)",
                )
            expected = (batch, self.n_forcing, *self.grid.shape)
            if tuple(forcing.shape) != expected:
                raise DataError(f"forcing has shape {tuple(forcing.shape)}, expected {expected}")
            inputs = torch.cat([inputs, forcing.to(inputs.dtype)], dim=1)
        output = self.model(inputs)
        if self.residual:
            return x[:, -1] + output.to(x.dtype) * self.tendency_scale.to(x.dtype)
        return output.to(x.dtype)

    def forward(self, x: torch.Tensor, forcing: torch.Tensor | None = None) -> torch.Tensor:
        """Same as :meth:`forward_normalized`."""
        return self.forward_normalized(x, forcing)

    # -- physical step (inference) ----------------------------------------------------------------
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
        if channels is not None and list(channels) != self.channels:
            missing = [c for c in self.channels if c not in channels]
            detail = (
                f"missing {', '.join(missing)}"
                if missing
                else "same channels in another order or with extras"
            )
            raise DataError(
                f"state channels {list(channels)} do not match the model's {self.channels} ({detail})",
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
                hint=f"channels {self.channels} on {self.grid.describe()} with history {self.history}",
            )

    @torch.no_grad()
    def advance(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        channels: Sequence[str] | None = None,
        grid: Grid | None = None,
    ) -> torch.Tensor:
        """Advance physical states by one time step (also callable as ``stepper.step(state, times)``).

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)`` in physical units, oldest
            first (``(batch, channel, lat, lon)`` is accepted when ``history == 1``).
        times : sequence of datetime64 or cftime
            Valid time of the latest state, one per batch item (or one for all).
        channels, grid : optional
            The coordinates the caller has; checked against the stepper's.

        Returns
        -------
        torch.Tensor
            ``(batch, channel, lat, lon)`` float32, physical units, valid at ``times + step``.

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
        device = self.mean.device
        state = state.to(device=device, dtype=torch.float32)
        if not torch.isfinite(state).all():
            raise DataError(
                "state contains NaN or infinite values", hint="fill missing values before stepping"
            )
        normalized = self.normalize(state)
        forcing = self.make_forcing(values)
        return self.denormalize(self.forward_normalized(normalized, forcing))

    # -- metadata -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything (but the weights) needed to rebuild this stepper, as JSON-able values."""
        return {
            "model": self.model_name,
            "hparams": dict(self.hparams),
            "channels": list(self.channels),
            "grid": grid_to_dict(self.grid),
            "step_seconds": int(self.step_size.total_seconds()),
            "history": self.history,
            "forcings": self.use_forcings,
            "residual": self.residual,
            "normalizer": self.normalizer.to_dict(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Stepper:
        """Inverse of :meth:`config` (weights freshly initialised)."""
        return cls(
            config["model"],
            config["hparams"],
            config["channels"],
            grid_from_dict(config["grid"]),
            dt.timedelta(seconds=config["step_seconds"]),
            Normalizer.from_dict(config["normalizer"]),
            history=config["history"],
            forcings=config["forcings"],
            residual=config["residual"],
        )


def _as_buffer(values: np.ndarray) -> torch.Tensor:
    """Per-channel values as a float32 ``(1, channel, 1, 1)`` tensor."""
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=torch.float32).reshape(
        1, -1, 1, 1
    )


def grid_to_dict(grid: Grid) -> dict[str, Any]:
    """Plain description of a grid; regional grids keep their coordinates."""
    out: dict[str, Any] = {"kind": grid.kind, "nlat": grid.nlat, "nlon": grid.nlon}
    if not grid.is_global:
        out["latitude"] = grid.latitude.tolist()
        out["longitude"] = grid.longitude.tolist()
    return out


def grid_from_dict(values: dict[str, Any]) -> Grid:
    """Inverse of :func:`grid_to_dict`."""
    if values["kind"] == "regional":
        return Grid("regional", np.asarray(values["latitude"]), np.asarray(values["longitude"]))
    return Grid.from_kind(values["kind"], int(values["nlat"]), int(values["nlon"]))
