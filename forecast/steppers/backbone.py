"""A backbone (SFNO, AFNO, FNO) wrapped into one physical time step: :class:`BackboneStepper`.

Input to the backbone, per batch item: the ``history`` most recent states
(normalised, oldest first) stacked along channels, then the time forcings
(:data:`forecast.forcings.TIME_FORCINGS`: ``cos/sin`` of local solar time and
of the fraction of the year). In residual mode the backbone predicts the
normalised tendency divided by ``diff_std / std``; the next state is the last
state plus the rescaled tendency. With a diurnal baseline
(:class:`forecast.diurnal.DiurnalBaseline`) the residual starts from the
last state plus the climatological change of the hour-of-day anomaly over the
step, a named input ``"diurnal_change"`` beside the time forcings.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from forecast.diurnal import DiurnalBaseline
from forecast.errors import DataError, GridError
from forecast.forcings import TIME_FORCINGS, Forcings, stack_forcings, time_forcings
from forecast.grid import Grid
from forecast.models import build_model, get_spec, hparams_to_dict, validate_hparams
from forecast.normalize import Normalizer

#: Name of the diurnal-baseline input among the forcings.
DIURNAL_CHANGE = "diurnal_change"


class BackboneStepper(nn.Module):
    """A registered backbone as a :class:`forecast.stepper.Stepper`.

    Parameters
    ----------
    model_name : str
        Registry name of the backbone (``"sfno"``, ``"afno"``, ``"fno"``).
    hparams : dict
        Backbone hyperparameters (validated; defaults filled in).
    channels : sequence of str
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
        Whether to feed the time-of-day and time-of-year forcings.
    residual : bool
        Predict the tendency (scaled by ``diff_std``) rather than the full state.
    diurnal : (hours, table), optional
        Climatological diurnal cycle added to the residual: ``hours`` the
        hours of day (UTC, ascending, in [0, 24)) of ``table``, shape
        ``(hour, channel, lat, lon)``, anomalies from the daily mean in physical
        units of ``channels`` (:func:`forecast.store.diurnal_cycle`). Needs
        ``forcings`` and ``residual``.
    drop_south_pole : bool
        The backbone sees ``grid`` without its last row, the south pole of an
        equiangular grid (FourCastNet v1: the 720 northernmost of the 721
        rows at 0.25 degree); the pole row of each output is a copy of the
        row next to it, so states stay on ``grid``.
    """

    kind = "backbone"
    mean: torch.Tensor
    std: torch.Tensor
    tendency_scale: torch.Tensor

    def __init__(
        self,
        model_name: str,
        hparams: dict[str, Any],
        channels: Sequence[str],
        grid: Grid,
        step: dt.timedelta,
        normalizer: Normalizer,
        history: int = 1,
        forcings: bool = True,
        residual: bool = True,
        diurnal: tuple[Sequence[float] | np.ndarray, np.ndarray] | None = None,
        drop_south_pole: bool = False,
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
        self.model_name = model_name
        self.hparams = hparams_to_dict(validate_hparams(get_spec(model_name), hparams))
        self.channels = names
        self.grid = grid
        self.step = dt.timedelta(seconds=step.total_seconds())
        self.history = int(history)
        self.use_forcings = bool(forcings)
        self.residual = bool(residual)
        self.time_forcing_names: tuple[str, ...] = TIME_FORCINGS if forcings else ()
        in_channels = self.history * len(names) + len(self.time_forcing_names)
        self.drop_south_pole = bool(drop_south_pole)
        model_grid = without_south_pole(grid) if self.drop_south_pole else grid
        self.model = build_model(model_name, in_channels, len(names), model_grid, **self.hparams)
        # statistics as float32 buffers, not saved: the checkpoint's config holds the normaliser
        self.register_buffer("mean", _as_buffer(self.normalizer.mean), persistent=False)
        self.register_buffer("std", _as_buffer(self.normalizer.std), persistent=False)
        self.register_buffer(
            "tendency_scale",
            _as_buffer(self.normalizer.diff_std / self.normalizer.std),
            persistent=False,
        )
        self.diurnal: DiurnalBaseline | None = None
        if diurnal is not None:
            self.diurnal = self._diurnal_baseline(*diurnal)

    def _diurnal_baseline(
        self, hours: Sequence[float] | np.ndarray, table: np.ndarray
    ) -> DiurnalBaseline:
        if not (self.use_forcings and self.residual):
            raise DataError(
                "the diurnal baseline needs time forcings and residual mode",
                hint="drop --no-forcings/--no-residual or the diurnal baseline",
            )
        expected = (len(np.ravel(hours)), len(self.channels), *self.grid.shape)
        if np.shape(table) != expected:
            raise DataError(f"diurnal table has shape {np.shape(table)}, expected {expected}")
        return DiurnalBaseline.from_physical(hours, table, self.normalizer.std)

    # -- descriptive ------------------------------------------------------------------------------
    @property
    def forcing_names(self) -> tuple[str, ...]:
        """Names of the inputs :meth:`forcings` returns."""
        return self.time_forcing_names + ((DIURNAL_CHANGE,) if self.diurnal is not None else ())

    @property
    def device(self) -> torch.device:
        """Where the stepper's tensors live."""
        return self.mean.device

    def extra_repr(self) -> str:
        return (
            f"model={self.model_name}, channels={len(self.channels)}, grid={self.grid.describe()}, "
            f"step={self.step}, history={self.history}, residual={self.residual}, "
            f"diurnal={self.diurnal is not None}"
        )

    # -- forcings ---------------------------------------------------------------------------------
    def forcings(self, times: Sequence | np.ndarray) -> dict[str, torch.Tensor]:
        """Named inputs of a step from states valid at ``times``.

        Parameters
        ----------
        times : sequence of datetime64 or cftime
            One valid time per batch item (the time of the latest state).

        Returns
        -------
        dict of str to torch.Tensor
            Each time forcing ``(batch, lat, lon)`` float32 (none without
            forcings); with a diurnal baseline also ``"diurnal_change"``
            ``(batch, channel, lat, lon)``, the change of the normalised
            hour-of-day anomaly from ``times`` to ``times + step``.
        """
        if not self.use_forcings:
            return {}
        values = np.atleast_1d(np.asarray(times))
        fields = time_forcings(values, self.grid, self.device)
        if self.diurnal is not None:
            fields[DIURNAL_CHANGE] = self.diurnal.change(values, self.step)
        return fields

    # -- normalised step (training) ---------------------------------------------------------------
    def forward_normalized(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """Next normalised state from normalised history.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised, oldest first.
        forcings : Forcings
            From :meth:`forcings`; required when the stepper uses forcings.

        Returns
        -------
        torch.Tensor
            ``(batch, channel, lat, lon)``, normalised state one step after ``x[:, -1]``.
        """
        self._check_shape(x, "normalised input")
        batch = x.shape[0]
        inputs = x.reshape(batch, self.history * len(self.channels), *self.grid.shape)
        forcings = forcings or {}
        missing = [name for name in self.forcing_names if name not in forcings]
        if missing:
            raise DataError(
                f"this stepper needs the forcing(s) {', '.join(missing)} but they were not given",
                hint="pass stepper.forcings(times)",
            )
        for name in self.forcing_names:
            expected: tuple[int, ...] = (batch, *self.grid.shape)
            if name == DIURNAL_CHANGE:
                expected = (batch, len(self.channels), *self.grid.shape)
            if tuple(forcings[name].shape) != expected:
                raise DataError(
                    f"forcing {name!r} has shape {tuple(forcings[name].shape)}, expected {expected}"
                )
        if self.time_forcing_names:
            fields = stack_forcings(forcings, self.time_forcing_names)
            inputs = torch.cat([inputs, fields.to(inputs.dtype)], dim=1)
        output = self._backbone(inputs)
        if self.residual:
            last = x[:, -1]
            if self.diurnal is not None:
                last = last + forcings[DIURNAL_CHANGE].to(x.dtype)
            return last + output.to(x.dtype) * self.tendency_scale.to(x.dtype)
        return output.to(x.dtype)

    def _backbone(self, inputs: torch.Tensor) -> torch.Tensor:
        """The backbone on ``(batch, in, lat, lon)``; without the pole row when ``drop_south_pole``."""
        if not self.drop_south_pole:
            return self.model(inputs)
        output = self.model(inputs[..., :-1, :])
        return torch.cat([output, output[..., -1:, :]], dim=-2)

    def forward(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """Same as :meth:`forward_normalized`."""
        return self.forward_normalized(x, forcings)

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

    @torch.no_grad()
    def advance(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        *,
        check_finite: bool = True,
        channels: Sequence[str] | None = None,
        grid: Grid | None = None,
    ) -> torch.Tensor:
        """Advance physical states by one time step.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)`` in physical units, oldest
            first (``(batch, channel, lat, lon)`` is accepted when ``history == 1``).
        times : sequence of datetime64 or cftime
            Valid time of the latest state, one per batch item (or one for all).
        check_finite : bool
            Raise on NaN/inf input (False in ensemble runs, where the blow-up
            guard reports a bad member and the others carry on).
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
        state = state.to(device=self.device, dtype=torch.float32)
        if check_finite and not torch.isfinite(state).all():
            raise DataError(
                "state contains NaN or infinite values", hint="fill missing values before stepping"
            )
        normalized = self.normalize(state)
        return self.denormalize(self.forward_normalized(normalized, self.forcings(values)))

    # -- metadata -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything (but the tensors of :meth:`state_dict`) needed to rebuild this stepper."""
        return {
            "stepper": self.kind,
            "model": self.model_name,
            "hparams": dict(self.hparams),
            "channels": list(self.channels),
            "grid": self.grid.to_dict(),
            "step_seconds": int(self.step.total_seconds()),
            "history": self.history,
            "forcings": self.use_forcings,
            "residual": self.residual,
            "normalizer": self.normalizer.to_dict(),
            "diurnal_hours": None if self.diurnal is None else list(self.diurnal.hours),
            "drop_south_pole": self.drop_south_pole,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BackboneStepper:
        """Inverse of :meth:`config` (weights freshly initialised; a diurnal table of zeros)."""
        grid = Grid.from_dict(config["grid"])
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
