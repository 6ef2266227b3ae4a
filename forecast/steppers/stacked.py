"""Backbone steppers that differ only in their network weights, stepped as one batch.

The checkpoints of a multi-seed ensemble come from one training recipe on
one store: the same channels, grid, normaliser, forcings and baselines, and
networks of one architecture with other weights. :func:`stack_backbones`
recognises such a set (and says why another set is not one);
:meth:`StackedBackbones.for_rows` gives a stepper for one batch whose row
``r`` runs checkpoint ``models[r]``. That stepper is the first checkpoint's
stepper with its network replaced by the stacked networks
(:class:`forecast.models.stacked.StackedNetworks`), so everything around the
network (normalisation, forcings, the seasonal and diurnal baselines) is the
code of a single model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from torch import nn

from forecast.models.stacked import StackedNetworks
from forecast.stepper import Stepper
from forecast.steppers.backbone import BackboneStepper

__all__ = ["NotStackableError", "StackedBackbones", "stack_backbones", "why_not_stackable"]


class NotStackableError(ValueError):
    """Steppers that differ in more than their network weights (:func:`why_not_stackable`)."""


class _RowNetworks(nn.Module):
    """The stacked networks bound to one batch's rows: ``forward(x)`` as a single network's."""

    def __init__(self, networks: StackedNetworks, models: np.ndarray):
        super().__init__()
        self.networks = networks
        self.rows = networks.plan(models)  # once for the batch, not at every step

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in, lat, lon) -> (batch, out, lat, lon)``, row ``r`` by network ``models[r]``."""
        return self.networks(x, self.rows)


class StackedBackbones:
    """``K`` interchangeable backbone steppers (:func:`stack_backbones`) run as one.

    Parameters
    ----------
    steppers : sequence of BackboneStepper
        One per checkpoint.

    Raises
    ------
    NotStackableError
        When :func:`why_not_stackable` has a reason.
    """

    def __init__(self, steppers: Sequence[Stepper]):
        reason = why_not_stackable(steppers)
        if reason is not None:
            raise NotStackableError(f"these steppers cannot be stacked: {reason}")
        self.steppers = cast("tuple[BackboneStepper, ...]", tuple(steppers))
        self.networks = StackedNetworks([s.model for s in self.steppers])

    def __len__(self) -> int:
        return len(self.steppers)

    @property
    def strategy(self) -> dict[str, str]:
        """How the networks ran: ``{"strategy": "vmap" | "loop" | "untried", "reason": ...}``."""
        return {"strategy": self.networks.strategy, "reason": self.networks.reason}

    def for_rows(self, models: np.ndarray) -> BackboneStepper:
        """The stepper of a batch whose row ``r`` runs checkpoint ``models[r]``."""
        return self.steppers[0].with_network(_RowNetworks(self.networks, models))


def why_not_stackable(steppers: Sequence[Stepper]) -> str | None:
    """Why ``steppers`` cannot run as one batch, or None when they can.

    They can when every one is a plain :class:`BackboneStepper` with the
    first one's configuration (channels, grid, normaliser, forcings,
    baselines, architecture) and the first one's tensors outside the network
    (the baselines' tables), on one device, and their networks' parameters
    have the same names and shapes.
    """
    if len(steppers) < 2:
        return "a single checkpoint"
    first = steppers[0]
    if any(type(s) is not BackboneStepper for s in steppers):
        return "only backbone steppers (SFNO, AFNO, FNO) are stacked"
    configs = [json.dumps(s.config(), sort_keys=True, default=str) for s in steppers]
    for k, config in enumerate(configs[1:], start=1):
        if config != configs[0]:
            return f"checkpoint {k} has another configuration (architecture, normaliser, forcings or baselines) than checkpoint 0"
    reference = first.state_dict()
    for k, stepper in enumerate(steppers[1:], start=1):
        if stepper.device != first.device:
            return f"checkpoint {k} is on {stepper.device}, checkpoint 0 on {first.device}"
        state = stepper.state_dict()
        if state.keys() != reference.keys():
            return f"checkpoint {k} holds other tensors than checkpoint 0"
        for name, value in state.items():
            other = reference[name]
            if value.shape != other.shape or value.dtype != other.dtype:
                return f"checkpoint {k}'s {name} has another shape or dtype"
            if not name.startswith("model.") and not torch.equal(value, other):
                return f"checkpoint {k}'s {name} differs from checkpoint 0's"
    return None


def stack_backbones(steppers: Sequence[Stepper]) -> StackedBackbones | None:
    """``steppers`` as one :class:`StackedBackbones`, or None when they cannot be (:func:`why_not_stackable`)."""
    try:
        return StackedBackbones(steppers)
    except NotStackableError:
        return None
