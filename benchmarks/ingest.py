"""Benchmark: ``forecast ingest`` against the floor of just reading the same files.

Writes (once, cached) about ``--gigabytes`` of ``forecast synth`` NetCDF at
1 degree, reads them once (untimed, to warm the page cache), then in one
run, each in a fresh subprocess so that peak memory is its own:

1. floor: open the files with xarray + Dask (threads) and read every variable
   into memory, chunk by chunk (nothing kept);
2. ingest: ``pipelines.ingest.ingest`` into a store at the source grid
   (statistics, tendency statistics and climatology included);
3. ingest of the first half of the files, to show that peak memory follows
   the chunk size, not the dataset size.

1 and 2 run ``--repeats`` times, alternately; the ratio is of their medians.

With ``--workers 1,2,4,8`` it runs the scaling comparison instead: the same
ingest on a ``distributed.LocalCluster`` of N single-threaded worker
processes (``--scheduler local:N``), each N in a fresh process, and reports
the wall time and the speed-up over one worker (the goal on a 16-core
machine: 8 workers >= 5x one).

Usage::

    .venv/bin/python benchmarks/ingest.py [--gigabytes 1.0] [--repeats 3] [--workdir /tmp/forecast-bench-ingest]
    .venv/bin/python benchmarks/ingest.py --gigabytes 8 --workers 1,2,4,8

Prints a table and the ratios; docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

FLOOR = """
import json, resource, sys, time, glob
import dask, xarray as xr
files = sorted(glob.glob(sys.argv[1]))
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage.ru_utime + usage.ru_stime
start = time.perf_counter()
with dask.config.set(scheduler="threads"):
    ds = xr.open_mfdataset(files, chunks={"valid_time": 8}, combine="by_coords", decode_timedelta=False)
    total = 0
    for name in ds.data_vars:
        for block in ds[name].data.to_delayed().ravel():
            total += block.compute().nbytes
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0, "peak_rss_mb": usage.ru_maxrss / 1024, "bytes": total}))
"""

INGEST = """
import json, resource, sys, time, glob
sys.path.insert(0, sys.argv[3])
from pipelines.ingest import ingest
files = sorted(glob.glob(sys.argv[1]))
if sys.argv[4] == "half":
    files = files[: max(1, len(files) // 2)]
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage.ru_utime + usage.ru_stime
start = time.perf_counter()
report = ingest(files, sys.argv[2], grid="source", progress=False, overwrite=True, scheduler=sys.argv[5] if len(sys.argv) > 5 else "threads")
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0, "peak_rss_mb": usage.ru_maxrss / 1024, "times": report.times, "channels": len(report.channels)}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--gigabytes",
        type=float,
        default=1.0,
        help="size of the synthetic NetCDF to ingest (default 1.0)",
    )
    parser.add_argument("--workdir", default="/tmp/forecast-bench-ingest")
    parser.add_argument(
        "--repeats", type=int, default=3, help="floor/ingest pairs, run alternately (default 3)"
    )
    parser.add_argument(
        "--workers",
        default=None,
        help="comma-separated worker counts: run the scaling comparison (e.g. 1,2,4,8)",
    )
    args = parser.parse_args()
    work = Path(args.workdir)
    source = work / f"synth-{args.gigabytes:g}GB"
    # 12 float32 fields of 181 x 360 per 6-hourly step: 3.1 MB a step, 12.5 MB a day.
    days = max(1, round(args.gigabytes * 1e9 / (12 * 181 * 360 * 4 * 4)))
    if not source.exists():
        print(f"writing {days} days of 1-degree synthetic data to {source} (once) ...", flush=True)
        tmp = source.with_suffix(".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(
            [
                str(Path(sys.executable).parent / "forecast"),
                "synth",
                str(tmp),
                "--grid",
                "1.0deg",
                "--days",
                str(days),
                "--start",
                "2020-01-01",
            ],
            check=True,
        )
        tmp.rename(source)
    pattern = str(source / "*.nc")
    size = sum(p.stat().st_size for p in source.glob("*.nc")) / 1e9
    store, half_store = work / "store.zarr", work / "half.zarr"
    for old in (store, half_store):  # not timed: replacing an old store would add deleting it
        shutil.rmtree(old, ignore_errors=True)
    for path in sorted(
        source.glob("*.nc")
    ):  # not timed: the first run would otherwise pay for a cold page cache
        with open(path, "rb") as handle:
            while handle.read(16 * 2**20):
                pass
    if args.workers:
        _scaling(
            pattern, store, [int(n) for n in args.workers.split(",")], args.repeats, size, days
        )
        return
    floors, fulls = [], []
    for _ in range(
        args.repeats
    ):  # interleaved, so that a noisy spell on the shared machine hits both
        floors.append(_run(FLOOR, pattern))
        fulls.append(_run(INGEST, pattern, str(store), str(REPO), "all"))
        shutil.rmtree(store, ignore_errors=True)
    half = _run(INGEST, pattern, str(half_store), str(REPO), "half")
    print(
        f"\nsource: {size:.2f} GB of NetCDF, {days} days, 1.0deg, {fulls[0]['channels']} channels, {fulls[0]['times']} times"
    )
    print(f"{'run':<32}{'seconds':>10}{'CPU seconds':>14}{'peak RSS (MB)':>16}")
    rows = [(f"floor: read with xarray ({i + 1})", f) for i, f in enumerate(floors)]
    rows += [(f"ingest, all files ({i + 1})", f) for i, f in enumerate(fulls)]
    for label, run in [*rows, ("ingest, first half", half)]:
        print(
            f"{label:<32}{run['seconds']:>10.1f}{run['cpu_seconds']:>14.1f}{run['peak_rss_mb']:>16.0f}"
        )
    floor = {key: float(np.median([f[key] for f in floors])) for key in ("seconds", "cpu_seconds")}
    full = {
        key: float(np.median([f[key] for f in fulls]))
        for key in ("seconds", "cpu_seconds", "peak_rss_mb")
    }
    ratios = ", ".join(
        f"{f['seconds'] / g['seconds']:.2f}" for f, g in zip(fulls, floors, strict=True)
    )
    cores = len(os.sched_getaffinity(0))
    print(
        f"\ningest / floor time, medians of {args.repeats}: {full['seconds'] / floor['seconds']:.2f}x (goal <= 2x; pair by pair: {ratios})"
    )
    print(
        f"ingest / floor CPU time: {full['cpu_seconds'] / floor['cpu_seconds']:.1f}x; on {cores} cores the ingest cannot take less than "
        f"{full['cpu_seconds'] / cores:.1f} s = {full['cpu_seconds'] / cores / floor['seconds']:.1f}x the floor, however well it overlaps"
    )
    print(
        f"peak memory, all / half of the data: {full['peak_rss_mb'] / half['peak_rss_mb']:.2f}x (half: the first half of the files)"
    )


def _scaling(
    pattern: str, store: Path, workers: list[int], repeats: int, size: float, days: int
) -> None:
    runs: dict[int, list[dict]] = {n: [] for n in workers}
    for _ in range(repeats):
        for n in workers:  # interleaved, like the floor and the ingest
            runs[n].append(_run(INGEST, pattern, str(store), str(REPO), "all", f"local:{n}"))
            shutil.rmtree(store, ignore_errors=True)
    print(
        f"\nsource: {size:.2f} GB of NetCDF, {days} days, 1.0deg; {len(os.sched_getaffinity(0))} cores"
    )
    print(f"{'workers':>8}{'seconds (each run)':>28}{'median s':>10}{'speed-up':>10}")
    base = float(np.median([r["seconds"] for r in runs[workers[0]]]))
    for n in workers:
        seconds = [r["seconds"] for r in runs[n]]
        median = float(np.median(seconds))
        print(
            f"{n:>8}{', '.join(f'{t:.1f}' for t in seconds):>28}{median:>10.1f}{base / median:>9.2f}x"
        )


if __name__ == "__main__":
    main()
