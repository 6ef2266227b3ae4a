"""Streaming statistics over a store's data, computed in the same pass that writes it.

- :class:`MomentAccumulator`: area-weighted mean and standard deviation per
  channel, combined block by block with Chan et al.'s parallel update (stable
  in float64, independent of block size up to rounding).
- :class:`ClimatologyAccumulator`: sums by (day of year, hour of day) kept on
  disk in a Zarr array, so memory stays one field per bin touched, then
  smoothed over a window of days into the climatology.
"""

from __future__ import annotations

import numpy as np
import zarr

from forecast.time import day_of_year_and_hour


class MomentAccumulator:
    """Area-weighted mean and (population) standard deviation per channel.

    Every time step counts equally; within a step, points are weighted by
    ``weights`` (per latitude, normalised here to sum to one over the grid).

    Parameters
    ----------
    weights : numpy.ndarray
        Relative area of each latitude row, shape ``(nlat,)``.
    nlon : int
        Number of longitudes.
    """

    def __init__(self, weights: np.ndarray, nlon: int):
        w = np.asarray(weights, dtype=np.float64)
        self._weights = (w / (w.sum() * nlon))[:, None]  # (nlat, 1): sums to 1 over the grid
        self.count = 0
        self.mean: np.ndarray | None = None
        self._m2: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        """Add a block of shape ``(time, channel, lat, lon)``."""
        if block.shape[0] == 0:
            return
        values = block.astype(np.float64, copy=False)
        n_b = values.shape[0]
        field_means = np.einsum("tcyx,yx->tc", values, np.broadcast_to(self._weights, values.shape[-2:]))
        mean_b = field_means.mean(axis=0)
        deviation = values - mean_b[None, :, None, None]
        m2_b = np.einsum("tcyx,yx->c", deviation * deviation, np.broadcast_to(self._weights, values.shape[-2:]))
        if self.mean is None:
            self.count, self.mean, self._m2 = n_b, mean_b, m2_b
            return
        n_a = self.count
        total = n_a + n_b
        delta = mean_b - self.mean
        self.mean = self.mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta * delta * (n_a * n_b / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Standard deviation per channel (population, area-weighted)."""
        if self._m2 is None:
            raise ValueError("no data accumulated")
        return np.sqrt(self._m2 / self.count)


class TendencyAccumulator:
    """Mean/std of one-step differences ``x[t+1] - x[t]``, fed block by block in time order."""

    def __init__(self, weights: np.ndarray, nlon: int):
        self.moments = MomentAccumulator(weights, nlon)
        self._last: np.ndarray | None = None

    def update(self, block: np.ndarray) -> None:
        """Add the next block of consecutive time steps, shape ``(time, channel, lat, lon)``."""
        if block.shape[0] == 0:
            return
        values = block.astype(np.float64, copy=False)
        if self._last is not None:
            values = np.concatenate([self._last[None], values], axis=0)
        if values.shape[0] > 1:
            self.moments.update(np.diff(values, axis=0))
        self._last = values[-1].copy()

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
    """Sums and counts by (day of year, hour), stored in a Zarr array.

    Parameters
    ----------
    group : zarr.Group
        Where the temporary array ``name`` of sums is created.
    hours : sequence of int
        Hours of day present in the data.
    ndays : int
        Number of days of year in the calendar.
    field_shape : tuple of int
        ``(channel, lat, lon)``.
    name : str
        Name of the temporary array of sums.
    """

    def __init__(self, group: zarr.Group, hours, ndays: int, field_shape: tuple[int, int, int], name: str = "climatology_sum"):
        self.hours = np.asarray(sorted(set(int(h) for h in hours)))
        self.ndays = ndays
        self.field_shape = field_shape
        self.counts = np.zeros((ndays, self.hours.size), dtype=np.int64)
        self.group = group
        self.name = name
        self.sums = group.create_array(
            name,
            shape=(ndays, self.hours.size, *field_shape),
            chunks=(1, 1, *field_shape),
            dtype="float64",
            fill_value=0.0,
            compressors=None,
            overwrite=True,
        )

    def update(self, block: np.ndarray, times) -> None:
        """Add a block ``(time, channel, lat, lon)`` with its times."""
        doy, hour = day_of_year_and_hour(times)
        day_index = doy - 1
        hour_index = np.searchsorted(self.hours, hour)
        keys = day_index * self.hours.size + hour_index
        for key in np.unique(keys):
            members = keys == key
            d, h = divmod(int(key), self.hours.size)
            total = block[members].astype(np.float64).sum(axis=0)
            self.sums[d, h] = self.sums[d, h] + total
            self.counts[d, h] += int(members.sum())

    def finalize(self, out: zarr.Array, window_days: int, batch_bytes: int = 64 * 2**20) -> None:
        """Write the mean over a centred window of ``window_days`` days (circular in the year) to ``out``.

        ``out`` has shape ``(ndays, nhours, channel, lat, lon)`` and NaN as its
        fill value: bins with no data in their window are left unwritten (NaN).
        Days are written in batches of about ``batch_bytes``. The temporary
        sums array is deleted.
        """
        half = min(max(window_days, 1) // 2, (self.ndays - 1) // 2)
        field_bytes = 4 * int(np.prod(self.field_shape))
        batch = max(1, batch_bytes // field_bytes)
        for h in range(self.hours.size):
            present = self.counts[:, h] > 0
            running = np.zeros(self.field_shape, dtype=np.float64)
            count = 0
            for offset in range(-half, half + 1):
                d = offset % self.ndays
                if present[d]:
                    running += self.sums[d, h]
                    count += self.counts[d, h]
            pending: list[np.ndarray] = []
            first = 0
            for d in range(self.ndays):
                if count > 0:
                    if not pending:
                        first = d
                    pending.append((running / count).astype(np.float32))
                if pending and (count == 0 or len(pending) == batch or d == self.ndays - 1):
                    out[first : first + len(pending), h] = np.stack(pending)
                    pending = []
                leaving, entering = (d - half) % self.ndays, (d + half + 1) % self.ndays
                if present[leaving]:
                    running -= self.sums[leaving, h]
                    count -= self.counts[leaving, h]
                if present[entering]:
                    running += self.sums[entering, h]
                    count += self.counts[entering, h]
        del self.group[self.name]
