"""Benchmark: forecast output size against write cost, for each ``--compression`` and format.

An ensemble forecast of real fields is written through the project's writers
(``inference.writers``), block by block as ``forecast run`` writes it: the 9
ERA-Interim fields of ``../shared/data/real/eraint_uvz.nc`` (u, v, z at 200,
500 and 850 hPa, 0.75 degree, 241 x 480), each member and lead time the field
plus a smooth drift and 1 % noise (ensemble members differ in their small
scales, so that no two fields are alike). Each (format, compression) is
written ``--repeats`` times, alternating, into a fresh output; the table gives
the median wall time of the writes (including the final flush and rename),
the size on disk, and both as ratios to ``none``.

Usage::

    .venv/bin/python benchmarks/output_compression.py [--members 4] [--steps 3] [--repeats 3] [--workdir /tmp/forecast-bench-compression]

Prints a table; docs/performance.md records a run ("Forecast output compression").
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.grid import Grid  # noqa: E402
from inference.writers import writer_for  # noqa: E402
from inference.writers.layout import forecast_template  # noqa: E402

SOURCE = REPO.parent / "shared" / "data" / "real" / "eraint_uvz.nc"
CODECS = ("none", "zstd", "deflate")
FORMATS = (".zarr", ".nc")


def fields() -> tuple[list[str], Grid, np.ndarray]:
    """Channels, grid and the base fields ``(month, channel, lat, lon)`` float32 (longitude 0..360)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_dataset(SOURCE).load()
    ds = ds.assign_coords(longitude=ds["longitude"] % 360).sortby("longitude")
    channels, stack = [], []
    for name in ("u", "v", "z"):
        for level in ds["level"].values:
            channels.append(f"{name}{int(level)}")
            stack.append(ds[name].sel(level=level).values)
    grid = Grid.from_coords(ds["latitude"].values, ds["longitude"].values)
    return channels, grid, np.stack(stack, axis=1).astype(np.float32)


def blocks(base: np.ndarray, members: int, steps: int, seed: int = 0):
    """``(init, lead, block)`` with block ``(member, channel, lat, lon)``, as the rollout hands them."""
    rng = np.random.default_rng(seed)
    std = base.std(axis=(-2, -1), keepdims=True)
    nlon = base.shape[-1]
    lon = np.linspace(0, 2 * np.pi, nlon, endpoint=False)[None, None, :]
    for init in range(base.shape[0]):
        for lead in range(steps + 1):
            drift = 0.05 * lead * std[init] * np.sin(lon + 0.3 * lead)
            noise = 0.01 * std[init] * rng.standard_normal((members, *base.shape[1:]))
            yield init, lead, (base[init][None] + drift + noise).astype(np.float32)


def size_of(path: Path) -> int:
    return (
        sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if path.is_dir()
        else path.stat().st_size
    )


def write_once(out: Path, compression: str, template: xr.Dataset, data: list) -> float:
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    writer = writer_for(out, "default", compression)
    start = time.perf_counter()
    writer.create(template)
    for init, lead, block in data:
        writer.write(init, 0, lead, block)
    writer.finish()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/forecast-bench-compression"))
    args = parser.parse_args()
    channels, grid, base = fields()
    data = list(blocks(base, args.members, args.steps))
    inits = np.array(["2020-01-01T00", "2020-07-01T00"], dtype="datetime64[ns]")
    template = forecast_template(
        channels,
        grid,
        inits,
        args.steps,
        dt.timedelta(hours=6),
        args.members,
        "standard",
        {},
        member_chunk=args.members,
    )
    raw = sum(block.nbytes for _, _, block in data)
    args.workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[tuple[str, str], list[float]] = {(f, c): [] for f in FORMATS for c in CODECS}
    sizes: dict[tuple[str, str], int] = {}
    for _ in range(args.repeats):
        for suffix in FORMATS:
            for codec in CODECS:
                out = args.workdir / f"forecast_{codec}{suffix}"
                seconds[(suffix, codec)].append(write_once(out, codec, template, data))
                sizes[(suffix, codec)] = size_of(out)
    print(
        f"{len(data)} blocks of {args.members} members x {len(channels)} channels on {grid.describe()}: "
        f"{raw / 2**20:.0f} MiB of float32, median of {args.repeats} writes"
    )
    print(
        f"{'format':<7}{'codec':<9}{'seconds':>9}{'MiB/s':>8}{'MiB':>8}{'size/none':>11}{'time/none':>11}"
    )
    for suffix in FORMATS:
        plain_time = statistics.median(seconds[(suffix, "none")])
        for codec in CODECS:
            median = statistics.median(seconds[(suffix, codec)])
            size = sizes[(suffix, codec)]
            print(
                f"{suffix:<7}{codec:<9}{median:>9.2f}{raw / 2**20 / median:>8.0f}{size / 2**20:>8.1f}"
                f"{size / sizes[(suffix, 'none')]:>11.2f}{median / plain_time:>11.2f}"
            )
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
