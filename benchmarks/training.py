"""Benchmark of training overheads; run by hand, results recorded in docs/performance.md ("## Training").

1. Loader throughput: samples per second that :func:`forecast.training.data.make_loader`
   (worker processes, prefetch, one Zarr chunk per time step) delivers from a
   64x128 store, against the samples per second a training step consumes.
   Target: at least 3x.
2. Step overhead: the median wall time of a :func:`forecast.training.train`
   step (loader wait, normalisation, forcings, loss, clipping, schedule,
   logging) against the bare forward + backward + AdamW step of the same
   stepper on the same batch held in memory. Target: at most 1.1x.

Usage::

    .venv/bin/python benchmarks/training.py [--grid 64x128] [--model sfno] [--steps 40] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
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
from forecast.steppers import BackboneStepper  # noqa: E402
from forecast.store import open_store, store_grid, store_step  # noqa: E402
from forecast.training import TrainRequest, train  # noqa: E402
from forecast.training.data import StepBatchSampler, WindowDataset, make_loader  # noqa: E402
from forecast.training.losses import area_weighted_mse  # noqa: E402
from forecast.training.optim import build_optimizer  # noqa: E402

CHANNELS = ["z500", "t850", "u10m", "v10m"]
HPARAMS = {
    "sfno": {"embed_dim": 64, "num_layers": 4},
    "afno": {"embed_dim": 128, "depth": 4, "patch_size": 4},
    "fno": {"embed_dim": 64, "num_layers": 4},
}


def write_store(path: Path, grid: Grid, n_time: int, n_channels: int = len(CHANNELS)) -> Path:
    """A store of smooth random fields in the training-store layout (content is irrelevant here).

    ``n_channels`` beyond the four named ones are called ``c4``, ``c5``, ...
    """
    names = [*CHANNELS, *(f"c{i}" for i in range(len(CHANNELS), n_channels))][:n_channels]
    rng = np.random.default_rng(0)
    lat = np.deg2rad(grid.latitude)[None, None, :, None]
    lon = np.deg2rad(grid.longitude)[None, None, None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(n_time, n_channels, 1, 1))
    data = (
        np.cos(lat) ** 2 * np.cos(2 * lon + phase)
        + 0.1 * rng.standard_normal((n_time, n_channels, grid.nlat, grid.nlon), dtype=np.float32)
    ).astype(np.float32)
    times = pd.date_range("2020-01-01", periods=n_time, freq="6h")
    ds = xr.Dataset(
        {
            "data": (("time", "channel", "latitude", "longitude"), data),
            "mean": (("channel",), np.zeros(n_channels)),
            "std": (("channel",), np.ones(n_channels)),
            "diff_std": (("channel",), np.full(n_channels, 0.5)),
            "climatology": (
                ("dayofyear", "hour", "channel", "latitude", "longitude"),
                np.zeros((1, 1, n_channels, grid.nlat, grid.nlon), np.float32),
            ),
        },
        coords={
            "time": times,
            "channel": np.array(names, dtype=object),
            "latitude": grid.latitude,
            "longitude": grid.longitude,
            "dayofyear": [1],
            "hour": [0],
        },
        attrs={
            "store_format_version": 1,
            "grid_kind": grid.kind,
            "time_step": "6h",
            "calendar": "standard",
            "statistics_start": "2020-01-01",
            "statistics_end": str(times[-1]),
            "sources": "benchmark",
            "software_version": "benchmark",
        },
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.chunk({"time": 1}).to_zarr(path, mode="w", consolidated=True)
    return path


def loader_rate(store: Path, batch_size: int, batches: int, workers: int) -> float:
    """Samples per second delivered by the training loader (after its first batch)."""
    starts = np.arange(open_store(store).sizes["time"] - 1)
    sampler = StepBatchSampler(
        starts,
        batch_size,
        seed=0,
        first_micro_step=0,
        n_micro_steps=batches + 1,
        targets_of_micro_step=lambda m: 1,
    )
    iterator = iter(
        make_loader(
            WindowDataset(store, range(open_store(store).sizes["channel"]), 1),
            sampler,
            workers=workers,
            prefetch=4,
        )
    )
    next(iterator)
    started = time.perf_counter()
    count = sum(len(batch["start"]) for batch in iterator)
    return count / (time.perf_counter() - started)


def bare_step_seconds(
    store: Path,
    model: str,
    batch_size: int,
    steps: int,
    device: str = "cpu",
    hparams: dict | None = None,
    precision: str = "fp32",
) -> list[float]:
    """Wall time of forward + loss + backward + AdamW on one batch held in memory.

    On CUDA each step is synchronised, so that its time is the GPU's work.
    """
    ds = open_store(store)
    grid = store_grid(ds)
    torch.manual_seed(0)
    stepper = BackboneStepper(
        model,
        HPARAMS[model] if hparams is None else hparams,
        [str(c) for c in ds["channel"].values],
        grid,
        store_step(ds),
        Normalizer.from_store(ds),
    ).to(device)
    optimizer = build_optimizer(stepper.parameters(), lr=1e-4)
    data = torch.as_tensor(ds["data"].isel(time=slice(0, batch_size + 1)).values, device=device)
    x = stepper.normalize(data[:batch_size]).unsqueeze(1)
    y = stepper.normalize(data[1 : batch_size + 1])
    forcing = stepper.forcings(ds["time"].values[:batch_size])
    weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else lambda: None
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        with torch.autocast(
            torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16"
        ):
            prediction = stepper.forward_normalized(x, forcing)
        loss = area_weighted_mse(prediction.float(), y, weights)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        seconds.append(time.perf_counter() - started)
    return seconds


def measure(
    grid: Grid,
    n_channels: int,
    model: str,
    hparams: dict,
    batch_size: int,
    steps: int,
    workers: int,
    device: str = "cpu",
    precision: str = "fp32",
    workdir: Path | None = None,
    skip: int = 5,
) -> tuple[list[float], list[float], float]:
    """Bare step seconds, ``train()`` step seconds and loader samples/s on one synthetic store.

    The bare steps run before and after the ``train()`` run, so that both see
    the same (shared) machine; the first ``skip`` steps of each are dropped.
    """
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        n_time = max(2 * batch_size * (steps + skip), 64)
        store = write_store(Path(tmp) / "bench.zarr", grid, n_time=n_time, n_channels=n_channels)

        def bare() -> list[float]:
            seconds = bare_step_seconds(
                store, model, batch_size, steps + skip, device, hparams, precision
            )
            return seconds[skip:]

        bare_times = bare()
        result = train(TrainRequest(
            store, model, Path(tmp) / "run", hparams=hparams, max_steps=steps + skip,
            batch_size=batch_size, lr=1e-4, warmup_steps=0, val_every=10**6, val_samples=4, log_every=10,
            workers=workers, device=device, precision=precision, progress=False, val_fraction=0.05,
        ))  # fmt: skip
        bare_times += bare()
        rate = loader_rate(store, batch_size, batches=steps, workers=workers)
    return bare_times, result.step_seconds[skip:], rate


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--grid", default="64x128")
    parser.add_argument("--model", default="sfno", choices=sorted(HPARAMS))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the training process"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid = Grid.parse(args.grid)
    bare_times, train_times, rate = measure(
        grid, len(CHANNELS), args.model, HPARAMS[args.model], args.batch_size, args.steps,
        args.workers, workdir=args.workdir,
    )  # fmt: skip
    bare, step = statistics.median(bare_times), statistics.median(train_times)
    bare_min, step_min = min(bare_times), min(train_times)
    consumed = args.batch_size / step
    print(
        f"grid {grid.describe()}, model {args.model} {HPARAMS[args.model]}, batch {args.batch_size}, {len(CHANNELS)} channels, torch threads {args.threads}, loader workers {args.workers}"
    )
    print("| measure | value |")
    print("| --- | --- |")
    print(
        f"| bare forward+backward+AdamW step (median / fastest) | {bare * 1e3:.1f} / {bare_min * 1e3:.1f} ms |"
    )
    print(
        f"| training step via train() (median / fastest) | {step * 1e3:.1f} / {step_min * 1e3:.1f} ms |"
    )
    print(
        f"| training step / bare step: medians, fastest | {step / bare:.3f}, {step_min / bare_min:.3f} (target <= 1.1) |"
    )
    print(f"| loader delivers | {rate:.0f} samples/s |")
    print(f"| training consumes | {consumed:.1f} samples/s |")
    print(f"| loader / consumption | {rate / consumed:.1f}x (target >= 3) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
