"""On-the-fly reductions of one batch of members: period means and histograms, as leads arrive.

:class:`BatchReducer` receives the state of every lead of one batch of
members, in order. Each averaged state (leads ``0 .. steps - 1``, see
:mod:`forecast.periods`) is added to the sum of its calendar month, the
only per-step work; when a month closes, its sum is written out (if monthly
means were asked for) and merged into the sums of the season, the year and
the whole run it belongs to, which are written out when they close in turn.
Months nest in every other period, so each period's mean is the merge of
its months' partial sums, exactly. Histograms count every averaged state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from forecast.accumulators import Histogram, MeanSum
from forecast.normalize import Normalizer
from forecast.periods import PERIOD_KINDS, Period, lead_periods, run_periods

#: The period kind every other one is merged from.
BASE = "monthly"


@dataclass(frozen=True)
class Record:
    """A finished piece of a climate product.

    Attributes
    ----------
    product : str
        ``monthly``, ``seasonal``, ``annual``, ``time-mean`` or ``histograms``.
    index : int
        Period index (0 for histograms).
    values : dict
        Arrays to write, by kind: ``"mean"`` ``(member, channel, lat, lon)``
        float32; for histograms ``"counts"``, ``"below"``, ``"above"``.
    """

    product: str
    index: int
    values: dict[str, np.ndarray]


#: Default half-width of the histograms' range, in standard deviations of each channel.
HISTOGRAM_SIGMAS = 5.0


@dataclass(frozen=True)
class HistogramSpec:
    """Fixed bins of the histograms: ``bins`` per channel over ``[low, high]`` (shape ``(channel,)``)."""

    bins: int
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def from_normalizer(
        cls,
        normalizer: Normalizer,
        channels: Sequence[str],
        bins: int,
        sigmas: float = HISTOGRAM_SIGMAS,
    ) -> HistogramSpec:
        """``bins`` bins over ``mean +- sigmas * std`` of each of ``channels`` (the model's statistics)."""
        index = [list(normalizer.channels).index(c) for c in channels]
        mean = np.asarray(normalizer.mean, dtype=np.float64)[index]
        std = np.asarray(normalizer.std, dtype=np.float64)[index]
        return cls(int(bins), mean - sigmas * std, mean + sigmas * std)


class RunPeriods:
    """The periods of every requested kind of one run, and which month each lead belongs to.

    Parameters
    ----------
    kinds : sequence of str
        Keys of :data:`forecast.periods.PERIOD_KINDS` to write.
    start : datetime64 or cftime
        Valid time of lead 0.
    steps : int
        Steps of the run (leads ``0 .. steps - 1`` are averaged).
    step : datetime.timedelta
    """

    def __init__(self, kinds: Sequence[str], start, steps: int, step):
        self.kinds = tuple(kinds)
        self.steps = int(steps)
        needed = dict.fromkeys([BASE, *self.kinds])
        self.periods: dict[str, list[Period]] = {
            name: run_periods(PERIOD_KINDS[name], start, steps, step) for name in needed
        }
        self.month_of_lead = lead_periods(self.periods[BASE], steps)
        #: for each kind, the index of its period that holds each month
        self.month_parent = {
            name: lead_periods(self.periods[name], steps)[
                [p.first_lead for p in self.periods[BASE]]
            ]
            for name in needed
        }


class BatchReducer:
    """The accumulators of one batch of members over a whole run.

    Parameters
    ----------
    periods : RunPeriods
    shape : tuple of int
        ``(member, channel, lat, lon)`` of the blocks.
    histograms : HistogramSpec, optional
    """

    def __init__(
        self, periods: RunPeriods, shape: tuple[int, ...], histograms: HistogramSpec | None
    ):
        self.periods = periods
        self.shape = tuple(shape)
        self.kinds = [k for k in periods.periods if k != BASE]
        self.month = MeanSum(self.shape)
        self.open_month = -1
        self.sums = {kind: MeanSum(self.shape) for kind in self.kinds}
        self.open = dict.fromkeys(self.kinds, -1)
        self.histogram = (
            Histogram(
                histograms.low,
                histograms.high,
                histograms.bins,
                (self.shape[0], self.shape[1], self.shape[2]),
            )
            if histograms is not None
            else None
        )

    def add(self, lead: int, block: np.ndarray) -> list[Record]:
        """Take the state of ``lead``; return the products it finishes.

        Leads must come in order. Lead ``steps - 1`` is the last averaged
        state: it finishes every open period and the histograms. The state
        of lead ``steps`` (the run's end) is not averaged.
        """
        records: list[Record] = []
        if lead >= self.periods.steps:
            return records
        month = int(self.periods.month_of_lead[lead])
        if month != self.open_month:
            records += self._close_month()
            self.open_month = month
        self.month.add(block)
        if self.histogram is not None:
            self.histogram.add(block)
        if lead == self.periods.steps - 1:
            records += self._close_month()
            for kind in self.kinds:
                records += self._close(kind)
            if self.histogram is not None:
                records.append(
                    Record(
                        "histograms",
                        0,
                        {
                            "counts": self.histogram.counts.copy(),
                            "below": self.histogram.below.copy(),
                            "above": self.histogram.above.copy(),
                        },
                    )
                )
        return records

    def _close_month(self) -> list[Record]:
        records: list[Record] = []
        month = self.open_month
        if month < 0 or self.month.count == 0:
            return records
        if BASE in self.periods.kinds:
            records.append(Record(BASE, month, {"mean": self.month.mean()}))
        for kind in self.kinds:
            parent = int(self.periods.month_parent[kind][month])
            if parent != self.open[kind]:
                records += self._close(kind)
                self.open[kind] = parent
            self.sums[kind].merge(self.month)
        self.month.reset()
        self.open_month = -1
        return records

    def _close(self, kind: str) -> list[Record]:
        total = self.sums[kind]
        if self.open[kind] < 0 or total.count == 0:
            return []
        record = Record(kind, self.open[kind], {"mean": total.mean()})
        total.reset()
        self.open[kind] = -1
        return [record]

    # -- restart ------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """Everything needed to continue after the last lead added (tensors and ints)."""
        state: dict[str, Any] = {
            "month": self.month.state(),
            "open_month": self.open_month,
            "sums": {kind: self.sums[kind].state() for kind in self.kinds},
            "open": dict(self.open),
        }
        if self.histogram is not None:
            state["histogram"] = self.histogram.state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        self.month.load_state(state["month"])
        self.open_month = int(state["open_month"])
        for kind in self.kinds:
            self.sums[kind].load_state(state["sums"][kind])
            self.open[kind] = int(state["open"][kind])
        if self.histogram is not None:
            self.histogram.load_state(state["histogram"])
