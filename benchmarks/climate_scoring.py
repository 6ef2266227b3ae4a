"""Benchmark of ``forecast score --climate``: one pass over the reference store against the old passes.

Times :func:`forecast.scoring.climate.climate_scores` on a run's products
against the same function of an older revision of ``forecast/scoring/climate.py``
(``--baseline``, default the last revision before the one-pass reduction,
which computed each product's reference means and the histograms in their own
passes through xarray's groupby), on the same products and store, in one
process, and checks that both give the same scores. The new code runs twice:
on the store opened as before (a Dask task per store chunk, one time step)
and as ``forecast score --climate`` now opens it
(``open_store(path, chunk_bytes=CHUNK_BYTES)``). Results recorded in
docs/performance.md ("Climate runs", "Scoring the climate").

Usage::

    .venv/bin/python benchmarks/climate_scoring.py --run RUN.zarr --truth STORE.zarr \\
        [--baseline REV] [--out RESULT.json]

``--run`` is the ``--out`` of a climate run (its manifest lists the
products) or one product file. The store is read once before the timings
(an untimed run of the new code), so that both timed runs find it in the
page cache. Each timing includes computing the scores (``.load()``: the
old code returned the run's side lazily), as the command's table and file do.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.files import atomic_write  # noqa: E402
from forecast.scoring.climate import climate_scores, open_products  # noqa: E402
from forecast.scoring.climate_reference import CHUNK_BYTES  # noqa: E402
from forecast.store import open_store  # noqa: E402

#: The last revision of forecast/scoring/climate.py before the one-pass reduction.
BASELINE = "1d04bac"


def baseline_module(revision: str) -> types.ModuleType:
    """``forecast/scoring/climate.py`` as of ``revision`` (git), as a module."""
    source = subprocess.run(
        ["git", "show", f"{revision}:forecast/scoring/climate.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("baseline_climate")
    module.__file__ = f"{revision}:forecast/scoring/climate.py"
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def timed(function) -> tuple[float, float, object]:
    """Wall and process CPU seconds of one call, and its result."""
    start, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - start, time.process_time() - cpu, result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="the climate run's --out or a product file")
    parser.add_argument("--truth", required=True, help="the reference store")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of the old code")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    old = baseline_module(args.baseline)
    store = open_store(args.truth)  # one Dask chunk per store chunk (time step), as before
    streamed = open_store(args.truth, chunk_bytes=CHUNK_BYTES)  # as forecast score --climate now
    products = open_products(args.run)
    climate_scores(products, streamed)  # warm the page cache
    old_wall, old_cpu, old_scores = timed(lambda: old.climate_scores(products, store).load())
    print(f"old ({args.baseline}): {old_wall:.1f} s wall, {old_cpu:.1f} s CPU", flush=True)
    step_wall, step_cpu, _ = timed(lambda: climate_scores(products, store))
    print(f"one pass, a Dask task per store chunk: {step_wall:.1f} s wall, {step_cpu:.1f} s CPU")
    new_wall, new_cpu, new_scores = timed(lambda: climate_scores(products, streamed))
    print(
        f"one pass, {CHUNK_BYTES >> 20} MiB Dask chunks: {new_wall:.1f} s wall, {new_cpu:.1f} s CPU"
    )

    differences = {}
    for name in old_scores.data_vars:
        a, b = old_scores[name].values, new_scores[name].values
        scale = float(np.nanmax(np.abs(a))) or 1.0
        differences[name] = float(np.nanmax(np.abs(a - b))) / scale
    result = {
        "run": args.run,
        "truth": args.truth,
        "states": int(store.sizes["time"]),
        "products": sorted(products),
        "baseline": args.baseline,
        "old_wall_s": round(old_wall, 2),
        "old_cpu_s": round(old_cpu, 2),
        "one_pass_per_chunk_tasks_wall_s": round(step_wall, 2),
        "one_pass_per_chunk_tasks_cpu_s": round(step_cpu, 2),
        "new_wall_s": round(new_wall, 2),
        "new_cpu_s": round(new_cpu, 2),
        "wall_ratio": round(old_wall / new_wall, 1),
        "cpu_ratio": round(old_cpu / new_cpu, 1),
        "max_relative_difference": differences,
        "same_variables": sorted(old_scores.data_vars) == sorted(new_scores.data_vars),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(
            args.out, lambda temporary: temporary.write_text(json.dumps(result, indent=2) + "\n")
        )
    worst = max(differences.values(), default=0.0)
    return 0 if result["same_variables"] and worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
