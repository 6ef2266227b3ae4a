"""``forecast ingest``: sources -> one training store, in a single pass over the data.

The pass reads the sources lazily with Dask, maps variables to channels,
regrids, and then, block of time steps by block, computes the block on the
chosen Dask scheduler, checks it for NaNs, writes it to the store and feeds
the statistics and climatology accumulators. The data are read exactly once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time as wallclock
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array
import dask.local
import dask.multiprocessing
import dask.threaded
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from forecast import __version__
from forecast.errors import CalendarError, DataError, GridError
from forecast.grid import Grid
from forecast.regrid import Regridder, regrid_dataarray
from forecast.store import STORE_FORMAT_VERSION, open_store, store_channels, store_grid, store_step
from forecast.time import (
    canonical_calendar,
    check_regular,
    format_step,
    format_time,
    parse_step,
    parse_time,
    time_calendar,
    time_index,
)
from pipelines import writer
from pipelines.lexicon import select_channels
from pipelines.sources import combine, file_for_time, open_sources
from pipelines.statistics import (
    ClimatologyAccumulator,
    MomentAccumulator,
    TendencyAccumulator,
    days_in_calendar_year,
)

#: Target size in bytes of one block of time steps computed at once.
BLOCK_BYTES = 64 * 2**20


@dataclass
class IngestReport:
    """What an ingest did: where, how much, how long."""

    store: Path
    channels: list[str]
    grid: str
    times: int
    first_time: str
    last_time: str
    step: str
    calendar: str
    regrid_method: str
    appended: bool
    seconds: float
    sources: list[str] = field(default_factory=list)


@contextlib.contextmanager
def dask_scheduler(scheduler: str) -> Iterator[None]:
    """Run the enclosed Dask computations on ``threads``, ``processes``, ``synchronous`` or a ``tcp://`` address."""
    if scheduler in ("threads", "processes", "synchronous"):
        # the scheduler's function, not its name: a name makes every compute look for a
        # dask.distributed client first, and importing distributed for that takes 0.3 s
        get = {"threads": dask.threaded.get, "processes": dask.multiprocessing.get, "synchronous": dask.local.get_sync}[scheduler]
        with dask.config.set(scheduler=get):
            yield
        return
    if scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s", set_as_default=False)
        except OSError as err:
            raise DataError(f"cannot reach the Dask scheduler at {scheduler} ({err})", hint="start it with 'dask scheduler' or check the address") from None
        try:
            with dask.config.set(scheduler=client.get):
                yield
        finally:
            client.close()
        return
    raise DataError(f"unknown scheduler {scheduler!r}", hint="use threads, processes, synchronous or tcp://HOST:PORT")


def _select_times(data: xr.DataArray, start, end, step: dt.timedelta | None, calendar: str, spans) -> tuple[xr.DataArray, dt.timedelta]:
    index = time_index(data["time"].values)
    if not index.is_monotonic_increasing or index.has_duplicates:
        order = np.argsort(np.asarray(index), kind="stable")
        data = data.isel(time=order)
        index = time_index(data["time"].values)
        if index.has_duplicates:
            raise CalendarError("the sources repeat time(s) with different values", path=file_for_time(spans, index[index.duplicated()][0]))
    keep = np.ones(len(index), dtype=bool)
    if start is not None:
        keep &= np.asarray(index >= parse_time(start, calendar) if isinstance(start, str) else index >= start)
    if end is not None:
        keep &= np.asarray(index <= parse_time(end, calendar) if isinstance(end, str) else index <= end)
    if not keep.any():
        raise DataError(
            f"no times between {start or 'the start'} and {end or 'the end'} (the sources cover {format_time(index[0])} to {format_time(index[-1])})",
            hint="adjust --start/--end",
        )
    data = data.isel(time=np.flatnonzero(keep))
    index = time_index(data["time"].values)
    if step is None:
        if len(index) < 2:
            raise CalendarError("cannot infer the time step from a single time", hint="pass --step")
        step = pd.Timedelta(index[1] - index[0]).to_pytimedelta()
    else:
        offsets = np.asarray([pd.Timedelta(t - index[0]).total_seconds() for t in index])
        on_step = np.isclose(np.mod(offsets, step.total_seconds()), 0.0)
        data = data.isel(time=np.flatnonzero(on_step))
        index = time_index(data["time"].values)
    try:
        check_regular(index, step)
    except CalendarError as err:
        bad = next(i for i in range(len(index) - 1) if pd.Timedelta(index[i + 1] - index[i]) != pd.Timedelta(step))
        raise CalendarError(err.problem, path=file_for_time(spans, index[bad]), hint=err.hint) from None
    return data, step


def _block_bounds(data: xr.DataArray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the blocks of time steps computed at once.

    Blocks gather whole source chunks (Dask reads a whole chunk for any slice
    of it, so a block that cut a chunk would make the next block read it
    again) up to about :data:`BLOCK_BYTES`; a single chunk larger than that is
    one block, unless it is over four times larger, when it is split (reading
    it again per piece, to keep memory bounded).
    """
    ntime = data.shape[0]
    step_bytes = 4 * int(np.prod(data.shape[1:]))
    steps = max(1, int(BLOCK_BYTES // step_bytes))
    chunks = data.chunks[0] if data.chunks else (ntime,)
    bounds: list[tuple[int, int]] = []
    start = edge = 0
    for size in chunks:
        if edge + size - start > steps and edge > start:  # close the block before this chunk
            bounds.append((start, edge))
            start = edge
        if size > 4 * steps:  # an oversized chunk alone: split it
            bounds.extend((s, min(s + steps, edge + size)) for s in range(edge, edge + size, steps))
            start = edge + size
        edge += size
    if edge > start:
        bounds.append((start, edge))
    return bounds


class _BlockReader:
    """Computes blocks of time steps of ``data`` into two reused buffers, in turn.

    A block that is a run of whole Dask chunks is computed from the chunks'
    delayed objects (the graph is optimised once, not per block) and copied
    into a buffer that is reused two blocks later; any other block goes
    through ``data.isel(...)``. On 1 GB of 1-degree NetCDF this reads the
    blocks in 1.1-1.4 CPU-s instead of 1.9-2.3. Callers must be done with a
    block before asking for the block after next.
    """

    def __init__(self, data: xr.DataArray, bounds: list[tuple[int, int]]):
        self.data = data
        array = data.data
        self.chunked = isinstance(array, dask.array.Array)
        if self.chunked:
            self.delayed = array.to_delayed()
            self.edges = [np.cumsum((0, *c)) for c in array.chunks]
        steps = max((stop - start for start, stop in bounds), default=0)
        self.buffers = [np.empty((steps, *data.shape[1:]), dtype=np.float32) for _ in range(2 if len(bounds) > 1 else 1)]
        self.turn = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        """The float32 values of time steps ``start:stop``."""
        buffer = self.buffers[self.turn][: stop - start]
        self.turn = (self.turn + 1) % len(self.buffers)
        first = int(np.searchsorted(self.edges[0], start)) if self.chunked else 0
        last = int(np.searchsorted(self.edges[0], stop)) if self.chunked else 0
        if not (self.chunked and self.edges[0][first] == start and last < len(self.edges[0]) and self.edges[0][last] == stop):
            buffer[...] = self.data.isel(time=slice(start, stop)).values
            return buffer
        chunks = self.delayed[first:last]
        for index, part in zip(np.ndindex(chunks.shape), dask.compute(*chunks.ravel()), strict=True):
            where = [slice(self.edges[0][first + index[0]] - start, self.edges[0][first + index[0] + 1] - start)]
            where += [slice(edges[i], edges[i + 1]) for edges, i in zip(self.edges[1:], index[1:], strict=True)]
            buffer[tuple(where)] = part
        return buffer


def _check_finite(values: np.ndarray, times, channels: list[str], spans) -> None:
    finite = np.isfinite(values)
    if finite.all():
        return
    t, c = np.argwhere(~finite.all(axis=(2, 3)))[0]
    count = int((~finite[t, c]).sum())
    raise DataError(
        f"{count} NaN/inf value(s) in channel {channels[c]} at {format_time(time_index(times)[t])}",
        path=file_for_time(spans, times[t]),
        hint="fill or mask them before ingesting, or exclude that period with --start/--end",
    )


def ingest(
    sources: Sequence[str | Path],
    out: str | Path,
    channels: list[str] | None = None,
    grid: str | Grid = "source",
    grid_kind: str = "equiangular",
    start: str | None = None,
    end: str | None = None,
    step: str | dt.timedelta | None = None,
    member: int | None = None,
    append: bool = False,
    recompute_statistics: bool = False,
    overwrite: bool = False,
    scheduler: str = "threads",
    climatology_window_days: int = 31,
    progress: bool = True,
) -> IngestReport:
    """Ingest sources into a training store (or append new times to one).

    Parameters
    ----------
    sources : sequence of str or Path
        Files, Zarr stores or globs.
    out : str or Path
        The store to write (``.zarr``).
    channels : list of str, optional
        Channel ids; default every channel the sources provide (for an
        append: the store's channels).
    grid : str or Grid
        ``"source"`` keeps the source grid; otherwise a :class:`Grid` or a
        spec for :meth:`Grid.parse` (``"32x64"``, ``"1.0deg"``).
    grid_kind : str
        Kind for an ``NLATxNLON`` grid spec.
    start, end : str, optional
        Time range, inclusive, in the sources' calendar.
    step : str or timedelta, optional
        Time step; default the sources' step. Times off the step are dropped;
        a gap or irregular step is an error.
    member : int, optional
        Ensemble member of a source with a ``number`` dimension.
    append : bool
        Add times after the end of an existing store (same grid, channels
        and step); statistics are kept unless ``recompute_statistics``.
    recompute_statistics : bool
        With ``append``: recompute statistics and climatology over the whole store.
    overwrite : bool
        Replace an existing store at ``out``.
    scheduler : str
        Dask scheduler: ``threads`` (default), ``processes``, ``synchronous``
        or the address of a ``dask.distributed`` scheduler (``tcp://host:8786``).
    climatology_window_days : int
        Width of the day-of-year window that smooths the climatology.
    progress : bool
        Show a progress bar.

    Returns
    -------
    IngestReport
    """
    began = wallclock.perf_counter()
    out = Path(out)
    if append and not out.exists():
        raise FileNotFoundError(2, "No such file or directory (nothing to append to)", str(out))
    if not append and out.exists() and not overwrite:
        raise DataError("the store already exists", path=out, hint="use --append to add new times, --overwrite to replace it, or another --out")
    opened = open_sources(sources, member=member)
    dataset, spans = combine(opened)
    label = opened[0].path if len(opened) == 1 else f"{len(opened)} sources"
    existing = open_store(out) if append else None
    if existing is not None and channels is None:
        channels = store_channels(existing)
    data = select_channels(dataset, channels, path=label)
    channels = [str(c) for c in data["channel"].values]

    calendar = time_calendar(data["time"].values)
    step_td = parse_step(step) if step is not None else (store_step(existing) if existing is not None else None)
    data, step_td = _select_times(data, start, end, step_td, calendar, spans)

    source_grid = Grid.from_coords(data["latitude"].values, data["longitude"].values)
    if existing is not None:
        target_grid = store_grid(existing)
    elif isinstance(grid, Grid):
        target_grid = grid
    elif grid in (None, "source"):
        target_grid = source_grid
    else:
        target_grid = Grid.parse(grid, kind=grid_kind)
    regridder = Regridder(source_grid, target_grid, path=label)
    data = regrid_dataarray(data, regridder)

    if existing is not None:
        data = _check_append(existing, out, data, channels, step_td, calendar)
    times = data["time"].values
    # NumPy's BLAS threads busy-wait between the statistics' matrix-vector products and
    # then compete with the reader and writer threads for the cores (2 CPU-s per GB on 2 cores)
    with dask_scheduler(scheduler), threadpool_limits(limits=1, user_api="blas"):
        if existing is None:
            _write_new(out, data, times, channels, target_grid, step_td, calendar, opened, regridder, climatology_window_days, overwrite, spans, progress)
        else:
            _append(out, data, times, channels, target_grid, spans, recompute_statistics, climatology_window_days, opened, progress)
    index = time_index(times if existing is None else np.concatenate([existing["time"].values, times]))
    return IngestReport(
        store=out,
        channels=channels,
        grid=target_grid.describe(),
        times=len(index),
        first_time=format_time(index[0]),
        last_time=format_time(index[-1]),
        step=format_step(step_td),
        calendar=calendar,
        regrid_method=regridder.method,
        appended=append,
        seconds=wallclock.perf_counter() - began,
        sources=[s.path for s in opened],
    )


def _provenance(opened, regridder: Regridder) -> dict:
    return {
        "sources": json.dumps([s.path for s in opened]),
        "regrid_method": regridder.method,
        "software_version": __version__,
        "history": f"{pd.Timestamp.now(tz='UTC').strftime('%Y-%m-%dT%H:%M:%SZ')} forecast ingest",
    }


def _stream(data: xr.DataArray, times, channels, spans, progress: bool, description: str, consumers, check: bool = True) -> None:
    """Compute ``data`` block by block, check it, and hand each block to every consumer.

    Each consumer is called as ``consumer(start, values, times)`` on a thread
    of its own while Dask computes the next block, so reading overlaps
    writing and the statistics; blocks reach each consumer in time order, and
    at most two blocks are in memory (in two buffers used in turn: a consumer
    must not keep ``values`` after it returns). ``check=False`` leaves the
    NaN/inf check to a consumer (the statistics see a non-finite value anyway).
    """
    from concurrent.futures import ThreadPoolExecutor

    pending: list = []
    pending_steps = 0
    with ThreadPoolExecutor(max_workers=len(consumers)) as pool, tqdm(total=len(times), unit="step", desc=description, disable=not progress, leave=False) as bar:
        bounds = _block_bounds(data)
        reader = _BlockReader(data, bounds)
        for start, stop in bounds:
            values = reader.read(start, stop)
            if check:
                _check_finite(values, times[start:stop], channels, spans)
            for future in pending:
                future.result()
            if pending:
                bar.update(pending_steps)
            pending = [pool.submit(consumer, start, values, times[start:stop]) for consumer in consumers]
            pending_steps = stop - start
        for future in pending:
            future.result()
        if pending:
            bar.update(pending_steps)


def _accumulate_pass(path: Path, data, times, channels, grid: Grid, spans, progress: bool, write: bool):
    """One pass over ``data``: optionally write it to the store, and feed every accumulator."""
    weights = grid.area_weights()
    moments = MomentAccumulator(weights, grid.nlon)
    tendencies = TendencyAccumulator(weights, grid.nlon)
    group = zarr.open_group(str(path), mode="r+")
    hours = group["hour"][:]
    climatology = ClimatologyAccumulator(path, hours, group["dayofyear"].shape[0], (len(channels), grid.nlat, grid.nlon))

    def store(start: int, values: np.ndarray, block_times) -> None:
        if write:
            writer.write_block(path, start, values)

    def statistics(start: int, values: np.ndarray, block_times) -> None:
        # on a thread of its own, beside the writer's: about 1.4 and 1.1 CPU-s per GB
        moments.update(values)
        if not np.isfinite(moments.latest_means).all():  # a NaN/inf anywhere in a field makes its mean one
            _check_finite(values, block_times, channels, spans)
        tendencies.update(values)
        climatology.update(values, block_times)

    consumers = [store, statistics] if write else [statistics]
    # a bad block may reach the temporary store before the statistics thread rejects it: the
    # error discards the whole store (or, for an append, rolls it back)
    _stream(data, times, channels, spans, progress, "ingest" if write else "statistics", consumers, check=False)
    return moments, tendencies, climatology


def _finish_statistics(path: Path, moments, tendencies, climatology, window: int, times, progress: bool) -> None:
    writer.write_statistics(path, moments.mean, moments.std, tendencies.std)
    with tqdm(total=climatology.bins_with_data, unit="field", desc="climatology", disable=not progress, leave=False) as bar:
        climatology.finalize(writer.open_for_writing(path, "climatology"), window, on_written=bar.update)
    index = time_index(times)
    writer.update_attrs(path, {
        "statistics_start": format_time(index[0]),
        "statistics_end": format_time(index[-1]),
        "climatology_window_days": int(window),
        "climatology_days": [int(d) for d in np.flatnonzero(climatology.counts.any(axis=1)) + 1],
    })


def _write_new(out, data, times, channels, grid, step, calendar, opened, regridder, window, overwrite, spans, progress) -> None:
    tmp = writer.temporary_path(out)
    writer.discard(tmp)
    hours = np.unique(time_index(times).hour)
    attrs = {
        "title": "forecast training store",
        "store_format_version": STORE_FORMAT_VERSION,
        **grid.to_attrs(),
        "time_step": format_step(step),
        "calendar": canonical_calendar(calendar),
        "statistics_start": "",
        "statistics_end": "",
        **_provenance(opened, regridder),
    }
    attrs.update(_source_flags(opened))
    try:
        writer.create_store(tmp, times, channels, grid, step, calendar, days_in_calendar_year(calendar), hours, attrs)
        moments, tendencies, climatology = _accumulate_pass(tmp, data, times, channels, grid, spans, progress, write=True)
        _finish_statistics(tmp, moments, tendencies, climatology, window, times, progress)
        writer.publish(tmp, out, overwrite)
    except BaseException:
        writer.discard(tmp)
        raise


def _source_flags(opened) -> dict:
    synthetic = any(str(s.dataset.attrs.get("synthetic", "")).lower() in ("true", "1", "yes") for s in opened)
    return {"synthetic": "true"} if synthetic else {}


def _check_append(existing: xr.Dataset, out: Path, data: xr.DataArray, channels, step, calendar) -> xr.DataArray:
    have = store_channels(existing)
    if channels != have:
        raise DataError(f"the sources give channels {channels}, the store has {have}", path=out, hint="append sources with the same channels (pass --channels)")
    if step != store_step(existing):
        raise CalendarError(f"step {format_step(step)} differs from the store's {existing.attrs['time_step']}", path=out, hint="append data at the store's step")
    if canonical_calendar(calendar) != canonical_calendar(existing.attrs["calendar"]):
        raise CalendarError(f"calendar {calendar} differs from the store's {existing.attrs['calendar']}", path=out)
    grid = store_grid(existing)
    if not Grid(grid.kind, data["latitude"].values, data["longitude"].values).same_as(grid):
        raise GridError("the sources' grid differs from the store's", path=out, hint="pass the store's grid with --grid")
    last = time_index(existing["time"].values)[-1]
    index = time_index(data["time"].values)
    new = np.asarray(index > last)
    if not new.any():
        raise DataError(f"no times after the store's last time {format_time(last)}", path=out, hint="the store is already up to date")
    data = data.isel(time=np.flatnonzero(new))
    first_new = time_index(data["time"].values)[0]
    if pd.Timedelta(first_new - last) != pd.Timedelta(step):
        raise CalendarError(
            f"the new data start at {format_time(first_new)}, not one step ({format_step(step)}) after the store's last time {format_time(last)}",
            path=out,
            hint="ingest the missing times too",
        )
    return data


def _append(out, data, times, channels, grid, spans, recompute, window, opened, progress) -> None:
    old_length = writer.append_times(out, times)
    try:
        def consume(start: int, values: np.ndarray, block_times) -> None:
            writer.write_block(out, old_length + start, values)

        _stream(data, times, channels, spans, progress, "append", [consume])
        if recompute:
            store = xr.open_zarr(out, consolidated=False, decode_timedelta=False)
            all_times = store["time"].values
            moments, tendencies, climatology = _accumulate_pass(out, store["data"], all_times, channels, grid, spans, progress, write=False)
            _finish_statistics(out, moments, tendencies, climatology, window, all_times, progress)
        group = zarr.open_group(str(out), mode="r+")
        previous = json.loads(group.attrs.get("sources", "[]"))
        group.attrs.update({
            "sources": json.dumps(previous + [s.path for s in opened]),
            "history": str(group.attrs.get("history", "")) + f"\n{pd.Timestamp.now(tz='UTC').strftime('%Y-%m-%dT%H:%M:%SZ')} forecast ingest --append",
        })
        writer.consolidate(out)
    except BaseException:
        writer.truncate_times(out, old_length)
        raise
