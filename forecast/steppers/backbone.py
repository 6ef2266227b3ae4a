"""A backbone (SFNO, AFNO, FNO) wrapped into one physical time step: :class:`BackboneStepper`.

Input to the backbone, per batch item: the ``history`` most recent states
(normalised, oldest first) stacked along channels, then the time forcings
(:data:`forecast.forcings.TIME_FORCINGS`: ``cos/sin`` of local solar time and
of the fraction of the year). In residual mode the backbone predicts the
normalised tendency divided by ``diff_std / std``; the next state is the last
state plus the rescaled tendency. With a diurnal baseline
(:class:`forecast.diurnal.DiurnalBaseline`) the residual starts from the
last state plus the climatological change of the hour-of-day anomaly over the
step, a named input ``"diurnal_change"`` beside the time forcings. With a
seasonal baseline (:class:`forecast.seasonal.SeasonalBaseline`, not in
residual mode) the backbone sees the departures of its input states from the
climatology (the seasonal cycle plus, with a diurnal table, the hour-of-day
anomaly) and predicts the departure of the next state: a named input
``"climatology"`` holds the climatology at the history's times and at the
next one. With prescribed forcings (``prescribed``: sea-surface temperature ...) the
backbone also sees those fields at the valid time of the latest state,
normalised by the statistics recorded with the checkpoint, after the time
forcings; they are read from a forcing store handed over with
:meth:`BackboneStepper.use_forcing_store` (:mod:`forecast.prescribed`).
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from forecast.diurnal import DiurnalBaseline, diurnal_baseline
from forecast.errors import ConfigError, DataError, GridError
from forecast.forcings import TIME_FORCINGS, Forcings, stack_forcings, time_forcings
from forecast.grid import Grid
from forecast.models import build_model, get_spec, hparams_to_dict, validate_hparams
from forecast.normalize import Normalizer
from forecast.seasonal import SeasonalBaseline, climatology_at_offsets, seasonal_baseline
from forecast.steppers.base import StateStepper

#: Name of the diurnal-baseline input among the forcings.
DIURNAL_CHANGE = "diurnal_change"
#: Name of the seasonal-baseline input: the climatology at the history's times and the next.
CLIMATOLOGY = "climatology"


class BackboneStepper(StateStepper):
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
        ``forcings`` and ``residual`` or ``seasonal``.
    seasonal : numpy.ndarray, optional
        Fourier coefficients ``(2 * harmonics + 1, channel, lat, lon)`` of the
        daily-mean climatology in physical units of ``channels``
        (:func:`forecast.store.seasonal_cycle`): the backbone forecasts
        departures from the climatology. Needs ``forcings`` and not ``residual``.
    drop_south_pole : bool
        The backbone sees ``grid`` without its last row, the south pole of an
        equiangular grid (FourCastNet v1: the 720 northernmost of the 721
        rows at 0.25 degree); the pole row of each output is a copy of the
        row next to it, so states stay on ``grid``.
    prescribed : Normalizer, optional
        Names (its ``channels``) and mean/std of prescribed fields read from
        a forcing store at each step's input time and fed after the time
        forcings (normalised with these statistics), e.g. ``sst``. None: none.
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
        prescribed: Normalizer | None = None,
        seasonal: np.ndarray | None = None,
    ):
        super().__init__(channels, grid, step, normalizer, history)
        self.prescribed = prescribed
        self._prescribed_names = _check_prescribed(prescribed, self.channels)
        #: the forcing store the prescribed fields are read from (:meth:`use_forcing_store`)
        self.forcing_store: Any = None
        self.model_name = model_name
        self.hparams = hparams_to_dict(validate_hparams(get_spec(model_name), hparams))
        self.use_forcings = bool(forcings)
        self.residual = bool(residual)
        self.time_forcing_names: tuple[str, ...] = TIME_FORCINGS if forcings else ()
        names = self.channels
        #: channels of :meth:`backbone_inputs`
        self.in_channels = (
            self.history * len(names) + len(self.time_forcing_names) + len(self.prescribed_names)
        )
        self.drop_south_pole = bool(drop_south_pole)
        #: grid the backbone sees (``grid`` without its pole row when ``drop_south_pole``)
        self.model_grid = without_south_pole(grid) if self.drop_south_pole else grid
        self.model = build_model(
            model_name, self.in_channels, len(names), self.model_grid, **self.hparams
        )
        self.seasonal: SeasonalBaseline | None = None
        if seasonal is not None:
            self.seasonal = self._seasonal_baseline(seasonal)
        self.diurnal: DiurnalBaseline | None = None
        if diurnal is not None:
            self.diurnal = self._diurnal_baseline(*diurnal)

    def _seasonal_baseline(self, coefficients: np.ndarray) -> SeasonalBaseline:
        if not self.use_forcings or self.residual:
            raise DataError(
                "the seasonal baseline needs time forcings and --no-residual "
                "(the backbone forecasts departures from the climatology)",
                hint="drop --no-forcings and add --no-residual, or drop the seasonal baseline",
            )
        return seasonal_baseline(
            coefficients,
            self.normalizer.mean,
            self.normalizer.std,
            len(self.channels),
            self.grid.shape,
        )

    def _diurnal_baseline(
        self, hours: Sequence[float] | np.ndarray, table: np.ndarray
    ) -> DiurnalBaseline:
        if not (self.use_forcings and (self.residual or self.seasonal is not None)):
            raise DataError(
                "the diurnal baseline needs time forcings and residual mode or a seasonal baseline",
                hint="drop --no-forcings/--no-residual or the diurnal baseline",
            )
        return diurnal_baseline(
            hours, table, self.normalizer.std, len(self.channels), self.grid.shape
        )

    # -- descriptive ------------------------------------------------------------------------------
    @property
    def forcing_names(self) -> tuple[str, ...]:
        """Names of the inputs :meth:`forcings` returns."""
        names = self.time_forcing_names
        if self.diurnal is not None and self.residual:
            names += (DIURNAL_CHANGE,)
        if self.seasonal is not None:
            names += (CLIMATOLOGY,)
        return names + self.prescribed_names

    @property
    def prescribed_names(self) -> tuple[str, ...]:
        """Prescribed fields read from a forcing store, in the backbone's order (maybe none)."""
        return self._prescribed_names

    def use_forcing_store(self, store: Any) -> None:
        """Read the prescribed fields from ``store`` from now on.

        Parameters
        ----------
        store : forecast.prescribed.ForcingStore
            Opened on :attr:`prescribed_names` (checked against the grid and
            calendar by :func:`forecast.prescribed.connect_forcing_store`).

        Raises
        ------
        ConfigError
            The stepper takes no prescribed fields, or the store serves others.
        """
        if not self.prescribed_names:
            super().use_forcing_store(store)
        if tuple(store.names) != self.prescribed_names:
            raise ConfigError(
                f"the forcing store serves {', '.join(store.names)}, the model takes "
                f"{', '.join(self.prescribed_names)}",
                path=getattr(store, "location", None),
                hint="open the forcing store on the model's prescribed_names",
            )
        self.forcing_store = store

    def extra_repr(self) -> str:
        return (
            f"model={self.model_name}, channels={len(self.channels)}, grid={self.grid.describe()}, "
            f"step={self.step}, history={self.history}, residual={self.residual}, "
            f"diurnal={self.diurnal is not None}, seasonal={self.seasonal is not None}"
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
            hour-of-day anomaly from ``times`` to ``times + step``; each
            prescribed field ``(batch, lat, lon)`` at ``times``, normalised.

        Raises
        ------
        ConfigError
            The stepper takes prescribed fields and has no forcing store.
        DataError
            The forcing store lacks one of ``times``.
        """
        values = np.atleast_1d(np.asarray(times))
        fields: dict[str, torch.Tensor] = {}
        if self.use_forcings:
            fields = time_forcings(values, self.grid, self.device)
            if self.diurnal is not None and self.residual:
                fields[DIURNAL_CHANGE] = self.diurnal.change(values, self.step)
            if self.seasonal is not None:  # one calendar conversion for all times (per-call cost)
                fields[CLIMATOLOGY] = climatology_at_offsets(
                    self.seasonal, self.diurnal, values, self.step, range(1 - self.history, 2)
                ).to(self.device)
        if self.prescribed_names:
            fields.update(self._prescribed_fields(values))
        return fields

    def _prescribed_fields(self, times: np.ndarray) -> dict[str, torch.Tensor]:
        """The prescribed fields at ``times``, normalised: each ``(batch, lat, lon)`` float32."""
        from forecast.prescribed import normalise_fields

        if self.forcing_store is None:
            raise ConfigError(
                f"this model takes the prescribed forcing(s) {', '.join(self.prescribed_names)} "
                "and has no forcing store",
                hint="give --forcing-store STORE.zarr (forecast.prescribed.connect_forcing_store)",
            )
        assert self.prescribed is not None, "prescribed names come with their statistics"
        block = normalise_fields(self.forcing_store.read(times), self.prescribed)
        tensor = torch.from_numpy(block).to(self.device)  # (batch, name, lat, lon)
        return {name: tensor[:, k] for k, name in enumerate(self.prescribed_names)}

    # -- normalised step (training) ---------------------------------------------------------------
    def backbone_inputs(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """What the backbone sees: the history stacked along channels, then the time forcings.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised, oldest first.
        forcings : Forcings
            From :meth:`forcings`; required when the stepper uses forcings.

        Returns
        -------
        torch.Tensor
            ``(batch, history * channel + len(TIME_FORCINGS) + len(prescribed_names), lat, lon)``
            (no time forcing channels without forcings).

        Raises
        ------
        DataError
            A wrong shape, or a missing or misshapen forcing.
        """
        self._check_shape(x, "normalised input")
        batch = x.shape[0]
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
            if name == CLIMATOLOGY:
                expected = (batch, self.history + 1, len(self.channels), *self.grid.shape)
            if tuple(forcings[name].shape) != expected:
                raise DataError(
                    f"forcing {name!r} has shape {tuple(forcings[name].shape)}, expected {expected}"
                )
        if self.seasonal is not None:  # departures from the climatology
            x = x - forcings[CLIMATOLOGY][:, : self.history].to(x.dtype)
        inputs = x.reshape(batch, self.history * len(self.channels), *self.grid.shape)
        fed = self.time_forcing_names + self.prescribed_names
        if fed:
            fields = stack_forcings(forcings, fed)
            inputs = torch.cat([inputs, fields.to(inputs.dtype)], dim=1)
        return inputs

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
        output = self.apply_network(self.model, self.backbone_inputs(x, forcings))
        if self.residual:
            last = x[:, -1]
            if self.diurnal is not None:
                assert forcings is not None, "a diurnal baseline comes with its forcings"
                last = last + forcings[DIURNAL_CHANGE].to(x.dtype)
            return last + output.to(x.dtype) * self.tendency_scale.to(x.dtype)
        if self.seasonal is not None:
            assert forcings is not None, "a seasonal baseline comes with its forcings"
            return forcings[CLIMATOLOGY][:, -1].to(x.dtype) + output.to(x.dtype)
        return output.to(x.dtype)

    def apply_network(self, network: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """``network`` (on :attr:`model_grid`) on ``(batch, in, lat, lon)`` fields of :attr:`grid`.

        Without the pole row when ``drop_south_pole``; the pole row of the
        output is then a copy of the row next to it.
        """
        if not self.drop_south_pole:
            return network(inputs)
        output = network(inputs[..., :-1, :])
        return torch.cat([output, output[..., -1:, :]], dim=-2)

    def with_network(self, network: torch.nn.Module) -> BackboneStepper:
        """This stepper with ``network`` in place of its backbone; everything else is shared.

        A view, not a copy: the normaliser, baselines and forcing store are
        this stepper's. ``network`` takes and returns what :attr:`model` does
        (a multi-checkpoint ensemble's stacked networks, :mod:`forecast.steppers.stacked`).
        """
        view = copy.copy(self)
        view._modules = {**self._modules, "model": network}
        return view

    def forward(self, x: torch.Tensor, forcings: Forcings | None = None) -> torch.Tensor:
        """Same as :meth:`forward_normalized`."""
        return self.forward_normalized(x, forcings)

    # -- physical step (inference) ----------------------------------------------------------------
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
        state, values = self.prepare_advance(state, times, check_finite, channels, grid)
        normalized = self.normalize(state)
        return self.denormalize(self.forward_normalized(normalized, self.forcings(values)))

    # -- metadata -----------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything (but the tensors of :meth:`state_dict`) needed to rebuild this stepper."""
        return {
            "stepper": self.kind,
            "model": self.model_name,
            "hparams": dict(self.hparams),
            **self.coordinates_config(),
            "forcings": self.use_forcings,
            "residual": self.residual,
            "diurnal_hours": None if self.diurnal is None else list(self.diurnal.hours),
            "drop_south_pole": self.drop_south_pole,
            "seasonal_harmonics": None if self.seasonal is None else self.seasonal.harmonics,
            "prescribed": None if self.prescribed is None else self.prescribed.to_dict(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BackboneStepper:
        """Inverse of :meth:`config` (weights freshly initialised; diurnal and seasonal tables of zeros)."""
        grid = Grid.from_dict(config["grid"])
        hours = config.get("diurnal_hours")  # absent from checkpoints of earlier versions
        prescribed = config.get("prescribed")
        diurnal = None
        if hours:
            diurnal = (hours, np.zeros((len(hours), len(config["channels"]), *grid.shape)))
        harmonics = config.get("seasonal_harmonics")  # absent before the seasonal baseline
        seasonal = None
        if harmonics is not None:
            seasonal = np.zeros((2 * harmonics + 1, len(config["channels"]), *grid.shape))
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
            seasonal=seasonal,
            prescribed=Normalizer.from_dict(prescribed) if prescribed else None,  # absent before
        )


def _check_prescribed(prescribed: Normalizer | None, channels: tuple[str, ...]) -> tuple[str, ...]:
    """The names of ``prescribed``, checked: distinct, not state channels or other forcings."""
    if prescribed is None:
        return ()
    names = tuple(str(n) for n in prescribed.channels)
    reserved = set(TIME_FORCINGS) | {DIURNAL_CHANGE, CLIMATOLOGY}
    clash = [n for n in names if n in channels or n in reserved]
    if not names or len(set(names)) != len(names) or clash:
        detail = f" ({', '.join(clash)} clash)" if clash else ""
        raise ConfigError(
            f"prescribed forcings {list(names)} must be distinct and not state channels or "
            f"time forcings{detail}",
            hint="list each prescribed variable once in --forcing-vars, and not in --channels",
        )
    if np.any(np.asarray(prescribed.std) <= 0):
        raise DataError("prescribed forcing std must be positive for every variable")
    return names


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
