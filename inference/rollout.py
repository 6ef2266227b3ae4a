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

import numpy as np
import torch

from forecast.errors import ForecastError
from forecast.normalize import Normalizer
from forecast.stepper import SamplingStepper, Stepper
from inference.initial import shift_times

#: A step that changes a member by less than this many tendency stds (the
#: median over channels) finds it frozen; a sound model's step changes its
#: state by about one (see docs/performance.md, "a frozen member").
FROZEN_BELOW = 1e-3


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
        whose state stopped changing, ``"frozen: ..."``.
    """

    init_time: str
    member: int
    lead: int
    channel: str
    reason: str

    def describe(self) -> str:
        """One line for the user."""
        what = "froze" if self.reason.startswith("frozen") else "blew up"
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


class BlowUpGuard:
    """Checks each step for non-finite values, values outside physical bounds and frozen states.

    A member is *frozen* when one step changes its state by less than
    ``frozen_below`` tendency standard deviations (the RMS over the grid of
    the step's change, the median over the channels): weather never stops,
    so such a member has settled in a fixed state that the bounds may not
    catch (a broken climate; docs/performance.md, attempt 14).

    Parameters
    ----------
    channels : sequence of str
        Channel ids in state order.
    lower, upper : numpy.ndarray
        Shape ``(channel,)``: the plausible range of each channel, physical units.
    tendency_std : numpy.ndarray, optional
        Shape ``(channel,)``: the std of one step's change of each channel
        (None: no frozen-state check).
    frozen_below : float
        The frozen-state threshold, in tendency stds.
    """

    def __init__(
        self,
        channels: Sequence[str],
        lower: np.ndarray,
        upper: np.ndarray,
        tendency_std: np.ndarray | None = None,
        frozen_below: float = FROZEN_BELOW,
    ):
        self.channels = list(channels)
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        self.tendency_std = None if tendency_std is None else np.asarray(tendency_std, np.float64)
        self.frozen_below = float(frozen_below)
        self.reported: set[tuple[str, int]] = set()

    @classmethod
    def from_normalizer(
        cls, normalizer: Normalizer, channels: Sequence[str], sigmas: float = 50.0
    ) -> BlowUpGuard:
        """Bounds ``mean +- sigmas * std`` of each channel (a broken model, not a strong storm), and the tendency stds."""
        index = [list(normalizer.channels).index(c) for c in channels]
        mean, std = np.asarray(normalizer.mean)[index], np.asarray(normalizer.std)[index]
        tendency = np.asarray(normalizer.diff_std)[index]
        return cls(channels, mean - sigmas * std, mean + sigmas * std, tendency)

    def check(
        self,
        state: torch.Tensor,
        init_labels: Sequence[str],
        members: Sequence[int] | np.ndarray,
        lead: int,
        previous: torch.Tensor | None = None,
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
        previous : torch.Tensor, optional
            The state one step earlier, same shape (None: no frozen-state check).

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
        change = self._change(state, previous)
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
            elif change is not None and _median(change[b]) < self.frozen_below:
                c = int(np.nanargmax(change[b]))
                reason = (
                    f"frozen: a step changed it by {_median(change[b]):.2g} tendency stds "
                    f"(median over channels), {self.channels[c]} the most at {change[b, c]:.2g}"
                )
            else:
                continue
            self.reported.add(key)
            found.append(BlowUp(init_labels[b], int(members[b]), lead, self.channels[c], reason))
        return found

    def _change(self, state: torch.Tensor, previous: torch.Tensor | None) -> np.ndarray | None:
        """Shape ``(batch, channel)``: the RMS over the grid of ``state - previous``, in tendency stds."""
        if previous is None or self.tendency_std is None:
            return None
        step = (state - previous).flatten(2).double()
        rms = step.square().mean(dim=2).sqrt().cpu().numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            # a channel that never changes in the store (a constant) is no evidence either way
            return np.where(self.tendency_std > 0, rms / self.tendency_std, np.nan)


def _median(values: np.ndarray) -> float:
    """The median of the non-NaN ``values`` (inf when there are none: nothing to judge by)."""
    values = values[~np.isnan(values)]
    return float(np.median(values)) if values.size else np.inf
