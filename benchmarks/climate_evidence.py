"""Evidence for climate runs: a 10-year SFNO climate of the synthetic planet, scored as a climate.

One command reproduces it (about an hour on 2 shared cores; each stage is
skipped when its result exists)::

    .venv/bin/python benchmarks/climate_evidence.py --workdir work/climate

Stages (all through the ``forecast`` command line):

1. ``forecast synth`` (16x32, noleap, 6-hourly), in chunks run side by side
   (the generator is serial and costs ~0.3 s of CPU per simulated day):
   six training years 1995-2000 in three chunks (seeds 1, 2, 0) and the
   held-out reference decade 2001-2010 in four chunks (seeds 10, 40, 20,
   30; the first starts at 2000-12-31T18, the one earlier state the
   two-state model starts from).
   Each chunk spins up for the generator's 20 days, so a decade made of
   chunks is a sample of the same climate as one made in one piece; only the
   weather at the chunk boundaries is not continuous.
2. ``forecast ingest``: ``train.zarr`` (1995-2000), ``reference.zarr``
   (2000-12-31T18 .. 2010-12-31T18).
3. ``forecast train --config configs/climate/train.yaml`` on ``train.zarr``.
4. ``forecast run --init 2001-01-01 --length 10y --reduce monthly`` from the
   held-out decade: monthly means only.
5. ``forecast score --climate`` against ``reference.zarr``, with plots.
6. The natural floor, the expected area-weighted time-mean RMSE between two
   independent 10-year climates of the generator, estimated from the
   reference decade (a second decade from other seeds costs another hour of
   the shared machine): with ``s2`` the interannual variance (ddof 1) of
   each grid point's annual means, two independent 10-year means differ by
   ``sqrt(<2 s2 / 10>)`` (years independent); cross-checked by the RMSE of
   the difference of the decade's two 5-year means divided by ``sqrt(2)``.
   ``sqrt(<s2>)``, the local interannual std, is the scale the drift of the
   global means is also given in: the generator conserves the global means
   of most channels (shallow-water mass; the derived fields' global means
   are set by the season alone), so their interannual std is float32
   rounding (1e-10 to 1e-4 of the units) and the drift in it is no measure.

With ``--seeds 0,1,2,3 --zonal-mean-weight 10`` stage 3 trains one model per
seed (one at a time) and stage 4 runs them as one multi-checkpoint ensemble
(``forecast run --checkpoint ... --checkpoint ...``: member m runs seed m);
stage 5 scores the member mean, and each member alone (a one-member
selection of the monthly means), so the spread over seeds shows. An M-member
mean holds less weather noise than one member: a perfect model scores
``sqrt((1 + 1/M) / 2)`` of the floor (0.79 for M = 4; in the summary).
``--rollout-steps 24 --rollout-schedule ...`` trains every model on a longer
curriculum (attempt 12 of docs/performance.md, a run tagged ``-rollout24``).

With ``--screen-years 2 --screen-limit 6`` every trained model is first
screened on the training store (:func:`screen`: a free run over its first two
years, each member scored alone against it) and only the models that pass run
the decade (attempt 15, a run tagged ``-screened2y``).

Prints a JSON summary (also written to ``WORKDIR/summary-MODEL.json``): wall
time and steps per second of the run, the size of the monthly output against
a 6-hourly output of the same run, time-mean RMSE per channel against the
floor (goal: within 2x), and the drift of the annual global means (goal:
last year within 2 interannual standard deviations of the first), in the
interannual std of the global means and in the local one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.files import atomic_write  # noqa: E402

GRID = "16x32"
CHUNKS = {  # directory -> (seed, start, days, store)
    "train-1995": (1, "1995-01-01", 3 * 365, "train.zarr"),
    "train-1998": (2, "1998-01-01", 2 * 365, "train.zarr"),
    "train": (0, "2000-01-01", 365, "train.zarr"),
    "reference-1": (10, "2000-12-31T18", 2 * 365 + 0.25, "reference.zarr"),
    "reference-4": (40, "2003-01-01", 2 * 365, "reference.zarr"),
    "reference-2": (20, "2005-01-01", 3 * 365, "reference.zarr"),
    "reference-3": (30, "2008-01-01", 3 * 365, "reference.zarr"),
}
INIT = "2001-01-01T00"
DECADE = slice("2001-01-01", "2010-12-31T18")
# the first init of the training store (the model starts from two states)
SCREEN_INIT = "1995-01-01T06"
TRAINING = slice("1995-01-01", "2000-12-31T18")


def _environment() -> dict[str, str]:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # offline Natural Earth data for the plots, as the Makefile sets it
    cartopy = REPO.parent / "shared" / "data" / "cartopy"
    if cartopy.is_dir():
        environment.setdefault("CARTOPY_DATA_DIR", str(cartopy.resolve()))
    return environment


def forecast(*args: str) -> float:
    """Run ``python -m forecast ARGS`` (one thread per process: the machine is shared); returns seconds."""
    start = time.perf_counter()
    print("+ forecast", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "forecast", *args], check=True, env=_environment())
    return time.perf_counter() - start


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes().find(b"synth") >= 0


def synthesize(work: Path) -> dict[str, subprocess.Popen | int | None]:
    """Start every chunk of ``CHUNKS`` not yet written, side by side (one process each).

    A chunk whose process (``DIR/pid``) still runs from an earlier start of
    this script is waited for, not started again.
    """
    processes: dict[str, subprocess.Popen | int | None] = {}
    for name, (seed, start, days, _) in CHUNKS.items():
        directory = work / "synth" / name
        pid_file = directory / "pid"
        if (directory / "done").exists():
            processes[name] = None
        elif pid_file.exists() and _alive(int(pid_file.read_text())):
            processes[name] = int(pid_file.read_text())
        else:
            arguments = ["synth", str(directory), "--grid", GRID, "--start", start]
            arguments += ["--days", str(days), "--calendar", "noleap", "--seed", str(seed)]
            print("+ forecast", " ".join(arguments), file=sys.stderr, flush=True)
            command = [sys.executable, "-m", "forecast", *arguments, "--no-progress"]
            process = subprocess.Popen(command, env=_environment())
            directory.mkdir(parents=True, exist_ok=True)
            atomic_write(
                pid_file, lambda temporary, pid=str(process.pid): temporary.write_text(pid)
            )
            processes[name] = process
    return processes


def wait(work: Path, processes: dict[str, subprocess.Popen | int | None], store: str) -> None:
    """Wait for the chunks of ``store``; a chunk is done when its last month is written."""
    for name, process in processes.items():
        if CHUNKS[name][3] != store or process is None:
            continue
        if isinstance(process, int):
            while _alive(process):
                time.sleep(10)
        elif process.wait() != 0:
            raise SystemExit(f"forecast synth of chunk {name} failed")
        _, start, days, _ = CHUNKS[name]
        year = int(start[:4]) + int(days // 365) - (1 if start.endswith("-01-01") else 0)
        if not (work / "synth" / name / f"era5_synthetic_{year:04d}-12.nc").exists():
            raise SystemExit(f"forecast synth of chunk {name} stopped before December {year}")
        (work / "synth" / name / "done").touch()


def ingest(work: Path, store: str) -> None:
    """``work/store`` from the files of its chunks."""
    files = []
    for name, (*_, into) in CHUNKS.items():
        if into == store:
            files += sorted(str(f) for f in (work / "synth" / name).glob("era5_synthetic_*.nc"))
    if not (work / store).exists():
        forecast(
            "ingest", *files, "--out", str(work / store), "--grid", "source", "--step", "6h",
            "--no-progress",
        )  # fmt: skip


def floor(
    path: Path, channels: list[str], period: slice = DECADE, years: int | None = None
) -> dict[str, dict[str, float]]:
    """Expected time-mean RMSE between two independent ``years``-year climates, per channel.

    From the interannual variance of the annual means of ``path`` over
    ``period`` (see the module); ``years`` defaults to the period's length.
    """
    from forecast.grid import Grid
    from forecast.store import open_store

    store = open_store(path)
    data = store["data"].sel(channel=channels, time=period).astype("float64")
    annual = data.groupby(data["time"].dt.year).mean().values  # (year, channel, lat, lon)
    weights = Grid.from_coords(store["latitude"].values, store["longitude"].values).area_weights()
    weights = weights[None, :, None] / weights.mean()
    variance = annual.var(axis=0, ddof=1)
    years = len(annual) if years is None else years
    from_variance = np.sqrt((2.0 * variance / years * weights).mean(axis=(1, 2)))
    half = len(annual) // 2
    halves = annual[:half].mean(axis=0) - annual[half:].mean(axis=0)
    from_halves = np.sqrt((halves**2 * weights).mean(axis=(1, 2))) / np.sqrt(2.0)
    local_std = np.sqrt((variance * weights).mean(axis=(1, 2)))
    return {
        "interannual_variance": dict(zip(channels, from_variance.round(6).tolist(), strict=True)),
        "two_halves": dict(zip(channels, from_halves.round(6).tolist(), strict=True)),
        "local_interannual_std": dict(zip(channels, local_std.round(6).tolist(), strict=True)),
    }


def score_member(work: Path, manifest: dict, name: str, member: int, truth: str = "reference.zarr"):
    """``forecast score --climate`` of one member of the run's monthly means, alone, against ``work/truth``."""
    import xarray as xr

    scores = work / f"scores-{name}-member{member}.nc"
    if not scores.exists():
        alone = work / f"climate-{name}-member{member}.monthly.zarr"
        selection = xr.open_zarr(manifest["products"]["monthly"]).isel(member=[member])
        for variable in selection.variables.values():
            variable.encoding.pop("chunks", None)
            variable.encoding.pop("preferred_chunks", None)
        selection.to_zarr(alone, mode="w")
        forecast(
            "score",
            str(alone),
            "--truth",
            str(work / truth),
            "--climate",
            "--out",
            str(scores),
            "--no-progress",
        )
    return xr.open_dataset(scores)


def run_monthly(checkpoints: list[str], data: Path, init: str, length: str, out: Path) -> dict:
    """``forecast run`` of a multi-checkpoint ensemble writing monthly means (skipped when finished); its manifest."""
    manifest_file = out.with_name(out.name + ".manifest.json")
    if not (
        manifest_file.exists() and json.loads(manifest_file.read_text()).get("status") == "finished"
    ):
        forecast(
            "run", *checkpoints, "--data", str(data), "--init", init, "--length", length,
            "--reduce", "monthly", "--out", str(out), "--no-progress",
        )  # fmt: skip
    return json.loads(manifest_file.read_text())


def screen(
    work: Path, runs: list[tuple[Path, list[str]]], years: int, limit: float, tag: str
) -> dict[str, dict]:
    """Free-run every trained model over the training store's first ``years`` and judge its climate.

    The models run as one multi-checkpoint ensemble from ``SCREEN_INIT``
    (inside the training period: nothing of the reference decade is used).
    A model passes when the run's guard flagged none of its members (a
    blow-up or a global mean out of the climate) and, in every channel,
    its time-mean RMSE against the training store over the same months is
    at most ``limit`` times the natural floor of a ``years``-year mean
    (:func:`floor` of the training store's annual means). Returns ``{run name: verdict}``; also
    written to ``work/screen-TAG-YEARSy-seeds....json``.
    """
    checkpoints = [a for run_dir, _ in runs for a in ("--checkpoint", str(run_dir / "best.ckpt"))]
    name = f"screen-{tag}-{years}y-seeds" + "-".join(r.name.rsplit("seed", 1)[-1] for r, _ in runs)
    manifest = run_monthly(
        checkpoints, work / "train.zarr", SCREEN_INIT, f"{years}y", work / f"{name}.zarr"
    )
    flagged: dict[int, str] = {}
    for blowup in manifest.get("blowups", []):
        flagged.setdefault(int(blowup["member"]), blowup["reason"])
    verdicts: dict[str, dict] = {}
    floors: dict[str, float] = {}
    for member, (run_dir, _) in enumerate(runs):
        scores = score_member(work, manifest, name, member, truth="train.zarr")
        channels = [str(c) for c in scores["channel"].values]
        floors = (
            floors or floor(work / "train.zarr", channels, TRAINING, years)["interannual_variance"]
        )
        ratio = {c: float(scores["time_mean_rmse"].sel(channel=c)) / floors[c] for c in channels}
        worst = max(channels, key=lambda c: ratio[c] if np.isfinite(ratio[c]) else np.inf)
        passed = member not in flagged and all(
            np.isfinite(r) and r <= limit for r in ratio.values()
        )
        verdicts[run_dir.name] = {
            "passed": bool(passed),
            "flagged": flagged.get(member),
            "worst_channel": worst,
            "rmse_over_floor": {c: round(r, 3) for c, r in ratio.items()},
        }
        print(f"screen {run_dir.name}: {'pass' if passed else 'FAIL'} (worst {worst} "
              f"{ratio[worst]:.2f}x the {years}-year floor"
              f"{'; flagged: ' + flagged[member] if member in flagged else ''})", file=sys.stderr)  # fmt: skip
    atomic_write(
        work / f"{name}.json",
        lambda temporary: temporary.write_text(json.dumps(verdicts, indent=2)),
    )
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="work/climate")
    parser.add_argument(
        "--model", default="sfno", help="stepper to train (config configs/climate/train.yaml)"
    )
    parser.add_argument(
        "--seeds",
        default="",
        help="train one model per seed (comma-separated, e.g. 0,1,2,3) and run them as one "
        "multi-checkpoint ensemble, one member each (default: one model, the config's seed)",
    )
    parser.add_argument(
        "--zonal-mean-weight",
        type=float,
        default=None,
        help="forecast train --zonal-mean-weight for every model (default: the config's)",
    )
    parser.add_argument(
        "--rollout-steps",
        type=int,
        default=None,
        help="forecast train --rollout-steps for every model (default: the config's)",
    )
    parser.add_argument(
        "--rollout-schedule",
        default=None,
        help="forecast train --rollout-schedule (step:K pairs) for every model "
        "(default: the config's); with --rollout-steps, e.g. 24 and "
        "0:1,400:2,800:4,1100:8,1250:16,1350:24 (attempt 12)",
    )
    parser.add_argument(
        "--screen-years",
        type=int,
        default=0,
        help="before the decade, free-run every model over this many years of the training store "
        "and keep only those that pass (see screen(); default 0: no screen)",
    )
    parser.add_argument(
        "--screen-limit",
        type=float,
        default=6.0,
        help="a screened model passes when no member is flagged and every channel's time-mean "
        "RMSE is at most this many times the natural floor of a --screen-years mean",
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    processes = synthesize(work)
    wait(work, processes, "train.zarr")
    ingest(work, "train.zarr")
    train_options = (
        []
        if args.zonal_mean_weight is None
        else ["--zonal-mean-weight", f"{args.zonal_mean_weight:g}"]
    )
    if args.rollout_steps is not None:
        train_options += ["--rollout-steps", str(args.rollout_steps)]
    if args.rollout_schedule is not None:
        train_options += ["--rollout-schedule", args.rollout_schedule]
    tag = (
        args.model
        + (f"-zonal{args.zonal_mean_weight:g}" if args.zonal_mean_weight is not None else "")
        + (f"-rollout{args.rollout_steps}" if args.rollout_steps is not None else "")
    )
    runs = [(work / "runs" / f"{tag}-seed{s}", ["--seed", str(s)]) for s in seeds] or [
        (work / "runs" / tag, [])
    ]
    checkpoints = []
    for run_dir, seed in runs:  # one heavy job at a time
        checkpoint = run_dir / "best.ckpt"
        if not checkpoint.exists():
            forecast(
                "train",
                "--config",
                str(REPO / "configs/climate/train.yaml"),
                "--model",
                args.model,
                *train_options,
                *seed,
                "--data",
                str(work / "train.zarr"),
                "--out",
                str(run_dir),
                "--no-progress",
            )
        checkpoints += ["--checkpoint", str(checkpoint)]
    verdicts = {}
    if args.screen_years:
        verdicts = screen(work, runs, args.screen_years, args.screen_limit, tag)
        kept = [
            (s, run)
            for s, run in zip(seeds or [None], runs, strict=True)
            if verdicts[run[0].name]["passed"]
        ]
        if not kept:
            raise SystemExit("no model passed the screen; see screen-*.json")
        seeds = [s for s, _ in kept if s is not None]
        checkpoints = [
            a for _, (run_dir, _) in kept for a in ("--checkpoint", str(run_dir / "best.ckpt"))
        ]
        tag += f"-screened{args.screen_years}y"
    wait(work, processes, "reference.zarr")
    ingest(work, "reference.zarr")
    name = f"{tag}-seeds{'-'.join(map(str, seeds))}" if seeds else tag
    out = work / f"climate-{name}.zarr"
    manifest = run_monthly(checkpoints, work / "reference.zarr", INIT, "10y", out)
    scores_file = work / f"scores-{name}.nc"
    forecast(
        "score",
        str(out),
        "--truth",
        str(work / "reference.zarr"),
        "--climate",
        "--out",
        str(scores_file),
        "--plots",
        str(work / f"plots-{name}"),
    )
    members = int(manifest["members"])
    member_scores = (
        [score_member(work, manifest, name, k) for k in range(members)] if members > 1 else []
    )

    import xarray as xr

    scores = xr.open_dataset(scores_file)
    channels = [str(c) for c in scores["channel"].values]
    floors = floor(work / "reference.zarr", channels)
    natural = floors["interannual_variance"]
    monthly = Path(manifest["products"]["monthly"])
    size = sum(f.stat().st_size for f in monthly.rglob("*") if f.is_file())
    steps = int(manifest["steps"])
    nlat, nlon = (int(n) for n in GRID.split("x"))
    # every member's 6-hourly fields, float32, uncompressed (the monthly output holds every member)
    six_hourly = members * (steps + 1) * len(channels) * nlat * nlon * 4
    rmse = {c: float(scores["time_mean_rmse"].sel(channel=c)) for c in channels}
    annual = scores["annual_global_mean"].sel(source="forecast")
    drift = {
        c: annual.sel(channel=c).isel(year=-1) - annual.sel(channel=c).isel(year=0)
        for c in channels
    }
    summary = {
        "model": args.model,
        "seeds": seeds,
        "screen": verdicts,
        "members": members,
        # a perfect model's M-member mean: the reference's noise and 1/M of a member's
        "perfect_model_rmse_over_floor": round(float(np.sqrt((1 + 1 / members) / 2)), 3),
        "steps": steps,
        "wall_seconds": manifest["timings"]["total"],
        "steps_per_second": round(steps / manifest["timings"]["total"], 2),
        "member_steps_per_second": round(members * steps / manifest["timings"]["total"], 2),
        "monthly_output_bytes": size,
        "six_hourly_output_bytes": six_hourly,
        "output_size_ratio": round(size / six_hourly, 5),
        "time_mean_rmse": rmse,
        "floor": natural,
        "floor_two_halves": floors["two_halves"],
        "rmse_over_floor": {c: round(rmse[c] / natural[c], 3) for c in channels},
        "annual_cycle_rmse": {
            c: float(scores["annual_cycle_rmse"].sel(channel=c)) for c in channels
        },
        "drift_in_interannual_std": {
            c: round(float(scores["drift"].sel(channel=c)), 3) for c in channels
        },
        "interannual_std_of_global_mean": {
            c: float(scores["interannual_std"].sel(channel=c)) for c in channels
        },
        "global_mean_drift": {c: float(drift[c]) for c in channels},
        "drift_in_local_interannual_std": {
            c: round(float(drift[c]) / floors["local_interannual_std"][c], 3) for c in channels
        },
    }
    for k, member in enumerate(member_scores):  # each member alone: the spread over seeds
        summary[f"member_{k}_rmse_over_floor"] = {
            c: round(float(member["time_mean_rmse"].sel(channel=c)) / natural[c], 3)
            for c in channels
        }
    atomic_write(
        work / f"summary-{name}.json",
        lambda temporary: temporary.write_text(json.dumps(summary, indent=2)),
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
