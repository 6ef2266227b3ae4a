"""Spherical DYffusion on our SFNO: a probabilistic stepper of two time-conditioned networks.

Rühling Cachay et al., *DYffusion* (NeurIPS 2023, arXiv 2306.01984) and
*Probabilistic Emulation of a Global Climate Model with Spherical DYffusion*
(NeurIPS 2024, arXiv 2406.14798). With a horizon of ``h`` store steps and
the history ``x_t`` (the ``history`` latest states, normalised):

- the **interpolator** ``I(x_t, x_{t+h}, i)``, ``0 < i < h``, predicts the
  state at ``t + i`` from both ends: the linear interpolation of ``x_t[-1]``
  and ``x_{t+h}`` plus ``diff_std / std`` times a
  :class:`~forecast.models.conditioned.TimeConditionedSFNO` of the history,
  the end state and the time forcings at ``t + i``, conditioned on
  ``tau = i / h``. Its dropout stays on when sampling: it is the source of the
  ensemble's spread;
- the **forecaster** ``F(x_{t+i}, i)``, ``0 <= i < h``, predicts ``x_{t+h}``:
  ``x_{t+i}`` plus a time-conditioned SFNO of ``x_{t+i}``, the history (unless
  ``condition_forecaster`` is off) and the time forcings at ``t + i``. It is
  trained with the interpolator frozen, on the interpolator's (dropout-on)
  reconstructions ``I(x_t, x_{t+h}, i)`` of the state at ``t + i``. Without
  ``residual`` it predicts ``x_{t+h}`` itself rather than a change from
  ``x_{t+i}``.

With a seasonal baseline (:class:`~forecast.seasonal.SeasonalBaseline`, plus
the diurnal table when there is one) both networks work on departures from
the climatology ``C``: they see ``x_s - C(s)`` at the time ``s`` of each
state and predict the departure at ``t + i`` (interpolator) or ``t + h``
(forecaster), to which ``C`` at that time is added back, so each sampled
state is ``C(t + k)`` plus a sampled departure (as
:class:`~forecast.steppers.backbone.BackboneStepper` does with one network).

Sampling is cold sampling (:func:`~forecast.steppers.cold_sampling.cold_sample`):
one call of :meth:`DYffusionStepper.advance_block` returns the ``h`` states of
a horizon, one per store step, each batch row drawing its dropout masks from
its own seed. Training (stage ``"interpolator"``, then ``"forecaster"``) is
:meth:`DYffusionStepper.training_pairs`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import Field, PositiveInt

from forecast.diurnal import DiurnalBaseline, diurnal_baseline
from forecast.errors import DataError
from forecast.forcings import TIME_FORCINGS, Forcings, time_forcings
from forecast.grid import Grid
from forecast.models import get_spec, hparams_to_dict, validate_hparams
from forecast.models.conditioned import DropoutMasks, Generators, TimeConditionedSFNO
from forecast.models.registry import check_hparams
from forecast.models.sfno import SFNOHParams
from forecast.normalize import Normalizer
from forecast.seasonal import SeasonalBaseline, climatology_at_offsets, seasonal_baseline
from forecast.steppers.backbone import CLIMATOLOGY, DIURNAL_CHANGE
from forecast.steppers.base import StateStepper
from forecast.steppers.cold_sampling import cold_sample
from forecast.time import shift_times

__all__ = ["DYffusionHParams", "DYffusionStepper"]

#: The training stages, in order.
STAGES = ("interpolator", "forecaster")
#: The optional last stage: both networks at once, on the cold-sampled horizon.
CHAIN = "chain"


class DYffusionHParams(SFNOHParams):
    """Hyperparameters of :class:`DYffusionStepper`: those of both SFNOs, and DYffusion's own.

    The SFNO hyperparameters (``embed_dim``, ``num_layers``, ...; see
    :class:`~forecast.models.sfno.SFNOHParams`) apply to both networks;
    ``interpolator`` and ``forecaster`` override them for one network.

    Attributes
    ----------
    horizon : int
        ``h``, store steps per sampled horizon (at least 2).
    dropout : float
        Dropout of the interpolator's block features, in training and sampling.
    forecaster_dropout : float
        Dropout of the forecaster's block features, in training (and in
        sampling with ``forecaster_sampling``).
    dropout_masks : {"element", "channel", "block"}
        What one dropout mask value covers, in both networks: a single block
        feature value (white noise on the grid, every spherical-harmonic
        degree alike), a row's whole feature map (a perturbation with the
        features' own spatial scales) or a row's whole block features
        (stochastic depth of the spectral path); see
        :class:`~forecast.models.conditioned.MemberDropout`.
    forecaster_sampling : bool
        Keep the forecaster's dropout on when sampling too (at the rate it was
        trained with, ``forecaster_dropout``), drawing its masks from each
        member's generator as the interpolator does: a second source of spread.
    condition_forecaster : bool
        Give the forecaster the horizon's history as well as ``x_{t+i}``.
    time_frequencies : int
        Octaves of the sinusoidal embedding of ``tau = i / h``.
    interpolator, forecaster : dict
        SFNO hyperparameters of one network that differ from the shared ones.
    """

    horizon: Annotated[int, Field(ge=2)] = 4
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    forecaster_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    dropout_masks: DropoutMasks = "element"
    forecaster_sampling: bool = False
    condition_forecaster: bool = True
    time_frequencies: PositiveInt = 8
    interpolator: dict[str, Any] = Field(default_factory=dict)
    forecaster: dict[str, Any] = Field(default_factory=dict)

    def network(self, name: str) -> SFNOHParams:
        """The SFNO hyperparameters of network ``name`` (``"interpolator"`` or ``"forecaster"``)."""
        shared = {key: getattr(self, key) for key in SFNOHParams.model_fields}
        overrides = self.interpolator if name == "interpolator" else self.forecaster
        hparams = validate_hparams(get_spec("sfno"), {**shared, **overrides})
        assert isinstance(hparams, SFNOHParams)
        return hparams


def _copies(value: torch.Tensor, members: int) -> torch.Tensor:
    """``members`` member-major copies of a batch: row ``m * batch + b`` is member ``m`` of row ``b``."""
    return value.repeat(members, *([1] * (value.ndim - 1)))


class DYffusionStepper(StateStepper):
    """Interpolator and forecaster of DYffusion as one :class:`~forecast.stepper.SamplingStepper`.

    Parameters
    ----------
    hparams : mapping
        :class:`DYffusionHParams` values (validated; defaults filled in).
    channels : sequence of str
        Channel ids of the state.
    grid : Grid
        A global grid.
    step : datetime.timedelta
        The store's time step (one output step; a horizon is ``horizon`` of them).
    normalizer : Normalizer
        Statistics covering at least ``channels``.
    history : int
        States at the start of a horizon that both networks see.
    forcings : bool
        Feed the time-of-day and time-of-year forcings at ``t + i``.
    trained_steps : mapping, optional
        Optimiser steps each network has had (from a checkpoint).
    diurnal : (hours, table), optional
        Climatological diurnal cycle (as for
        :class:`~forecast.steppers.backbone.BackboneStepper`): both networks then
        start from baselines that carry it, ``c_k`` being the change of the
        hour-of-day anomaly from ``t`` to ``t + k``: the interpolator from the
        linear interpolation plus ``c_i - (i / h) c_h``, the forecaster from
        ``x_{t+i} + c_h - c_i``. Needs ``forcings``; with ``seasonal`` it is
        part of the climatology instead.
    residual : bool
        The forecaster predicts the change from ``x_{t+i}`` to ``x_{t+h}``
        (scaled by ``diff_std / std``); False: ``x_{t+h}`` itself (its
        departure with ``seasonal``). A diurnal table without ``seasonal``
        needs residual mode.
    seasonal : numpy.ndarray, optional
        Fourier coefficients ``(2 * harmonics + 1, channel, lat, lon)`` of the
        daily-mean climatology in physical units
        (:func:`forecast.store.seasonal_cycle`): both networks work on
        departures from it. Needs ``forcings``.
    """

    kind = "dyffusion"
    stages = STAGES
    joint_stage = CHAIN

    def __init__(
        self,
        hparams: Mapping[str, Any],
        channels: Sequence[str],
        grid: Grid,
        step: dt.timedelta,
        normalizer: Normalizer,
        history: int = 1,
        forcings: bool = True,
        trained_steps: Mapping[str, int] | None = None,
        diurnal: tuple[Sequence[float] | np.ndarray, np.ndarray] | None = None,
        residual: bool = True,
        seasonal: np.ndarray | None = None,
    ):
        super().__init__(channels, grid, step, normalizer, history)
        if not grid.is_global:
            raise DataError(
                f"DYffusion runs on SFNOs, which need a global grid, not {grid.describe()}"
            )
        spec = check_hparams("dyffusion", DYffusionHParams, hparams)
        assert isinstance(spec, DYffusionHParams)
        self.spec = spec
        self.hparams = hparams_to_dict(spec)
        self.horizon = int(spec.horizon)
        self.block_steps = self.horizon
        self.window_targets = self.horizon
        self.use_forcings = bool(forcings)
        self.residual = bool(residual)
        n = len(self.channels)
        n_forcings = len(TIME_FORCINGS) if forcings else 0
        history_channels = self.history * n
        self.interpolator = TimeConditionedSFNO(
            history_channels + n + n_forcings,
            n,
            grid,
            spec.network("interpolator"),
            dropout=spec.dropout,
            frequencies=spec.time_frequencies,
            dropout_masks=spec.dropout_masks,
        )
        forecaster_in = n + (history_channels if spec.condition_forecaster else 0) + n_forcings
        self.forecaster = TimeConditionedSFNO(
            forecaster_in,
            n,
            grid,
            spec.network("forecaster"),
            dropout=spec.forecaster_dropout,
            frequencies=spec.time_frequencies,
            dropout_masks=spec.dropout_masks,
        )
        given = dict(trained_steps or {})
        self.trained_steps = {name: int(given.get(name, 0)) for name in STAGES}
        if given.get(CHAIN):  # the optional stage is listed once it has trained
            self.trained_steps[CHAIN] = int(given[CHAIN])
        if (diurnal is not None or seasonal is not None) and not forcings:
            raise DataError(
                "the diurnal and seasonal baselines need time forcings",
                hint="drop --no-forcings or the baseline",
            )
        if diurnal is not None and seasonal is None and not self.residual:
            raise DataError(
                "the diurnal baseline needs residual mode or a seasonal baseline",
                hint="drop --no-residual or the diurnal baseline, or add --seasonal-baseline",
            )
        self.seasonal: SeasonalBaseline | None = None
        if seasonal is not None:
            self.seasonal = seasonal_baseline(
                seasonal, self.normalizer.mean, self.normalizer.std, n, grid.shape
            )
        self.diurnal: DiurnalBaseline | None = None
        if diurnal is not None:
            self.diurnal = diurnal_baseline(*diurnal, self.normalizer.std, n, grid.shape)
        self.stage = STAGES[0]

    # -- descriptive ------------------------------------------------------------------------------
    @property
    def forcing_names(self) -> tuple[str, ...]:
        """``"<time forcing>+<k>"``: the time forcings at ``t + k`` for ``k = 0 .. h-1``."""
        if not self.use_forcings:
            return ()
        names = tuple(f"{name}+{k}" for k in range(self.horizon) for name in TIME_FORCINGS)
        if self.seasonal is not None:
            names += (CLIMATOLOGY,)
        elif self.diurnal is not None:
            names += tuple(f"{DIURNAL_CHANGE}+{k}" for k in range(1, self.horizon + 1))
        return names

    @property
    def climatology_offsets(self) -> range:
        """Steps from ``t`` of the climatology a horizon needs: ``1 - history .. h``."""
        return range(1 - self.history, self.horizon + 1)

    def extra_repr(self) -> str:
        return (
            f"channels={len(self.channels)}, grid={self.grid.describe()}, step={self.step}, "
            f"horizon={self.horizon}, history={self.history}, dropout={self.spec.dropout}, "
            f"residual={self.residual}, seasonal={self.seasonal is not None}, "
            f"trained_steps={self.trained_steps}"
        )

    def untrained_stages(self) -> list[str]:
        """The stages whose network has had no optimiser step."""
        return [name for name in STAGES if self.trained_steps[name] == 0]

    # -- forcings ---------------------------------------------------------------------------------
    def forcings(self, times: Sequence | np.ndarray) -> dict[str, torch.Tensor]:
        """The time forcings at ``times + k * step``, ``k = 0 .. h-1``: each ``(batch, lat, lon)``.

        With a seasonal baseline also ``"climatology"``, ``(batch, history + h,
        channel, lat, lon)``: the normalised climatology at ``times + k * step``
        for ``k`` in :attr:`climatology_offsets`; with a diurnal table and no
        seasonal baseline ``"diurnal_change+k"`` (``k = 1 .. h``).
        """
        if not self.use_forcings:
            return {}
        values = np.atleast_1d(np.asarray(times))
        out: dict[str, torch.Tensor] = {}
        for k in range(self.horizon):
            fields = time_forcings(shift_times(values, k * self.step), self.grid, self.device)
            out.update({f"{name}+{k}": field for name, field in fields.items()})
        if self.seasonal is not None:
            out[CLIMATOLOGY] = climatology_at_offsets(
                self.seasonal, self.diurnal, values, self.step, self.climatology_offsets
            ).to(self.device)
        elif self.diurnal is not None:
            for k in range(1, self.horizon + 1):
                out[f"{DIURNAL_CHANGE}+{k}"] = self.diurnal.change(values, k * self.step)
        return out

    def _climatology(
        self, forcings: Forcings, offset: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(C(history), C(t + offset), C(t + h))`` from the ``"climatology"`` forcing.

        Shapes ``(batch, history, channel, lat, lon)``, then ``(batch, channel,
        lat, lon)`` twice; zeros without a seasonal baseline.
        """
        if self.seasonal is None:
            zero = torch.zeros_like(like)
            return zero.unsqueeze(1), zero, zero
        table = forcings[CLIMATOLOGY].to(like)  # (batch, history + h, channel, lat, lon)
        expected = (like.shape[0], self.history + self.horizon, *like.shape[1:])
        if tuple(table.shape) != expected:
            raise DataError(
                f"forcing {CLIMATOLOGY!r} has shape {tuple(table.shape)}, expected {expected}",
                hint="pass stepper.forcings(times)",
            )
        rows = torch.arange(like.shape[0], device=like.device)
        now = self.history - 1  # index of t
        at_offset = table[rows, now + offset.to(like.device)]
        return table[:, : self.history], at_offset, table[:, now + self.horizon]

    def _diurnal_changes(self, forcings: Forcings, offset: torch.Tensor, like: torch.Tensor):
        """``(c_i, c_h)``: the changes of the diurnal anomaly from ``t`` to ``t + offset`` and ``t + h``."""
        changes = torch.stack(
            [torch.zeros_like(like)]
            + [forcings[f"{DIURNAL_CHANGE}+{k}"].to(like) for k in range(1, self.horizon + 1)]
        )  # (k = 0 .. h, batch, channel, lat, lon)
        rows = torch.arange(like.shape[0], device=like.device)
        return changes[offset.to(like.device), rows], changes[self.horizon]

    def _forcing_fields(self, forcings: Forcings, offset: torch.Tensor) -> torch.Tensor | None:
        """Time forcings at ``t + offset[b]`` for each row: ``(batch, 4, lat, lon)``."""
        if not self.use_forcings:
            return None
        missing = [name for name in self.forcing_names if name not in forcings]
        if missing:
            raise DataError(
                f"this stepper needs the forcing(s) {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}",
                hint="pass stepper.forcings(times)",
            )
        stacked = torch.stack(
            [
                torch.stack([forcings[f"{name}+{k}"] for name in TIME_FORCINGS], dim=1)
                for k in range(self.horizon)
            ]
        )  # (offset, batch, forcing, lat, lon)
        rows = torch.arange(stacked.shape[1], device=stacked.device)
        return stacked[offset.to(stacked.device), rows]

    # -- the two networks, normalised units -------------------------------------------------------
    def interpolate(
        self,
        start: torch.Tensor,
        end: torch.Tensor,
        offset: torch.Tensor,
        forcings: Forcings,
        generators: Generators = None,
    ) -> torch.Tensor:
        """``I(x_t, x_{t+h}, i)``: the normalised state at ``t + offset``.

        Parameters
        ----------
        start : torch.Tensor
            ``(batch, history, channel, lat, lon)``: the horizon's history.
        end : torch.Tensor
            ``(batch, channel, lat, lon)``: the state at ``t + h``.
        offset : torch.Tensor
            ``(batch,)`` integers ``i`` in ``1 .. h-1``.
        forcings : Forcings
            :meth:`forcings` at the valid times of ``start[:, -1]``.
        generators : torch.Generator or sequence of them, optional
            Draw the dropout masks: one per row (sampling), or one for the
            batch (training); None: torch's global generator in training mode,
            no dropout in eval mode.
        """
        batch = start.shape[0]
        fraction = offset.to(start.dtype) / self.horizon
        fields = self._forcing_fields(forcings, offset)
        past, now, future = self._climatology(forcings, offset, end)
        start, end = start - past, end - future  # departures (unchanged without seasonal)
        parts = [start.reshape(batch, -1, *self.grid.shape), end]
        if fields is not None:
            parts.append(fields.to(start.dtype))
        output = self.interpolator(torch.cat(parts, dim=1), fraction, generators)
        last = start[:, -1]
        linear = last + fraction[:, None, None, None] * (end - last)
        if self.diurnal is not None and self.seasonal is None:
            change, full = self._diurnal_changes(forcings, offset, last)
            linear = linear + change - fraction[:, None, None, None] * full
        return now + linear + output.to(start.dtype) * self.tendency_scale.to(start.dtype)

    def forecast(
        self,
        state: torch.Tensor,
        start: torch.Tensor,
        offset: torch.Tensor,
        forcings: Forcings,
        generators: Generators = None,
    ) -> torch.Tensor:
        """``F(x_{t+i}, i)``: the normalised state at ``t + h`` from ``state`` at ``t + offset``.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, channel, lat, lon)``, valid at ``t + offset``.
        start : torch.Tensor
            ``(batch, history, channel, lat, lon)``: the horizon's history.
        offset : torch.Tensor
            ``(batch,)`` integers ``i`` in ``0 .. h-1``.
        forcings : Forcings
            :meth:`forcings` at the valid times of ``start[:, -1]``.
        generators : torch.Generator or sequence of them, optional
            Draw the forecaster's dropout masks (training, and sampling with
            ``forecaster_sampling``).
        """
        batch = state.shape[0]
        fields = self._forcing_fields(forcings, offset)
        past, now, future = self._climatology(forcings, offset, state)
        state = state - now  # departures (unchanged without seasonal)
        parts = [state]
        if self.spec.condition_forecaster:
            parts.append((start - past).reshape(batch, -1, *self.grid.shape))
        if fields is not None:
            parts.append(fields.to(state.dtype))
        tau = offset.to(state.dtype) / self.horizon
        output = self.forecaster(torch.cat(parts, dim=1), tau, generators).to(state.dtype)
        if not self.residual:
            return future + output
        if self.diurnal is not None and self.seasonal is None:
            change, full = self._diurnal_changes(forcings, offset, state)
            state = state + (full - change)
        return future + state + output * self.tendency_scale.to(state.dtype)

    def forward_block_normalized(
        self,
        x: torch.Tensor,
        forcings: Forcings,
        generators: Generators = None,
    ) -> torch.Tensor:
        """One horizon by cold sampling, normalised: ``(h, batch, channel, lat, lon)``.

        ``x`` is ``(batch, history, channel, lat, lon)``; ``generators`` (one
        per row) switch the interpolator's dropout on with per-row masks (and
        the forecaster's, with ``forecaster_sampling``); without them dropout
        follows the train/eval mode.
        """
        self._check_shape(x, "normalised input")
        batch = x.shape[0]

        def offsets(i: int) -> torch.Tensor:
            return torch.full((batch,), i, dtype=torch.long, device=x.device)

        def interpolate(end: torch.Tensor, i: int) -> torch.Tensor:
            return self.interpolate(x, end, offsets(i), forcings, generators)

        forecaster_generators = generators if self.spec.forecaster_sampling else None

        def forecast(state: torch.Tensor, i: int) -> torch.Tensor:
            return self.forecast(state, x, offsets(i), forcings, forecaster_generators)

        return torch.stack(cold_sample(x[:, -1], interpolate, forecast, self.horizon))

    def forward_normalized(self, x: torch.Tensor, forcings: Forcings) -> torch.Tensor:
        """The first state of a sampled horizon (normalised): ``(batch, channel, lat, lon)``."""
        return self.forward_block_normalized(x, forcings)[0]

    # -- training ---------------------------------------------------------------------------------
    def set_stage(self, stage: str) -> None:
        """Train ``stage``: ``"interpolator"`` or ``"forecaster"`` (the other network frozen),
        or ``"chain"`` (both)."""
        if stage not in (*STAGES, CHAIN):
            raise ValueError(
                f"unknown stage {stage!r}; DYffusion has {', '.join((*STAGES, CHAIN))}"
            )
        self.stage = stage
        for name in STAGES:
            getattr(self, name).requires_grad_(stage in (name, CHAIN))

    def training_pairs(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        forcings: Forcings,
        generator: torch.Generator,
        members: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prediction and target of the current stage on windows of ``h`` future states.

        Stage ``"interpolator"``: ``I(x_t, x_{t+h}, i)`` against ``x_{t+i}``,
        ``i`` uniform in ``1 .. h-1``. Stage ``"forecaster"``:
        ``F(x~_{t+i}, i)`` against ``x_{t+h}``, ``i`` uniform in ``0 .. h-1``,
        with ``x~_{t+i} = I(x_t, x_{t+h}, i)`` from the frozen interpolator,
        dropout on (``x~_t = x_t``). One ``i`` per window and every dropout
        mask are drawn from ``generator`` (never from torch's global generator,
        which data loaders also draw from), so a resumed run repeats them.
        Stage ``"chain"``: the ``h`` states of the horizon that cold sampling
        draws from ``x_t`` (both networks' dropout on, gradients through every
        call) against ``x_{t+1} .. x_{t+h}``; prediction and target then hold
        the ``h`` states of each window as rows ``k * batch + b``.

        With ``members > 1`` each window is sampled ``members`` times at the
        same ``i``, each copy with its own dropout masks (the interpolator's,
        and in the forecaster stage the frozen interpolator's and the
        forecaster's): the prediction is then an ensemble
        ``(members, batch, channel, lat, lon)`` for a CRPS loss, which rewards a
        spread of the size of the error rather than suppressing it as the MSE
        of one sample does.
        """
        batch = history.shape[0]
        if targets.shape[1] < self.horizon:
            raise DataError(
                f"DYffusion trains on windows of {self.horizon} future states, got {targets.shape[1]}"
            )
        if members < 1:
            raise ValueError(f"members must be at least 1, got {members}")
        if self.stage == CHAIN:
            return self._chain_pairs(history, targets, forcings, generator, members)
        end = targets[:, self.horizon - 1]
        rows = torch.arange(batch, device=history.device)
        low = 1 if self.stage == "interpolator" else 0
        offset = torch.randint(
            low, self.horizon, (batch,), generator=generator, device=generator.device
        ).to(history.device)
        target = targets[rows, offset - 1] if self.stage == "interpolator" else end
        if members > 1:
            history, end, offset = (_copies(value, members) for value in (history, end, offset))
            forcings = {name: _copies(value, members) for name, value in forcings.items()}
        if self.stage == "interpolator":
            prediction = self.interpolate(history, end, offset, forcings, generator)
        else:
            with torch.no_grad():
                interpolated = self.interpolate(
                    history, end, offset.clamp(min=1), forcings, generator
                )
                state = torch.where(
                    (offset == 0)[:, None, None, None], history[:, -1], interpolated
                )
            prediction = self.forecast(state, history, offset, forcings, generator)
        if members > 1:
            prediction = prediction.reshape(members, batch, *prediction.shape[1:])
        return prediction, target

    def _chain_pairs(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        forcings: Forcings,
        generator: torch.Generator,
        members: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage ``"chain"`` of :meth:`training_pairs`: the sampled horizon against the truth."""
        batch, h = history.shape[0], self.horizon
        if members > 1:
            history = _copies(history, members)
            forcings = {name: _copies(value, members) for name, value in forcings.items()}
        # as forecast run samples: the forecaster's dropout only with forecaster_sampling
        quiet = self.forecaster.training and not self.spec.forecaster_sampling
        if quiet:
            self.forecaster.eval()
        try:
            states = self.forward_block_normalized(history, forcings, generator)  # (h, rows, ...)
        finally:
            if quiet:
                self.forecaster.train()
        target = targets[:, :h].transpose(0, 1).reshape(h * batch, *targets.shape[2:])
        if members > 1:  # (h, member, batch, ...) -> (member, h * batch, ...)
            states = states.reshape(h, members, batch, *states.shape[2:]).transpose(0, 1)
            return states.reshape(members, h * batch, *states.shape[3:]), target
        return states.reshape(h * batch, *states.shape[2:]), target

    # -- physical step (inference) ----------------------------------------------------------------
    @torch.no_grad()
    def advance_block(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        *,
        seeds: Sequence[int] | None = None,
        check_finite: bool = True,
        channels: Sequence[str] | None = None,
        grid: Grid | None = None,
    ) -> torch.Tensor:
        """Sample the ``h`` states of the next horizon: ``(batch, h, channel, lat, lon)``, physical.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)`` physical, oldest first.
        times : sequence of datetime64 or cftime
            Valid time of ``state[:, -1]``, one per row (or one for all).
        seeds : sequence of int, optional
            One per row: the seed of that row's dropout masks. None: drawn from
            torch's global generator.
        check_finite : bool
            Raise on NaN/inf input.
        channels, grid : optional
            The caller's coordinates, checked against the stepper's.
        """
        state, values = self.prepare_advance(state, times, check_finite, channels, grid)
        batch = state.shape[0]
        if seeds is None:
            seeds = torch.randint(0, 2**62, (batch,)).tolist()
        if len(seeds) != batch:
            raise DataError(f"got {len(seeds)} seeds for a batch of {batch}")
        generators = []
        for seed in seeds:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(int(seed))
            generators.append(generator)
        normalized = self.normalize(state)
        block = self.forward_block_normalized(normalized, self.forcings(values), generators)
        return self.denormalize(block).transpose(0, 1)

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
        """The first state of a sampled horizon (:meth:`advance_block`, global generator)."""
        block = self.advance_block(
            state, times, check_finite=check_finite, channels=channels, grid=grid
        )
        return block[:, 0]

    # -- metadata ---------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Everything (but the weights) needed to rebuild this stepper, and how far it is trained."""
        return {
            "stepper": self.kind,
            "model": "dyffusion",
            "hparams": dict(self.hparams),
            **self.coordinates_config(),
            "forcings": self.use_forcings,
            "horizon": self.horizon,
            "trained_steps": dict(self.trained_steps),
            "diurnal_hours": None if self.diurnal is None else list(self.diurnal.hours),
            "residual": self.residual,
            "seasonal_harmonics": None if self.seasonal is None else self.seasonal.harmonics,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DYffusionStepper:
        """Inverse of :meth:`config` (weights freshly initialised; diurnal and seasonal tables of zeros)."""
        grid = Grid.from_dict(config["grid"])
        hours = config.get("diurnal_hours")
        diurnal = None
        if hours:
            diurnal = (hours, np.zeros((len(hours), len(config["channels"]), *grid.shape)))
        harmonics = config.get("seasonal_harmonics")  # absent before the seasonal baseline
        seasonal = None
        if harmonics is not None:
            seasonal = np.zeros((2 * harmonics + 1, len(config["channels"]), *grid.shape))
        return cls(
            config["hparams"],
            config["channels"],
            grid,
            dt.timedelta(seconds=config["step_seconds"]),
            Normalizer.from_dict(config["normalizer"]),
            history=config["history"],
            forcings=config["forcings"],
            trained_steps=config.get("trained_steps"),
            diurnal=diurnal,
            residual=bool(config.get("residual", True)),  # absent before --no-residual
            seasonal=seasonal,
        )
