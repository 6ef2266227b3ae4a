"""Memory of a climate run does not grow with its length: peak RSS at 100 and at 1,000 steps.

Run by hand (results go in docs/performance.md, "## Climate runs")::

    .venv/bin/python benchmarks/climate_memory.py            # 32x64, 4 channels, 4 members
    .venv/bin/python benchmarks/climate_memory.py --repeats 3 --steps 100,2000
    .venv/bin/python benchmarks/climate_memory.py --forcing-vars 8  # with prescribed forcings

Each run is a fresh process (its peak resident memory, ``VmHWM``): a
4-member climate run of a small random SFNO (the rollout benchmark's) from
the rollout benchmark's store, writing monthly, seasonal, annual and
whole-run means, 50-bin histograms, daily snapshots and a restart file every
30 days, to Zarr. The short and the long run alternate ``--repeats`` times;
the ratio of the medians is the result (goal <= 1.05).

With ``--forcing-vars N`` the model also takes N prescribed fields read from a
forcing store that covers exactly each run's period (``N * (steps + 1)``
fields of 32x64 float32: 64 MiB for 8 fields at 1,000 steps), so a reader
that loaded the store, or kept what it read, would grow with the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def forced_stepper(stepper, names: tuple[str, ...]):
    """The benchmark's stepper with prescribed forcings ``names`` (its weights re-drawn)."""
    import numpy as np
    import torch

    from forecast.normalize import Normalizer
    from forecast.steppers import BackboneStepper

    torch.manual_seed(0)
    ones = np.ones(len(names))
    return BackboneStepper(
        "sfno", stepper.hparams, stepper.channels, stepper.grid, stepper.step, stepper.normalizer,
        prescribed=Normalizer(names, 290.0 * ones, 10.0 * ones, ones),
    ).eval()  # fmt: skip


def forcing_store(workdir: Path, steps: int, grid, names: tuple[str, ...], start: str) -> Path:
    """A forcing store of ``names`` over the ``steps + 1`` valid times of a run from ``start``."""
    import numpy as np

    from pipelines.synthetic_forcing import sst_field
    from tests.forcing_stores import store_times, write_fields_store

    path = workdir / f"forcing-{len(names)}-{steps}.zarr"
    if not path.exists():
        times = store_times(start, steps + 1)
        data = np.stack([sst_field(times, grid, seed) for seed in range(len(names))], axis=1)
        write_fields_store(path, times, grid, data, names, 290.0, 10.0)
    return path


def child(workdir: Path, steps: int, grid: str, members: int, forcing_vars: int = 0) -> dict:
    """One climate run; returns its peak RSS (bytes) and seconds."""
    import time

    import torch
    from rollout import CHANNELS, INIT, make_stepper, peak_rss_bytes, write_store

    from forecast.periods import steps_for_length  # noqa: F401  (imported as a run imports it)
    from forecast.store import open_store
    from inference.climate import ClimateWriter, HistogramSpec
    from inference.ensemble import run_forecast
    from inference.initial import InitialStates, parse_init_spec
    from inference.perturbations import build_perturbation, perturbation_spec
    from inference.request import RunRequest
    from inference.writers import writer_for

    torch.set_num_threads(1)
    nlat, nlon = (int(n) for n in grid.split("x"))
    store_path = workdir / f"store-{grid}.zarr"
    if not store_path.exists():
        write_store(store_path, nlat, nlon)
    store = open_store(store_path)
    stepper = make_stepper(nlat, nlon)
    out = workdir / f"climate-{steps}.zarr"
    init = parse_init_spec(INIT, "standard")
    if forcing_vars:
        from forecast.prescribed import connect_forcing_store
        from inference.initial import run_valid_times

        names = tuple(f"sst{k}" for k in range(forcing_vars))
        stepper = forced_stepper(stepper, names)
        location = forcing_store(workdir, steps, stepper.grid, names, INIT)
        times = run_valid_times(init, steps, stepper.step, "standard")
        connect_forcing_store(stepper, location, "standard", times, model="benchmark")
    initial = InitialStates(store, init, stepper)
    spec = perturbation_spec("gaussian", 0.05, stepper.channels, seed=0)
    reduce = ("monthly", "seasonal", "annual", "time-mean")
    writer = ClimateWriter(
        out,
        reduce,
        HistogramSpec.from_normalizer(stepper.normalizer, CHANNELS, 50),
        writer_for(out),
        output_every=4,
    )
    request = RunRequest.for_stepper(
        stepper,
        initial.labels,
        steps,
        members=members,
        perturbation=spec,
        overwrite=True,
        reduce=reduce,
        histogram_bins=50,
        output_every=4,
        restart_every=120,
        compression=writer.compression,
    )
    start = time.perf_counter()
    run_forecast(
        stepper,
        initial,
        build_perturbation(spec, stepper),
        writer,
        request,
        show_progress=False,
        log=lambda message: None,
    )
    return {"steps": steps, "peak_rss": peak_rss_bytes(), "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", default="32x64")
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", default="100,1000", help="short,long")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--forcing-vars", type=int, default=0, help="prescribed fields from a forcing store"
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="forecast-climate-memory-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        print(json.dumps(child(workdir, args.child, args.grid, args.members, args.forcing_vars)))
        return 0
    short, long = (int(n) for n in args.steps.split(","))
    results: dict[int, list[dict]] = {short: [], long: []}
    for _ in range(args.repeats):
        for steps in (short, long):
            command = [
                sys.executable,
                __file__,
                "--child",
                str(steps),
                "--grid",
                args.grid,
                "--members",
                str(args.members),
                "--workdir",
                str(workdir),
                "--forcing-vars",
                str(args.forcing_vars),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results[steps].append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(results[steps][-1]), file=sys.stderr, flush=True)
    median = {s: sorted(r["peak_rss"] for r in runs)[len(runs) // 2] for s, runs in results.items()}
    summary = {
        "grid": args.grid,
        "members": args.members,
        "forcing_vars": args.forcing_vars,
        "peak_rss_mib": {
            s: [round(r["peak_rss"] / 2**20, 1) for r in runs] for s, runs in results.items()
        },
        "seconds": {s: [round(r["seconds"], 1) for r in runs] for s, runs in results.items()},
        "ratio_long_over_short": round(median[long] / median[short], 4),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
