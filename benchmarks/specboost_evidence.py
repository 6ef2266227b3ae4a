"""Evidence for SpecBoost on the demo's synthetic data, in one command.

    .venv/bin/python benchmarks/specboost_evidence.py --workdir /tmp/specboost --first-steps 1000

Stages (each skipped when its product exists; the store is the one of
``benchmarks/dyffusion_evidence.py`` and may be shared with it):

1. ``first``: the first model, ``forecast train --config configs/demo/train.yaml
   --model FIRST`` (default the FNO of that config: SpecBoost's premise is the
   FNO's under-learnt high frequencies), ``--first-steps`` steps with the
   demo's curriculum scaled (K = 1, 2 from 50%, 4 from 80% of the steps);
   ``--first-hparams`` overrides the config's hyperparameters (for example
   ``modes_lat=8,modes_lon=8``, a first model that keeps fewer modes and so
   leaves the booster more of the spectrum), and ``--first-history N`` its
   number of input states (the config's 2). Its run directory is
   ``first_FIRST`` (``first_FIRST_modes_lat8_modes_lon8`` with those
   hyperparameters, ``..._history3`` with three states), called LABEL below
   after its ``first_``.
2. ``boosted``: ``forecast train --boost first/best.ckpt --model BOOSTER`` for
   ``--boost-steps`` steps on the curriculum ``--boost-schedule`` (default
   ``0:1``: one-step residuals); its process CPU time measured. The booster's
   output layer starts at zero, so the pair starts as the first model.
3. The fair comparison, the first model given the booster's CPU time too
   (``--fair``):

   - ``longer`` (default): the same recipe as the first model, from scratch,
     with ``first_steps * (first + booster CPU) / first CPU`` steps and its
     curriculum and cosine schedule scaled alike: what the booster's CPU time
     buys when spent on the first model instead (both the first model and
     this one end their learning-rate decay);
   - ``continue``: the first session's: the first model trained on from its
     best checkpoint, a fresh optimiser with a fresh warm-up at K = 4, for the
     booster's CPU time (its steps set from its marginal CPU cost per step,
     a 30-step minus a 10-step run). On a model at the end of its cosine
     decay the restart made it worse, which is why ``longer`` replaced it.
4. The 24 h (4-step) area-weighted RMSE per channel of the first model, the
   fair comparison and the boosted one, on the held-out last 15% of the store
   (32 initial times, the same for a model of any history), and the ratios boosted / fair and boosted / first.

CPU times are process CPU seconds (user + system of the training process and
its loader workers). Prints a markdown table; writes
``specboost_LABEL_BOOSTER[TAG].json`` (the booster's run is
``boosted_LABEL_BOOSTER[TAG]``, the fair comparison's ``first_LABEL_STEPS``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from dyffusion_evidence import DEMO, build_store, children_cpu, forecast  # noqa: E402

from forecast.files import atomic_write  # noqa: E402
from forecast.training.losses import RolloutCurriculum  # noqa: E402

TRAIN_OPTIONS = ["--lr", "0.002", "--warmup-steps", "20", "--val-every", "100000", "--no-progress"]


def continue_training(first: Path, store: Path, out: Path, steps: int, rollout_steps: int) -> None:
    """Train the first model on from ``first`` (a child process runs this; see ``--only``)."""
    import torch

    from forecast.checkpoint import load_checkpoint
    from forecast.training import TrainRequest, train

    torch.set_num_threads(1)
    stepper, metadata = load_checkpoint(first)
    request = TrainRequest(
        store, metadata["model"], out, hparams=metadata["hparams"], history=stepper.history,
        diurnal_baseline=stepper.diurnal is not None, max_steps=steps, rollout_steps=rollout_steps,
        rollout_schedule=((0, rollout_steps),), batch_size=4, lr=0.002, warmup_steps=20,
        val_every=100000, val_fraction=0.15, workers=1, device="cpu", progress=False,
        channel_weights={"t2m": 4, "msl": 2, "u500": 1.5, "u850": 1.5, "u10m": 1.5, "v10m": 1.5},
    )  # fmt: skip
    train(request, stepper=stepper)


def first_budget(steps: int | None) -> list[str]:
    """``forecast train`` options for a first model of ``steps`` steps, the demo's curriculum scaled."""
    if not steps:
        return []
    schedule = f"0:1,{int(0.5 * steps)}:2,{int(0.8 * steps)}:4"
    return ["--max-steps", str(steps), "--rollout-schedule", schedule, "--val-every", str(steps)]


def first_name(model: str, hparams: str, history: int | None = None) -> str:
    """The first model's run directory: ``first_fno``, ``first_fno_modes_lat8_modes_lon8``,
    ``first_fno_history3``."""
    overrides = [item.replace("=", "") for item in hparams.split(",") if item]
    return "_".join(["first", model, *overrides, *([f"history{history}"] if history else [])])


def child(*argv: str) -> float:
    """This script in a child process; its CPU seconds."""
    import os
    import subprocess

    before = children_cpu()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, __file__, *argv], check=True, env=env)
    return children_cpu() - before


def rmse_by_lead(checkpoint: Path, store: Path) -> tuple[dict[str, list[float]], int]:
    """Area-weighted RMSE per channel at 6, 12, 18 and 24 h on the held-out last 15% of the store.

    The initial times are the same whatever the model's history: those of a
    two-state model whose windows start at the 85% mark (a model of more
    states reads its earlier ones from before it).
    """
    from forecast.checkpoint import read_metadata
    from forecast.store import open_store
    from forecast.time import format_time
    from forecast.training.evaluate import evaluate_checkpoint

    times = open_store(store)["time"].values
    history = int(read_metadata(checkpoint)["history"])
    start = format_time(times[int(round(len(times) * 0.85)) - (history - 2)])
    scores = evaluate_checkpoint(
        checkpoint, store, 4, start=start, end=format_time(times[-1]), max_samples=32,
        with_climatology=False,
    )  # fmt: skip
    return dict(zip(scores.channels, scores.model.T.tolist(), strict=True)), scores.samples


def train_first(
    work: Path,
    store: Path,
    name: str,
    model: str,
    hparams: str,
    steps: int | None,
    history: int | None = None,
) -> float:
    """The first model's recipe (configs/demo/train.yaml, ``hparams`` and ``history`` over
    its own) for ``steps`` steps in ``work/name``; its CPU seconds."""
    overrides = ["--hparams", hparams] if hparams else []
    overrides += ["--history", str(history)] if history else []
    return forecast(
        "train", "--config", str(DEMO / "train.yaml"), "--model", model, *overrides,
        "--data", str(store), "--out", str(work / name), "--no-progress", *first_budget(steps),
        log=work / f"{name}.log",
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="work/dyffusion_evidence")
    parser.add_argument("--first", default="fno", help="backbone of the first model")
    parser.add_argument(
        "--first-hparams",
        default="",
        help="the first model's hyperparameters over the config's, e.g. modes_lat=8,modes_lon=8",
    )
    parser.add_argument(
        "--first-history", type=int, help="the first model's input states (the config's 2)"
    )
    parser.add_argument("--booster", default="fno", help="backbone of the booster")
    parser.add_argument("--booster-hparams", default="embed_dim=32,num_layers=4")
    parser.add_argument("--boost-steps", type=int, default=400)
    parser.add_argument(
        "--boost-schedule", default="0:1", help="booster's rollout curriculum, step:K pairs"
    )
    parser.add_argument("--tag", default="", help="suffix of the booster's run and record")
    parser.add_argument(
        "--first-steps", type=int, default=1000, help="first model's steps (the config's 1000)"
    )
    parser.add_argument("--fair", choices=("longer", "continue"), default="longer")
    parser.add_argument("--continue-rollout-steps", type=int, default=4)
    parser.add_argument(
        "--fair-from",
        help="reuse the first model's CPU time and the fair comparison of this record "
        "(another booster's specboost_*.json in the work directory) instead of training them",
    )
    parser.add_argument("--only", choices=("continue",), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    work = Path(args.workdir)
    store = work / "store.zarr"
    first_dir = work / first_name(args.first, args.first_hparams, args.first_history)
    label = first_dir.name.removeprefix("first_")
    if args.only == "continue":
        continue_training(
            first_dir / "best.ckpt", store, Path(args.out), args.steps, args.continue_rollout_steps
        )
        return 0
    work.mkdir(parents=True, exist_ok=True)
    store = build_store(work)
    record_path = work / f"specboost_{label}_{args.booster}{args.tag}.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    if args.fair_from and "fair_cpu_s" not in record:
        shared = json.loads((work / args.fair_from).read_text())
        keys = ("first_cpu_s", "fair", "fair_cpu_s", "fair_steps", "fair_checkpoint")
        record.update({key: shared[key] for key in keys})
    if "first_cpu_s" not in record:
        print(f"== first model ({label})", flush=True)
        record["first_cpu_s"] = train_first(
            work, store, first_dir.name, args.first, args.first_hparams, args.first_steps,
            args.first_history,
        )  # fmt: skip
        atomic_write(record_path, lambda temporary: temporary.write_text(json.dumps(record)))
    boosted_dir = work / f"boosted_{label}_{args.booster}{args.tag}"
    schedule = RolloutCurriculum.parse_milestones(args.boost_schedule)
    if "boost_cpu_s" not in record:
        print(f"== booster ({args.booster}) on the frozen first model's residual", flush=True)
        record["boost_cpu_s"] = forecast(
            "train", "--data", str(store), "--boost", str(first_dir / "best.ckpt"), "--model", args.booster,
            "--hparams", args.booster_hparams, "--max-steps", str(args.boost_steps),
            "--rollout-steps", str(max(k for _, k in schedule)), "--rollout-schedule", args.boost_schedule,
            "--batch-size", "4", "--val-fraction", "0.15", "--workers", "1", "--device", "cpu",
            "--channel-weights", "t2m=4,msl=2,u500=1.5,u850=1.5,u10m=1.5,v10m=1.5",
            "--out", str(boosted_dir), *TRAIN_OPTIONS, log=work / f"boosted_{label}{args.tag}.log",
        )  # fmt: skip
        atomic_write(record_path, lambda temporary: temporary.write_text(json.dumps(record)))
    if "fair_cpu_s" not in record:
        if args.fair == "longer":
            steps = int(
                round(args.first_steps * (1 + record["boost_cpu_s"] / record["first_cpu_s"]))
            )
            fair_dir = work / f"{first_dir.name}_{steps}"
            print(f"== the first model's recipe for {steps} steps", flush=True)
            record["fair_cpu_s"] = train_first(
                work, store, fair_dir.name, args.first, args.first_hparams, steps,
                args.first_history,
            )  # fmt: skip
            record["fair_checkpoint"] = str(fair_dir / "best.ckpt")
        else:
            print("== the first model trained on for the same CPU time", flush=True)
            # marginal cost per step: 30 minus 10 steps, so that the process start cancels
            # the child trains on from this run's first model
            history = ["--first-history", str(args.first_history)] if args.first_history else []
            first_args = ["--workdir", str(work), "--first", args.first,
                          "--first-hparams", args.first_hparams, *history, "--only", "continue"]  # fmt: skip
            calibration = {}
            for calibration_steps in (10, 30):
                calibration[calibration_steps] = child(
                    *first_args, "--steps", str(calibration_steps),
                    "--out", str(work / f"calibrate_continue_{label}_{calibration_steps}"),
                    "--continue-rollout-steps", str(args.continue_rollout_steps),
                )  # fmt: skip
            per_step = max(calibration[30] - calibration[10], 1e-3) / 20
            steps = max(int(record["boost_cpu_s"] / per_step), 1)
            fair_dir = work / f"continued_{label}"
            record["fair_cpu_s"] = child(
                *first_args, "--steps", str(steps), "--out", str(fair_dir),
                "--continue-rollout-steps", str(args.continue_rollout_steps),
            )  # fmt: skip
            record["fair_checkpoint"] = str(fair_dir / "latest.ckpt")
        record.update(fair=args.fair, fair_steps=steps)
        atomic_write(record_path, lambda temporary: temporary.write_text(json.dumps(record)))
    first, samples = rmse_by_lead(first_dir / "best.ckpt", store)
    fair, _ = rmse_by_lead(Path(record["fair_checkpoint"]), store)
    boosted, _ = rmse_by_lead(boosted_dir / "latest.ckpt", store)
    record.update(first_rmse=first, fair_rmse=fair, boosted_rmse=boosted, samples=samples)
    atomic_write(record_path, lambda temporary: temporary.write_text(json.dumps(record, indent=1)))
    print(f"\nCPU: first model {record['first_cpu_s']:.0f} s ({args.first_steps} steps); booster "
          f"{record['boost_cpu_s']:.0f} s ({args.boost_steps} steps, K {args.boost_schedule}); "
          f"fair ({record['fair']}) {record['fair_cpu_s']:.0f} s ({record['fair_steps']} steps); "
          f"{samples} held-out initial times\n")  # fmt: skip
    print("24 h (4-step) RMSE:\n")
    print("| channel | first | first, more CPU | boosted | boosted / more CPU | boosted / first |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for channel in first:
        a, b, c = first[channel][3], fair[channel][3], boosted[channel][3]
        print(f"| {channel} | {a:.4g} | {b:.4g} | {c:.4g} | {c / b:.3f} | {c / a:.3f} |")
    for lead in range(4):
        ratios = [boosted[c][lead] / fair[c][lead] for c in first]
        versus_first = [boosted[c][lead] / first[c][lead] for c in first]
        print(f"\n{6 * (lead + 1)} h: boosted / more CPU {min(ratios):.3f}-{max(ratios):.3f}, "
              f"boosted / first {min(versus_first):.3f}-{max(versus_first):.3f}", end="")  # fmt: skip
    worst = max(boosted[c][3] / fair[c][3] for c in first)
    print(f"\n\nboosted / more CPU at 24 h, worst channel: {worst:.3f} (target <= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
