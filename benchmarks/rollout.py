"""Benchmark of the rollout engine: overhead over bare model calls, memory over lead times, earth2studio.

Run by hand (results go in docs/performance.md, "## Rollout")::

    .venv/bin/python benchmarks/rollout.py                       # 64x128, 4 channels, 16 members, 20 steps
    .venv/bin/python benchmarks/rollout.py --e2s-python /path/to/venv-with-earth2studio/bin/python
    .venv/bin/python benchmarks/rollout.py --only dyffusion --grid 32x64   # DYffusion vs SFNO cost
    .venv/bin/python benchmarks/rollout.py --only checkpoints --grid 16x32 --checkpoints 7

What it measures, on CPU:

1. ``overhead``: a 16-member, 20-step ensemble (gaussian perturbation)
   written to Zarr by :func:`inference.ensemble.run_forecast`, against the
   bare model forward passes for the same batches (same batch size, same
   number of steps, no perturbation, no checks, no writing). Each is timed
   ``--repeats`` times, alternating, and the fastest of each is kept (the
   machine is shared).
2. ``memory``: peak resident memory of the same run at 10 and at 40 steps,
   each in a fresh process.
3. ``dyffusion``: member-steps per second of a sampled DYffusion ensemble
   (horizon 4, both networks of the SFNO's size) against the deterministic
   SFNO of that size, the same members, steps and batch size through the
   same engine, timed alternately ``--repeats`` times (fastest of each).
4. ``checkpoints``: member-steps per second of a multi-checkpoint ensemble
   (``--checkpoints`` SFNOs of one architecture, other random weights, as
   seeds of one recipe give) through :func:`inference.ensemble.run_forecast`,
   with its networks stacked into one vmapped call per step
   (:mod:`forecast.models.stacked`) against the same engine with the
   stacking turned off (a batch per checkpoint, as before), timed
   alternately ``--repeats`` times (fastest of each).
5. ``earth2studio``: members per second of earth2studio's ``run.ensemble``
   (its Gaussian perturbation and Zarr backend) wrapping the same model, when
   a Python with earth2studio is given (benchmark environment only; it is not
   a dependency of this project).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.grid import Grid  # noqa: E402
from forecast.normalize import Normalizer  # noqa: E402
from forecast.steppers import BackboneStepper, DYffusionStepper  # noqa: E402
from forecast.store import STORE_FORMAT_VERSION, open_store  # noqa: E402
from inference.ensemble import run_forecast  # noqa: E402
from inference.initial import InitialStates, load_initial_state, parse_init_spec  # noqa: E402
from inference.members import MemberModels  # noqa: E402
from inference.perturbations import build_perturbation, perturbation_spec  # noqa: E402
from inference.request import RunRequest  # noqa: E402
from inference.writers import writer_for  # noqa: E402

CHANNELS = ["z500", "t850", "u10m", "t2m"]
MEANS = np.array([54000.0, 275.0, 0.0, 285.0])
STDS = np.array([3000.0, 15.0, 5.0, 20.0])
HPARAMS = {"embed_dim": 16, "num_layers": 2}
INIT = "2020-01-02T00"


def write_store(path: Path, nlat: int, nlon: int, periods: int = 8) -> Path:
    """A small synthetic training store (smooth fields drifting eastwards)."""
    grid = Grid.equiangular(nlat, nlon)
    times = pd.date_range("2020-01-01", periods=periods, freq="6h").values
    lat = np.deg2rad(grid.latitude)[:, None]
    lon = np.deg2rad(grid.longitude)[None, :]
    data = np.stack(
        [
            np.stack(
                [
                    MEANS[c]
                    + STDS[c]
                    * (
                        np.cos(lat) * np.sin(2 * lon - 0.3 * t + c)
                        + 0.3 * np.sin(3 * lat) * np.cos(lon + 0.1 * t)
                    )
                    for c in range(4)
                ]
            )
            for t in range(periods)
        ]
    ).astype(np.float32)
    ds = xr.Dataset(
        {
            "data": (("time", "channel", "latitude", "longitude"), data),
            "mean": ("channel", MEANS),
            "std": ("channel", STDS),
            "diff_std": ("channel", STDS * 0.2),
            "climatology": (
                ("dayofyear", "hour", "channel", "latitude", "longitude"),
                np.zeros((1, 1, 4, nlat, nlon), np.float32),
            ),
        },
        coords={
            "time": times,
            "channel": CHANNELS,
            "latitude": grid.latitude,
            "longitude": grid.longitude,
            "dayofyear": [1],
            "hour": [0],
        },
        attrs={
            "store_format_version": STORE_FORMAT_VERSION,
            "grid_kind": grid.kind,
            "time_step": "6h",
            "calendar": "standard",
            "statistics_start": "2020-01-01",
            "statistics_end": "2020-01-02",
            "sources": "benchmark",
            "software_version": "benchmark",
        },
    )
    ds["data"].encoding = {"chunks": (1, 4, nlat, nlon)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(path, mode="w", consolidated=True, zarr_format=3)
    return path


def make_stepper(nlat: int, nlon: int, seed: int = 0) -> BackboneStepper:
    torch.manual_seed(seed)
    normalizer = Normalizer(tuple(CHANNELS), MEANS, STDS, STDS * 0.2)
    return BackboneStepper(
        "sfno", HPARAMS, CHANNELS, Grid.equiangular(nlat, nlon), dt.timedelta(hours=6), normalizer
    ).eval()


def make_dyffusion(nlat: int, nlon: int, horizon: int = 4) -> DYffusionStepper:
    """DYffusion whose interpolator and forecaster are each an SFNO of :data:`HPARAMS`."""
    torch.manual_seed(0)
    normalizer = Normalizer(tuple(CHANNELS), MEANS, STDS, STDS * 0.2)
    return DYffusionStepper(
        {**HPARAMS, "horizon": horizon, "dropout": 0.1},
        CHANNELS,
        Grid.equiangular(nlat, nlon),
        dt.timedelta(hours=6),
        normalizer,
    ).eval()


def dyffusion_cost(
    store, workdir: Path, nlat: int, nlon: int, members: int, steps: int, repeats: int
) -> dict:
    """Member-steps per second of DYffusion and of the SFNO of the same size, timed alternately."""
    sfno, dyffusion = make_stepper(nlat, nlon), make_dyffusion(nlat, nlon)
    seconds = {"sfno": [], "dyffusion": []}
    cpu = {"sfno": [], "dyffusion": []}
    for name, model in (("sfno", sfno), ("dyffusion", dyffusion)):  # warm-up
        engine_run(model, store, workdir / f"warm-{name}.zarr", 2, 4, members, perturbation="none")
    for _ in range(repeats):
        for name, model in (("sfno", sfno), ("dyffusion", dyffusion)):
            before = time.process_time()
            elapsed, _ = engine_run(
                model,
                store,
                workdir / f"cost-{name}.zarr",
                members,
                steps,
                members,
                perturbation="none",
            )
            cpu[name].append(time.process_time() - before)
            seconds[name].append(elapsed)
    wall = throughput(seconds, members * steps)
    cpu_rates = {name: members * steps / min(values) for name, values in cpu.items()}
    rates = wall["member_steps_per_s"]
    return {
        **throughput_setting(nlat, nlon, members, steps),
        "batch_size": members,
        "network": f"sfno {HPARAMS} (DYffusion: two of them, horizon 4)",
        **wall,
        "dyffusion_over_sfno_cost": round(rates["sfno"] / rates["dyffusion"], 3),
        "cpu_seconds": {name: [round(v, 3) for v in values] for name, values in cpu.items()},
        "member_steps_per_cpu_s": {name: round(rate, 2) for name, rate in cpu_rates.items()},
        "dyffusion_over_sfno_cpu_cost": round(cpu_rates["sfno"] / cpu_rates["dyffusion"], 3),
    }


def throughput_setting(nlat: int, nlon: int, members: int, steps: int) -> dict[str, int | str]:
    """The grid, members and steps of a throughput comparison, for its report."""
    return {"grid": f"{nlat}x{nlon}", "members": members, "steps": steps}


def throughput(seconds: dict[str, list[float]], member_steps: int) -> dict[str, dict]:
    """The timed runs of each variant and its member-steps per second (fastest run)."""
    return {
        "seconds": {name: [round(v, 3) for v in values] for name, values in seconds.items()},
        "member_steps_per_s": {
            name: round(member_steps / min(values), 2) for name, values in seconds.items()
        },
    }


def checkpoint_stacking(
    store, workdir: Path, nlat: int, nlon: int, members: int, steps: int, repeats: int, count: int
) -> dict:
    """Member-steps per second of ``count`` checkpoints stacked and in a batch each, alternately."""
    from unittest import mock

    # another seed's initial weights each, the same recipe
    models = MemberModels(tuple(make_stepper(nlat, nlon, seed) for seed in range(count)))
    seconds: dict[str, list[float]] = {"stacked": [], "per_checkpoint": []}
    strategy: dict[str, str] = {}

    def one(name: str, out: Path, n: int, k: int) -> float:
        nonlocal strategy
        if name == "stacked":
            elapsed, result = engine_run(models, store, out, n, k, None, perturbation="none")
            strategy = result.manifest.get("checkpoint_stacking", {})
            return elapsed
        with mock.patch("inference.ensemble.stack_backbones", return_value=None):
            return engine_run(models, store, out, n, k, None, perturbation="none")[0]

    for name in seconds:  # warm-up
        one(name, workdir / f"warm-{name}.zarr", count, 2)
    for _ in range(repeats):
        for name in seconds:
            seconds[name].append(one(name, workdir / f"ckpt-{name}.zarr", members, steps))
    wall = throughput(seconds, members * steps)
    rates = wall["member_steps_per_s"]
    return {
        **throughput_setting(nlat, nlon, members, steps),
        "checkpoints": count,
        "network": f"sfno {HPARAMS}",
        "stacking": strategy,
        **wall,
        "stacked_over_per_checkpoint": round(rates["stacked"] / rates["per_checkpoint"], 3),
    }


def bare_forward(
    stepper: BackboneStepper, store: xr.Dataset, members: int, steps: int, batch_size: int
) -> float:
    """Seconds of the model forward passes alone, for the batches the engine runs.

    On the stepper's device; on CUDA the time includes waiting for the last kernel.
    """
    device = next(stepper.parameters()).device
    init = parse_init_spec(INIT, "standard")
    state = load_initial_state(store, CHANNELS, init, 1).to(device)
    start = time.perf_counter()
    for first in range(0, members, batch_size):
        size = min(batch_size, members - first)
        x = state.expand(size, -1, -1, -1, -1).contiguous()
        times = np.repeat(init, size)
        for _ in range(steps):
            with torch.inference_mode():
                new = stepper.advance(x, times, check_finite=False)
            x = new[:, None]
            times = times + np.timedelta64(6, "h")
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def engine_run(
    stepper: BackboneStepper | MemberModels,
    store: xr.Dataset,
    out: Path,
    members: int,
    steps: int,
    batch_size: int | None,
    perturbation: str = "gaussian",
) -> tuple[float, object]:
    start = time.perf_counter()
    models = stepper
    stepper = models.first if isinstance(models, MemberModels) else models
    initial = InitialStates(store, parse_init_spec(INIT, "standard"), stepper)
    spec = perturbation_spec(perturbation, 0.05, stepper.channels, seed=0)
    writer = writer_for(out, compression="none")  # uncompressed chunks, as measured below
    request = RunRequest.for_stepper(
        stepper,
        initial.labels,
        steps,
        members=members,
        perturbation=spec,
        batch_size=batch_size,
        overwrite=True,
        compression=writer.compression,
    )
    result = run_forecast(
        models,
        initial,
        build_perturbation(spec, stepper),
        writer,
        request,
        show_progress=False,
        log=lambda m: None,
    )
    return time.perf_counter() - start, result


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", default="64x128")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (the writer thread uses another core)",
    )
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--e2s-python", default=None, help="a Python with earth2studio installed")
    parser.add_argument("--workdir", default=None)
    parser.add_argument(
        "--only",
        choices=("all", "peak", "e2s", "dyffusion", "checkpoints"),
        default="all",
        help="dyffusion: only the DYffusion vs SFNO cost; checkpoints: only the stacked "
        "multi-checkpoint ensemble against a batch per checkpoint (peak and e2s are internal)",
    )
    parser.add_argument(
        "--checkpoints", type=int, default=7, help="checkpoints of --only checkpoints"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nlat, nlon = (int(v) for v in args.grid.split("x"))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rollout-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    store_path = workdir / "store.zarr"
    if not store_path.exists():
        write_store(store_path, nlat, nlon)
    store = open_store(store_path)
    stepper = make_stepper(nlat, nlon)

    if args.only == "peak":  # child process: one engine run, then its peak memory
        engine_run(
            stepper, store, workdir / f"peak-{args.steps}.zarr", args.members, args.steps, None
        )
        print(json.dumps({"steps": args.steps, "peak_rss": peak_rss_bytes()}))
        return 0
    if args.only == "dyffusion":
        report = dyffusion_cost(
            store, workdir, nlat, nlon, args.members, args.steps, max(args.repeats, 1)
        )
        print(json.dumps(report, indent=2))
        return 0
    if args.only == "checkpoints":
        report = checkpoint_stacking(
            store, workdir, nlat, nlon, args.members, args.steps, max(args.repeats, 1),
            args.checkpoints,
        )  # fmt: skip
        print(json.dumps(report, indent=2))
        return 0
    if args.only == "e2s":
        print(
            json.dumps(
                run_earth2studio(
                    stepper,
                    store_path,
                    workdir,
                    args.members,
                    args.steps,
                    int(os.environ.get("E2S_BATCH", args.members)),
                )
            )
        )
        return 0

    # warm up both paths once (SHT precomputation, allocator, zarr imports)
    engine_run(stepper, store, workdir / "warm.zarr", 2, 1, None)
    _, result = engine_run(stepper, store, workdir / "auto.zarr", args.members, 1, None)
    batch_size = result.batch_size
    bare_times, engine_times, timings = [], [], []
    for _ in range(args.repeats):
        bare_times.append(bare_forward(stepper, store, args.members, args.steps, batch_size))
        seconds, result = engine_run(
            stepper, store, workdir / "engine.zarr", args.members, args.steps, None
        )
        engine_times.append(seconds)
        timings.append(result.timings)
    bare, engine = min(bare_times), min(engine_times)
    report = {
        "grid": args.grid,
        "channels": len(CHANNELS),
        "members": args.members,
        "steps": args.steps,
        "threads": args.threads,
        "model": f"sfno {HPARAMS}",
        "batch_size": batch_size,
        "bare_forward_s": round(bare, 3),
        "engine_s": round(engine, 3),
        "ratio": round(engine / bare, 3),
        "bare_all_s": [round(t, 3) for t in bare_times],
        "engine_all_s": [round(t, 3) for t in engine_times],
        "ratio_per_pair": [round(e / b, 3) for b, e in zip(bare_times, engine_times, strict=True)],
        "engine_timings_fastest": {
            k: round(v, 3) for k, v in timings[int(np.argmin(engine_times))].items()
        },
        "members_per_s": round(args.members / engine, 3),
    }

    def child(python: str, only: str, steps: int, env: dict | None = None):
        """This script in another process, with the same grid, members and threads."""
        argv = [python, __file__, "--only", only, "--steps", str(steps), "--grid", args.grid,
                "--members", str(args.members), "--threads", str(args.threads), "--workdir", str(workdir)]  # fmt: skip
        return subprocess.run(argv, capture_output=True, text=True, env=env)

    peaks = {}
    for steps in (10, 40):
        out = child(sys.executable, "peak", steps)
        out.check_returncode()
        peaks[steps] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss"]
    report["peak_rss_mb"] = {k: round(v / 2**20, 1) for k, v in peaks.items()}
    report["peak_ratio_40_vs_10"] = round(peaks[40] / peaks[10], 3)
    if args.e2s_python:
        env = {**os.environ, "E2S_BATCH": str(batch_size)}
        out = child(args.e2s_python, "e2s", args.steps, env)
        if out.returncode == 0:
            report["earth2studio"] = json.loads(out.stdout.strip().splitlines()[-1])
        else:
            report["earth2studio"] = {
                "error": out.stderr.strip().splitlines()[-1]
                if out.stderr.strip()
                else f"exit {out.returncode}"
            }
    print(json.dumps(report, indent=2))
    return 0


def run_earth2studio(
    stepper: BackboneStepper,
    store_path: Path,
    workdir: Path,
    members: int,
    steps: int,
    batch_size: int,
) -> dict:
    """earth2studio's ensemble workflow (Gaussian perturbation, Zarr backend) around the same model."""
    from collections import OrderedDict

    from earth2studio.io import ZarrBackend
    from earth2studio.models.px.persistence import Persistence
    from earth2studio.perturbation import Gaussian
    from earth2studio.run import ensemble

    store = xr.open_zarr(store_path)
    lat, lon = store["latitude"].values, store["longitude"].values

    class StoreSource:
        """earth2studio data source over the training store."""

        def __call__(self, time, variable):
            times = np.asarray(time, dtype="datetime64[ns]")
            da = (
                store["data"]
                .sel(time=times, channel=list(variable))
                .rename({"channel": "variable", "latitude": "lat", "longitude": "lon"})
            )
            return da.load()

    class Wrapped(Persistence):
        """earth2studio prognostic model: the same stepper."""

        def __init__(self):
            super().__init__(CHANNELS, OrderedDict({"lat": lat, "lon": lon}))
            self.stepper = stepper

        @torch.inference_mode()
        def _forward(self, x, coords):
            output_coords = self.output_coords(coords)
            batch = x.shape[0]
            times = np.repeat(
                np.datetime64(INIT, "ns"), batch
            )  # valid times only feed the forcings
            new = self.stepper.advance(x[:, -1:], times, check_finite=False)
            return new[:, None], output_coords

    io = ZarrBackend(file_name=str(workdir / "e2s.zarr"), backend_kwargs={"overwrite": True})
    amplitude = torch.as_tensor(0.05 * STDS, dtype=torch.float32).view(-1, 1, 1)
    start = time.perf_counter()
    ensemble(
        [INIT],
        steps,
        members,
        Wrapped(),
        StoreSource(),
        io,
        Gaussian(noise_amplitude=amplitude),
        batch_size=batch_size,
        device=torch.device("cpu"),
        verbose=False,
    )
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "members_per_s": round(members / seconds, 3),
        "batch_size": batch_size,
    }


if __name__ == "__main__":
    sys.exit(main())
