"""Samples for training: windows of history and future targets read chunk-wise from a store.

A *window* starting at time index ``start`` covers the ``history`` input states
``start .. start + history - 1`` followed by ``n_targets`` future states. The
store is never loaded whole: each sample reads its window's time steps (one
Zarr chunk per time step) in the data-loader worker that builds it.

The data order is a pure function of ``(seed, micro_step)``: micro-step ``m``
takes the ``m % batches_per_epoch``-th slice of a permutation drawn from
``numpy.random.default_rng([seed, epoch])``, and each rank of a distributed run
takes its contiguous share of that global batch. Resuming at a step therefore
replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset, Sampler

from forecast.errors import DataError
from forecast.time import format_time, parse_time, time_index

__all__ = [
    "StepBatchSampler",
    "TrainingWindows",
    "WindowDataset",
    "make_loader",
    "split_windows",
]


@dataclass(frozen=True)
class TrainingWindows:
    """Where training samples come from: a store, its times, and the windows of each split.

    Attributes
    ----------
    store_path : str or Path
        The training store.
    times : numpy.ndarray
        Its time coordinate, shape ``(time,)``.
    channel_indices : tuple of int
        Store positions of the model's channels, in the model's order.
    train_starts, val_starts : numpy.ndarray
        Window start indices (see :func:`split_windows`).
    """

    store_path: str | Path
    times: np.ndarray
    channel_indices: tuple[int, ...]
    train_starts: np.ndarray
    val_starts: np.ndarray


def split_windows(
    times,
    window: int,
    val_start: str | None = None,
    val_end: str | None = None,
    val_fraction: float | None = None,
    calendar: str = "standard",
    path: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Start indices of the training and validation windows.

    Parameters
    ----------
    times : array-like
        The store's time coordinate (datetime64 or cftime), regular.
    window : int
        Time steps one sample covers: history plus the most future steps
        any sample needs.
    val_start, val_end : str, optional
        The validation period, inclusive (``"2014-01-01"``). Validation
        windows lie wholly inside it; training windows wholly outside it.
        Either bound may be omitted (the store's start or end).
    val_fraction : float, optional
        Without a period: hold out the last ``val_fraction`` of the times.
    calendar : str
        Calendar in which to parse ``val_start``/``val_end``.
    path : str or Path, optional
        Named in error messages.

    Returns
    -------
    train_starts, val_starts : numpy.ndarray of int64
        Start indices; ``val_starts`` is empty when nothing is held out.

    Raises
    ------
    DataError
        If the store is shorter than one window, the validation period lies
        outside the store, or either side has no complete window.
    """
    index = time_index(times)
    n_time = len(index)
    if n_time < window:
        raise DataError(
            f"store has {n_time} time step(s) but one sample needs {window} (history plus rollout steps)",
            path=path,
            hint="ingest a longer period or lower --rollout-steps / --history",
        )
    starts = np.arange(n_time - window + 1)
    in_val = np.zeros(n_time, dtype=bool)
    if val_start is not None or val_end is not None:
        first = parse_time(val_start, calendar) if val_start is not None else index[0]
        last = parse_time(val_end, calendar) if val_end is not None else index[-1]
        if last < first:
            raise DataError(
                f"validation period {val_start} .. {val_end} ends before it starts", path=path
            )
        if first > index[-1] or last < index[0]:
            raise DataError(
                f"validation period {format_time(first)} .. {format_time(last)} lies outside the store "
                f"({format_time(index[0])} .. {format_time(index[-1])})",
                path=path,
                hint="choose --val-start/--val-end inside the store or use --val-fraction",
            )
        in_val = np.asarray((index >= first) & (index <= last), dtype=bool)
    elif val_fraction:
        if not 0.0 < val_fraction < 1.0:
            raise DataError(f"--val-fraction must lie between 0 and 1, got {val_fraction}")
        n_val = max(int(round(n_time * val_fraction)), window)
        in_val[n_time - n_val :] = True
    if not in_val.any():
        return starts, np.zeros(0, dtype=np.int64)
    # Cumulative counts give, for each window, how many of its times are in validation.
    counts = np.concatenate([[0], np.cumsum(in_val)])
    val_count = counts[starts + window] - counts[starts]
    train_starts = starts[val_count == 0]
    val_starts = starts[val_count == window]
    if len(val_starts) == 0:
        raise DataError(
            f"the validation period holds no complete window of {window} time steps",
            path=path,
            hint="widen the validation period or lower --rollout-steps",
        )
    if len(train_starts) == 0:
        raise DataError(
            "no training window remains outside the validation period",
            path=path,
            hint="shorten the validation period or ingest more data",
        )
    return train_starts.astype(np.int64), val_starts.astype(np.int64)


class WindowDataset(Dataset):
    """Windows of a store's ``data`` array, read lazily with Zarr.

    Items are addressed by ``(start, n_targets)`` pairs (see
    :class:`StepBatchSampler`) and are dicts with

    - ``history``: float32 tensor ``(history, channel, lat, lon)``, physical units;
    - ``targets``: float32 tensor ``(n_targets, channel, lat, lon)``, physical units;
    - ``start``: the time index of the first history state.

    Parameters
    ----------
    path : str or Path
        The training store.
    channel_indices : sequence of int
        Positions in the store's ``channel`` axis, in model order.
    history : int
        Number of input states.
    """

    def __init__(self, path: str | Path, channel_indices: Sequence[int], history: int):
        self.path = str(path)
        self.channel_indices = np.asarray(channel_indices, dtype=np.int64)
        self.history = int(history)
        self._array: Any = None  # opened in each worker on first use
        self._pid: int | None = None  # the process that opened it (a forked worker reopens it)
        self._contiguous = bool(
            np.array_equal(self.channel_indices, np.arange(len(self.channel_indices)))
        )

    def _data(self) -> Any:
        if self._array is None or self._pid != os.getpid():
            # a forked loader worker must not reuse the parent's object-storage
            # client (its event-loop thread does not exist in the child)
            import zarr

            from forecast import storage

            store = storage.zarr_store(self.path, read_only=True)
            self._array = zarr.open_array(store, path="data", mode="r")
            self._pid = os.getpid()
        return self._array

    def read(self, start: int, length: int) -> np.ndarray:
        """Time steps ``start .. start + length - 1``: float32 ``(length, channel, lat, lon)``."""
        array = self._data()
        if self._contiguous:
            block = array[start : start + length, : len(self.channel_indices)]
        else:
            block = array[start : start + length][:, self.channel_indices]
        return np.ascontiguousarray(block, dtype=np.float32)

    def __getitem__(self, item: tuple[int, int]) -> dict[str, torch.Tensor | int]:
        start, n_targets = int(item[0]), int(item[1])
        block = torch.from_numpy(self.read(start, self.history + n_targets))
        return {"history": block[: self.history], "targets": block[self.history :], "start": start}

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_array"] = None
        return state


class StepBatchSampler(Sampler):
    """Batches of ``(start, n_targets)`` for micro-steps ``first .. first + count - 1``.

    Parameters
    ----------
    starts : numpy.ndarray
        Training window start indices.
    global_batch : int
        Samples per micro-step over all ranks.
    seed : int
        Seed of the shuffling.
    first_micro_step, n_micro_steps : int
        The micro-steps to yield (a resumed run starts mid-way).
    targets_of_micro_step : callable
        ``n_targets = f(micro_step)`` (the rollout curriculum).
    rank, world_size : int
        This process's share of each global batch.
    """

    def __init__(
        self,
        starts: np.ndarray,
        global_batch: int,
        seed: int,
        first_micro_step: int,
        n_micro_steps: int,
        targets_of_micro_step: Callable[[int], int],
        rank: int = 0,
        world_size: int = 1,
    ):
        if global_batch % world_size:
            raise ValueError(
                f"global batch {global_batch} is not divisible by {world_size} processes"
            )
        if len(starts) < global_batch:
            raise DataError(
                f"only {len(starts)} training window(s) for a global batch of {global_batch}",
                hint="lower --batch-size or ingest more data",
            )
        self.starts = np.asarray(starts)
        self.global_batch = global_batch
        self.seed = seed
        self.first = first_micro_step
        self.count = n_micro_steps
        self.targets_of_micro_step = targets_of_micro_step
        self.rank = rank
        self.local_batch = global_batch // world_size
        self.batches_per_epoch = len(self.starts) // global_batch

    def global_indices(self, micro_step: int) -> np.ndarray:
        """Window starts of the whole global batch of ``micro_step``."""
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))
        return self.starts[order[position * self.global_batch : (position + 1) * self.global_batch]]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for micro_step in range(self.first, self.first + self.count):
            chosen = self.global_indices(micro_step)[
                self.rank * self.local_batch : (self.rank + 1) * self.local_batch
            ]
            n_targets = int(self.targets_of_micro_step(micro_step))
            yield [(int(start), n_targets) for start in chosen]

    def __len__(self) -> int:
        return self.count


def make_loader(
    dataset: Dataset,
    batch_sampler: Sampler | Sequence,
    workers: int = 2,
    prefetch: int = 4,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader with worker processes and prefetch over ``batch_sampler``.

    Parameters
    ----------
    dataset : WindowDataset
    batch_sampler : iterable of lists of ``(start, n_targets)``
    workers : int
        Worker processes (0: read in the calling process).
    prefetch : int
        Batches each worker prepares ahead.
    pin_memory : bool
        Pin host memory (for a CUDA device).
    """
    options: dict[str, Any] = {"num_workers": workers, "pin_memory": pin_memory}
    if workers > 0:
        options["prefetch_factor"] = prefetch
    return DataLoader(dataset, batch_sampler=batch_sampler, **options)


def validation_batches(
    starts: np.ndarray, n_targets: int, batch_size: int, max_samples: int | None = None
) -> list[list[tuple[int, int]]]:
    """Batches of validation windows, evenly thinned to at most ``max_samples``."""
    starts = np.asarray(starts)
    if max_samples is not None and len(starts) > max_samples:
        starts = starts[np.linspace(0, len(starts) - 1, max_samples).round().astype(np.int64)]
    items = [(int(s), n_targets) for s in starts]
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]


def store_times(ds: xr.Dataset) -> np.ndarray:
    """The decoded time coordinate of a store as a numpy array."""
    return np.asarray(ds["time"].values)
