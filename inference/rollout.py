"""The rollout engine: an iterator over lead times, and the blow-up guard.

:func:`rollout` steps a model autoregressively. It yields the initial
condition first (lead 0), then each step's state with its valid times; the
history window and the valid times advance together, in the calendar of the
times passed in (datetime64 or cftime), so that time forcings computed by the
stepper from those times stay in step with the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from forecast.errors import ForecastError
from forecast.normalize import Normalizer
from forecast.stepper import Stepper
from inference.initial import shift_times


@dataclass(frozen=True)
class LeadState:
    """One lead time of a rollout.

    Attributes
    ----------
    lead : int
        Lead index; 0 is the initial condition, ``k`` is ``k`` model steps later.
    valid_time : numpy.ndarray
        Shape ``(batch,)``: when each member's state is valid.
    state : torch.Tensor
        Shape ``(batch, channel, lat, lon)``, physical units, float32.
    history : torch.Tensor
        Shape ``(batch, history, channel, lat, lon)``: the window the next step
        starts from (its last slice is ``state``); a restart file keeps it.
    """

    lead: int
    valid_time: np.ndarray
    state: torch.Tensor
    history: torch.Tensor


def rollout(
    stepper: Stepper,
    initial: torch.Tensor,
    init_times: np.ndarray,
    steps: int,
    start_lead: int = 0,
) -> Iterator[LeadState]:
    """Step a model ``steps`` times from an initial condition.

    Parameters
    ----------
    stepper : forecast.stepper.Stepper
        The model; each step is ``stepper.advance(state, times, check_finite=False)``
        under inference mode (a member that blew up does not stop the others;
        :class:`BlowUpGuard` reports it).
    initial : torch.Tensor
        Shape ``(batch, history, channel, lat, lon)``, physical units; the last
        history slice is valid at lead ``start_lead``.
    init_times : numpy.ndarray
        Shape ``(batch,)``: the initialisation time of each member (datetime64
        or cftime, the store's calendar).
    steps : int
        Last lead index to produce.
    start_lead : int
        Lead index of ``initial`` (non-zero when a run resumes).

    Yields
    ------
    LeadState
        Lead ``start_lead`` (the state passed in), then ``start_lead + 1`` ... ``steps``.
    """
    if initial.ndim != 5 or initial.shape[1] != stepper.history:
        raise ValueError(
            f"initial state must be (batch, history={stepper.history}, channel, lat, lon), got {tuple(initial.shape)}"
        )
    if len(init_times) != initial.shape[0]:
        raise ValueError(f"{len(init_times)} init times for a batch of {initial.shape[0]}")
    history = initial
    times = shift_times(np.asarray(init_times), start_lead * stepper.step)
    yield LeadState(start_lead, times, history[:, -1], history)
    for lead in range(start_lead + 1, steps + 1):
        with torch.inference_mode():
            new = stepper.advance(history, times, check_finite=False).to(history.dtype)
        times = shift_times(times, stepper.step)
        history = (
            torch.cat([history[:, 1:], new[:, None]], dim=1)
            if history.shape[1] > 1
            else new[:, None]
        )
        yield LeadState(lead, times, new, history)


@dataclass(frozen=True)
class BlowUp:
    """A member that left the range of plausible values.

    Attributes
    ----------
    init_time : str
        Initialisation time (ISO text).
    member : int
        Member index.
    lead : int
        Lead index of the first bad state.
    channel : str
        First channel found bad.
    reason : str
        ``"non-finite"``, ``"below X"`` or ``"above X"``.
    """

    init_time: str
    member: int
    lead: int
    channel: str
    reason: str

    def describe(self) -> str:
        """One line for the user."""
        return f"member {self.member} of the forecast from {self.init_time} blew up at lead {self.lead} in {self.channel} ({self.reason})"


class BlowUpError(ForecastError, RuntimeError):
    """A member turned NaN/inf or left its physical bounds, and the run was set to stop.

    Parameters
    ----------
    blowups : sequence of BlowUp
        The members that blew up at the step that stopped the run.
    hint : str, optional
        What to do about it.

    Attributes
    ----------
    blowups : tuple of BlowUp
    """

    def __init__(self, blowups: Sequence[BlowUp], *, hint: str | None = None):
        self.blowups = tuple(blowups)
        super().__init__("; ".join(b.describe() for b in self.blowups), hint=hint)


class BlowUpGuard:
    """Checks each step for non-finite values and values outside physical bounds.

    Parameters
    ----------
    channels : sequence of str
        Channel ids in state order.
    lower, upper : numpy.ndarray
        Shape ``(channel,)``: the plausible range of each channel, physical units.
    """

    def __init__(self, channels: Sequence[str], lower: np.ndarray, upper: np.ndarray):
        self.channels = list(channels)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.reported: set[tuple[str, int]] = set()

    @classmethod
    def from_normalizer(
        cls, normalizer: Normalizer, channels: Sequence[str], sigmas: float = 50.0
    ) -> BlowUpGuard:
        """Bounds ``mean +- sigmas * std`` of each channel (a broken model, not a strong storm)."""
        index = [list(normalizer.channels).index(c) for c in channels]
        mean, std = np.asarray(normalizer.mean)[index], np.asarray(normalizer.std)[index]
        return cls(channels, mean - sigmas * std, mean + sigmas * std)

    def check(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        lead: int,
    ) -> list[BlowUp]:
        """Find members of ``state`` that are newly bad.

        Parameters
        ----------
        state : torch.Tensor
            Shape ``(batch, channel, lat, lon)``.
        init_labels : sequence of str
            Shape ``(batch,)``: the init time of each member, as text.
        members : sequence of int
            Shape ``(batch,)``: member indices.
        lead : int
            Lead index of ``state``.

        Returns
        -------
        list of BlowUp
            At most one per member over the whole run (the first bad channel).
        """
        flat = state.flatten(2)
        low = flat.amin(dim=2).double().cpu().numpy()  # (batch, channel)
        high = flat.amax(dim=2).double().cpu().numpy()
        finite = np.isfinite(low) & np.isfinite(high)
        bad = ~finite | (low < self.lower) | (high > self.upper)
        found = []
        for b, c in zip(*np.nonzero(bad), strict=True):
            key = (init_labels[b], int(members[b]))
            if key in self.reported:
                continue
            self.reported.add(key)
            if not finite[b, c]:
                reason = "non-finite"
            elif low[b, c] < self.lower[c]:
                reason = f"{low[b, c]:.4g} below {self.lower[c]:.4g}"
            else:
                reason = f"{high[b, c]:.4g} above {self.upper[c]:.4g}"
            found.append(BlowUp(init_labels[b], int(members[b]), lead, self.channels[c], reason))
        return found
