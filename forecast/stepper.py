"""The ``Stepper`` protocol: one physical model step, the interface every model family satisfies.

Training, validation, inference, perturbations and checkpoints talk to a
model only through this interface, so a new family (two networks as in
Spherical DYffusion, a boosted pair, an imported published model) is a new
class that satisfies it and a line in :data:`forecast.steppers.STEPPERS`; no
caller changes. See docs/architecture.md.

- :class:`Stepper` is what inference needs: the coordinates of the state
  (``channels``, ``grid``), the time ``step``, the ``history`` length, the
  ``normalizer`` (blow-up bounds, perturbation amplitudes, store checks),
  named forcings, :meth:`Stepper.advance` on physical fields, and
  ``config()``/``state_dict()`` that checkpoints save as they are.
- :class:`TrainableStepper` adds what the training loop needs: the step in
  normalised units (:meth:`TrainableStepper.forward_normalized`) and the
  ``torch.nn.Module`` methods (parameters, train/eval, to).
- :class:`SamplingStepper` is a stochastic stepper that samples a block of
  ``block_steps`` states per call (DYffusion samples a whole horizon), each
  batch row from its own seed, so that an ensemble does not depend on how its
  members are batched. The rollout engine calls
  :meth:`SamplingStepper.advance_block` at leads ``0, block_steps, ...``.
- :class:`StagedStepper` is a trainable stepper whose networks are trained one
  after the other (DYffusion: the interpolator, then the forecaster with the
  interpolator frozen); the training loop switches stages and asks it for the
  pairs of prediction and target of each stage.

Forcings are named inputs (:data:`forecast.forcings.Forcings`), one tensor per
name, batch first. A stepper trained with prescribed fields (sea-surface
temperature ...) read from a forcing store also satisfies
:class:`PrescribedStepper`: it names them and is handed the store
(:func:`forecast.prescribed.connect_forcing_store`) before any compute.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from forecast.forcings import Forcings
from forecast.grid import Grid
from forecast.normalize import Normalizer

__all__ = [
    "Forcings",
    "PrescribedStepper",
    "SamplingStepper",
    "StagedStepper",
    "Stepper",
    "TrainableStepper",
]


@runtime_checkable
class Stepper(Protocol):
    """One model step on physical fields.

    Attributes
    ----------
    kind : str
        Key of the stepper family in :data:`forecast.steppers.STEPPERS`
        (recorded in checkpoints; ``"backbone"`` for SFNO/AFNO/FNO).
    channels : tuple of str
        Channel ids of the state, in tensor order.
    grid : Grid
        Grid of the state.
    step : datetime.timedelta
        Time advanced by one call of :meth:`advance`.
    history : int
        Number of consecutive states the step sees (1: only the latest).
    normalizer : Normalizer
        Per-channel mean/std/tendency std of ``channels``, physical units.
    forcing_names : tuple of str
        Names of the inputs :meth:`forcings` returns.
    device : torch.device
        Where its tensors live.
    """

    kind: str
    channels: tuple[str, ...]
    grid: Grid
    history: int
    normalizer: Normalizer

    @property
    def step(self) -> dt.timedelta: ...

    @property
    def device(self) -> torch.device:
        """Where the stepper's tensors live (states are moved there)."""
        ...

    @property
    def forcing_names(self) -> tuple[str, ...]: ...

    def forcings(self, times: Sequence | np.ndarray) -> dict[str, torch.Tensor]:
        """Named inputs of a step from states valid at ``times`` (shape ``(batch,)``).

        Returns
        -------
        dict of str to torch.Tensor
            One entry per name of :attr:`forcing_names`, batch first, on the
            stepper's device.
        """
        ...

    def advance(
        self, state: torch.Tensor, times: Sequence | np.ndarray, *, check_finite: bool = True
    ) -> torch.Tensor:
        """Advance physical states by one :attr:`step`, without gradients.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)``, physical units, oldest first.
        times : sequence of datetime64 or cftime
            Shape ``(batch,)``: valid time of ``state[:, -1]``.
        check_finite : bool
            Raise :class:`~forecast.errors.DataError` on NaN/inf input. An
            ensemble run passes False: a member that blew up must not stop the
            others, and the blow-up guard reports it.

        Returns
        -------
        torch.Tensor
            ``(batch, channel, lat, lon)`` float32, physical units, valid at
            ``times + step``.
        """
        ...

    def config(self) -> dict[str, Any]:
        """JSON-able description that, with :meth:`state_dict`, rebuilds the stepper.

        Holds ``"stepper": kind``; :func:`forecast.steppers.stepper_from_config`
        is its inverse.
        """
        ...

    def state_dict(self) -> Mapping[str, torch.Tensor]:
        """Every tensor a checkpoint must keep (weights, learned or measured tables)."""
        ...

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
        """Inverse of :meth:`state_dict`."""
        ...


@runtime_checkable
class PrescribedStepper(Protocol):
    """A stepper that can read prescribed fields from a forcing store.

    Attributes
    ----------
    prescribed_names : tuple of str
        The prescribed variables its :meth:`Stepper.forcings` reads, in the
        backbone's order (empty: it takes none and needs no store).
    """

    @property
    def prescribed_names(self) -> tuple[str, ...]: ...

    def use_forcing_store(self, store: Any) -> None:
        """Read :attr:`prescribed_names` from ``store`` (a :class:`forecast.prescribed.ForcingStore`).

        Raises
        ------
        ConfigError
            The store holds other variables, or the stepper takes none.
        """
        ...


@runtime_checkable
class TrainableStepper(Stepper, Protocol):
    """A :class:`Stepper` the training loop can optimise (a ``torch.nn.Module``)."""

    training: bool

    def normalize(self, state: torch.Tensor) -> torch.Tensor:
        """``(..., channel, lat, lon)`` physical -> normalised (float32)."""
        ...

    def denormalize(self, state: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        ...

    def forward_normalized(self, x: torch.Tensor, forcings: Forcings) -> torch.Tensor:
        """Next normalised state from normalised history, with gradients.

        Parameters
        ----------
        x : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised, oldest first.
        forcings : Forcings
            From :meth:`Stepper.forcings` at the valid times of ``x[:, -1]``.

        Returns
        -------
        torch.Tensor
            ``(batch, channel, lat, lon)``, normalised, one step after ``x[:, -1]``.
        """
        ...

    def parameters(self, recurse: bool = True) -> Iterator[torch.nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def to(self, *args: Any, **kwargs: Any) -> Any: ...


@runtime_checkable
class SamplingStepper(Stepper, Protocol):
    """A stochastic :class:`Stepper` that samples ``block_steps`` consecutive states per call.

    Attributes
    ----------
    block_steps : int
        States one call of :meth:`advance_block` returns (blocks start at leads
        ``0, block_steps, 2 * block_steps, ...``; a resumed run restarts at the
        start of a block).
    """

    block_steps: int

    def advance_block(
        self,
        state: torch.Tensor,
        times: Sequence | np.ndarray,
        *,
        seeds: Sequence[int] | None = None,
        check_finite: bool = True,
    ) -> torch.Tensor:
        """Sample the next :attr:`block_steps` physical states, without gradients.

        Parameters
        ----------
        state : torch.Tensor
            ``(batch, history, channel, lat, lon)``, physical units, oldest first.
        times : sequence of datetime64 or cftime
            Shape ``(batch,)``: valid time of ``state[:, -1]``.
        seeds : sequence of int, optional
            One seed per row: row ``b``'s sample depends only on ``state[b]``,
            ``times[b]`` and ``seeds[b]``. None: draws from torch's global generator.
        check_finite : bool
            As in :meth:`Stepper.advance`.

        Returns
        -------
        torch.Tensor
            ``(batch, block_steps, channel, lat, lon)`` float32, physical units,
            valid at ``times + k * step`` for ``k = 1 .. block_steps``.
        """
        ...


@runtime_checkable
class StagedStepper(TrainableStepper, Protocol):
    """A :class:`TrainableStepper` whose networks are trained in stages, one after the other.

    Attributes
    ----------
    stages : tuple of str
        Stage names in training order.
    stage : str
        The stage being trained (set with :meth:`set_stage`).
    window_targets : int
        Future states a training window must hold.
    trained_steps : dict of str to int
        Optimiser steps each stage has had (saved in the checkpoint's config).
    joint_stage : str or None
        A stage that trains every network at once on the block it samples,
        after ``stages`` (optional: fine-tuning); None: the stepper has none.
    """

    stages: tuple[str, ...]
    stage: str
    joint_stage: str | None
    window_targets: int
    trained_steps: dict[str, int]

    def set_stage(self, stage: str) -> None:
        """Train ``stage`` from now on: its parameters require gradients, the others are frozen."""
        ...

    def training_pairs(
        self,
        history: torch.Tensor,
        targets: torch.Tensor,
        forcings: Forcings,
        generator: torch.Generator,
        members: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prediction and target of the current stage on a batch of windows, with gradients.

        Parameters
        ----------
        history : torch.Tensor
            ``(batch, history, channel, lat, lon)``, normalised.
        targets : torch.Tensor
            ``(batch, window_targets, channel, lat, lon)``, normalised.
        forcings : Forcings
            :meth:`Stepper.forcings` at the valid times of ``history[:, -1]``.
        generator : torch.Generator
            Draws the stage's random choices (on the stepper's device).
        members : int
            Samples of the stage's stochastic network per window (1: one).

        Returns
        -------
        prediction, target : torch.Tensor
            ``(batch, channel, lat, lon)`` each, normalised; with ``members > 1``
            the prediction is ``(members, batch, channel, lat, lon)``.
        """
        ...
