"""``forecast ingest``: sources -> one training store, in a single pass over the data.

The sources are opened lazily with Dask, mapped to channels and regridded;
then one Dask graph (:mod:`pipelines.graph`) reads every source chunk once
and, on the workers, writes the store's chunks and reduces the statistics
and the climatology. This process holds the graph and the small results.
The store is published only when complete (:mod:`forecast.publish`); the
output is locked for the whole command (:mod:`forecast.locking`), and
``--overwrite`` replaces only a store this software wrote, never an input
(:mod:`forecast.overwrite`). Appends are in :mod:`pipelines.append`.
"""

from __future__ import annotations

import datetime as dt
import json
import time as wallclock
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from threadpoolctl import threadpool_limits

from forecast import __version__, publish, storage
from forecast.errors import CalendarError, DataError
from forecast.grid import Grid
from forecast.locking import LockedError, lock
from forecast.overwrite import check_replaceable
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
from pipelines.cluster import Scheduler, compute_segments, dask_scheduler
from pipelines.graph import Targets, build_pass, merge_segments, segment_steps
from pipelines.lexicon import select_channels
from pipelines.resume import PROGRESS, Progress, discard, request
from pipelines.sources import combine, file_for_time, open_sources
from pipelines.statistics import (
    WINDOW_DAYS,
    ClimatologyPlan,
    area_weights,
    days_in_calendar_year,
)


@dataclass
class IngestReport:
    """What an ingest did: where, how much, how long."""

    store: str
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


@dataclass(frozen=True)
class Selection:
    """What an ingest takes from its sources (the arguments of :func:`ingest` of that name)."""

    channels: Sequence[str] | None = None
    grid: str | Grid = "source"
    grid_kind: str = "equiangular"
    start: str | None = None
    end: str | None = None
    step: str | dt.timedelta | None = None
    member: int | None = None

    def target_grid(self, source: Grid) -> Grid:
        """The grid to write, given the sources' grid."""
        if isinstance(self.grid, Grid):
            return self.grid
        if self.grid in (None, "source"):
            return source
        return Grid.parse(self.grid, kind=self.grid_kind)


@dataclass
class Prepared:
    """The sources, lazily selected, regridded and checked: what the pass reads."""

    data: xr.DataArray
    times: np.ndarray
    channels: list[str]
    grid: Grid
    step: dt.timedelta
    calendar: str
    regridder: Regridder
    opened: list
    spans: dict
    member: int | None = None


def _select_times(
    data: xr.DataArray, start, end, step: dt.timedelta | None, calendar: str, spans
) -> tuple[xr.DataArray, dt.timedelta]:
    index = time_index(data["time"].values)
    if not index.is_monotonic_increasing or index.has_duplicates:
        order = np.argsort(np.asarray(index), kind="stable")
        data = data.isel(time=order)
        index = time_index(data["time"].values)
        if index.has_duplicates:
            raise CalendarError(
                "the sources repeat time(s) with different values",
                path=file_for_time(spans, index[index.duplicated()][0]),
            )
    keep = np.ones(len(index), dtype=bool)
    if start is not None:
        keep &= np.asarray(
            index >= parse_time(start, calendar) if isinstance(start, str) else index >= start
        )
    if end is not None:
        keep &= np.asarray(
            index <= parse_time(end, calendar) if isinstance(end, str) else index <= end
        )
    if not keep.any():
        raise DataError(
            f"no times between {start or 'the start'} and {end or 'the end'} (the sources cover {format_time(index[0])} to {format_time(index[-1])})",
            hint="adjust --start/--end",
        )
    data = data.isel(time=np.flatnonzero(keep))
    index = time_index(data["time"].values)
    if step is None:
        if len(index) < 2:
            raise CalendarError(
                f"cannot infer the time step from a single time ({format_time(index[0])})",
                path=file_for_time(spans, index[0]),
                hint="pass --step (e.g. --step 6h), or add sources with more times",
            )
        step = pd.Timedelta(index[1] - index[0]).to_pytimedelta()
    else:
        offsets = np.asarray([pd.Timedelta(t - index[0]).total_seconds() for t in index])
        on_step = np.isclose(np.mod(offsets, step.total_seconds()), 0.0)
        data = data.isel(time=np.flatnonzero(on_step))
        index = time_index(data["time"].values)
    try:
        check_regular(index, step)
    except CalendarError as err:
        bad = next(
            i
            for i in range(len(index) - 1)
            if pd.Timedelta(index[i + 1] - index[i]) != pd.Timedelta(step)
        )
        raise CalendarError(
            err.problem, path=file_for_time(spans, index[bad]), hint=err.hint
        ) from None
    return data, step


def ingest(
    sources: Sequence[str | Path],
    out: str | Path,
    *,
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
    climatology_window_days: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Ingest sources into a training store (or append new times to one).

    Parameters
    ----------
    sources : sequence of str or Path
        Files, Zarr stores or globs; local paths or URLs (``s3://``,
        ``gs://``, ``file://``, ``https://``; globs need a listable filesystem).
    out : str or Path
        The store to write (``.zarr``): a local path or an ``s3://``,
        ``gs://`` or ``file://`` URL.
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
        Replace an existing store at ``out`` (only a store this software
        wrote, and never one of the sources).
    scheduler : str
        Dask scheduler: ``threads`` (default), ``processes``, ``synchronous``,
        ``local:N`` (N worker processes) or the address of a
        ``dask.distributed`` scheduler (``tcp://host:8786``).
    climatology_window_days : int, optional
        Width of the day-of-year window that smooths the climatology
        (default :data:`pipelines.statistics.WINDOW_DAYS`; an append keeps the store's, and takes
        another only with ``recompute_statistics``).
    progress : bool
        Show a progress bar.

    Returns
    -------
    IngestReport

    Raises
    ------
    forecast.locking.LockedError
        If another ingest is writing ``out``.
    """
    began = wallclock.perf_counter()
    out = str(out)
    storage.filesystem(
        out
    )  # a scheme without a filesystem is named with the store, before the lock
    with lock(out, "forecast ingest") as held:
        _clean_leftovers(out, adopt=not append)
        exists = storage.exists(out)
        if append and not exists:
            raise FileNotFoundError(2, "No such file or directory (nothing to append to)", out)
        unfinished = exists and not append and publish.status(out) == publish.WRITING
        if exists and not append and not unfinished:
            if not overwrite:
                raise DataError(
                    "the store already exists",
                    path=out,
                    hint="use --append to add new times, --overwrite to replace it, or another --out",
                )
            check_replaceable(out, inputs=list(sources), kinds=("store",))
        elif unfinished:
            check_replaceable(
                out, inputs=list(sources), kinds=("store",)
            )  # an ingest of ours that was killed
        existing = open_store(out) if append else None
        selection = Selection(channels, grid, grid_kind, start, end, step, member)
        prepared = _prepare(sources, out, selection, existing)
        # NumPy's BLAS threads busy-wait between the statistics' matrix-vector products and
        # then compete with the reader and writer threads for the cores (2 CPU-s per GB on 2 cores)
        with dask_scheduler(scheduler) as where, threadpool_limits(limits=1, user_api="blas"):
            if existing is None:
                window = WINDOW_DAYS if climatology_window_days is None else climatology_window_days
                _write_new(out, prepared, window, where=where, progress=progress, held=held)
                times = prepared.times
            else:
                from pipelines.append import append_to

                times = append_to(
                    out,
                    existing,
                    prepared,
                    recompute=recompute_statistics,
                    window=climatology_window_days,
                    where=where,
                    progress=progress,
                    now=_provenance_entry(),
                    held=held,
                )
    index = time_index(times)
    return IngestReport(
        store=out,
        channels=prepared.channels,
        grid=prepared.grid.describe(),
        times=len(index),
        first_time=format_time(index[0]),
        last_time=format_time(index[-1]),
        step=format_step(prepared.step),
        calendar=prepared.calendar,
        regrid_method=prepared.regridder.method,
        appended=append,
        seconds=wallclock.perf_counter() - began,
        sources=[s.path for s in prepared.opened],
    )


def _clean_leftovers(out: str, adopt: bool) -> None:
    """Remove what killed ingests of ``out`` left (run under the lock, so none of it is in use).

    A ``.NAME.old-PID`` copy is the previous store moved aside just before
    the new one was renamed into place: if the store itself is missing, it
    goes back; otherwise it is deleted. With ``adopt``, the staging copy of
    a killed ingest that recorded its progress becomes this process's (the
    newest, if several), which :func:`_write_new` resumes if the request is
    the same; other staging copies are deleted.
    """
    adopted = False
    for leftover in sorted(writer.leftovers(out), key=_progress_time, reverse=True):
        if ".old-" in storage.basename(leftover) and not storage.exists(out):
            storage.local_path(leftover).rename(storage.local_path(out))
        elif (
            adopt
            and not adopted
            and ".tmp-" in storage.basename(leftover)
            and _progress_time(leftover)
        ):
            mine = storage.staging_path(out)
            discard(mine)  # a killed process of this one's PID left it (a container's PIDs repeat)
            storage.local_path(leftover).rename(storage.local_path(mine))
            adopted = True
        else:
            discard(leftover)


def _progress_time(leftover: str) -> float:
    """When a staging copy last recorded its progress (0: never)."""
    path = storage.local_path(storage.join(leftover, PROGRESS))
    return path.stat().st_mtime if path.is_file() else 0.0


def _prepare(
    sources: Sequence[str | Path], out: str, selection: Selection, existing: xr.Dataset | None
) -> Prepared:
    """Open, select and regrid the sources lazily; for an append, check that they continue ``existing``."""
    opened = open_sources(sources, member=selection.member)
    dataset, spans = combine(opened)
    label = opened[0].path if len(opened) == 1 else f"{len(opened)} sources"
    channels = selection.channels
    if existing is not None and channels is None:
        channels = store_channels(existing)
    data = select_channels(dataset, None if channels is None else list(channels), path=label)
    calendar = time_calendar(data["time"].values)
    if selection.step is not None:
        step: dt.timedelta | None = parse_step(selection.step)
    else:
        step = store_step(existing) if existing is not None else None
    data, step = _select_times(data, selection.start, selection.end, step, calendar, spans)
    source_grid = Grid.from_coords(data["latitude"].values, data["longitude"].values)
    target_grid = (
        store_grid(existing) if existing is not None else selection.target_grid(source_grid)
    )
    regridder = Regridder(source_grid, target_grid, path=label)
    data = regrid_dataarray(data, regridder)
    prepared = Prepared(
        data=data,
        times=data["time"].values,
        channels=[str(c) for c in data["channel"].values],
        grid=target_grid,
        step=step,
        calendar=calendar,
        regridder=regridder,
        opened=opened,
        spans=spans,
        member=selection.member,
    )
    if existing is not None:
        from pipelines.append import check_append

        prepared = check_append(existing, out, prepared)
    return prepared


def _provenance_entry() -> str:
    return pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _provenance(opened, regridder: Regridder) -> dict:
    return {
        "sources": json.dumps([s.path for s in opened]),
        "regrid_method": regridder.method,
        "software_version": __version__,
        "history": f"{_provenance_entry()} forecast ingest",
    }


def _source_flags(opened) -> dict:
    synthetic = any(
        str(s.dataset.attrs.get("synthetic", "")).lower() in ("true", "1", "yes") for s in opened
    )
    return {"synthetic": "true"} if synthetic else {}


def statistics_attrs(times, plan: ClimatologyPlan, window: int) -> dict:
    """The attributes that describe the statistics period and the climatology."""
    index = time_index(times)
    return {
        "statistics_start": format_time(index[0]),
        "statistics_end": format_time(index[-1]),
        "climatology_window_days": int(window),
        "climatology_days": [int(d) + 1 for d in plan.days_with_data],
    }


def run_pass(
    store,
    data,
    times,
    prepared: Prepared,
    targets: Targets,
    plan,
    where: Scheduler,
    progress: bool,
    description: str,
    resume: Progress | None = None,
):
    """Build and compute one pass, segment by segment; returns the merged moments and tendency moments.

    With ``resume``, the segments it lists as computed are skipped (their
    moments come from it) and each segment computed is recorded in it.
    """
    weights = area_weights(prepared.grid.area_weights(), prepared.grid.nlon)
    before = resume.load() if resume is not None else []
    segments = build_pass(
        data, times, prepared.channels, prepared.spans, weights, targets, plan, skip=len(before)
    )
    total = len(times) - targets.write_from if targets.data is not None else None
    done = sum(segment_steps(data, targets)[: len(before)]) if before else 0
    computed = compute_segments(
        where,
        segments,
        progress,
        description,
        total=total,
        done=done,
        finished=resume.record if resume is not None else None,
    )
    return merge_segments(before + computed)


def still_held(held, out: str) -> None:
    """Raise if an object-storage lock's lease ran out and another writer took it (checked just before publishing)."""
    if hasattr(held, "held") and not held.held():
        raise LockedError(
            "this ingest lost its lock (its lease expired and another process took it over); nothing was published",
            path=out,
            hint="rerun when the other writer is done; a lease that expires while its holder runs means the holder was stalled",
        )


def _write_new(
    out: str, prepared: Prepared, window: int, *, where: Scheduler, progress: bool, held=None
) -> None:
    """Write a new store from ``prepared`` (resuming a killed ingest's staging copy) and publish it."""
    from pipelines import graph

    local = storage.is_local(out)
    location = storage.staging_path(out) if local else out
    resume = Progress(location, request(prepared, window, graph.BLOCK_BYTES, graph.SEGMENT_BLOCKS))
    resuming = storage.exists(location) and bool(resume.load())
    if resuming:  # a chunk or progress write the kill cut short: not to be published
        publish.delete_partials(location)
    else:  # the progress first: a kill while the rest goes must not leave it listing deleted chunks
        resume.remove()
        if not local and storage.exists(out):
            _unpublish(out)
        storage.remove(location)
    times = prepared.times
    hours = np.unique(time_index(times).hour)
    attrs = {
        "title": "forecast training store",
        "store_format_version": STORE_FORMAT_VERSION,
        **prepared.grid.to_attrs(),
        "time_step": format_step(prepared.step),
        "calendar": canonical_calendar(prepared.calendar),
        "statistics_start": "",
        "statistics_end": "",
        **_provenance(prepared.opened, prepared.regridder),
        **_source_flags(prepared.opened),
    }
    try:
        store = storage.zarr_store(location)
        with storage.storage_errors(location, "write"):
            if not resuming:
                writer.create_store(
                    store,
                    times,
                    prepared.channels,
                    prepared.grid,
                    prepared.step,
                    prepared.calendar,
                    days_in_calendar_year(prepared.calendar),
                    hours,
                    attrs,
                )
            climatology = writer.open_array(store, "climatology")
            plan = ClimatologyPlan(times, hours, climatology.shape[0], window)
            targets = Targets(
                writer.open_array(store, "data"),
                climatology=climatology,
                means=writer.create_means(store, climatology),
            )
            moments, tendencies = run_pass(
                store,
                prepared.data.data,
                times,
                prepared,
                targets,
                plan,
                where,
                progress,
                "ingest (resumed)" if resuming else "ingest",
                resume,
            )
            still_held(held, out)  # before its statistics, means and progress: another's, if lost
            writer.write_statistics(store, moments.mean, moments.std, tendencies.std)
            writer.delete_means(store)
            resume.remove()
            still_held(held, out)
            publish.commit(store, statistics_attrs(times, plan, window))
        if local:
            writer.publish_local(location, out)
    except LockedError:  # from still_held: another writer took the lock over, the store is its now
        raise
    except BaseException:
        discard(location)
        raise


def _unpublish(out: str) -> None:
    """Mark a store on object storage unpublished (one write), then delete it: a kill in between leaves no complete store."""
    import zarr

    store = storage.zarr_store(out)
    with storage.storage_errors(out, "replace"):
        try:
            publish.mark_writing(zarr.open_group(store, mode="r+", use_consolidated=False))
        except FileNotFoundError:
            pass
    storage.remove(out)
