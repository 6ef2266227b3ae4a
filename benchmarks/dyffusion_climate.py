"""Issue 17's long run on the climate stores: a 1,460-step DYffusion rollout against held-out truth.

    .venv/bin/python benchmarks/dyffusion_climate.py --checkpoint RUN/best.ckpt \\
        --data work/climate/reference.zarr --workdir /tmp/dyclimate --members 1 4

For each ``--members M``: ``forecast run --steps 1460 --members M --seed 0`` from
``--init`` (default 2001-01-01T00, the start of the held-out decade of
``benchmarks/climate_evidence.py``) on the truth store ``--data``, its process
CPU time, then the run-mean (one year) global-mean bias of each channel in
units of the store's std (:func:`dyffusion_evidence.annual_bias`, the measure
of docs/performance.md "Long run"), for every member and for the ensemble
mean, and the global mean of each channel at 0, 10, 100 and 365 days
against the truth's. Prints markdown tables and writes ``long_M.json`` in the
work directory. Nothing is corrected after the fact: the truth store is only
read for the initial states and the scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dyffusion_evidence import annual_bias, forecast

from forecast.files import atomic_write

DAYS = (0, 10, 100, 365)


def global_means(out: Path, truth_store: Path, days=DAYS, steps_per_day: int = 4) -> dict:
    """``{channel: {"model": [...], "truth": [...]}}``: member-0 and true global means at ``days``."""
    import xarray as xr

    from forecast.store import open_store, store_grid

    fc = xr.open_zarr(out)
    truth = open_store(truth_store)
    weights = xr.DataArray(store_grid(truth).area_weights(), dims="latitude")  # no coordinate:
    # the forecast's latitudes may differ from the store's in the last bits (annual_bias)
    leads = [min(d * steps_per_day, fc.sizes["lead_time"] - 1) for d in days]
    valid = fc["valid_time"].isel(time=0, lead_time=leads).values
    result = {}
    for channel in [str(c) for c in truth["channel"].values if str(c) in fc]:
        model = fc[channel].isel(time=0, member=0, lead_time=leads)
        true = truth["data"].sel(channel=channel, time=valid)
        result[channel] = {
            name: [float(v) for v in field.weighted(weights).mean(("latitude", "longitude")).values]
            for name, field in (("model", model), ("truth", true))
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a DYffusion checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="the held-out truth store")
    parser.add_argument("--workdir", type=Path, required=True, help="where the runs are written")
    parser.add_argument("--init", default="2001-01-01T00", help="initial time")
    parser.add_argument("--steps", type=int, default=1460, help="store steps to run")
    parser.add_argument("--members", type=int, nargs="+", default=[1], help="ensemble sizes")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for members in args.members:
        out = args.workdir / f"long_{members}.zarr"
        record = args.workdir / f"long_{members}.json"
        if record.exists():
            result = json.loads(record.read_text())
        else:
            timing = args.workdir / f"long_{members}_cpu.json"  # the run done, its scores not yet
            if not timing.exists():
                cpu = forecast("run", "--checkpoint", str(args.checkpoint), "--data", str(args.data),
                               "--init", args.init, "--steps", str(args.steps), "--members",
                               str(members), "--seed", "0", "--out", str(out), "--no-progress",
                               "--overwrite", log=args.workdir / f"long_{members}.log")  # fmt: skip
                text = json.dumps({"cpu_s": cpu})
                atomic_write(timing, lambda temporary, text=text: temporary.write_text(text))
            cpu = json.loads(timing.read_text())["cpu_s"]
            result = {
                "cpu_s": cpu,
                "members": [annual_bias(out, args.data, m) for m in range(members)],
                "ensemble_mean": annual_bias(out, args.data, None),
                "global_means": global_means(out, args.data),
            }
            text = json.dumps(result, indent=1)
            atomic_write(record, lambda temporary, text=text: temporary.write_text(text))
        channels = list(result["ensemble_mean"])
        print(f"\n{members} member(s), {args.steps} steps, {result['cpu_s']:.0f} CPU-s")
        print("| | " + " | ".join(channels) + " | max abs |\n|---|" + "---:|" * (len(channels) + 1))
        rows = [(f"member {m}", b) for m, b in enumerate(result["members"])]
        if members > 1:
            rows.append(("ensemble mean", result["ensemble_mean"]))
        for name, bias in rows:
            values = [bias[c]["bias_over_std"] for c in channels]
            finite = all(bias[c]["finite"] for c in channels)
            print(f"| {name}{'' if finite else ' (NOT finite)'} | "
                  + " | ".join(f"{v:+.3f}" for v in values)
                  + f" | {np.max(np.abs(values)):.3f} |")  # fmt: skip
        print(f"\nglobal means of member 0 (truth) at days {', '.join(map(str, DAYS))}:")
        for channel, means in result["global_means"].items():
            pairs = ", ".join(
                f"{m:.4g} ({t:.4g})" for m, t in zip(means["model"], means["truth"], strict=True)
            )
            print(f"- {channel}: {pairs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
