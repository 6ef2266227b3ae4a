"""Run deterministic or ensemble forecasts from a checkpoint, streamed to Zarr or NetCDF.

Examples
--------
  forecast run --checkpoint model.pt --data store.zarr --init 2020-01-01T00 --steps 20 --out fc.zarr
  forecast run --checkpoint model.pt --data store.zarr --init 2020-01-01T00/2020-03-01T00/12h \\
      --steps 40 --members 16 --perturbation grf --amplitude 0.05,z500=0.02 --seed 1 --out hindcast.zarr
  forecast run --checkpoint model.pt --data store.zarr --init latest --steps 40 --out 'fc/{init}.zarr'

--init latest forecasts from the newest time in the store; when that
forecast is already finished it says so and exits 0. An interrupted Zarr run
resumes from its last complete lead time when run again with the same
options; a lock stops two runs writing one output. Each run leaves
OUT.manifest.json. --layout wb2 writes what WeatherBench2's evaluation reads
without renames; --layout cdo writes a directory OUT/ of NetCDF files, one per
init and member, that CDO, NCO and Iris read. Under torchrun, ranks share the init times and members and
write their own regions of one Zarr store.
"""

from __future__ import annotations

import argparse
import sys

from forecast.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forecast run``."""
    parser.add_argument(
        "--checkpoint", required=True, metavar="CKPT", help="checkpoint written by 'forecast train'"
    )
    parser.add_argument(
        "--data",
        required=True,
        metavar="STORE.zarr",
        help="training store with the initial conditions",
    )
    parser.add_argument(
        "--init",
        required=True,
        metavar="TIME|START/END/STEP|latest",
        help="initial time(s): one time, a range with a step (2020-01-01T00/2020-03-01T00/12h), or latest",
    )
    parser.add_argument(
        "--steps", required=True, type=int, metavar="N", help="model steps per forecast"
    )
    parser.add_argument(
        "--out",
        required=True,
        metavar="OUT.zarr|OUT.nc|OUT_DIR",
        help="output; the suffix picks the format (a directory for --layout cdo); {init} is replaced by the "
        "(first) init time, e.g. fc/{init}.zarr",
    )
    parser.add_argument(
        "--members",
        type=int,
        default=1,
        metavar="M",
        help="ensemble members per init time (default 1)",
    )
    parser.add_argument(
        "--perturbation",
        default="none",
        help="initial-condition perturbation: none, gaussian, grf or bred (default none)",
    )
    parser.add_argument(
        "--amplitude",
        default="0.05",
        metavar="A|CH=A,...",
        help="perturbation amplitude in units of each channel's std: 0.05, or z500=0.02,t850=0.1 (default 0.05)",
    )
    parser.add_argument(
        "--length-scale",
        type=float,
        default=None,
        metavar="KM",
        help="correlation length of grf perturbations in km (default 1000)",
    )
    parser.add_argument(
        "--bred-cycles",
        type=int,
        default=None,
        metavar="N",
        help="breeding cycles of bred perturbations (default 3)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="ensemble seed: the same seed gives the same ensemble whatever the batch size (default 0)",
    )
    parser.add_argument(
        "--max-memory",
        default=None,
        metavar="SIZE",
        help="memory budget for a batch of members, e.g. 8GB (default: half the free RAM, or 80%% of free GPU memory)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="B",
        help="members per model call (default: chosen from --max-memory)",
    )
    parser.add_argument(
        "--channels",
        default=None,
        metavar="CH,...",
        help="write only these channels (default: all the model's)",
    )
    parser.add_argument(
        "--output-grid",
        default=None,
        metavar="GRID",
        help="regrid members at write time, e.g. 32x64 or 1.0deg",
    )
    parser.add_argument(
        "--on-blowup",
        default="continue",
        choices=("continue", "stop"),
        help="when a member turns NaN/inf or leaves physical bounds: report and continue, or stop (default continue)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="where the model runs (default: cuda when available)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output that holds another or a finished forecast",
    )
    parser.add_argument(
        "--layout",
        default="default",
        choices=("default", "wb2", "cdo"),
        help="output layout: default (time, lead_time, member per channel), wb2 (WeatherBench2's names "
        "and dims, read by its evaluation as is) or cdo (a directory OUT/ of NetCDF files, one per init "
        "and member, for CDO, NCO and Iris) (default: default)",
    )
    parser.add_argument(
        "--compression",
        default="auto",
        choices=("auto", "zstd", "deflate", "none"),
        help="compression of the forecast variables: zstd, deflate (zlib: every NetCDF reader decodes "
        "it, but it writes ~10x slower), none, or auto: zstd for Zarr, none for NetCDF (default auto; "
        "docs/performance.md)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _device(name: str):
    import os

    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda but no CUDA device is available", hint="use --device cpu or auto"
        )
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def run(args: argparse.Namespace) -> int:
    """Run ``forecast run``; returns the exit code."""
    import time
    from pathlib import Path

    from forecast.checkpoint import checkpoint_digest, load_checkpoint
    from forecast.grid import Grid
    from forecast.store import open_store, store_calendar
    from forecast.time import format_time
    from inference import distributed
    from inference.ensemble import run_forecast
    from inference.initial import available_init_times, parse_init_spec
    from inference.schedule import output_for, resolve_latest

    started = time.perf_counter()
    device = _device(args.device)
    distributed.init_from_env(device)
    rank, _ = distributed.rank_and_size()
    store = open_store(args.data)
    stepper, metadata = load_checkpoint(args.checkpoint, map_location=device)
    digest = checkpoint_digest(args.checkpoint)
    if str(args.init).strip().lower() == "latest":
        init_times, out, finished = resolve_latest(
            available_init_times(store, stepper.history), args.out
        )
        if finished:
            if rank == 0:
                print(
                    f"forecast run: {out}: the forecast from {format_time(init_times[0])} is already finished; nothing to do"
                )
            return 0
    else:
        init_times = parse_init_spec(args.init, store_calendar(store))
        out = output_for(args.out, init_times[0])
    channels = [c.strip() for c in args.channels.split(",") if c.strip()] if args.channels else None
    output_grid = Grid.parse(args.output_grid) if args.output_grid else None
    options = {"length_scale_km": args.length_scale, "cycles": args.bred_cycles}

    def log(message: str) -> None:
        print(f"forecast run: {message}", file=sys.stderr)

    result = run_forecast(
        stepper,
        store,
        init_times,
        args.steps,
        Path(out),
        members=args.members,
        perturbation=args.perturbation,
        amplitude=args.amplitude,
        seed=args.seed,
        perturbation_options=options,
        max_memory=args.max_memory,
        batch_size=args.batch_size,
        channels=channels,
        output_grid=output_grid,
        on_blowup=args.on_blowup,
        checkpoint_digest=digest,
        model_name=str(metadata.get("model", "")),
        store_path=Path(args.data).resolve(),
        overwrite=args.overwrite,
        show_progress=not args.no_progress,
        log=log,
        layout=args.layout,
        compression=args.compression,
    )
    if rank == 0 and result.status == "finished":
        blowups = (
            f"; {len(result.blowups)} member(s) blew up (see the manifest)"
            if result.blowups
            else ""
        )
        print(
            f"forecast run: wrote {result.out}: {len(init_times)} init time(s) x {args.members} member(s) x "
            f"{args.steps} step(s) in {time.perf_counter() - started:.1f} s (batch size {result.batch_size}){blowups}"
        )
    return 0
