"""The ingest pass as Dask graphs: read, write and reduce on the workers, in one pass over the data.

:func:`build_pass` turns the lazy ``(time, channel, lat, lon)`` array into
blocks of whole source chunks (each read once), and from every block:

- a **write** task: the block's chunks into the store's ``data`` array,
  through Zarr, from the worker that holds the block (whole chunks: one per
  time step);
- a **moment** partial and a **tendency** partial (which also takes the
  last step of the block before), merged in a tree
  (:meth:`Tasks.tree`);
- the **climatology**: a (day, hour) bin of several steps (one a year) is
  averaged from its steps read back from ``data`` once they are written
  (so no block's share of a bin waits in memory for the next year's) and
  written to a temporary array; a bin of one step is its own mean, read
  from ``data`` by the smoothing. The smoothing tasks stream through both
  to write the climatology.

The blocks come in **segments** of at most :data:`SEGMENT_BLOCKS`, each a
graph of its own that the client builds only when it submits it (an ERA5
ingest is hundreds of thousands of blocks: one graph of them all would be
millions of tasks in the client and the scheduler at once). A segment
rereads the step before its first (its source chunk) for its first
tendency, so segments do not wait for each other; the climatology joins
the last segment. Each segment gives its merged moments, and
:func:`merge_segments` merges those exactly, so the client receives only
moments; every block stays on the workers. :func:`pipelines.cluster.compute_segments`
computes the segments on the chosen scheduler with one progress bar.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import dask
import dask.array
import numpy as np
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from forecast.errors import DataError
from forecast.time import format_time, time_index
from pipelines.chunkwriter import fast_writer, read_chunk
from pipelines.sources import file_for_time
from pipelines.statistics import (
    ClimatologyPlan,
    Moments,
    bin_mean,
    last_step,
    merge_moments,
    moment_partial,
    tendency_partial,
    window_means,
)

#: Target size in bytes of one block of time steps (whole source chunks are never cut below it).
BLOCK_BYTES = 64 * 2**20

#: Days of one hour smoothed by one task (each task reads its days plus a window's worth).
SMOOTH_DAYS = 64

#: Bytes of a window's fields that a smoothing task keeps; beyond it, it rereads them as they leave.
SMOOTH_BYTES = 256 * 2**20

#: Partial results merged by one task of a reduction tree.
FAN_IN = 8

#: Blocks in one segment, the graph submitted at once (docs/performance.md: ERA5 in segments).
SEGMENT_BLOCKS = 2048


class Tasks:
    """The tasks of one pass, kept as one plain graph layer.

    Each :meth:`add` is a dictionary entry, so building the graph costs the
    same per task however many tasks come before it (``dask.delayed`` calls
    merge their arguments' graphs at every call: 4-5 ms a task measured
    here, hours for the tasks of an ERA5 ingest). :meth:`delayed` wraps
    keys as :class:`dask.delayed.Delayed` objects sharing that one graph.

    Parameters
    ----------
    inputs : Delayed
        A delayed value whose graph holds every key the tasks take as
        arguments besides their own (the source blocks of a segment).
    """

    def __init__(self, inputs: Delayed):
        self.name = f"ingest-pass-{uuid.uuid4().hex}"
        self.inputs = inputs
        self.layer: dict = {}

    def add(self, function: Callable, *args) -> tuple[str, int]:
        """A task ``function(*args)``; arguments that are keys (of this or the input graph) are replaced by their values."""
        key = (self.name, len(self.layer))
        self.layer[key] = (function, *args)
        return key

    def tree(self, parts: Sequence, combine: Callable, fan_in: int = FAN_IN) -> tuple[str, int]:
        """Reduce ``parts`` (keys) with ``combine(*some)``, ``fan_in`` per task, to one key."""
        level = list(parts)
        if not level:
            raise ValueError("nothing to reduce")
        if len(level) == 1:
            return self.add(combine, level[0])
        while len(level) > 1:
            level = [
                self.add(combine, *level[i : i + fan_in]) for i in range(0, len(level), fan_in)
            ]
        return level[0]

    def delayed(self, keys: list) -> list[Delayed]:
        """``keys`` as delayed values of the whole graph (one graph object for all of them)."""
        graph = HighLevelGraph.from_collections(
            self.name,
            self.layer,
            dependencies=[self.inputs],  # type: ignore[list-item]  # a Delayed is a Dask collection
        )
        return [Delayed(key, graph, layer=self.name) for key in keys]


def block_bounds(
    chunks: tuple[int, ...], step_bytes: int, breaks: tuple[int, ...] = ()
) -> list[tuple[int, int]]:
    """``(start, stop)`` of the blocks of time steps computed at once.

    Blocks gather whole source chunks (Dask reads a whole chunk for any slice
    of it, so a block that cut a chunk would make the next block read it
    again) up to about :data:`BLOCK_BYTES`; a single chunk larger than that is
    one block, unless it is over four times larger, when it is split.

    Parameters
    ----------
    chunks : tuple of int
        The source's chunk sizes along time.
    step_bytes : int
        Bytes of one time step (all channels).
    breaks : tuple of int
        Chunk edges where a block must end (the first step an append writes:
        a block is written whole or not at all).
    """
    steps = max(1, int(BLOCK_BYTES // max(step_bytes, 1)))
    bounds: list[tuple[int, int]] = []
    start = edge = 0
    for size in chunks:
        if edge > start and (edge + size - start > steps or edge in breaks):
            # close the block before this chunk
            bounds.append((start, edge))
            start = edge
        if size > 4 * steps:  # an oversized chunk alone: split it
            bounds.extend((s, min(s + steps, edge + size)) for s in range(edge, edge + size, steps))
            start = edge + size
        edge += size
    if edge > start:
        bounds.append((start, edge))
    return bounds


def pass_blocks(data: dask.array.Array, targets: Targets) -> list[tuple[int, int]]:
    """``(start, stop)`` time indices of the blocks of a pass over ``data`` (see :func:`block_bounds`)."""
    # an append's old steps are read back, its new ones written: no block holds both
    breaks = (targets.write_from,) if targets.write_from else ()
    return block_bounds(data.chunks[0], 4 * int(np.prod(data.shape[1:])), breaks)


def segment_steps(data: dask.array.Array, targets: Targets) -> list[int]:
    """Time steps in each segment of a pass over ``data``."""
    bounds = pass_blocks(data, targets)
    return [
        bounds[stop - 1][1] - bounds[first][0]
        for first, stop in segments_of(bounds, SEGMENT_BLOCKS)
    ]


def segments_of(bounds: list[tuple[int, int]], blocks: int) -> list[tuple[int, int]]:
    """``(first, stop)`` block indices of the segments: runs of at most ``blocks`` blocks."""
    return [(i, min(i + blocks, len(bounds))) for i in range(0, len(bounds), blocks)]


def segment_blocks(
    array: dask.array.Array, bounds: list[tuple[int, int]]
) -> tuple[Delayed | None, list[Delayed]]:
    """The delayed blocks of ``array`` (time, channel, lat, lon) with ``bounds`` (consecutive), whole in every other axis.

    Also returns the delayed step before the first block (None at the
    array's start), which the first tendency takes. Only this segment's
    part of ``array``'s graph is materialised.
    """
    first = bounds[0][0]
    before = min(first, 1)
    sizes = (1,) * before + tuple(stop - start for start, stop in bounds)
    part = array[first - before : bounds[-1][1]]
    # method="tasks": the default asks whether a distributed client exists, which imports
    # distributed (about 1 s) in every threaded ingest
    blocks = list(
        part.astype(np.float32).rechunk((sizes, -1, -1, -1), method="tasks").to_delayed().ravel()
    )
    return (blocks[0] if before else None), blocks[before:]


@dataclass
class Targets:
    """Where a pass writes.

    Attributes
    ----------
    data : zarr.Array or None
        The store's ``data`` (a view that may be larger than the published
        shape); None: the pass writes no data.
    write_from : int
        Blocks starting before this time index are not written (old data read back).
    offset : int
        Time index in ``data`` of the pass's first step.
    climatology, means : zarr.Array or None
        The climatology to write and the temporary array of bin means; None:
        no climatology.
    """

    data: object | None
    write_from: int = 0
    offset: int = 0
    climatology: object | None = None
    means: object | None = None


class FiniteCheck:
    """Rejects a block with a NaN/inf, naming channel, time and file (called with the block's field means and the block)."""

    def __init__(self, times, channels: list[str], spans):
        self.times, self.channels, self.spans = times, channels, spans

    def __call__(self, means: np.ndarray, block: np.ndarray) -> None:
        finite = np.isfinite(means)  # a NaN/inf anywhere in a field makes its mean one
        if finite.all():
            return
        t, c = np.argwhere(~finite)[0]
        count = int((~np.isfinite(block[t, c])).sum())
        raise DataError(
            f"{count} NaN/inf value(s) in channel {self.channels[c]} at {format_time(time_index(self.times)[t])}",
            path=file_for_time(self.spans, self.times[t]),
            hint="fill or mask them before ingesting, or exclude that period with --start/--end",
        )


def _write(target, start: int, block: np.ndarray) -> int:
    fast_writer(target)[start : start + block.shape[0]] = block
    return int(block.shape[0])


def _bin_mean(target, data, day: int, hour: int, steps: list[int], *written: int) -> int:
    """Write the mean of ``data``'s ``steps`` as bin ``(day, hour)`` of ``target``; returns the count.

    ``written`` are the results of the tasks that wrote those steps (unused:
    they order the graph).
    """
    field = np.empty(tuple(data.shape[1:]), dtype=np.float32)
    mean = bin_mean(lambda step: read_chunk(data, (step,), field), steps)
    # a temporary array: a killed task is rerun and the array is discarded with a killed ingest,
    # so its chunks need no temporary file and rename each
    fast_writer(target, atomic=False)[day, hour] = mean
    return len(steps)


class _WindowFields:
    """The bin mean of each day a smoothing window passes over, read as it enters.

    A day is read twice by :func:`pipelines.statistics.window_means`
    (entering and leaving the window). Its field is kept between the two
    in one of ``window`` reused buffers while that many fields fit in
    :data:`SMOOTH_BYTES`, so every chunk is read and decoded once per task;
    larger fields are read again as they leave, and memory stays two fields.
    A day in ``step_of`` is a bin of one step, which is its own mean: it is
    decoded from ``data``; the others come from the temporary bin means.
    """

    def __init__(self, means, data, hour: int, step_of: dict, window: int):
        self.means, self.data, self.hour, self.step_of = means, data, hour, step_of
        self.shape = tuple(means.shape[2:])
        self.keep = window * 4 * int(np.prod(self.shape)) <= SMOOTH_BYTES
        self.kept: dict[int, np.ndarray] = {}
        self.free: list[np.ndarray] = []
        self.last: np.ndarray | None = None  # handed out by the previous call, free again now

    def __call__(self, day: int) -> np.ndarray:
        if self.last is not None:
            self.free.append(self.last)
            self.last = None
        if day in self.kept:  # leaving the window
            self.last = self.kept.pop(day)
            return self.last
        field = self.free.pop() if self.free else np.empty(self.shape, dtype=np.float32)
        if day in self.step_of:
            read_chunk(self.data, (self.step_of[day],), field)
        else:
            read_chunk(self.means, (day, self.hour), field)
        if self.keep:
            self.kept[day] = field
        else:
            self.last = field
        return field


def _smooth_and_write(
    climatology,
    means,
    data,
    counts: np.ndarray,
    days: list[int],
    hour: int,
    plan: ClimatologyPlan,
    needed: list[int],
    steps: list[int | None],
    *written: int,
) -> int:
    """Smooth and write one hour's climatology at ``days``.

    ``needed`` are the days the windows touch. A day whose ``steps`` entry
    is a time index is a bin of that single step, read from ``data``; the
    others are read from the temporary bin means. ``written`` are the
    results of the tasks that wrote them (unused: they order the graph).
    """
    step_of = {day: step for day, step in zip(needed, steps, strict=True) if step is not None}
    read = _WindowFields(means, data, hour, step_of, 2 * plan.half + 2)
    writer = fast_writer(climatology)
    for day, mean in zip(days, window_means(read, counts, days, plan), strict=True):
        writer[day, hour] = mean
    return len(days)


@dataclass
class Segment:
    """One graph of a pass, computed at once.

    Attributes
    ----------
    work : list of Delayed
        Write and climatology tasks, each returning how many steps (or
        fields) it wrote.
    moments, tendencies : Delayed
        Merged :class:`pipelines.statistics.Moments` of the segment's steps
        and of its one-step differences (from the step before its first).
    last : bool
        The pass's last segment, which holds the climatology: its bins read
        the data of every segment, so it is computed after the others.
    """

    work: list[Delayed]
    moments: Delayed
    tendencies: Delayed
    last: bool


def build_pass(
    data: dask.array.Array,
    times: np.ndarray,
    channels: list[str],
    spans,
    weights: np.ndarray,
    targets: Targets,
    plan: ClimatologyPlan | None,
    skip: int = 0,
) -> Iterator[Segment]:
    """The graphs of one pass, segment by segment (each built when it is asked for).

    Parameters
    ----------
    data : dask.array.Array
        ``(time, channel, lat, lon)``, lazy.
    times : numpy.ndarray
        Its times.
    channels : list of str
        Its channels (for error messages).
    spans : dict
        :func:`pipelines.sources.combine`'s spans (names the file behind a time).
    weights : numpy.ndarray
        Flat point weights (:func:`pipelines.statistics.area_weights`).
    targets : Targets
        Where to write.
    plan : ClimatologyPlan or None
        The climatology bins of ``times``; None: no climatology.
    skip : int
        Segments computed before (by a killed ingest that is resumed): not built.

    Yields
    ------
    Segment
        In time order; the last also holds the climatology.
    """
    if plan is not None and targets.data is None:
        raise ValueError("a climatology is averaged from the written data: the pass needs it")
    bounds = pass_blocks(data, targets)
    for first, stop in segments_of(bounds, SEGMENT_BLOCKS)[skip:]:
        before, blocks = segment_blocks(data, bounds[first:stop])
        tasks = Tasks(blocks[0])
        weights_key = (tasks.name, "weights")
        tasks.layer[weights_key] = weights  # once in the graph, not once per task
        writes, moments, tendencies = [], [], []
        # per block of the pass: the task that writes it in this graph (None: written before, or there already)
        written_by: list = [None] * len(bounds)
        previous = tasks.add(last_step, before.key) if before is not None else None
        for index, block in zip(range(first, stop), (b.key for b in blocks), strict=True):
            start, end = bounds[index]
            check = FiniteCheck(times[start:end], channels, spans)
            if targets.data is not None and start >= targets.write_from:
                offset = targets.offset + start - targets.write_from
                writes.append(tasks.add(_write, targets.data, offset, block))
                written_by[index] = writes[-1]
            moments.append(tasks.add(moment_partial, block, weights_key, check))
            tendencies.append(tasks.add(tendency_partial, block, previous, weights_key))
            previous = tasks.add(last_step, block)
        climatology = []
        if plan is not None and stop == len(bounds):
            starts = np.asarray([start for start, _ in bounds])
            climatology = _climatology_graph(tasks, plan, targets, starts, written_by)
        moments_key = tasks.tree(moments, merge_moments)
        tendencies_key = tasks.tree(tendencies, _merge_tendencies)
        delayed = tasks.delayed([*writes, *climatology, moments_key, tendencies_key])
        yield Segment(delayed[:-2], delayed[-2], delayed[-1], last=stop == len(bounds))


def merge_segments(results: Sequence[dict]) -> tuple[Moments, Moments]:
    """The pass's moments and tendency moments from its segments' computed ``moments`` and ``tendencies`` (exact, as the trees merge them)."""
    return (
        merge_moments(*(r["moments"] for r in results)),
        _merge_tendencies(*(r["tendencies"] for r in results)),
    )


def _merge_tendencies(*parts: Moments) -> Moments:
    counted = [p for p in parts if p.count]
    return merge_moments(*counted) if counted else parts[0]


def _data_index(step: int, targets: Targets) -> int:
    """Index in ``targets.data`` of the pass's time ``step`` (steps before ``write_from`` are there already)."""
    if step < targets.write_from:
        assert targets.offset == targets.write_from, "old steps are read back where they are"
        return step
    return targets.offset + step - targets.write_from


def _climatology_graph(
    tasks: Tasks, plan: ClimatologyPlan, targets: Targets, starts: np.ndarray, written_by: list
) -> list[tuple[str, int]]:
    """Bin means of the bins of several steps, then the smoothing tasks.

    ``starts`` are the blocks' first time indices and ``written_by`` the
    tasks that write them, which a bin's reads wait for.
    """
    bin_means: dict[tuple[int, int], tuple[str, int]] = {}
    single: dict[tuple[int, int], tuple] = {}  # a bin of one step: its data index, its writer
    for (day, hour), members in plan.bins().items():
        waits = {written_by[b] for b in np.searchsorted(starts, members, side="right") - 1} - {None}
        indices = [_data_index(int(step), targets) for step in members]
        if len(indices) == 1:  # its own mean: the smoothing reads it from the data
            single[(day, hour)] = (indices[0], next(iter(waits), None))
        else:
            bin_means[(day, hour)] = tasks.add(
                _bin_mean, targets.means, targets.data, day, hour, indices, *sorted(waits)
            )
    keys = []
    for hour in range(plan.hours.size):
        counts = plan.counts[:, hour]
        for days in plan.segments(hour, SMOOTH_DAYS):
            needed = sorted({d for day in days for d in plan.window(day) if counts[d]})
            steps = [single[(d, hour)][0] if (d, hour) in single else None for d in needed]
            waits = {single[(d, hour)][1] for d in needed if (d, hour) in single} - {None}
            waits |= {bin_means[(d, hour)] for d in needed if (d, hour) in bin_means}
            keys.append(
                tasks.add(
                    _smooth_and_write,
                    targets.climatology,
                    targets.means,
                    targets.data,
                    counts,
                    days,
                    hour,
                    plan,
                    needed,
                    steps,
                    *sorted(waits),
                )
            )
    return keys
