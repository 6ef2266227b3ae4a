"""Skill of a trained checkpoint against persistence and climatology, as a markdown table.

Used for the numbers in docs/performance.md ("## Training")::

    .venv/bin/python benchmarks/training_evidence.py CKPT STORE --steps 20 --leads 1,4,20 \
        [--start 2020-04-12 --end 2020-04-29T18:00] [--samples 64]

Prints, per channel and lead, the area-weighted RMSE (physical units) of the
model, persistence and the store's climatology, the model/persistence ratio,
and whether the rollout stayed finite.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.training.evaluate import evaluate_checkpoint  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("store")
    parser.add_argument("--steps", type=int, default=20, help="rollout length in model steps")
    parser.add_argument("--leads", default="1,4,20", help="leads (steps) to print")
    parser.add_argument("--start", default=None, help="first initial time of the scored period")
    parser.add_argument("--end", default=None, help="last valid time of the scored period")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="score the last fraction of the store instead of --start/--end",
    )
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    start, end = args.start, args.end
    if args.val_fraction:
        from forecast.store import open_store
        from forecast.time import format_time

        times = open_store(args.store)["time"].values
        start = format_time(times[int(round(len(times) * (1 - args.val_fraction)))])
        end = format_time(times[-1])
    scores = evaluate_checkpoint(
        args.checkpoint,
        args.store,
        n_steps=args.steps,
        start=start,
        end=end,
        max_samples=args.samples,
    )
    leads = [int(v) for v in args.leads.split(",")]
    print(
        f"{scores.samples} initial times, period {start or 'whole store'} .. {end or ''}; rollout finite: {bool(np.isfinite(scores.model).all())}"
    )
    print(
        "| channel | lead (steps) | model RMSE | persistence | climatology | model / persistence |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for i, channel in enumerate(scores.channels):
        for lead in leads:
            clim = (
                scores.climatology[lead - 1, i] if scores.climatology is not None else float("nan")
            )
            model, persistence = scores.model[lead - 1, i], scores.persistence[lead - 1, i]
            print(
                f"| {channel} | {lead} | {model:.4g} | {persistence:.4g} | {clim:.4g} | {model / persistence:.3f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
