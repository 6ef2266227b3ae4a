"""The store's statistics as Dask reductions whose partial results merge exactly.

- **Moments** (:func:`moment_partial`, :func:`merge_moments`): per channel,
  a block of time steps gives ``(count, mean, M2)`` of the area-weighted
  field means and within-field variances; partials merge with the pairwise
  formula of Chan, Golub and LeVeque (1979), so the result does not depend
  on how the time axis is cut, nor on the order of merging (up to float64
  rounding). Every time step counts equally; within a step points are
  weighted by area. The standard deviation is ``sqrt(M2 / count)``.
- **Tendencies** (:func:`tendency_partial`): the same moments of one-step
  differences ``x[t] - x[t-1]``; a block also gets the last step of the block
  before it, so the differences across block edges are counted once.
- **Climatology** (:class:`ClimatologyPlan`): a grouped mean by (day of
  year, hour of day), each bin's mean (:func:`bin_mean`) from its own steps
  (one per year, read back from the written store, so no partial result
  waits in memory for the next year), written bin by bin to a temporary
  array, then smoothed over a centred window of days (circular over the
  year) by a running sum over each hour's days (:func:`window_means`).

Each field is centred on a reference of its own (the mean of a fixed sample
of its points) before the float32 products, so that squaring does not lose
the variance to cancellation and a step's products do not depend on the
block it came in; partials are float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from forecast.time import day_of_year_and_hour

#: Bytes of the pieces the moment partials work through at a time (CPU-cache sized).
PIECE_BYTES = 4 * 2**20

#: Days in the climatology's smoothing window unless a store or a user says otherwise.
WINDOW_DAYS = 31

#: Points of each field averaged for the reference that centres it.
REFERENCE_POINTS = 64


def piece_steps(step_bytes: int) -> int:
    """Time steps in one piece of about :data:`PIECE_BYTES` (at least one)."""
    return max(1, PIECE_BYTES // max(1, step_bytes))


def area_weights(weights: np.ndarray, nlon: int) -> np.ndarray:
    """Flat float32 point weights ``(lat*lon,)`` summing to one, from per-row ``weights`` ``(lat,)``."""
    w = np.asarray(weights, dtype=np.float64)
    return np.repeat(w / (w.sum() * nlon), nlon).astype(np.float32)


def one_blas_thread():
    """Hold BLAS to one thread: its threaded products round differently, and a worker's threads would make
    the statistics differ in the last bit from one scheduler to another (and busy-wait between products)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def field_moments(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted means and within-field variances of each field, float64.

    Parameters
    ----------
    values : numpy.ndarray
        ``(time, channel, lat, lon)``, any float dtype.
    weights : numpy.ndarray
        ``(lat*lon,)`` float32 summing to one (:func:`area_weights`).

    Returns
    -------
    means, variances : numpy.ndarray
        ``(time, channel)`` each; a non-finite value makes its field's mean non-finite.
    """
    nt, nc = values.shape[:2]
    flat = values.reshape(nt, nc, -1)
    # each field is centred on the mean of a fixed sample of its own points: the float32
    # products of a step then do not depend on the block it came in
    stride = max(1, flat.shape[-1] // REFERENCE_POINTS)
    reference = (
        flat[:, :, ::stride].mean(axis=-1, dtype=np.float64).astype(np.float32)
    )  # (time, channel)
    rows = piece_steps(flat[0].size * 4)
    scratch = np.empty((min(rows, nt), nc, flat.shape[-1]), dtype=np.float32)
    first = np.empty((nt, nc), dtype=np.float64)
    second = np.empty((nt, nc), dtype=np.float64)
    for start in range(0, nt, rows):  # pieces that stay in the CPU cache through the four passes
        piece = flat[start : start + rows]
        work = scratch[: len(piece)]
        np.subtract(
            piece, reference[start : start + len(piece), :, None], out=work, casting="unsafe"
        )
        centred = work.reshape(-1, work.shape[-1])
        first[start : start + len(piece)] = (centred @ weights).reshape(len(piece), nc)
        np.square(centred, out=centred)
        second[start : start + len(piece)] = (centred @ weights).reshape(len(piece), nc)
    variances = np.maximum(second - first * first, 0.0)
    return first + reference.astype(np.float64), variances


@dataclass(frozen=True)
class Moments:
    """Mergeable moments per channel: ``count`` time steps, ``mean`` and ``m2``, each ``(channel,)`` float64.

    ``m2`` is the sum over steps of the within-field variance plus the squared
    departure of the field mean from ``mean``; ``std = sqrt(m2 / count)``.
    """

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel (NaN without data)."""
        if self.count == 0:
            return np.full_like(self.mean, np.nan)
        return np.sqrt(self.m2 / self.count)


def moments_of(means: np.ndarray, variances: np.ndarray) -> Moments:
    """The :class:`Moments` of fields with these ``(time, channel)`` means and variances."""
    if means.shape[0] == 0:
        return Moments(0, np.zeros(means.shape[1]), np.zeros(means.shape[1]))
    mean = means.mean(axis=0)
    m2 = variances.sum(axis=0) + np.square(means - mean).sum(axis=0)
    return Moments(int(means.shape[0]), mean, m2)


def merge_moments(*parts: Moments) -> Moments:
    """Merge partial moments exactly (Chan et al.): the moments of all their steps together."""
    parts = tuple(p for p in parts if p.count)
    if not parts:
        raise ValueError("no data to merge")
    total = parts[0]
    for part in parts[1:]:
        count = total.count + part.count
        delta = part.mean - total.mean
        mean = total.mean + delta * (part.count / count)
        m2 = total.m2 + part.m2 + delta * delta * (total.count * part.count / count)
        total = Moments(count, mean, m2)
    return total


def moment_partial(
    block: np.ndarray,
    weights: np.ndarray,
    check: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> Moments:
    """The :class:`Moments` of a block ``(time, channel, lat, lon)``; ``check(means, block)`` may reject non-finite fields."""
    with one_blas_thread():
        means, variances = field_moments(block, weights)
    if check is not None:
        check(means, block)
    return moments_of(means, variances)


def last_step(block: np.ndarray) -> np.ndarray:
    """The last time step of a block, ``(channel, lat, lon)`` (a copy: it travels to the next block's task)."""
    return np.array(block[-1])


def tendency_partial(
    block: np.ndarray, previous: np.ndarray | None, weights: np.ndarray
) -> Moments:
    """Moments of the one-step differences within ``block`` and from ``previous`` (the step before it) to its first."""
    with one_blas_thread():
        return _tendency_partial(block, previous, weights)


def _tendency_partial(
    block: np.ndarray, previous: np.ndarray | None, weights: np.ndarray
) -> Moments:
    parts = []
    if previous is not None:
        parts.append(moments_of(*field_moments((block[:1] - previous[None]), weights)))
    rows = piece_steps(block[0].nbytes)
    for start in range(1, block.shape[0], rows):
        stop = min(start + rows, block.shape[0])
        parts.append(
            moments_of(*field_moments(block[start:stop] - block[start - 1 : stop - 1], weights))
        )
    if not parts:
        return Moments(0, np.zeros(block.shape[1]), np.zeros(block.shape[1]))
    return merge_moments(*parts) if any(p.count for p in parts) else parts[0]


def days_in_calendar_year(calendar: str) -> int:
    """Largest day of year in a calendar (360, 365 or 366)."""
    return {"360_day": 360, "noleap": 365}.get(calendar, 366)


class ClimatologyPlan:
    """Which time steps fall in which (day of year, hour) bin, and the window that smooths them.

    Parameters
    ----------
    times : array of datetime64 or cftime
        Every time step of the statistics period, in order.
    hours : sequence of int
        Hours of day of the climatology (the store's ``hour`` coordinate).
    ndays : int
        Days of year in the calendar.
    window_days : int
        Width of the centred window of days (circular over the year).
    """

    def __init__(self, times, hours, ndays: int, window_days: int):
        self.hours = np.asarray(sorted(set(int(h) for h in hours)))
        self.ndays = ndays
        doy, hour = day_of_year_and_hour(times)
        self.day = np.asarray(doy, dtype=np.int64) - 1
        self.hour = np.searchsorted(self.hours, np.asarray(hour))
        self.counts = np.zeros((ndays, self.hours.size), dtype=np.int64)
        np.add.at(self.counts, (self.day, self.hour), 1)
        self.half = min(max(int(window_days), 1) // 2, (ndays - 1) // 2)

    def bins(self) -> dict[tuple[int, int], np.ndarray]:
        """Bin ``(day index, hour index)`` -> time indices of its steps, in time order (bins with steps only)."""
        flat = self.day * self.hours.size + self.hour
        order = np.argsort(flat, kind="stable")
        groups = np.split(order, np.flatnonzero(np.diff(flat[order])) + 1)
        return {divmod(int(flat[group[0]]), int(self.hours.size)): group for group in groups}

    @property
    def days_with_data(self) -> np.ndarray:
        """Day indices (0-based) that have data at some hour."""
        return np.flatnonzero(self.counts.any(axis=1))

    def window(self, day: int) -> list[int]:
        """Day indices in the window centred on ``day`` (circular)."""
        return [(day + offset) % self.ndays for offset in range(-self.half, self.half + 1)]

    def segments(self, hour: int, days_per_task: int) -> list[list[int]]:
        """Runs of at most ``days_per_task`` consecutive days with data at ``hour``: one smoothing task each."""
        present = np.flatnonzero(self.counts[:, hour] > 0)
        runs: list[list[int]] = []
        for day in present.tolist():
            if runs and runs[-1][-1] == day - 1 and len(runs[-1]) < days_per_task:
                runs[-1].append(day)
            else:
                runs.append([day])
        return runs


def bin_mean(read: Callable[[int], np.ndarray], steps: Sequence[int]) -> np.ndarray:
    """Mean of the fields ``read(step)`` over ``steps`` (one bin), summed in float64 and rounded to float32 once.

    ``read`` may return the same buffer every time: memory is one float64
    sum and what ``read`` holds, however many years the bin spans.
    """
    total: np.ndarray | None = None
    for step in steps:
        field = read(step)
        if total is None:
            total = np.array(field, dtype=np.float64)
        else:
            total += field
    if total is None:
        raise ValueError("a bin without steps")
    mean = np.empty(total.shape, dtype=np.float32)
    np.divide(total, np.float64(len(steps)), out=mean, casting="same_kind")
    return mean


def window_means(
    read: Callable[[int], np.ndarray],
    counts: np.ndarray,
    days: list[int],
    plan: ClimatologyPlan,
) -> Iterator[np.ndarray]:
    """Window means at ``days`` (consecutive, one hour) from bin means read one day at a time.

    ``read(day)`` gives a day's bin mean ``(channel, lat, lon)`` float32; it
    may return the same buffer every time. ``counts`` are that hour's counts
    per day. A float64 running sum of ``count * mean`` moves through the
    days: each day's mean is read once entering the window and once leaving
    it, and each result is rounded to float32 once.

    Yields
    ------
    numpy.ndarray
        Each day's mean ``(channel, lat, lon)`` float32, in one buffer that
        the next day overwrites (copy it to keep it): memory stays a few
        fields however many days a call smooths.
    """
    running: np.ndarray | None = None
    total = 0

    def add(day: int, sign: int) -> None:
        nonlocal running, total
        field = read(day)
        if running is None:
            running = np.zeros(field.shape, dtype=np.float64)
        weight = sign * int(counts[day])
        if weight == 1:
            running += field
        elif weight == -1:
            running -= field
        else:
            running += np.float64(weight) * field
        total += weight

    for day in plan.window(days[0]):
        if counts[day]:
            add(day, 1)
    assert running is not None, "the window holds at least one counted day"
    out = np.empty(running.shape, dtype=np.float32)
    for i, day in enumerate(days):
        np.divide(running, np.float64(total), out=out, casting="same_kind")  # rounded once
        yield out
        if i + 1 == len(days):
            break
        leaving, entering = (day - plan.half) % plan.ndays, (day + plan.half + 1) % plan.ndays
        if counts[leaving]:
            add(leaving, -1)
        if counts[entering]:
            add(entering, 1)
