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

Optionally (``diurnal=``) the residual starts from the climatological diurnal
cycle: the next state is the last state plus the change of the mean
hour-of-day anomaly between the two valid times (a table from the store's
climatology, interpolated cyclically between its hours) plus the backbone's
rescaled tendency. The backbone then learns the weather, not the sun's
clockwork, which a 6-hourly autoregressive model otherwise has to add back,
step after step, to within a fraction of its amplitude. The change is carried
in the forcing tensor, after the four time forcings (see :meth:`make_forcing`).
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
    diurnal : (hours, table), optional
        Climatological diurnal cycle added to the residual: ``hours`` the
        hours of day (UTC, ascending, in [0, 24)) of ``table``, shape
        ``(hour, channel, lat, lon)``, anomalies from the daily mean in physical
        units of ``channels`` (:func:`forecast.store.diurnal_cycle`). Needs
        ``forcings`` and ``residual``.
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
        diurnal: tuple[Sequence[float], np.ndarray] | None = None,
        drop_south_pole: bool = False,
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
        self.drop_south_pole = bool(drop_south_pole)
        model_grid = without_south_pole(grid) if self.drop_south_pole else grid
        self.model = build_model(model_name, in_channels, len(channels), model_grid, **self.hparams)
        # statistics as float32 buffers (not saved: the checkpoint holds the normaliser as plain numbers)
        self.register_buffer("mean", _as_buffer(self.normalizer.mean), persistent=False)
        self.register_buffer("std", _as_buffer(self.normalizer.std), persistent=False)
        self.register_buffer(
            "tendency_scale",
            _as_buffer(self.normalizer.diff_std / self.normalizer.std),
            persistent=False,
        )
        self.diurnal_hours: tuple[float, ...] | None = None
        if diurnal is not None:
            self._set_diurnal(*diurnal)
        longitude = torch.tensor(
            grid.longitude, dtype=torch.float64
        )  # a copy: store coordinates are read-only
        self.register_buffer(
            "longitude_fraction", (longitude / 360.0).reshape(1, 1, -1), persistent=False
        )

    def _set_diurnal(self, hours: Sequence[float], table: np.ndarray) -> None:
        if not (self.use_forcings and self.residual):
            raise DataError(
                "the diurnal baseline needs time forcings and residual mode",
                hint="drop --no-forcings/--no-residual or the diurnal baseline",
            )
        hours = np.asarray(hours, dtype=np.float64).ravel()
        table = np.asarray(table, dtype=np.float64)
        expected = (len(hours), len(self.channels), *self.grid.shape)
        if table.shape != expected:
            raise DataError(f"diurnal table has shape {table.shape}, expected {expected}")
        if len(hours) < 2 or np.any(np.diff(hours) <= 0) or hours[0] < 0 or hours[-1] >= 24:
            raise DataError(
                f"diurnal hours must be at least two ascending hours in [0, 24), got {hours.tolist()}"
            )
        if not np.isfinite(table).all():
            raise DataError(
                "the diurnal table has NaN values",
                hint="the store's climatology must cover every grid point at every hour",
            )
        self.diurnal_hours = tuple(float(h) for h in hours)
        scaled = table / self.normalizer.std[None, :, None, None]  # normalised units
        table_tensor = torch.as_tensor(scaled, dtype=torch.float32)
        self.register_buffer("diurnal_table", table_tensor, persistent=False)

    @property
    def n_baseline(self) -> int:
        """Channels of the diurnal-baseline change carried after the time forcings (0 or C)."""
        return len(self.channels) if self.diurnal_hours is not None else 0

    def diurnal_anomaly(self, times: Sequence | np.ndarray) -> torch.Tensor:
        """Normalised climatological hour-of-day anomaly at ``times``: ``(batch, channel, lat, lon)``.

        Linear in the hour of day between the table's hours, cyclic over midnight.
        """
        day, _ = fraction_of_day_and_year(np.atleast_1d(np.asarray(times)))
        return self._diurnal_at(np.asarray(day, dtype=np.float64) * 24.0)

    def _diurnal_at(self, hour: np.ndarray) -> torch.Tensor:
        hours = np.asarray(self.diurnal_hours)
        # hours after the first table hour; the first comes again 24 h later
        offsets = np.append(hours - hours[0], 24.0)
        since = np.mod(hour - hours[0], 24.0)
        upper = np.clip(np.searchsorted(offsets, since, side="right"), 1, len(hours))
        lower = upper - 1
        weight = (since - offsets[lower]) / (offsets[upper] - offsets[lower])
        table = self.diurnal_table
        low = table[torch.as_tensor(lower, device=table.device)]
        high = table[torch.as_tensor(upper % len(hours), device=table.device)]
        w = torch.as_tensor(weight, dtype=table.dtype, device=table.device).reshape(-1, 1, 1, 1)
        return low + w * (high - low)

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
        return f"model={self.model_name}, channels={len(self.channels)}, grid={self.grid.describe()}, step={self.step_size}, history={self.history}, residual={self.residual}, diurnal={self.diurnal_hours is not None}"

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
            With a diurnal baseline, ``(batch, 4 + channel, lat, lon)``: then the
            change of the normalised diurnal anomaly from ``times`` to
            ``times + step`` (:meth:`diurnal_anomaly`).
        """
        if not self.use_forcings:
            return None
        values = np.atleast_1d(np.asarray(times))
        day, year = fraction_of_day_and_year(values)
        hour = np.asarray(day, dtype=np.float64).ravel() * 24.0
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
        ).to(torch.float32)
        if self.diurnal_hours is None:
            return fields
        later = hour + self.step_size.total_seconds() / 3600.0
        change = self._diurnal_at(later) - self._diurnal_at(hour)
        return torch.cat([fields, change.to(fields.device)], dim=1)

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
            expected = (batch, self.n_forcing + self.n_baseline, *self.grid.shape)
            if tuple(forcing.shape) != expected:
                raise DataError(f"forcing has shape {tuple(forcing.shape)}, expected {expected}")
            inputs = torch.cat([inputs, forcing[:, : self.n_forcing].to(inputs.dtype)], dim=1)
        output = self._backbone(inputs)
        if self.residual:
            last = x[:, -1]
            if self.n_baseline:
                last = last + forcing[:, self.n_forcing :].to(x.dtype)
            return last + output.to(x.dtype) * self.tendency_scale.to(x.dtype)
        return output.to(x.dtype)

    def _backbone(self, inputs: torch.Tensor) -> torch.Tensor:
        """The backbone on ``(batch, in, lat, lon)``; without the pole row when ``drop_south_pole``."""
        if not self.drop_south_pole:
            return self.model(inputs)
        output = self.model(inputs[..., :-1, :])
        return torch.cat([output, output[..., -1:, :]], dim=-2)

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
            "diurnal_hours": None if self.diurnal_hours is None else list(self.diurnal_hours),
            "drop_south_pole": self.drop_south_pole,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Stepper:
        """Inverse of :meth:`config` (weights freshly initialised; a diurnal table of zeros)."""
        grid = grid_from_dict(config["grid"])
        hours = config.get("diurnal_hours")  # absent from checkpoints of earlier versions
        diurnal = None
        if hours:
            diurnal = (hours, np.zeros((len(hours), len(config["channels"]), *grid.shape)))
        return cls(
            config["model"],
            config["hparams"],
            config["channels"],
            grid,
            dt.timedelta(seconds=config["step_seconds"]),
            Normalizer.from_dict(config["normalizer"]),
            history=config["history"],
            forcings=config["forcings"],
            residual=config["residual"],
            diurnal=diurnal,
            drop_south_pole=bool(config.get("drop_south_pole", False)),  # absent before imports
        )


def without_south_pole(grid: Grid) -> Grid:
    """``grid`` without its last row, which must be the south pole of an equiangular grid.

    Returns a ``regional`` grid with the same longitudes (e.g. the 720
    northernmost rows 90 .. -89.75 of the 0.25-degree grid).

    Raises
    ------
    GridError
        If ``grid`` is not equiangular (its last row is not the pole).
    """
    if grid.kind != "equiangular":
        raise GridError(
            f"dropping the south-pole row needs an equiangular grid with poles, got {grid.describe()}",
            hint="ingest the data on an equiangular grid, e.g. --grid 0.25deg",
        )
    return Grid("regional", grid.latitude[:-1], grid.longitude)


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
