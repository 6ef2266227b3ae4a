"""One prepared check of the CUDA path, with throughput figures for docs/performance.md.

Run on a machine with a CUDA GPU, from the repository root, one section per
process (a CUDA failure in one section does not hide the others)::

    python benchmarks/gpu_check.py models     # presets: forward, bf16 vs fp32, training step, memory
    python benchmarks/gpu_check.py rollout    # rollout engine at 1 degree vs bare model calls
    python benchmarks/gpu_check.py training   # loader and train() overhead on CUDA (64x128)
    python benchmarks/gpu_check.py cli WORKDIR  # synth -> ingest -> train -> run -> score on CUDA
    python benchmarks/gpu_check.py stacked    # 4 checkpoints' SFNOs vmapped as one vs a loop

Each section prints a Markdown table and, with ``--json FILE``, appends its
figures as one JSON line. Timings are CUDA-synchronised wall times: the mean
of ``--repeats`` calls after warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from forecast.files import atomic_write  # noqa: E402

DEVICE = "cuda"  # --device cpu --tiny makes a quick smoke run of this script on a CPU machine


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _timed(fn, repeats: int, warmup: int = 2) -> float:
    """Mean seconds of ``fn()`` over ``repeats`` synchronised calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync()
    started = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync()
    return (time.perf_counter() - started) / repeats


def environment() -> dict:
    import torch_harmonics

    if DEVICE != "cuda":
        return {
            "torch": torch.__version__,
            "torch_harmonics": torch_harmonics.__version__,
            "device": DEVICE,
        }
    props = torch.cuda.get_device_properties(0)
    return {
        "torch": torch.__version__,
        "torch_harmonics": torch_harmonics.__version__,
        "device": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "cuda": torch.version.cuda,
    }


# -- models ------------------------------------------------------------------------------


def _cases(tiny: bool) -> list[tuple]:
    """(label, model, channels, grid, hparams, batch): the two presets and configs/train/era5_1deg.yaml."""
    import yaml

    from forecast.grid import Grid
    from forecast.models import PRESETS

    cases = []
    for name in ("fourcastnet-v2-sfno", "fourcastnet-afno"):
        preset = PRESETS[name]
        cases.append((name, preset.model, preset.in_channels, preset.grid(), preset.hparams, 1))
    one_degree = yaml.safe_load((REPO / "configs/train/era5_1deg.yaml").read_text())
    cases.append(
        ("era5_1deg.yaml", "sfno", 73, Grid.equiangular(181, 360), one_degree["model"]["sfno"], 4)
    )
    if tiny:  # smoke run: the same structures on a small grid with a narrow embedding
        small = Grid.equiangular(32, 64)
        cases = [(label, model, channels, small, {**hp, "embed_dim": 32}, batch)
                 for label, model, channels, _, hp, batch in cases]  # fmt: skip
    return cases


def _check_case(model_name, channels, grid, hparams, batch, repeats) -> dict:
    from forecast.models import build_model, count_parameters

    torch.manual_seed(0)
    model = build_model(model_name, channels, channels, grid, **hparams).to(DEVICE)
    x = torch.randn(batch, channels, grid.nlat, grid.nlon, device=DEVICE)
    row = {"grid": f"{grid.nlat}x{grid.nlon}", "channels": channels, "batch": batch,
           "parameters": count_parameters(model)}  # fmt: skip
    model.eval()
    with torch.no_grad():
        reference = model(x)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            low = model(x).float()
        row["finite"] = bool(torch.isfinite(reference).all() and torch.isfinite(low).all())
        row["bf16_rel_diff"] = float((low - reference).norm() / reference.norm())
        del reference, low
        row["forward_fp32_s"] = _timed(lambda: model(x), repeats)

        def forward_bf16():
            with torch.autocast(DEVICE, dtype=torch.bfloat16):
                model(x)

        row["forward_bf16_s"] = _timed(forward_bf16, repeats)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=DEVICE == "cuda")
    target = torch.randn_like(x)
    for precision in ("fp32", "bf16"):

        def step(precision=precision):
            with torch.autocast(DEVICE, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = (model(x).float() - target).square().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        base = 0
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        row[f"train_{precision}_s"] = _timed(step, repeats, warmup=2)
        peak = torch.cuda.max_memory_allocated() - base if DEVICE == "cuda" else float("nan")
        row[f"train_{precision}_peak_gib"] = peak / 2**30
    row["weights_finite"] = bool(all(torch.isfinite(p).all() for p in model.parameters()))
    return row


def check_models(repeats: int, tiny: bool = False) -> list[dict]:
    """Forward fp32/bf16 and a training step (AdamW, clipping) fp32/bf16 at published sizes."""
    rows = []
    for label, model_name, channels, grid, hparams, batch in _cases(tiny):
        row = {"case": label, "model": model_name}
        try:
            row |= _check_case(model_name, channels, grid, hparams, batch, repeats)
        except Exception as err:  # report and go on to the next case
            row["error"] = f"{type(err).__name__}: {err}"[:300]
            print(f"{label}: {row['error']}", flush=True)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
    print(
        "| case | model | grid | channels x batch | params (M) | fwd fp32 ms | fwd bf16 ms | bf16 rel. diff "
        "| train step fp32 ms | train step bf16 ms | peak GiB fp32 / bf16 |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            continue
        print(
            f"| {r['case']} | {r['model']} | {r['grid']} | {r['channels']} x {r['batch']} | {r['parameters'] / 1e6:.1f} | "
            f"{r['forward_fp32_s'] * 1e3:.1f} | {r['forward_bf16_s'] * 1e3:.1f} | {r['bf16_rel_diff']:.2e} | "
            f"{r['train_fp32_s'] * 1e3:.1f} | {r['train_bf16_s'] * 1e3:.1f} | "
            f"{r['train_fp32_peak_gib']:.1f} / {r['train_bf16_peak_gib']:.1f} |"
        )
    return rows


# -- rollout -----------------------------------------------------------------------------


def check_rollout(
    repeats: int, grid_spec: str, members: int, steps: int, tiny: bool = False
) -> dict:
    """The rollout engine (perturbation, checks, Zarr writing) against bare model calls on CUDA."""
    import datetime as dt

    import xarray as xr

    from benchmarks.rollout import CHANNELS, MEANS, STDS, bare_forward, engine_run, write_store
    from forecast.grid import Grid
    from forecast.normalize import Normalizer
    from forecast.steppers import BackboneStepper

    grid = Grid.parse(grid_spec)
    hparams = {
        "embed_dim": 16 if tiny else 256,
        "num_layers": 8,
        "scale_factor": 1,
        "big_skip": True,
    }
    with tempfile.TemporaryDirectory() as tmp:
        store_path = write_store(Path(tmp) / "store.zarr", grid.nlat, grid.nlon)
        store = xr.open_zarr(store_path)
        torch.manual_seed(0)
        normalizer = Normalizer(tuple(CHANNELS), MEANS, STDS, STDS * 0.2)
        stepper = (
            BackboneStepper("sfno", hparams, CHANNELS, grid, dt.timedelta(hours=6), normalizer)
            .eval()
            .to(DEVICE)
        )

        def bare():  # the same model steps, one batch of every member, nothing else
            bare_forward(stepper, store, members, steps, batch_size=members)

        def engine():  # GRF perturbations, blow-up checks and Zarr writing around them
            engine_run(stepper, store, Path(tmp) / "fc.zarr", members, steps, members, "grf")

        bare_s = _timed(bare, repeats, warmup=1)
        engine_s = _timed(engine, repeats, warmup=1)
        written = xr.open_zarr(Path(tmp) / "fc.zarr")
        values = written[CHANNELS[0]].values
        result = {
            "grid": grid.describe(),
            "model": f"sfno {hparams}",
            "members": members,
            "steps": steps,
            "bare_s": bare_s,
            "engine_s": engine_s,
            "overhead": engine_s / bare_s,
            "member_steps_per_s": members * steps / engine_s,
            "finite": bool(np.isfinite(values).all()),
            "output_shape": list(values.shape),
        }
    print(f"| rollout ({DEVICE}) | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    return result


def check_stacked(repeats: int, grid_spec: str, members: int, tiny: bool = False) -> dict:
    """Four SFNOs of one architecture (other seeds) on ``members`` rows: vmapped as one vs a loop."""
    from forecast.grid import Grid
    from forecast.models import build_model
    from forecast.models.stacked import StackedNetworks

    grid = Grid.parse(grid_spec)
    hparams = {"embed_dim": 16 if tiny else 64, "num_layers": 4}
    networks = []
    for seed in range(4):
        torch.manual_seed(seed)
        networks.append(build_model("sfno", 10, 4, grid, **hparams).eval().to(DEVICE))
    stacked = StackedNetworks(networks)
    models = np.arange(members) % len(networks)
    x = torch.randn(members, 10, grid.nlat, grid.nlon, device=DEVICE)
    plan = stacked.plan(models)  # made once for a batch, as a run does
    with torch.inference_mode():
        stacked(x, plan)  # the first call chooses the strategy
        vmapped = _timed(lambda: stacked(x, plan), repeats)
        looped = _timed(lambda: stacked._loop(x, plan), repeats)
    result = {
        "grid": grid.describe(),
        "model": f"sfno {hparams}",
        "networks": len(networks),
        "members": members,
        "strategy": stacked.strategy,
        "reason": stacked.reason,
        "vmap_s": vmapped,
        "loop_s": looped,
        "loop_over_vmap": looped / vmapped,
    }
    print(f"| stacked ({DEVICE}) | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
    return result


# -- training overhead ---------------------------------------------------------------------


def check_training(tiny: bool = False) -> list[dict]:
    """benchmarks/training.py on CUDA: loader rate and train() step against the bare step.

    Two cases: the 64x128 case of docs/performance.md (sfno, 4 channels, fp32)
    and configs/train/era5_1deg.yaml's model on 181x360 with 73 channels, bf16,
    4 samples per GPU, 8 loader workers.
    """
    import yaml

    from benchmarks.training import HPARAMS, measure
    from forecast.grid import Grid

    one_degree = yaml.safe_load((REPO / "configs/train/era5_1deg.yaml").read_text())
    cases = [
        ("64x128", 4, HPARAMS["sfno"], 4, 4, "fp32", 40),
        ("181x360", 73, one_degree["model"]["sfno"], 4, 8, "bf16", 24),
    ]
    if tiny:
        cases = [
            ("32x64", 4, HPARAMS["sfno"], 2, 2, "fp32", 4),
            ("32x64", 9, {"embed_dim": 16}, 2, 2, "bf16", 4),
        ]
    rows = []
    for grid_spec, channels, hparams, batch, workers, precision, steps in cases:
        bare, train_steps, rate = measure(
            Grid.parse(grid_spec), channels, "sfno", hparams, batch, steps, workers, DEVICE, precision, skip=3
        )  # fmt: skip
        # CUDA steps are asynchronous between log flushes: compare means over the window
        step = float(np.mean(train_steps))
        bare_mean = float(np.mean(bare))
        rows.append({
            "case": f"sfno {grid_spec}, {channels} channels, batch {batch}, {precision}, {workers} workers",
            "bare_step_ms": bare_mean * 1e3,
            "train_step_ms": step * 1e3,
            "train_over_bare": step / bare_mean,
            "loader_samples_per_s": rate,
            "consumed_samples_per_s": batch / step,
            "loader_over_consumption": rate * step / batch,
        })  # fmt: skip
    print(
        "| case | bare step ms | train() step ms | train/bare | loader samples/s | consumed samples/s | loader/consumed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['case']} | {r['bare_step_ms']:.1f} | {r['train_step_ms']:.1f} | {r['train_over_bare']:.3f} | "
            f"{r['loader_samples_per_s']:.0f} | {r['consumed_samples_per_s']:.1f} | {r['loader_over_consumption']:.1f} |"
        )
    return rows


# -- the CLI end to end ----------------------------------------------------------------------


def check_cli(workdir: Path, train_steps: int = 300) -> dict:
    """synth -> ingest -> train (bf16) -> run (16 members) -> score, each on CUDA; CPU vs CUDA rollout."""
    import xarray as xr

    workdir.mkdir(parents=True, exist_ok=True)
    forecast = [sys.executable, "-m", "forecast"]
    times = {}

    def call(name, *args):
        started = time.perf_counter()
        done = subprocess.run([*forecast, *args], capture_output=True, text=True)
        times[name] = time.perf_counter() - started
        tail = (done.stdout + done.stderr).strip().splitlines()[-6:]
        print(
            f"## {name}: exit {done.returncode} in {times[name]:.1f} s\n" + "\n".join(tail),
            flush=True,
        )
        if done.returncode:
            raise RuntimeError(f"{name} failed with exit {done.returncode}")

    w = str(workdir)
    call("synth", "synth", f"{w}/synth", "--config", "configs/demo/synth.yaml", "--days", "40")
    call("ingest", "ingest", *sorted(str(p) for p in (workdir / "synth").glob("*.nc")),
         "--config", "configs/demo/ingest.yaml", "--out", f"{w}/store.zarr", "--no-progress")  # fmt: skip
    call("train", "train", "--config", "configs/demo/train.yaml", "--data", f"{w}/store.zarr",
         "--out", f"{w}/run", "--device", DEVICE, "--precision", "bf16", "--max-steps", str(train_steps),
         "--val-every", "100", "--workers", "2", "--no-progress")  # fmt: skip
    ckpt = (
        f"{w}/run/best.ckpt" if (workdir / "run" / "best.ckpt").exists() else f"{w}/run/latest.ckpt"
    )
    init = "2020-01-28T00/2020-02-01T00/48h"  # 5-day forecasts that end inside the store
    call("run_ensemble", "run", "--checkpoint", ckpt, "--data", f"{w}/store.zarr", "--init", init,
         "--steps", "20", "--members", "16", "--perturbation", "grf", "--seed", "0",
         "--out", f"{w}/fc.zarr", "--device", DEVICE, "--no-progress")  # fmt: skip
    for device in (DEVICE, "cpu"):
        call(f"run_{device}", "run", "--checkpoint", ckpt, "--data", f"{w}/store.zarr",
             "--init", "2020-02-01T00", "--steps", "8", "--out", f"{w}/det_{device}.nc",
             "--device", device, "--no-progress")  # fmt: skip
    call(
        "score",
        "score",
        f"{w}/fc.zarr",
        "--truth",
        f"{w}/store.zarr",
        "--out",
        f"{w}/scores.nc",
        "--no-progress",
    )
    gpu = xr.open_dataset(f"{w}/det_{DEVICE}.nc").load()
    cpu = xr.open_dataset(f"{w}/det_cpu.nc").load()
    diffs = {
        name: float(np.abs(gpu[name] - cpu[name]).max() / float(cpu[name].std()))
        for name in cpu.data_vars
        if "lead_time" in cpu[name].dims
    }
    scores = xr.open_dataset(f"{w}/scores.nc").load()
    out = {
        "seconds": times,
        "cpu_vs_cuda_max_abs_diff_in_std": diffs,
        "score_vars": sorted(scores.data_vars),
        "forecast_finite": _all_finite(xr.open_zarr(f"{w}/fc.zarr")),
    }
    print(json.dumps(out, indent=1, default=str))
    return out


def _all_finite(ds) -> bool:
    return all(
        bool(np.isfinite(v.values).all()) for v in ds.data_vars.values() if "lead_time" in v.dims
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("section", choices=("models", "rollout", "training", "cli", "stacked"))
    parser.add_argument(
        "workdir", nargs="?", default=None, help="work directory of the cli section"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="append the figures as a JSON line")
    parser.add_argument("--grid", default="181x360", help="grid of the rollout section")
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="small sizes, for a smoke run on CPU")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: this check runs on a GPU machine only", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 in these comparisons
    env = environment()
    print(f"# {args.section}: {env}", flush=True)
    if args.section == "models":
        figures = check_models(args.repeats, args.tiny)
    elif args.section == "rollout":
        figures = check_rollout(args.repeats, args.grid, args.members, args.steps, args.tiny)
    elif args.section == "training":
        figures = check_training(args.tiny)
    elif args.section == "stacked":
        figures = check_stacked(args.repeats, args.grid, args.members, args.tiny)
    else:
        figures = check_cli(Path(args.workdir or tempfile.mkdtemp()), 20 if args.tiny else 300)
    if args.json is not None:  # one line more, written whole: a kill leaves the old lines
        line = json.dumps({"section": args.section, "env": env, "figures": figures}, default=str)
        path = Path(args.json)
        old = path.read_text() if path.exists() else ""
        atomic_write(path, lambda temporary: temporary.write_text(old + line + "\n"))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
