"""Small, exactly mergeable accumulators: sums for means, counts for histograms (climate runs and their scoring).

Both hold sufficient statistics whose merge is an addition: a mean over a
year is the merge of its months' sums; integer histogram counts merge
exactly. Their :meth:`state` is made of tensors and integers only, so that a
restart file holding it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def bin_edges(low: np.ndarray, high: np.ndarray, bins: int) -> np.ndarray:
    """Edges of ``bins`` equally wide bins over ``[low, high]`` per channel: ``(channel, bins + 1)``."""
    fraction = np.linspace(0.0, 1.0, int(bins) + 1)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return low[:, None] + (high - low)[:, None] * fraction[None, :]


class MeanSum:
    """A running float64 sum of fields and how many were added.

    Parameters
    ----------
    shape : tuple of int
        Shape of one field, e.g. ``(member, channel, lat, lon)``.
    """

    def __init__(self, shape: tuple[int, ...]):
        self.total = np.zeros(shape, dtype=np.float64)
        self.count = 0

    def add(self, values: np.ndarray) -> None:
        """Add one field of :attr:`total`'s shape (any float dtype)."""
        np.add(self.total, values, out=self.total)
        self.count += 1

    def add_stack(self, values: np.ndarray) -> None:
        """Add ``len(values)`` fields stacked along the first axis: ``(n, *shape)``."""
        np.add(self.total, np.sum(values, axis=0, dtype=np.float64), out=self.total)
        self.count += len(values)

    def merge(self, other: MeanSum) -> None:
        """Add another sum of the same shape (its fields count as added here)."""
        np.add(self.total, other.total, out=self.total)
        self.count += other.count

    def mean(self, dtype=np.float32) -> np.ndarray:
        """The mean of the fields added, in ``dtype`` (NaN where nothing was added)."""
        if self.count == 0:
            return np.full(self.total.shape, np.nan, dtype=dtype)
        return (self.total / self.count).astype(dtype, copy=False)

    def reset(self) -> None:
        """Forget everything added."""
        self.total.fill(0.0)
        self.count = 0

    def state(self) -> dict[str, Any]:
        """``{"total": tensor, "count": int}`` (for a restart file)."""
        return {"total": torch.from_numpy(self.total.copy()), "count": int(self.count)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        total = state["total"].numpy()
        if total.shape != self.total.shape:
            raise ValueError(
                f"a sum of shape {total.shape} cannot restore one of {self.total.shape}"
            )
        self.total[...] = total
        self.count = int(state["count"])


class Histogram:
    """Counts of values in fixed, equally wide bins per channel, for each member and latitude row.

    Counting per latitude row keeps the counts exact integers while letting
    a reader weight the rows by area (or select a latitude band) afterwards.

    Parameters
    ----------
    low, high : numpy.ndarray
        Shape ``(channel,)``: the range of each channel's bins, physical units.
    bins : int
        Number of bins per channel.
    shape : tuple of int
        ``(member, channel, lat)`` of the counts.

    Attributes
    ----------
    counts : numpy.ndarray
        ``(member, channel, lat, bins)`` int64: values in ``[low + i w, low + (i + 1) w)``
        (the last bin also holds ``high``).
    below, above : numpy.ndarray
        ``(member, channel, lat)`` int64: values under ``low`` and over ``high``.
        Non-finite values are counted nowhere.
    """

    def __init__(self, low: np.ndarray, high: np.ndarray, bins: int, shape: tuple[int, int, int]):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        if bins < 1 or np.any(self.high <= self.low):
            raise ValueError("histograms need at least one bin and high > low for every channel")
        self.bins = int(bins)
        self.counts = np.zeros((*shape, self.bins), dtype=np.int64)
        self.below = np.zeros(shape, dtype=np.int64)
        self.above = np.zeros(shape, dtype=np.int64)

    def edges(self) -> np.ndarray:
        """Bin edges, shape ``(channel, bins + 1)``."""
        return bin_edges(self.low, self.high, self.bins)

    def add(self, block: np.ndarray) -> None:
        """Count one field ``(member, channel, lat, lon)``."""
        members, channels, rows = self.below.shape
        values = np.asarray(block, dtype=np.float64)
        low = self.low[None, :, None, None]
        high = self.high[None, :, None, None]
        position = np.floor((values - low) / (high - low) * self.bins)
        finite = np.isfinite(values)
        under = finite & (values < low)
        over = finite & (values > high)
        inside = finite & ~under & ~over
        index = np.clip(np.nan_to_num(position), 0, self.bins - 1).astype(np.int64)
        row = (np.arange(members * channels * rows).reshape(members, channels, rows, 1)) * self.bins
        flat = (row + index)[inside]
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)
        self.below += under.sum(axis=3)
        self.above += over.sum(axis=3)

    def merge(self, other: Histogram) -> None:
        """Add the counts of another histogram with the same bins."""
        if not (np.array_equal(self.low, other.low) and np.array_equal(self.high, other.high)):
            raise ValueError("histograms with other bins cannot be merged")
        self.counts += other.counts
        self.below += other.below
        self.above += other.above

    def state(self) -> dict[str, Any]:
        """The counts as tensors (for a restart file)."""
        return {
            "counts": torch.from_numpy(self.counts.copy()),
            "below": torch.from_numpy(self.below.copy()),
            "above": torch.from_numpy(self.above.copy()),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state`."""
        for name in ("counts", "below", "above"):
            values = state[name].numpy()
            target = getattr(self, name)
            if values.shape != target.shape:
                raise ValueError(
                    f"histogram {name} of shape {values.shape} cannot restore {target.shape}"
                )
            target[...] = values
