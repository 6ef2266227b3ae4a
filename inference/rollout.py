"""The rollout engine: an iterator over lead times, and the guard against broken members.

:func:`rollout` steps a model autoregressively. It yields the initial
condition first (lead 0), then each step's state with its valid times; the
history window and the valid times advance together, in the calendar of the
times passed in (datetime64 or cftime), so that time forcings computed by the
stepper from those times stay in step with the store. A stochastic
:class:`~forecast.stepper.SamplingStepper` (DYffusion) is called once per
block of leads, each member drawing its noise from its own seed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from forecast.errors import ForecastError
from forecast.normalize import Normalizer
from forecast.stepper import SamplingStepper, Stepper
from inference.initial import shift_times

#: A member whose global mean of a channel is further than this many of the
#: channel's stds from its mean has left the climate: a sound one's stays
#: within a few tenths (docs/performance.md, "a member that leaves the climate").
MEAN_SIGMAS = 3.0


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


def block_seed(seed: int, block: int) -> int:
    """The seed of block ``block`` of a member whose seed is ``seed`` (63 bits, stable)."""
    digest = hashlib.sha256(f"{int(seed)}|block|{int(block)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rollout(
    stepper: Stepper,
    initial: torch.Tensor,
    init_times: np.ndarray,
    steps: int,
    start_lead: int = 0,
    seeds: Sequence[int] | None = None,
) -> Iterator[LeadState]:
    """Step a model ``steps`` times from an initial condition.

    Parameters
    ----------
    stepper : forecast.stepper.Stepper
        The model; each step is ``stepper.advance(state, times, check_finite=False)``
        under inference mode (a member that blew up does not stop the others;
        :class:`BlowUpGuard` reports it). A
        :class:`~forecast.stepper.SamplingStepper` is called once per block
        of ``block_steps`` leads instead (``advance_block``), block ``k``
        (leads ``k * block_steps + 1 ...``) drawing its noise from
        ``block_seed(seeds[b], k)`` for row ``b``.
    initial : torch.Tensor
        Shape ``(batch, history, channel, lat, lon)``, physical units; the last
        history slice is valid at lead ``start_lead``.
    init_times : numpy.ndarray
        Shape ``(batch,)``: the initialisation time of each member (datetime64
        or cftime, the store's calendar).
    steps : int
        Last lead index to produce.
    start_lead : int
        Lead index of ``initial`` (non-zero when a run resumes; for a sampling
        stepper a multiple of its ``block_steps``).
    seeds : sequence of int, optional
        Shape ``(batch,)``: each member's seed, for a sampling stepper (None:
        its noise comes from torch's global generator).

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
    if isinstance(stepper, SamplingStepper):
        yield from _sampled(stepper, history, times, steps, start_lead, seeds)
        return
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


def _sampled(
    stepper: SamplingStepper,
    history: torch.Tensor,
    times: np.ndarray,
    steps: int,
    start_lead: int,
    seeds: Sequence[int] | None,
) -> Iterator[LeadState]:
    """Leads ``start_lead + 1 .. steps`` of a sampling stepper, a block per call."""
    block = int(stepper.block_steps)
    if start_lead % block and start_lead < steps:
        raise ValueError(
            f"a sampling stepper restarts at the start of a block of {block} leads, not at lead {start_lead}"
        )
    if seeds is not None and len(seeds) != history.shape[0]:
        raise ValueError(f"{len(seeds)} seeds for a batch of {history.shape[0]}")
    lead = start_lead
    while lead < steps:
        index = lead // block
        block_seeds = None if seeds is None else [block_seed(seed, index) for seed in seeds]
        with torch.inference_mode():
            states = stepper.advance_block(history, times, seeds=block_seeds, check_finite=False)
        states = states.to(history.dtype)
        window = torch.cat([history, states], dim=1)
        for k in range(min(block, steps - lead)):
            times = shift_times(times, stepper.step)
            lead += 1
            end = history.shape[1] + k + 1
            yield LeadState(lead, times, states[:, k], window[:, end - history.shape[1] : end])
        history = window[:, -history.shape[1] :]


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
        ``"non-finite"``, ``"X below Y"``, ``"X above Y"`` or, for a member
        whose global mean left the climate, ``"global mean X is N stds ..."``.
    """

    init_time: str
    member: int
    lead: int
    channel: str
    reason: str

    def describe(self) -> str:
        """One line for the user."""
        what = "left the climate" if self.reason.startswith("global mean") else "blew up"
        return f"member {self.member} of the forecast from {self.init_time} {what} at lead {self.lead} in {self.channel} ({self.reason})"


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


class _Climate(NamedTuple):
    """What the guard's global-mean check compares with: per channel, and per latitude row."""

    mean: np.ndarray  # (channel,)
    std: np.ndarray  # (channel,)
    row_weights: np.ndarray  # (lat,), summing to 1


class BlowUpGuard:
    """Checks each step for non-finite values, values outside physical bounds and a global mean out of the climate.

    The bounds are wide (a broken model, not a strong storm). The global-mean
    check catches a member that drifts into another climate with every value
    still plausible: its area-weighted global mean of a channel further than
    ``mean_sigmas`` of the channel's stds from its mean (a storm moves a
    global mean by a tiny fraction of a std; a sound model's stays within a
    few tenths, like the store's own). It judges leads 1 on: lead 0 is the
    initial state, the data's.

    Parameters
    ----------
    channels : sequence of str
        Channel ids in state order.
    lower, upper : numpy.ndarray
        Shape ``(channel,)``: the plausible range of each channel, physical units.
    climate : tuple of numpy.ndarray, optional
        ``(mean, std, weights)``: each channel's mean and std (shape
        ``(channel,)``) and the area weight of each latitude row (shape
        ``(lat,)``) for the global-mean check (None: no such check).
    mean_sigmas : float
        How many stds from its mean a channel's global mean may go.
    """

    def __init__(
        self,
        channels: Sequence[str],
        lower: np.ndarray,
        upper: np.ndarray,
        climate: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        mean_sigmas: float = MEAN_SIGMAS,
    ):
        self.channels = list(channels)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.mean_sigmas = float(mean_sigmas)
        self.climate: _Climate | None = None
        if climate is not None:
            mean, std, weights = (np.asarray(a, dtype=np.float64) for a in climate)
            self.climate = _Climate(mean, std, weights / weights.sum())
        self.reported: set[tuple[str, int]] = set()

    @classmethod
    def from_normalizer(
        cls,
        normalizer: Normalizer,
        channels: Sequence[str],
        sigmas: float = 50.0,
        weights: np.ndarray | None = None,
    ) -> BlowUpGuard:
        """Bounds ``mean +- sigmas * std`` of each channel; with ``weights`` (per latitude), the global-mean check too."""
        index = [list(normalizer.channels).index(c) for c in channels]
        mean, std = np.asarray(normalizer.mean)[index], np.asarray(normalizer.std)[index]
        climate = None if weights is None else (mean, std, np.asarray(weights))
        return cls(channels, mean - sigmas * std, mean + sigmas * std, climate)

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
        # the global-mean check judges the model's steps, not the initial state (the data's)
        climate = self.climate if lead > 0 else None
        if climate is not None:
            means, departure = self._global_means(state, climate)
        found = []
        for b in range(bad.shape[0]):
            key = (init_labels[b], int(members[b]))
            if key in self.reported:
                continue
            if bad[b].any():
                c = int(np.flatnonzero(bad[b])[0])
                if not finite[b, c]:
                    reason = "non-finite"
                elif low[b, c] < self.lower[c]:
                    reason = f"{low[b, c]:.4g} below {self.lower[c]:.4g}"
                else:
                    reason = f"{high[b, c]:.4g} above {self.upper[c]:.4g}"
            elif climate is not None and departure[b].max() > self.mean_sigmas:
                c = int(np.argmax(departure[b]))
                reason = (
                    f"global mean {means[b, c]:.4g} is {departure[b, c]:.1f} stds from its mean "
                    f"{climate.mean[c]:.4g}"
                )
            else:
                continue
            self.reported.add(key)
            found.append(BlowUp(init_labels[b], int(members[b]), lead, self.channels[c], reason))
        return found

    @staticmethod
    def _global_means(state: torch.Tensor, climate: _Climate) -> tuple[np.ndarray, np.ndarray]:
        """Shape ``(batch, channel)``: the area-weighted global means, and their distance from the channels' means in stds."""
        # zonal means on the device, in the state's dtype (no float64 copy of the whole state);
        # only the (batch, channel, lat) result crosses to the host
        zonal = state.mean(dim=3).double().cpu().numpy()
        means = zonal @ climate.row_weights
        with np.errstate(divide="ignore", invalid="ignore"):  # a constant channel: no check
            departure = np.where(climate.std > 0, np.abs(means - climate.mean) / climate.std, 0.0)
        return means, np.nan_to_num(departure)
