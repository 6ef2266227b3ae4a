"""``forecast ingest --append``: add new times to a published store, crash-safely.

The new chunks are written by the Dask workers beyond the published shape
(:func:`forecast.publish.grown` views), where no reader looks; then one
commit saves the grown metadata and, last, the root (attributes and
consolidated metadata in one write). A kill at any point leaves the store
as it was published before, or with the whole append; the rerun of the same
command repairs any metadata written ahead of the root
(:func:`forecast.publish.repair`) and writes the append again.

With ``--recompute-statistics`` the pass also reads the store's old data
back, and the statistics and the climatology are written through
:func:`forecast.publish.flipped` views (the other chunk-key encoding), so
the published ones stay intact until the same commit switches to the new.

Sources that overlap the store's last times are checked against it as a
fresh ingest checks overlapping files: they must agree.
"""

from __future__ import annotations

import contextlib
import json

import dask.array
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from forecast import publish, storage
from forecast.errors import CalendarError, ConfigError, DataError, GridError
from forecast.grid import Grid
from forecast.locking import LockedError
from forecast.store import store_channels, store_grid, store_step
from forecast.time import canonical_calendar, format_step, format_time, time_index
from pipelines import writer
from pipelines.cluster import Scheduler
from pipelines.graph import Targets
from pipelines.sources import file_for_time
from pipelines.statistics import WINDOW_DAYS, ClimatologyPlan

#: Arrays rewritten in place by ``--recompute-statistics`` (through the other chunk-key encoding).
STATISTICS_ARRAYS = ("mean", "std", "diff_std", "climatology")


def check_append(existing: xr.Dataset, out: str, prepared):
    """Check that the sources continue the store; keep only their new times.

    Raises
    ------
    DataError, CalendarError, GridError
        On other channels, step, calendar or grid; on no new times; on a gap
        after the store's last time; on overlapping times that disagree with
        the store (naming the source file).
    """
    data, channels, step, calendar = (
        prepared.data,
        prepared.channels,
        prepared.step,
        prepared.calendar,
    )
    have = store_channels(existing)
    if channels != have:
        raise DataError(
            f"the sources give channels {channels}, the store has {have}",
            path=out,
            hint="append sources with the same channels (pass --channels)",
        )
    if step != store_step(existing):
        raise CalendarError(
            f"step {format_step(step)} differs from the store's {existing.attrs['time_step']}",
            path=out,
            hint="append data at the store's step",
        )
    if canonical_calendar(calendar) != canonical_calendar(existing.attrs["calendar"]):
        raise CalendarError(
            f"calendar {calendar} differs from the store's {existing.attrs['calendar']}", path=out
        )
    grid = store_grid(existing)
    if not Grid(grid.kind, data["latitude"].values, data["longitude"].values).same_as(grid):
        raise GridError(
            "the sources' grid differs from the store's",
            path=out,
            hint="pass the store's grid with --grid",
        )
    stored = time_index(existing["time"].values)
    last = stored[-1]
    index = time_index(data["time"].values)
    new = np.asarray(index > last)
    _check_overlap(existing, data, index, stored, prepared.spans)
    if not new.any():
        raise DataError(
            f"no times after the store's last time {format_time(last)}",
            path=out,
            hint="the store is already up to date",
        )
    data = data.isel(time=np.flatnonzero(new))
    first_new = time_index(data["time"].values)[0]
    if pd.Timedelta(first_new - last) != pd.Timedelta(step):
        raise CalendarError(
            f"the new data start at {format_time(first_new)}, not one step ({format_step(step)}) after the store's last time {format_time(last)}",
            path=out,
            hint="ingest the missing times too",
        )
    prepared.data = data
    prepared.times = data["time"].values
    return prepared


def _check_overlap(existing: xr.Dataset, data: xr.DataArray, index, stored, spans) -> None:
    """Sources' times already in the store must hold the same values (as overlapping sources must)."""
    overlap = np.flatnonzero(np.asarray(index.isin(stored)))
    if overlap.size == 0:
        return
    positions = stored.get_indexer(index[overlap])
    theirs = data.isel(time=overlap).values
    ours = existing["data"].isel(time=positions).values
    agree = np.isclose(theirs, ours, rtol=1e-6, atol=0.0, equal_nan=True).all(axis=(2, 3))
    if agree.all():
        return
    t, c = np.argwhere(~agree)[0]
    bad = int((~agree[:, c]).sum())
    raise DataError(
        f"channel {data['channel'].values[c]} disagrees with the store over {bad} overlapping time(s) from {format_time(index[overlap][t])}",
        path=file_for_time(spans, data["time"].values[overlap[t]]),
        hint="drop the overlapping times from the sources (--start), or re-ingest the whole period",
    )


def _window(out: str, attrs, asked: int | None, recompute: bool) -> int:
    """The smoothing window of an append: the store's, or ``asked`` when the statistics are recomputed."""
    kept = int(attrs.get("climatology_window_days", WINDOW_DAYS))
    if asked is None or asked == kept:
        return kept
    if not recompute:
        raise ConfigError(
            f"the store's climatology is smoothed over {kept} days and an append keeps its statistics, so a window of {asked} days cannot apply",
            path=out,
            hint=f"drop --climatology-window (the store keeps {kept}), or add --recompute-statistics to smooth it anew",
        )
    return asked


def append_to(
    out: str,
    existing: xr.Dataset,
    prepared,
    *,
    recompute: bool,
    window: int | None,
    where: Scheduler,
    progress: bool,
    now: str,
    held=None,
) -> np.ndarray:
    """Append ``prepared`` to the store at ``out`` (under its lock ``held``) and publish; returns all the store's times."""
    from pipelines.ingest import run_pass, statistics_attrs, still_held

    store = storage.zarr_store(out)
    with storage.storage_errors(out, "write"):
        publish.repair(store, out, flippable=STATISTICS_ARRAYS)
        root = zarr.open_group(store, mode="r", use_consolidated=True)
        time_array, hours = root["time"], root["hour"]
        assert isinstance(time_array, zarr.Array) and isinstance(hours, zarr.Array)
        old_length = int(time_array.shape[0])
        window = _window(out, root.attrs, window, recompute)
        if old_length != existing.sizes["time"]:
            raise DataError(
                "the store changed while this ingest started", path=out, hint="rerun the command"
            )
        views = writer.grow(store, prepared.times, old_length)
        all_times = np.concatenate([existing["time"].values, prepared.times])
        attrs = {
            "sources": json.dumps(
                json.loads(str(root.attrs.get("sources", "[]"))) + [s.path for s in prepared.opened]
            ),
            "history": str(root.attrs.get("history", "")) + f"\n{now} forecast ingest --append",
        }
        arrays = [views["time"], views["data"]]
        try:
            if not recompute:
                targets = Targets(views["data"], offset=old_length)
                run_pass(
                    store,
                    prepared.data.data,
                    prepared.times,
                    prepared,
                    targets,
                    None,
                    where,
                    progress,
                    "append",
                )
            else:
                flipped = {
                    name: publish.flipped(writer.open_array(store, name))
                    for name in STATISTICS_ARRAYS
                }
                climatology = flipped["climatology"]
                plan = ClimatologyPlan(all_times, hours[:], climatology.shape[0], window)
                targets = Targets(
                    views["data"],
                    write_from=old_length,
                    offset=old_length,
                    climatology=climatology,
                    means=writer.create_means(store, climatology),
                )
                old = existing["data"].data.astype(np.float32)
                data = dask.array.concatenate([old, prepared.data.data.astype(np.float32)], axis=0)
                moments, tendencies = run_pass(
                    store, data, all_times, prepared, targets, plan, where, progress, "append"
                )
                still_held(held, out)  # before its statistics and means: another's, if lost
                writer.write_statistics(
                    store, moments.mean, moments.std, tendencies.std, arrays=flipped
                )
                writer.delete_means(store)
                attrs.update(statistics_attrs(all_times, plan, window))
                arrays += list(flipped.values())
            still_held(held, out)
            publish.commit(store, attrs, arrays=arrays)
        except LockedError:  # from still_held: the store is the writer's that took the lock over
            raise
        except BaseException:
            with contextlib.suppress(Exception):
                writer.delete_means(store)
            raise
        if recompute:
            for name in STATISTICS_ARRAYS:  # the chunks of the statistics published before
                publish.delete_chunks(flipped[name], encoding_of=publish.flipped(flipped[name]))
    return all_times
