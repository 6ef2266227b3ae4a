"""The :class:`Writer` protocol of forecast outputs, a base class, and the background thread that runs them.

A writer receives the empty output from :func:`inference.writers.layout.forecast_template`
(coordinates, attributes, one NaN placeholder per channel with its chunking in
``encoding``) and then blocks of members, one lead time at a time. A new
output format (or a writer that reduces as it goes, e.g. monthly means) is a
class with these methods and a suffix in :data:`inference.writers.WRITERS`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import xarray as xr


@runtime_checkable
class Writer(Protocol):
    """What :func:`inference.ensemble.run_forecast` needs of an output.

    Attributes
    ----------
    path : Path
        The final output path (the lock and the manifest sit beside it).
    suffix : str
        File suffix of the format (``".zarr"``).
    resumable : bool
        Whether an interrupted run can continue into the existing output
        (then :meth:`resume` and :meth:`read` work).
    parallel : bool
        Whether several processes may write their own regions of one output.
    stateful : bool
        Whether the writer holds state in memory between leads (accumulators
        of a climate run): a resumed run then restarts from restart files
        that keep :meth:`snapshot`, not from the output.
    compression : str
        The codec of the forecast variables (``zstd``, ``deflate`` or ``none``).
    """

    path: Path
    suffix: str
    resumable: bool
    parallel: bool
    stateful: bool
    compression: str

    def create(self, template: xr.Dataset) -> None:
        """Start a new output (replacing any unfinished one) from an empty template."""
        ...

    def resume(self, template: xr.Dataset) -> None:
        """Open an existing unfinished output for more writing; it must match ``template``."""
        ...

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        """Write ``block`` of shape ``(member, channel, lat, lon)`` at one init and lead time."""
        ...

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        """Read back shape ``(member, channel, lat, lon)`` (to resume a rollout)."""
        ...

    def finish(self) -> None:
        """Make the output final (flush, close, rename into place)."""
        ...

    def close(self) -> None:
        """Release files without making the output final."""
        ...

    def exists(self) -> bool:
        """Whether the output (or part of it) is there."""
        ...

    def snapshot(self, member_start: int) -> dict[str, Any]:
        """In-memory state of the batch of members from ``member_start`` (tensors and numbers)."""
        ...

    def restore(self, member_start: int, member_stop: int, state: dict[str, Any]) -> None:
        """Continue the batch ``member_start:member_stop`` from a :meth:`snapshot`."""
        ...


class ForecastWriter:
    """Writes a forecast in the layout of :mod:`inference.writers.layout`, one block at a time.

    Parameters
    ----------
    path : Path
        The final output path.

    Notes
    -----
    A base class for :class:`Writer` implementations. Subclasses implement :meth:`create`, :meth:`write`, :meth:`finish` and,
    when they can resume, :meth:`resume` and :meth:`read`. All calls after
    :meth:`create` may come from one background thread.
    """

    #: File suffix that selects this writer.
    suffix = ""
    #: Whether an interrupted run can continue into the existing output.
    resumable = False
    #: Whether several processes may write their own regions of one output.
    parallel = False
    #: Whether the writer keeps state between leads (see :class:`Writer`).
    stateful = False
    #: The codec of the forecast variables (resolved by subclasses that compress).
    compression = "none"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.channels: list[str] = []

    def create(self, template: xr.Dataset) -> None:
        """Start a new output (replacing any unfinished one) from an empty template."""
        raise NotImplementedError

    def resume(self, template: xr.Dataset) -> None:
        """Open an existing unfinished output for more writing; it must match ``template``."""
        raise NotImplementedError

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        """Write ``block`` of shape ``(member, channel, lat, lon)`` at one init and lead time."""
        raise NotImplementedError

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        """Read back shape ``(member, channel, lat, lon)`` (to resume a rollout)."""
        raise NotImplementedError

    def finish(self) -> None:
        """Make the output final (flush, close, rename into place)."""

    def close(self) -> None:
        """Release files without making the output final."""

    def exists(self) -> bool:
        """Whether the output is there."""
        return self.path.exists()

    def snapshot(self, member_start: int) -> dict[str, Any]:
        """No in-memory state: an empty dict."""
        return {}

    def restore(self, member_start: int, member_stop: int, state: dict[str, Any]) -> None:
        """Nothing to restore."""


class BackgroundWriter:
    """Runs write jobs on one thread, in order, so that writing overlaps the next compute.

    At most ``max_pending`` jobs wait; :meth:`submit` blocks beyond that, so
    memory does not grow with the number of lead times. An exception in a job
    is raised again by the next :meth:`submit` or by :meth:`close`.

    Parameters
    ----------
    max_pending : int
        Queue length.
    """

    def __init__(self, max_pending: int = 2):
        self._queue: queue.Queue = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self.busy_seconds = 0.0
        self._thread = threading.Thread(target=self._loop, name="forecast-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import time

        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._error is not None:
                continue
            function, args = job
            start = time.perf_counter()
            try:
                function(*args)
            except BaseException as err:  # re-raised in the main thread
                self._error = err
            self.busy_seconds += time.perf_counter() - start

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue ``function(*args)``; raises the error of an earlier job, if any."""
        self._raise()
        self._queue.put((function, args))

    def close(self) -> None:
        """Wait for the queued jobs to finish; raises the first error of any job."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
