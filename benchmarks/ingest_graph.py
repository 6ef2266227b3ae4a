"""Benchmark: the client's graph in a long ingest, submitted in segments against as one graph.

An ERA5 ingest is one block per time step (a 0.25-degree step is 303 MB,
more than a block's 64 MB), some 67,000 6-hourly blocks, and its graph is
what the client builds and holds. This runs the same shape on a grid small
enough for this machine: ``--years`` of 6-hourly steps of 4 channels on a
4 x 8 grid, one NetCDF file a year, with blocks of one step
(``pipelines.graph.BLOCK_BYTES`` set to one step's bytes), so the graph
has as many blocks as an ERA5 ingest of the same years. In one run, each
ingest in a fresh process so that its peak memory is its own, alternately:

1. ``one graph``: ``pipelines.graph.SEGMENT_BLOCKS`` larger than the
   blocks, so the whole pass is one graph (the code before segments);
2. ``segments``: the default :data:`pipelines.graph.SEGMENT_BLOCKS`.

It reports the wall time, the client's CPU time, its peak RSS and the
largest graph a scheduler received (tasks after Dask's optimisation,
counted by a callback), and checks that both stores hold the same data
and climatology.

Usage::

    .venv/bin/python benchmarks/ingest_graph.py [--years 20] [--repeats 2] [--workdir /tmp/forecast-bench-graph]

docs/performance.md records a run.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from ingest import _run  # noqa: E402  (benchmarks/ingest.py: one subprocess, its JSON line)

INGEST = """
import glob, json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from dask.callbacks import Callback
from pipelines import graph
from pipelines.ingest import ingest
graph.BLOCK_BYTES = 4 * 4 * 8 * 4  # one step: a block a step, as at 0.25 degree
if sys.argv[4] == "one":
    graph.SEGMENT_BLOCKS = 10**9
sizes = []
class Count(Callback):
    def _start(self, dsk):
        sizes.append(len(dsk))
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage.ru_utime + usage.ru_stime
start = time.perf_counter()
with Count():
    report = ingest(sorted(glob.glob(sys.argv[1])), sys.argv[2], progress=False, overwrite=True)
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
                  "peak_rss_mb": usage.ru_maxrss / 1024, "graphs": len(sizes), "largest": max(sizes),
                  "times": report.times}))
"""


def _sources(folder: Path, years: int) -> None:
    """One NetCDF a year of 6-hourly random fields (t2m, msl, u10, v10) on a 4 x 8 grid."""
    import pandas as pd
    import xarray as xr

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lat, lon = np.array([67.5, 22.5, -22.5, -67.5]), np.arange(0, 360, 45.0)
    for year in range(2000, 2000 + years):
        path = folder / f"{year}.nc"
        if path.exists():
            continue
        times = pd.date_range(f"{year}-01-01", f"{year}-12-31T18", freq="6h")
        shape = (len(times), lat.size, lon.size)
        base = {"t2m": 280.0, "msl": 101325.0, "u10": 0.0, "v10": 0.0}
        ds = xr.Dataset(
            {
                name: (
                    ("valid_time", "latitude", "longitude"),
                    (mean + rng.standard_normal(shape)).astype(np.float32),
                )
                for name, mean in base.items()
            },
            coords={"valid_time": times, "latitude": lat, "longitude": lon},
        )
        ds.to_netcdf(path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--years", type=int, default=20, help="years of 6-hourly steps (default 20)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="runs of each, alternately (default 2)"
    )
    parser.add_argument("--workdir", default="/tmp/forecast-bench-graph")
    args = parser.parse_args()
    work = Path(args.workdir)
    sources = work / f"sources-{args.years}y"
    _sources(sources, args.years)
    pattern = str(sources / "*.nc")
    runs: dict[str, list[dict]] = {"one": [], "segments": []}
    for _ in range(args.repeats):
        for kind in runs:
            store = work / f"{kind}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            runs[kind].append(_run(INGEST, pattern, str(store), str(REPO), kind))
    import xarray as xr

    one, parts = (xr.open_zarr(work / f"{k}.zarr") for k in ("one", "segments"))
    for name in ("data", "climatology"):
        np.testing.assert_array_equal(one[name].values, parts[name].values)
    steps = runs["one"][0]["times"]
    print(f"\n{args.years} years, {steps} steps = blocks; 4 channels on 4 x 8")
    print(
        f"{'run':<14}{'seconds':>10}{'client CPU s':>14}{'peak RSS MB':>13}{'graphs':>8}{'largest graph (tasks)':>23}"
    )
    for kind, results in runs.items():
        for r in results:
            print(
                f"{kind:<14}{r['seconds']:>10.1f}{r['cpu_seconds']:>14.1f}{r['peak_rss_mb']:>13.0f}{r['graphs']:>8}{r['largest']:>23,}"
            )
    median = {
        k: {
            key: float(np.median([r[key] for r in v]))
            for key in ("seconds", "cpu_seconds", "peak_rss_mb", "largest")
        }
        for k, v in runs.items()
    }
    s, o = median["segments"], median["one"]
    print(
        f"\nsegments / one graph (medians): time {s['seconds'] / o['seconds']:.2f}x, "
        f"client CPU {s['cpu_seconds'] / o['cpu_seconds']:.2f}x, peak RSS {s['peak_rss_mb'] / o['peak_rss_mb']:.2f}x, "
        f"largest graph {s['largest'] / o['largest']:.3f}x; data and climatology identical"
    )
    for kind in runs:
        shutil.rmtree(work / f"{kind}.zarr", ignore_errors=True)


if __name__ == "__main__":
    main()
