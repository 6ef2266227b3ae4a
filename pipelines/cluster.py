"""Where the ingest graph runs: threads, processes, a local cluster or a ``dask.distributed`` scheduler.

- ``threads`` (default) and ``synchronous``: in this process;
- ``processes``: Dask's multiprocessing scheduler (every task's result
  passes through this process: use ``local:N`` to keep the data in the workers);
- ``local:N``: a ``distributed.LocalCluster`` of N worker processes started
  for this command;
- ``tcp://HOST:PORT`` (or ``tls://``): a running ``dask.distributed`` scheduler.

:func:`compute_segments` runs a pass's graphs, one segment after another, with a progress bar. On a distributed
scheduler the results stay on the workers until they are gathered, the
futures are cancelled if anything fails, and a worker that dies for good
(``KilledWorker``) becomes a one-line error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import dask
import dask.local
import dask.multiprocessing
import dask.threaded
from tqdm.auto import tqdm

from forecast.errors import DataError

#: Dask configuration for the worker processes of ``local:N``. distributed starts its workers with
#: ``MALLOC_TRIM_THRESHOLD_=65536``; setting any glibc malloc threshold turns off the adaptive mmap
#: threshold, so every array over 128 KB is a fresh ``mmap`` whose pages the kernel faults in and
#: zeroes, and an ingest's worker spent twice the CPU time of the same tasks on threads (1 GB:
#: 12.7 against 6.3 CPU-s, docs/performance.md). Unset, glibc reuses freed blocks up to 32 MB and
#: still returns free memory over 64 MB at the top of the heap. Workers of a ``tcp://`` cluster
#: take the same setting from their own configuration (docs/operations.md).
WORKER_ENVIRON = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

_LOCAL: dict[str, Callable[..., Any]] = {
    "threads": dask.threaded.get,
    "processes": dask.multiprocessing.get,
    "synchronous": dask.local.get_sync,
}


@dataclass
class Scheduler:
    """A scheduler to compute on: ``client`` for distributed ones, else the local ``get`` function."""

    name: str
    get: Callable[..., Any] | None = None
    client: Any = None  # a distributed.Client; typed loosely so that distributed stays optional


@contextlib.contextmanager
def dask_scheduler(scheduler: str) -> Iterator[Scheduler]:
    """Run the enclosed Dask computations on ``scheduler`` (see the module docstring)."""
    if scheduler in _LOCAL:
        # the scheduler's function, not its name: a name makes every compute look for a
        # dask.distributed client first, and importing distributed for that takes 0.3 s
        with dask.config.set(scheduler=_LOCAL[scheduler]):
            yield Scheduler(scheduler, get=_LOCAL[scheduler])
        return
    if scheduler.startswith("local:"):
        from distributed import Client, LocalCluster

        try:
            workers = int(scheduler.split(":", 1)[1])
        except ValueError:
            raise DataError(
                f"bad scheduler {scheduler!r}",
                hint="use local:N with N the number of worker processes",
            ) from None
        with (
            dask.config.set(WORKER_ENVIRON),
            LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster, set_as_default=False) as client,
        ):
            with dask.config.set(scheduler=client.get):
                yield Scheduler(scheduler, client=client)
        return
    if scheduler.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
        from distributed import Client

        try:
            client = Client(scheduler, timeout="20s", set_as_default=False)
        except OSError as err:
            raise DataError(
                f"cannot reach the Dask scheduler at {scheduler} ({err})",
                hint="start it with 'dask scheduler' or check the address",
            ) from None
        try:
            with dask.config.set(scheduler=client.get):
                yield Scheduler(scheduler, client=client)
        finally:
            client.close()
        return
    raise DataError(
        f"unknown scheduler {scheduler!r}",
        hint="use threads, processes, synchronous, local:N or tcp://HOST:PORT",
    )


def _killed_worker(err: BaseException, scheduler: str) -> DataError:
    return DataError(
        f"a Dask worker died for good while ingesting ({' '.join(str(err).split())[:200]})",
        path=scheduler,
        hint="check the workers' logs and memory (a worker killed for memory needs smaller --chunks or more memory per worker), then rerun; nothing was published",
    )


#: Segments a distributed scheduler holds at once: the next is submitted while one runs, so
#: the workers do not wait for the client between segments.
IN_FLIGHT = 2


def compute_segments(
    scheduler: Scheduler,
    segments: Iterable,
    progress: bool,
    description: str,
    total: int | None = None,
    done: int = 0,
    finished: Callable[[dict], None] | None = None,
    unit: str = "step",
) -> list[dict]:
    """Compute a pass's segments (:class:`pipelines.graph.Segment`) in order, with one progress bar.

    Each segment's ``work`` tasks return how many ``unit`` s they did (the
    bar starts at ``done`` of ``total``); its ``moments`` and ``tendencies``
    are small and come back, and ``finished`` is called with them as each
    segment completes, in order. On a distributed scheduler up to
    :data:`IN_FLIGHT` segments run at once, except the last, which starts
    when all before it are done (its climatology reads what they wrote).
    Returns each segment's ``{"moments": ..., "tendencies": ...}``, in order.
    """
    report = finished or (lambda result: None)
    with tqdm(
        total=total, initial=done, unit=unit, desc=description, disable=not progress, leave=False
    ) as bar:
        if scheduler.client is None:
            results = []
            for segment in segments:
                results.append(_compute_here(scheduler, segment, bar))
                report(results[-1])
            return results
        return _compute_distributed(scheduler, segments, bar, report)


def _compute_here(scheduler: Scheduler, segment, bar) -> dict:
    from dask.callbacks import Callback

    work_keys = {task.key for task in segment.work}

    class _Bar(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in work_keys:
                bar.update(int(result or 0))

    with _Bar():
        *_, moments, tendencies = dask.compute(
            *segment.work, segment.moments, segment.tendencies, scheduler=scheduler.get
        )
    return {"moments": moments, "tendencies": tendencies}


def _compute_distributed(
    scheduler: Scheduler, segments: Iterable, bar, report: Callable[[dict], None]
) -> list[dict]:
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    client = scheduler.client
    running: list[list] = []  # per segment in flight: its futures, work first, then the two results
    results: list[dict] = []

    def finish_oldest() -> None:
        futures = running[0]
        for future in as_completed(futures[:-2], loop=client.loop):
            bar.update(int(future.result() or 0))
        moments, tendencies = client.gather(futures[-2:])
        results.append({"moments": moments, "tendencies": tendencies})
        running.pop(0)
        report(results[-1])

    try:
        for segment in segments:
            if segment.last:  # its climatology reads what the others wrote
                while running:
                    finish_oldest()
            running.append(client.compute([*segment.work, segment.moments, segment.tendencies]))
            while len(running) >= IN_FLIGHT or (segment.last and running):
                finish_oldest()
    except KilledWorker as err:
        for futures in running:
            client.cancel(futures)
        raise _killed_worker(err, scheduler.name) from err
    except BaseException:
        for futures in running:
            client.cancel(futures)
        raise
    return results
