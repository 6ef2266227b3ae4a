"""Evidence for climate runs: a 10-year SFNO climate of the synthetic planet, scored as a climate.

One command reproduces it (hours of CPU; each stage is skipped when its result exists)::

    .venv/bin/python benchmarks/climate_evidence.py --workdir work/climate

Stages (all through the ``forecast`` command line):

1. ``forecast synth`` (16x32, noleap, 6-hourly): the reference climate, 12
   years from 2000-01-01 (seed 0); two independent 10-year climates from
   2002-01-01 with seeds 1 and 2 for the natural floor.
2. ``forecast ingest``: ``train.zarr`` (2000-2001), ``reference.zarr``
   (2001-12-31T18 .. 2011-12-31T18: the held-out decade and the one earlier
   state the two-state model starts from), ``floor-1.zarr``, ``floor-2.zarr``.
3. ``forecast train --config configs/climate/train.yaml`` on ``train.zarr``.
4. ``forecast run --init 2002-01-01 --length 10y --reduce monthly`` from the
   held-out decade: monthly means only.
5. ``forecast score --climate`` against ``reference.zarr``, with plots.
6. The natural floor: the time-mean RMSE between the two other climates
   (and between each and the reference), area-weighted, per channel; the
   interannual standard deviation of the reference's annual global means.

Prints a JSON summary (also written to ``WORKDIR/summary.json``): wall time
and steps per second of the run, the size of the monthly output against a
6-hourly output of the same run, time-mean RMSE per channel against the
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
CLIMATES = {  # name -> (seed, start, days)
    "reference": (0, "2000-01-01", 12 * 365),
    "floor-1": (1, "2002-01-01", 10 * 365),
    "floor-2": (2, "2002-01-01", 10 * 365),
}
INIT = "2002-01-01T00"


def forecast(*args: str) -> float:
    """Run ``python -m forecast ARGS`` (one thread per process: the machine is shared); returns seconds."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    start = time.perf_counter()
    print("+ forecast", " ".join(args), file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "forecast", *args], check=True, env=environment)
    return time.perf_counter() - start


def months(directory: Path, first: int, last: int) -> list[str]:
    """The synth files of years ``first .. last``."""
    return [
        str(directory / f"era5_synthetic_{y:04d}-{m:02d}.nc")
        for y in range(first, last + 1)
        for m in range(1, 13)
    ]


def synthesize(work: Path) -> None:
    for name, (seed, start, days) in CLIMATES.items():
        directory = work / "synth" / name
        last = int(start[:4]) + days // 365 - 1
        if all(Path(f).exists() for f in months(directory, int(start[:4]), last)):
            continue
        forecast(
            "synth",
            str(directory),
            "--grid",
            GRID,
            "--start",
            start,
            "--days",
            str(days),
            "--calendar",
            "noleap",
            "--seed",
            str(seed),
            "--no-progress",
        )


def ingest(work: Path) -> None:
    stores = {
        "train.zarr": (months(work / "synth/reference", 2000, 2001), []),
        "reference.zarr": (
            months(work / "synth/reference", 2001, 2011),
            ["--start", "2001-12-31T18"],
        ),
        "floor-1.zarr": (months(work / "synth/floor-1", 2002, 2011), []),
        "floor-2.zarr": (months(work / "synth/floor-2", 2002, 2011), []),
    }
    for name, (files, extra) in stores.items():
        if not (work / name).exists():
            forecast(
                "ingest",
                *files,
                "--out",
                str(work / name),
                "--grid",
                "source",
                "--step",
                "6h",
                *extra,
                "--no-progress",
            )


def area_rmse(difference: np.ndarray, latitude: np.ndarray) -> np.ndarray:
    """Area-weighted RMSE over (lat, lon) of ``difference`` ``(channel, lat, lon)``."""
    from forecast.grid import Grid

    weights = Grid.from_coords(
        latitude, np.linspace(0, 360, difference.shape[-1], endpoint=False)
    ).area_weights()
    return np.sqrt((difference**2 * weights[None, :, None]).mean(axis=(1, 2)) / weights.mean())


def floor(work: Path, channels: list[str]) -> dict:
    """Time-mean RMSE between independent decades of the generator, and interannual std."""
    from forecast.store import open_store

    decade = slice("2002-01-01", "2011-12-31T18")
    means = {}
    for name in ("reference", "floor-1", "floor-2"):
        store = open_store(work / f"{name}.zarr")
        data = store["data"].sel(channel=channels, time=decade).astype("float64")
        means[name] = data.mean("time").values
        latitude = store["latitude"].values
    pairs = {
        "floor-1 vs floor-2": area_rmse(means["floor-1"] - means["floor-2"], latitude),
        "reference vs floor-1": area_rmse(means["reference"] - means["floor-1"], latitude),
        "reference vs floor-2": area_rmse(means["reference"] - means["floor-2"], latitude),
    }
    return {
        name: dict(zip(channels, values.round(6).tolist(), strict=True))
        for name, values in pairs.items()
    }


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
    synthesize(work)
    ingest(work)
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
    floors = floor(work, channels)
    natural = {c: float(np.mean([floors[p][c] for p in floors])) for c in channels}
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
        "floor_pairs": floors,
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
