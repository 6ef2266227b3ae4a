"""Benchmark: what the CRC32C of every forecast chunk costs, side by side with the same writes without it.

The forecast Zarr writer (``inference.writers.zarr``) ends every variable's
codecs with Zarr's ``crc32c`` codec. This writes the fields of
``benchmarks/output_compression.py`` (real ERA-Interim fields, 241 x 480,
one chunk per (init, lead, member block)) into Zarr arrays with the writer's
codecs (:func:`inference.writers.compression.zarr_compressors`) and with the
same codecs less the checksum, ``--repeats`` times, alternating; then reads
each back. Prints median seconds and the ratios with/without.

Usage::

    .venv/bin/python benchmarks/forecast_checksum.py [--members 4] [--steps 3] [--repeats 5]

docs/performance.md records a run ("Forecast output checksums").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from output_compression import fields  # noqa: E402

from inference.writers.compression import zarr_compressors  # noqa: E402


def _write(path: Path, blocks: np.ndarray, compressors) -> float:
    """Seconds to write ``blocks`` (lead, member, channel, lat, lon), one chunk per (lead, channel)."""
    if path.exists():
        shutil.rmtree(path)
    start = time.perf_counter()
    array = zarr.create_array(
        str(path), shape=blocks.shape, chunks=(1, blocks.shape[1], 1, *blocks.shape[3:]),
        dtype="float32", compressors=compressors, fill_value=np.float32(np.nan),
    )  # fmt: skip
    for lead in range(blocks.shape[0]):
        array[lead] = blocks[lead]
    return time.perf_counter() - start


def _read(path: Path) -> float:
    start = time.perf_counter()
    np.asarray(zarr.open_array(str(path), mode="r")[:])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _, _, base = fields()
    rng = np.random.default_rng(0)
    field = base[0]
    blocks = np.stack(
        [
            np.stack(
                [
                    field * (1 + 0.01 * rng.standard_normal(field.shape, dtype=np.float32))
                    for _ in range(args.members)
                ]
            )
            for _ in range(args.steps + 1)
        ]
    ).astype(np.float32)
    mib = blocks.nbytes / 2**20
    results: dict[tuple[str, bool], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for codec in ("zstd", "none"):
                with_crc = zarr_compressors(codec)
                without = tuple(c for c in with_crc if type(c).__name__ != "Crc32cCodec") or None
                for checked, compressors in ((True, with_crc), (False, without)):
                    path = Path(folder) / f"{codec}-{checked}.zarr"
                    entry = results.setdefault((codec, checked), {"write": [], "read": []})
                    entry["write"].append(_write(path, blocks, compressors))
                    entry["read"].append(_read(path))
    print(f"{mib:.1f} MiB of float32, {args.repeats} repeats, medians")
    print(
        "| codec | write s (no CRC) | write s (CRC32C) | write ratio | read s (no CRC) | read s (CRC32C) | read ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for codec in ("zstd", "none"):
        w0, w1 = (statistics.median(results[(codec, c)]["write"]) for c in (False, True))
        r0, r1 = (statistics.median(results[(codec, c)]["read"]) for c in (False, True))
        print(
            f"| {codec} | {w0:.3f} | {w1:.3f} | {w1 / w0:.2f} | {r0:.3f} | {r1:.3f} | {r1 / r0:.2f} |"
        )


if __name__ == "__main__":
    main()
