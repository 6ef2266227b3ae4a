"""Evidence for climate runs: a 10-year SFNO climate of the synthetic planet, scored as a climate.

One command reproduces it (about an hour on 2 shared cores; each stage is
skipped when its result exists)::

    .venv/bin/python benchmarks/climate_evidence.py --workdir work/climate

Stages (all through the ``forecast`` command line):

1. ``forecast synth`` (16x32, noleap, 6-hourly), in chunks run side by side
   (the generator is serial and costs ~0.4 s of CPU per simulated day):
   the training year 2000 (seed 0); the held-out reference decade
   2001-2010 in three chunks (seeds 10, 20, 30; the first starts at
   2000-12-31T18, the one earlier state the two-state model starts from);
   an independent decade 2001-2010 for the natural floor in two chunks
   (seeds 1, 11). Each chunk spins up for the generator's 20 days, so a
   decade made of chunks is a sample of the same climate as one made in one
   piece; only the weather at the two chunk boundaries is not continuous.
2. ``forecast ingest``: ``train.zarr`` (2000), ``reference.zarr``
   (2000-12-31T18 .. 2010-12-31T18), ``floor.zarr`` (2001-2010).
3. ``forecast train --config configs/climate/train.yaml`` on ``train.zarr``.
4. ``forecast run --init 2001-01-01 --length 10y --reduce monthly`` from the
   held-out decade: monthly means only.
5. ``forecast score --climate`` against ``reference.zarr``, with plots.
6. The natural floor: the area-weighted time-mean RMSE per channel between
   the reference decade and the independent decade.

Prints a JSON summary (also written to ``WORKDIR/summary-MODEL.json``): wall
time and steps per second of the run, the size of the monthly output against
a 6-hourly output of the same run, time-mean RMSE per channel against the
floor (goal: within 2x), and the drift of the annual global means (goal:
last year within 2 interannual standard deviations of the first).
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

GRID = "16x32"
CHUNKS = {  # directory -> (seed, start, days, store)
    "train": (0, "2000-01-01", 365, "train.zarr"),
    "reference-1": (10, "2000-12-31T18", 4 * 365 + 0.25, "reference.zarr"),
    "reference-2": (20, "2005-01-01", 3 * 365, "reference.zarr"),
    "reference-3": (30, "2008-01-01", 3 * 365, "reference.zarr"),
    "floor-1": (1, "2001-01-01", 5 * 365, "floor.zarr"),
    "floor-2": (11, "2006-01-01", 5 * 365, "floor.zarr"),
}
INIT = "2001-01-01T00"
DECADE = slice("2001-01-01", "2010-12-31T18")


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def forecast(*args: str) -> float:
    """Run ``python -m forecast ARGS`` (one thread per process: the machine is shared); returns seconds."""
    start = time.perf_counter()
    print("+ forecast", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "forecast", *args], check=True, env=_environment())
    return time.perf_counter() - start


def synthesize(work: Path) -> dict[str, subprocess.Popen | None]:
    """Start every chunk of ``CHUNKS`` not yet written, side by side (one process each)."""
    processes: dict[str, subprocess.Popen | None] = {}
    for name, (seed, start, days, _) in CHUNKS.items():
        directory = work / "synth" / name
        if (directory / "done").exists():
            processes[name] = None
            continue
        arguments = ["synth", str(directory), "--grid", GRID, "--start", start]
        arguments += ["--days", str(days), "--calendar", "noleap", "--seed", str(seed)]
        print("+ forecast", " ".join(arguments), file=sys.stderr, flush=True)
        command = [sys.executable, "-m", "forecast", *arguments, "--no-progress"]
        processes[name] = subprocess.Popen(command, env=_environment())
    return processes


def wait(work: Path, processes: dict[str, subprocess.Popen | None], store: str) -> None:
    """Wait for the chunks of ``store``."""
    for name, process in processes.items():
        if CHUNKS[name][3] != store or process is None:
            continue
        if process.wait() != 0:
            raise SystemExit(f"forecast synth of chunk {name} failed")
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


def area_rmse(difference: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Area-weighted RMSE over (lat, lon) of ``difference`` ``(channel, lat, lon)``."""
    from forecast.grid import Grid

    weights = Grid.from_coords(
        latitude, np.linspace(0, 360, difference.shape[-1], endpoint=False)
    ).area_weights()
    return np.sqrt((difference**2 * weights[None, :, None]).mean(axis=(1, 2)) / weights.mean())


def floor(work: Path, channels: list[str]) -> dict[str, float]:
    """Area-weighted time-mean RMSE per channel between two independent decades of the generator."""
    from forecast.store import open_store

    means = {}
    for name in ("reference", "floor"):
        store = open_store(work / f"{name}.zarr")
        data = store["data"].sel(channel=channels, time=DECADE).astype("float64")
        means[name] = data.mean("time").values
        latitude = store["latitude"].values
    values = area_rmse(means["reference"] - means["floor"], latitude)
    return dict(zip(channels, values.round(6).tolist(), strict=True))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="work/climate")
    parser.add_argument(
        "--model", default="sfno", help="stepper to train (config configs/climate/train.yaml)"
    )
    args = parser.parse_args()
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    processes = synthesize(work)
    wait(work, processes, "train.zarr")
    ingest(work, "train.zarr")
    run_dir = work / "runs" / args.model
    checkpoint = run_dir / "best.ckpt"
    if not checkpoint.exists():
        forecast(
            "train",
            "--config",
            str(REPO / "configs/climate/train.yaml"),
            "--model",
            args.model,
            "--data",
            str(work / "train.zarr"),
            "--out",
            str(run_dir),
            "--no-progress",
        )
    for store in ("reference.zarr", "floor.zarr"):
        wait(work, processes, store)
        ingest(work, store)
    out = work / f"climate-{args.model}.zarr"
    manifest_file = out.with_name(out.name + ".manifest.json")
    if not (
        manifest_file.exists() and json.loads(manifest_file.read_text()).get("status") == "finished"
    ):
        forecast(
            "run",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(work / "reference.zarr"),
            "--init",
            INIT,
            "--length",
            "10y",
            "--reduce",
            "monthly",
            "--out",
            str(out),
            "--no-progress",
        )
    manifest = json.loads(manifest_file.read_text())
    scores_file = work / f"scores-{args.model}.nc"
    forecast(
        "score",
        str(out),
        "--truth",
        str(work / "reference.zarr"),
        "--climate",
        "--out",
        str(scores_file),
        "--plots",
        str(work / f"plots-{args.model}"),
    )

    import xarray as xr

    scores = xr.open_dataset(scores_file)
    channels = [str(c) for c in scores["channel"].values]
    natural = floor(work, channels)
    monthly = Path(manifest["products"]["monthly"])
    size = sum(f.stat().st_size for f in monthly.rglob("*") if f.is_file())
    steps = int(manifest["steps"])
    nlat, nlon = (int(n) for n in GRID.split("x"))
    six_hourly = (steps + 1) * len(channels) * nlat * nlon * 4  # float32, uncompressed
    rmse = {c: float(scores["time_mean_rmse"].sel(channel=c)) for c in channels}
    summary = {
        "model": args.model,
        "steps": steps,
        "wall_seconds": manifest["timings"]["total"],
        "steps_per_second": round(steps / manifest["timings"]["total"], 2),
        "monthly_output_bytes": size,
        "six_hourly_output_bytes": six_hourly,
        "output_size_ratio": round(size / six_hourly, 5),
        "time_mean_rmse": rmse,
        "floor": natural,
        "rmse_over_floor": {c: round(rmse[c] / natural[c], 3) for c in channels},
        "annual_cycle_rmse": {
            c: float(scores["annual_cycle_rmse"].sel(channel=c)) for c in channels
        },
        "drift_in_interannual_std": {
            c: round(float(scores["drift"].sel(channel=c)), 3) for c in channels
        },
    }
    (work / f"summary-{args.model}.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
