"""Benchmark: a multi-checkpoint ``forecast run``, its networks stacked, against a batch per checkpoint.

The same command line, in one process, alternately: ``forecast run`` with
every ``--checkpoint`` as it runs by default (checkpoints of one recipe step
as one model, :mod:`forecast.models.stacked`), and with the stacking turned
off (:func:`inference.ensemble.stack_backbones` made to refuse, so each
checkpoint runs its own batch, as before). Reports the run's own wall time
(the manifest's ``timings.total``), member-steps per second and their ratio
(fastest of ``--repeats`` each), the strategy the stacked run took, and how
far the two runs' first product is apart (rounding differences grow over a
long run into other weather: a measure of that, not an error)::

    .venv/bin/python benchmarks/multi_checkpoint.py --length 1y --reduce monthly \\
        --data work/climate/reference.zarr --init 2001-01-01T00 \\
        work/climate/runs/sfno-zonal10-rollout24-seed{0,1,2,3,4,5,6}/best.ckpt

Results go in docs/performance.md ("Rollout").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.cli.main import main as forecast_main  # noqa: E402
from inference.schedule import manifest_path  # noqa: E402


def run(arguments: list[str], out: Path, stacked: bool) -> dict:
    """One ``forecast run`` into ``out`` (replaced); its manifest."""
    argv = ["run", *arguments, "--out", str(out), "--overwrite", "--no-progress"]
    if stacked:
        code = forecast_main(argv)
    else:
        with mock.patch("inference.ensemble.stack_backbones", return_value=None):
            code = forecast_main(argv)
    if code != 0:
        raise SystemExit(f"forecast run failed ({code}): {' '.join(argv)}")
    return json.loads(manifest_path(out).read_text())


def largest_difference(a: dict, b: dict) -> dict[str, float]:
    """Largest absolute difference per variable of the two runs' first product (or output)."""
    import xarray as xr

    def first(manifest: dict) -> str:
        products = manifest.get("products") or {}
        return next(iter(products.values())) if products else manifest["output"]

    left, right = xr.open_zarr(first(a)), xr.open_zarr(first(b))
    return {
        str(name): round(float(np.abs(left[name] - right[name]).max()), 6)
        for name in left.data_vars
        if left[name].dtype.kind == "f" and "member" in left[name].dims
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", help="the checkpoints of the ensemble")
    parser.add_argument("--data", required=True, help="the store the runs start from")
    parser.add_argument("--init", required=True)
    parser.add_argument("--length", default="1y")
    parser.add_argument("--reduce", default="monthly", help="'' for every lead time")
    parser.add_argument("--members", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="multi-checkpoint-"))
    work.mkdir(parents=True, exist_ok=True)
    arguments = [a for path in args.checkpoints for a in ("--checkpoint", path)]
    arguments += ["--data", args.data, "--init", args.init, "--length", args.length]
    if args.reduce:
        arguments += ["--reduce", args.reduce]
    if args.members:
        arguments += ["--members", str(args.members)]
    seconds: dict[str, list[float]] = {"stacked": [], "per_checkpoint": []}
    manifests: dict[str, dict] = {}
    for _ in range(args.repeats):
        for name in seconds:
            manifest = run(arguments, work / f"{name}.zarr", stacked=name == "stacked")
            seconds[name].append(float(manifest["timings"]["total"]))
            manifests[name] = manifest
    stacked, alone = manifests["stacked"], manifests["per_checkpoint"]
    work_done = int(stacked["members"]) * len(stacked["init_times"]) * int(stacked["steps"])
    rates = {name: work_done / min(values) for name, values in seconds.items()}
    report = {
        "checkpoints": len(args.checkpoints),
        "members": int(stacked["members"]),
        "steps": int(stacked["steps"]),
        "batch_size": {"stacked": stacked["batch_size"], "per_checkpoint": alone["batch_size"]},
        "checkpoint_batches": {
            "stacked": stacked.get("checkpoint_batches"),
            "per_checkpoint": alone.get("checkpoint_batches"),
        },
        "stacking": stacked.get("checkpoint_stacking"),
        "seconds": {name: [round(v, 1) for v in values] for name, values in seconds.items()},
        "member_steps_per_s": {name: round(rate, 1) for name, rate in rates.items()},
        "stacked_over_per_checkpoint": round(rates["stacked"] / rates["per_checkpoint"], 3),
        "largest_difference": largest_difference(stacked, alone),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
