"""Streaming statistics over a store's data, computed in the same pass that writes it.

- :class:`MomentAccumulator`: area-weighted mean and standard deviation per
  channel. Each block contributes per-time-step weighted first and second
  moments of the centred values (two matrix-vector products); the total
  variance is the mean within-field variance plus the variance of the field
  means, which is exact and independent of how the data are split into blocks.
- :class:`TendencyAccumulator`: the same for one-step differences.
- :class:`ClimatologyAccumulator`: sums by (day of year, hour of day) kept in
  a temporary raw float32 file (positional reads and writes of one field per
  bin: the page cache holds them, not the process), so memory stays one field
  per bin touched, then smoothed over a window of days into the climatology at
  the days of year that have data. Sums are float32 (relative error about 1e-7
  times the number of years), the smoothing runs in float64.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from forecast.time import day_of_year_and_hour


class MomentAccumulator:
    """Area-weighted mean and (population) standard deviation per channel.

    Every time step counts equally; within a step, points are weighted by
    ``weights`` (per latitude, normalised here to sum to one over the grid).
    Values are centred on a per-channel reference (the first field's mean)
    before the float32 reductions, so that squaring does not lose the
    variance to cancellation; steps are combined in float64. Relative
    accuracy is about 1e-6. Centring and squaring work in one reusable
    block-sized buffer (no fresh allocation per block).

    Parameters
    ----------
    weights : numpy.ndarray
        Relative area of each latitude row, shape ``(nlat,)``.
    nlon : int
        Number of longitudes.
    """

    def __init__(self, weights: np.ndarray, nlon: int):
        w = np.asarray(weights, dtype=np.float64)
        self._weights = np.repeat(w / (w.sum() * nlon), nlon).astype(np.float32)  # (lat*lon,), sums to 1
        self.count = 0
        self._reference: np.ndarray | None = None  # (channel,), float32
        self._means: list[np.ndarray] = []  # centred field means per step, (time, channel) float64
        self._sum_var = None  # sum over steps of within-field variances, (channel,)
        self._scratch = np.empty(0, dtype=np.float32)  # reused between blocks: no fresh pages per block
        #: Centred field means ``(time, channel)`` of the last block added: non-finite where a
        #: field holds a NaN or inf.
        self.latest_means = np.zeros((0, 0))

    def scratch(self, size: int) -> np.ndarray:
        """A reusable float32 buffer of at least ``size`` elements (flat)."""
        if self._scratch.size < size:
            self._scratch = np.empty(size, dtype=np.float32)
        return self._scratch[:size]

    def update(self, block: np.ndarray) -> None:
        """Add a block of shape ``(time, channel, lat, lon)``."""
        if block.shape[0] == 0:
            return
        nt, nc = block.shape[:2]
        values = block.reshape(nt, nc, -1).astype(np.float32, copy=False)
        if self._reference is None:
            self._reference = (values[0] @ self._weights).astype(np.float32)
        if not np.may_share_memory(values, self._scratch):  # a bounds check; exact here
            work = self.scratch(values.size).reshape(values.shape)
            np.subtract(values, self._reference[None, :, None], out=work)
        else:  # the caller's differences already sit in the scratch buffer: centre them in place
            work = values
            work -= self._reference[None, :, None]
        centred = work.reshape(nt * nc, -1)
        first = (centred @ self._weights).astype(np.float64).reshape(nt, nc)
        np.square(centred, out=centred)
        second = (centred @ self._weights).astype(np.float64).reshape(nt, nc)
        self._means.append(first)
        self.latest_means = first
        variance = np.maximum(second - first * first, 0.0).sum(axis=0)
        self._sum_var = variance if self._sum_var is None else self._sum_var + variance
        self.count += nt

    @property
    def mean(self) -> np.ndarray:
        """Mean per channel."""
        if not self._means:
            raise ValueError("no data accumulated")
        return np.concatenate(self._means).mean(axis=0) + self._reference.astype(np.float64)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation per channel (population, area-weighted)."""
        if not self._means:
            raise ValueError("no data accumulated")
        means = np.concatenate(self._means)
        spread = np.square(means - means.mean(axis=0)).sum(axis=0)
        return np.sqrt((self._sum_var + spread) / self.count)


class TendencyAccumulator:
    """Mean/std of one-step differences ``x[t+1] - x[t]``, fed block by block in time order."""

    def __init__(self, weights: np.ndarray, nlon: int):
        self.moments = MomentAccumulator(weights, nlon)
        self._last: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        """Add the next block of consecutive time steps, shape ``(time, channel, lat, lon)``."""
        if block.shape[0] == 0:
            return
        if self._last is not None:
            self.moments.update(block[:1] - self._last[None])
        if block.shape[0] > 1:
            differences = self.moments.scratch(block[1:].size).reshape(block[1:].shape)
            np.subtract(block[1:], block[:-1], out=differences)
            self.moments.update(differences)
        self._last = block[-1].copy()

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of one-step tendencies per channel (NaN from a single time step)."""
        if self.moments.count == 0 and self._last is not None:
            return np.full(self._last.shape[0], np.nan)
        return self.moments.std


def days_in_calendar_year(calendar: str) -> int:
    """Largest day of year in a calendar (360, 365 or 366)."""
    return {"360_day": 360, "noleap": 365}.get(calendar, 366)


class ClimatologyAccumulator:
    """Sums and counts by (day of year, hour), stored in a temporary raw file.

    Parameters
    ----------
    directory : Path
        Where the temporary file ``.{name}.f32`` of sums is created (the store
        being written); :meth:`finalize` deletes it.
    hours : sequence of int
        Hours of day present in the data.
    ndays : int
        Number of days of year in the calendar.
    field_shape : tuple of int
        ``(channel, lat, lon)``.
    name : str
        Stem of the temporary file of sums.
    """

    def __init__(self, directory: Path, hours, ndays: int, field_shape: tuple[int, int, int], name: str = "climatology_sum"):
        self.hours = np.asarray(sorted(set(int(h) for h in hours)))
        self.ndays = ndays
        self.field_shape = field_shape
        self.counts = np.zeros((ndays, self.hours.size), dtype=np.int64)
        self._field_bytes = 4 * int(np.prod(field_shape))
        self.path = Path(directory) / f".{name}.f32"
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)

    def _offset(self, d: int, h: int) -> int:
        return (d * self.hours.size + h) * self._field_bytes

    def _read(self, d: int, h: int, into: np.ndarray | None = None) -> np.ndarray:
        """The sum of bin (day index ``d``, hour index ``h``), float32 (thread-safe: positional read).

        ``into`` (float32, C-contiguous, of the field's shape) receives it when given: a
        reused buffer spares a fresh allocation, and its page faults, per read.
        """
        if into is None:
            into = np.empty(self.field_shape, dtype=np.float32)
        if os.preadv(self._fd, [memoryview(into).cast("B")], self._offset(d, h)) != self._field_bytes:
            raise OSError(f"short read of {self.path} at bin ({d}, {h})")
        return into

    def _write(self, d: int, h: int, total: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(total, dtype=np.float32)).cast("B")
        written = os.pwrite(self._fd, data, self._offset(d, h))
        if written != self._field_bytes:
            raise OSError(f"short write to {self.path} at bin ({d}, {h}) (is the disk full?)")

    def update(self, block: np.ndarray, times) -> None:
        """Add a block ``(time, channel, lat, lon)`` with its times."""
        doy, hour = day_of_year_and_hour(times)
        keys = (doy - 1) * self.hours.size + np.searchsorted(self.hours, hour)
        for key in np.unique(keys):
            members = np.flatnonzero(keys == key)
            d, h = divmod(int(key), self.hours.size)
            total = block[members[0]] if members.size == 1 else block[members].sum(axis=0, dtype=np.float64)
            if self.counts[d, h]:
                total = total + self._read(d, h)
            self._write(d, h, total)
            self.counts[d, h] += members.size

    def finalize(
        self,
        out: zarr.Array,
        window_days: int,
        batch_bytes: int = 64 * 2**20,
        on_written: Callable[[int], None] | None = None,
    ) -> None:
        """Write the window mean at each (day, hour) bin that has data to ``out``.

        The mean is over a centred window of ``window_days`` days, circular
        in the year. ``out`` has shape ``(ndays, nhours, channel, lat, lon)``
        and NaN as its fill value: bins without data of their own stay NaN
        (:func:`forecast.store.climatology_at` then takes the nearest day
        that has a value). Each bin's sums are read at most twice. The
        temporary file of sums is deleted. Consecutive days are written
        together, in batches of about ``batch_bytes``; ``on_written(n)`` is
        called after each batch of ``n`` (day, hour) fields (for a progress bar;
        from worker threads).
        """
        half = min(max(window_days, 1) // 2, (self.ndays - 1) // 2)
        batch = max(1, batch_bytes // self._field_bytes)
        try:
            with ThreadPoolExecutor(max_workers=min(2, self.hours.size)) as pool:  # hours are independent
                for future in [pool.submit(self._smooth_hour, out, h, half, batch, on_written) for h in range(self.hours.size)]:
                    future.result()
        finally:
            self.close()

    def close(self) -> None:
        """Delete the temporary file of sums (idempotent)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)

    @property
    def bins_with_data(self) -> int:
        """Number of (day, hour) bins that have data: the fields :meth:`finalize` writes."""
        return int(np.count_nonzero(self.counts))

    def _smooth_hour(self, out: zarr.Array, h: int, half: int, batch: int, on_written) -> None:
        """Write the window means of hour index ``h`` at the days that have data."""
        present = self.counts[:, h] > 0
        if not present.any():
            return
        field = np.empty(self.field_shape, dtype=np.float32)  # one read buffer, reused
        running = np.zeros(self.field_shape, dtype=np.float64)
        count = 0
        for offset in range(-half, half + 1):
            d = offset % self.ndays
            if present[d]:
                running += self._read(d, h, into=field)
                count += self.counts[d, h]
        pending = np.empty((min(batch, int(present.sum())), *self.field_shape), dtype=np.float32)
        filled = 0
        for d in range(self.ndays):
            if present[d]:
                np.multiply(running, 1.0 / count, out=pending[filled], casting="same_kind")
                filled += 1
            if filled and (not present[d] or d == self.ndays - 1 or filled == len(pending)):
                last = d if present[d] else d - 1
                out[last - filled + 1 : last + 1, h] = pending[:filled]
                if on_written is not None:
                    on_written(filled)
                filled = 0
            leaving, entering = (d - half) % self.ndays, (d + half + 1) % self.ndays
            if present[leaving]:
                running -= self._read(leaving, h, into=field)
                count -= self.counts[leaving, h]
            if present[entering]:
                running += self._read(entering, h, into=field)
                count += self.counts[entering, h]
