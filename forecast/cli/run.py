"""Run deterministic or ensemble forecasts from a checkpoint, streamed to Zarr or NetCDF.

Examples
--------
  forecast run --checkpoint model.pt --data store.zarr --init 2020-01-01T00 --steps 20 --out fc.zarr
  forecast run --checkpoint model.pt --data store.zarr --init 2020-01-01T00/2020-03-01T00/12h \\
      --steps 40 --members 16 --perturbation grf --amplitude 0.05,z500=0.02 --seed 1 --out hindcast.zarr
  forecast run --checkpoint model.pt --data store.zarr --init 2020-01-01T00 --steps 20 --members 8 \\
      --perturbation grf --perturbation-options length_scale_km=500,alpha=3 --out fc.zarr
  forecast run --checkpoint model.pt --data store.zarr --init latest --steps 40 --out 'fc/{init}.zarr'
  forecast run --checkpoint model.pt --data store.zarr --init 2002-01-01 --length 10y \\
      --reduce monthly,annual,time-mean --histograms 100 --out climate.zarr
  forecast run --checkpoint dyffusion.ckpt --data store.zarr --init 2020-01-01T00 --steps 20 \\
      --members 16 --seed 1 --out samples.zarr
  forecast run --checkpoint s0.ckpt --checkpoint s1.ckpt --checkpoint s2.ckpt --data store.zarr \\
      --init 2002-01-01 --length 10y --reduce monthly --out ensemble.zarr

Several --checkpoint make a multi-checkpoint (multi-seed) ensemble: member m
runs checkpoint m mod K, in the order given, and --members defaults to K
(fewer than K is an error).
Each member keeps its own seed, so it is the member m that a run of its
checkpoint alone computes (to float rounding). Checkpoints of one recipe
(other seeds) step as one model, their networks batched by torch.vmap.
Every checkpoint must match the first in
channels, grid, time step, history, forcings and stepper family. The output has a
'checkpoint' coordinate on member, and its checkpoint_digest attribute lists
every checkpoint's SHA-256 in order.

A DYffusion checkpoint samples: each member is its own stochastic
trajectory (no --perturbation needed, though one may be added), reproducible
from --seed whatever the batch size; the steps inside each horizon come from
its interpolator, at the store's step like any forecast.

--init latest forecasts from the newest time in the store; when that
forecast is already finished it says so and exits 0. An interrupted Zarr run
resumes from its last complete lead time when run again with the same
options; a lock stops two runs writing one output. Each run leaves
OUT.manifest.json. --layout wb2 writes what WeatherBench2's evaluation reads
without renames; --layout cdo writes a directory OUT/ of NetCDF files, one per
init and member, that CDO, NCO and Iris read. Under torchrun, ranks share the
init times and members and write their own regions of one Zarr store.

A climate run (--reduce, --histograms or --output-every; one init time) keeps
only what is asked for, computed on the fly: monthly, seasonal, annual or
whole-run means, exact in the store's calendar, in OUT.monthly.zarr ...
(CF: time_bnds, cell_methods "time: mean", partial first and last periods
flagged), per-channel histograms in OUT.histograms.zarr, and snapshots every
--output-every in OUT itself (in --layout). Its state is saved every
--restart-every, and an interrupted Zarr run resumes from there to the same
result.

A checkpoint trained with prescribed forcings (forecast train --forcing-vars
sst) needs --forcing-store: a store of 'forecast ingest' holding those
fields on the model's grid and in the store's calendar. Before any compute
the run checks that it has every variable, the grid, the calendar and every
valid time of the run (each init time through its last lead); it then reads
the fields of each step's input time as it goes.

--checkpoint, --data, --forcing-store and --out may be URLs (s3://, gs://, file://; https://
for reading). An --out on object storage is built in a local staging folder
($FORECAST_STAGING, default ~/.cache/forecast/staging), where a killed run
resumes, and published when finished: its objects first, the manifest last,
so that nothing half-written is ever seen as complete (docs/formats.md).
"""

from __future__ import annotations

import contextlib
import errno
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import BaseModel

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import HIDE_HELP, shows_progress
from forecast.errors import CheckpointError, ConfigError, DataError, with_path
from inference.perturbations.base import DEFAULT_AMPLITUDE
from inference.perturbations.bred import BredPerturbation
from inference.perturbations.grf import GRFPerturbation
from inference.request import RunRequest, request_default
from inference.writers.compression import DEFAULT_COMPRESSION

if TYPE_CHECKING:
    import numpy as np


def _option_default(options: type[BaseModel], name: str) -> Any:
    return options.model_fields[name].default


class Config(CommandConfig):
    """Options of ``forecast run``."""

    checkpoint: list[str] = option(
        help="checkpoint written by 'forecast train' (a path or URL); give it K times for a "
        "multi-checkpoint ensemble: member m runs checkpoint m mod K (--members defaults to K)",
        metavar="CKPT",
        repeat=True,
        min_length=1,
    )
    data: str = option(
        help="training store with the initial conditions (a path or URL)", metavar="STORE.zarr"
    )
    forcing_store: str | None = option(
        None,
        "store with the prescribed fields (e.g. sst) the checkpoint was trained with, on its grid "
        "and calendar, covering every valid time of the run (a path or URL)",
        metavar="STORE.zarr",
    )
    init: str = option(
        help="initial time(s): one time, a range with a step (2020-01-01T00/2020-03-01T00/12h), or latest",
        metavar="TIME|START/END/STEP|latest",
    )
    steps: int | None = option(None, "model steps per forecast (or --length)", metavar="N", ge=1)
    length: str | None = option(
        None,
        "length of the run instead of --steps: 10y, 18mo, 90d or 12h, exact in the store's calendar",
        metavar="LENGTH",
    )
    out: str = option(
        help="output; the suffix picks the format (a directory for --layout cdo); {init} is replaced "
        "by the (first) init time, e.g. fc/{init}.zarr; a path or URL (s3://, gs://)",
        metavar="OUT.zarr|OUT.nc|OUT_DIR",
    )
    members: int | None = option(
        None,
        f"ensemble members per init time (default {request_default('members')}, or K with K "
        "checkpoints)",
        metavar="M",
        ge=1,
    )
    perturbation: str = option(
        "none", "initial-condition perturbation: none, gaussian, grf or bred"
    )
    amplitude: str = option(
        str(DEFAULT_AMPLITUDE),
        "perturbation amplitude in units of each channel's std: 0.05, or z500=0.02,t850=0.1",
        metavar="A|CH=A,...",
    )
    perturbation_options: dict[str, Any] | None = option(
        None,
        "options of the perturbation as key=value,... (grf: length_scale_km, alpha; bred: cycles)",
        metavar="KEY=VALUE,...",
    )
    length_scale: float | None = option(
        None,
        "correlation length of grf perturbations in km "
        f"(default {_option_default(GRFPerturbation.Options, 'length_scale_km'):g})",
        metavar="KM",
    )
    bred_cycles: int | None = option(
        None,
        "breeding cycles of bred perturbations "
        f"(default {_option_default(BredPerturbation.Options, 'cycles')})",
        metavar="N",
    )
    seed: int = option(
        0, "ensemble seed: the same seed gives the same ensemble whatever the batch size"
    )
    max_memory: str | None = option(
        None,
        "memory budget for a batch of members, e.g. 8GB (default: half the free RAM, or 80% of free GPU memory)",
        metavar="SIZE",
    )
    batch_size: int | None = option(
        None, "members per model call (default: chosen from --max-memory)", metavar="B"
    )
    channels: list[str] | None = option(
        None, "write only these channels (default: all the model's)", metavar="CH,..."
    )
    output_grid: str | None = option(
        None, "regrid members at write time, e.g. 32x64 or 1.0deg", metavar="GRID"
    )
    on_blowup: Literal["continue", "stop"] = option(
        request_default("on_blowup"),
        "when a member turns NaN/inf, leaves physical bounds or the climate (a global mean 3 stds "
        "off): report and continue, or stop",
    )
    device: Literal["auto", "cpu", "cuda"] = option(
        "auto", "where the model runs (auto: cuda when available)"
    )
    overwrite: bool = option(False, "replace an output that holds another or a finished forecast")
    reduce: list[str] | None = option(
        None,
        "climate run: write means over these periods, computed on the fly: monthly, seasonal, "
        "annual, time-mean (several allowed, each in OUT.PERIOD.zarr)",
        metavar="PERIOD,...",
    )
    histograms: int = option(
        0,
        "climate run: per-channel histograms with this many fixed bins over mean +- 5 std "
        "(OUT.histograms.zarr; 0: none)",
        metavar="BINS",
        ge=0,
    )
    output_every: str | None = option(
        None,
        "write the state every this long, e.g. 1d (default: every step, or none in a climate run)",
        metavar="DURATION",
    )
    restart_every: str = option(
        "30d",
        "climate run: save the state to resume from every this long of model time",
        metavar="DURATION",
    )
    layout: Literal["default", "wb2", "cdo"] = option(
        request_default("layout"),
        "output layout: default (time, lead_time, member per channel), wb2 (WeatherBench2's names "
        "and dims, read by its evaluation as is) or cdo (a directory OUT/ of NetCDF files, one per "
        "init and member, for CDO, NCO and Iris)",
    )
    compression: Literal["auto", "zstd", "deflate", "none"] = option(
        DEFAULT_COMPRESSION,
        "compression of the forecast variables: zstd, deflate (zlib: every NetCDF reader decodes "
        "it, but it writes ~10x slower), none, or auto: zstd for Zarr, none for NetCDF "
        "(docs/performance.md)",
    )
    no_progress: bool = option(False, HIDE_HELP)

    def perturbation_option_values(self) -> dict[str, Any]:
        """``--perturbation-options`` with the ``--length-scale`` and ``--bred-cycles`` shorthands."""
        options = dict(self.perturbation_options or {})
        if self.length_scale is not None:
            options["length_scale_km"] = self.length_scale
        if self.bred_cycles is not None:
            options["cycles"] = self.bred_cycles
        return options


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


def steps_of(text: str, step, flag: str) -> int:
    """A duration (``1d``) as a whole number of model steps.

    Raises
    ------
    ConfigError
        When it is not a positive multiple of the step.
    """
    from forecast.time import format_step, parse_step

    duration = parse_step(text)
    count, remainder = divmod(duration.total_seconds(), step.total_seconds())
    if remainder or count < 1:
        raise ConfigError(
            f"{flag} {text} is not a whole number of model steps ({format_step(step)})",
            hint=f"use a multiple of {format_step(step)}",
        )
    return int(count)


def run_steps(args: Config, init_time, step) -> int:
    """``--steps``, or the steps of ``--length`` from the (first) init time.

    Raises
    ------
    ConfigError
        When neither or both are given.
    """
    from forecast.periods import steps_for_length

    if (args.steps is None) == (args.length is None):
        raise ConfigError(
            "give exactly one of --steps and --length", hint="e.g. --steps 40 or --length 10y"
        )
    if args.steps is not None:
        return int(args.steps)
    return steps_for_length(str(args.length), init_time, step)


def members_of(args: Config, checkpoints: int) -> int:
    """``--members``, or its default: the request's for one checkpoint, one per checkpoint for several.

    Raises
    ------
    ConfigError
        Fewer members than checkpoints (some checkpoints would run no member).
    """
    if args.members is None:
        return checkpoints if checkpoints > 1 else int(request_default("members"))
    if checkpoints > 1 and args.members < checkpoints:
        raise ConfigError(
            f"--members {args.members} runs only {args.members} of the {checkpoints} checkpoints",
            hint=f"pass --members {checkpoints} or more, or fewer --checkpoint",
        )
    return int(args.members)


def build_writer(args: Config, out, stepper, climate: bool, output_every: int):
    """The run's writer: the forecast writer of ``out``, or a climate writer around it."""
    from inference.climate import ClimateWriter, HistogramSpec
    from inference.writers import writer_for

    if not climate:
        return writer_for(out, args.layout, args.compression)
    channels = args.channels or list(stepper.channels)
    histograms = (
        HistogramSpec.from_normalizer(stepper.normalizer, channels, args.histograms)
        if args.histograms
        else None
    )
    snapshots = writer_for(out, args.layout, args.compression) if output_every else None
    return ClimateWriter(
        out,
        args.reduce or (),
        histograms,
        snapshots,
        output_every=max(output_every, 1),
        compression=args.compression,
    )


def resolve_output(args: Config, store, history: int) -> tuple[np.ndarray, Path, str | None, bool]:
    """The init times, the output path, its URL on object storage and whether it is finished.

    An ``--out`` on object storage is written in a local stage and published
    afterwards (:mod:`inference.remote`): the path is then the stage's and the
    URL the published one (else ``None``). ``finished`` is True only for
    ``--init latest`` whose local forecast is already complete.
    """
    from forecast import staging, storage
    from forecast.store import store_calendar
    from inference.initial import available_init_times, parse_init_spec
    from inference.schedule import output_for, resolve_latest

    remote = not storage.is_local(args.out)
    template = str(staging.stage(args.out)) if remote else args.out
    finished = False
    if str(args.init).strip().lower() == "latest":
        init_times, out, finished = resolve_latest(available_init_times(store, history), template)
        finished = finished and not remote  # a finished stage is still to be published
    else:
        init_times = parse_init_spec(args.init, store_calendar(store))
        out = output_for(template, init_times[0])
    return init_times, out, staging.remote_for(args.out, out) if remote else None, finished


def output_every_of(args: Config, step, climate: bool) -> int:
    """Steps between the snapshots written: ``--output-every``, or every step (none for a climate run)."""
    if args.output_every is not None:
        return steps_of(args.output_every, step, "--output-every")
    return 0 if climate else 1


@contextlib.contextmanager
def disk_full_names(out: str | Path) -> Iterator[None]:
    """A full disk inside the block is a :class:`DataError` that names the file and the fix."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        raise DataError(
            f"{err.strerror or 'No space left on device'}: the disk is full, the forecast could not be written",
            path=err.filename or out,
            hint="free some disk space and rerun the same command (a Zarr output resumes)",
        ) from err


def summary(
    result, written: str, counts: tuple[int, int, int], checkpoints: int, seconds: float
) -> str:
    """The line a finished run prints; ``counts`` are its init times, members and steps."""
    init_times, members, steps = counts
    blowups = (
        f"; {len(result.blowups)} member(s) blew up (see the manifest)" if result.blowups else ""
    )
    stacking = result.manifest.get("checkpoint_stacking")
    stacked = f", {checkpoints} checkpoints stacked: {stacking['strategy']}" if stacking else ""
    return (
        f"forecast run: wrote {written}: {init_times} init time(s) x {members} member(s) x "
        f"{steps} step(s) in {seconds:.1f} s (batch size {result.batch_size}{stacked}){blowups}"
    )


def run(args: Config) -> int:
    """Run ``forecast run``: build the collaborators from the options and hand them to the workflow."""
    import time

    from forecast import storage
    from forecast.grid import Grid
    from forecast.locking import lock
    from forecast.prescribed import connect_forcing_store
    from forecast.stepper import PrescribedStepper
    from forecast.store import open_store
    from forecast.time import format_time
    from inference import distributed
    from inference.ensemble import run_forecast
    from inference.initial import InitialStates, run_valid_times
    from inference.members import load_member_models
    from inference.perturbations import build_perturbation, perturbation_spec
    from inference.remote import decide_remote, publish_run

    started = time.perf_counter()
    device = _device(args.device)
    distributed.init_from_env(device)
    rank, _ = distributed.rank_and_size()
    store = open_store(args.data)
    models = load_member_models(args.checkpoint, device)  # member m runs checkpoint m mod K
    stepper, metadata = models.first, models.metadata[0]
    members = members_of(args, len(models))
    init_times, out, url, finished = resolve_output(args, store, stepper.history)
    if finished:
        if rank == 0:
            print(
                f"forecast run: {out}: the forecast from {format_time(init_times[0])} is already finished; nothing to do"
            )
        return 0
    steps = run_steps(args, init_times[0], stepper.step)
    climate = bool(args.reduce) or args.histograms > 0 or args.output_every is not None
    if climate and url:
        raise ConfigError(
            f"{args.out}: a climate run (--reduce, --histograms, --output-every) writes to a local path only",
            hint="give a local --out and copy its products afterwards",
        )
    output_every = output_every_of(args, stepper.step, climate)
    writer = build_writer(args, out, stepper, climate, output_every)
    try:
        initial = InitialStates(store, init_times, stepper)
    except CheckpointError as err:  # the checks see datasets: name the files
        raise with_path(err, f"{' '.join(args.checkpoint)} with {args.data}") from err
    except DataError as err:
        raise with_path(err, args.data) from err
    forcing_store = connect_forcing_store(  # every check of the forcing store, before any compute
        stepper,
        args.forcing_store,
        initial.calendar,
        run_valid_times(init_times, steps, stepper.step, initial.calendar),
        model=f"checkpoint {args.checkpoint[0]}",
    )
    if forcing_store is not None:  # the members' models take the same prescribed fields
        for other in models.steppers[1:]:
            cast(PrescribedStepper, other).use_forcing_store(forcing_store)
    spec = perturbation_spec(
        args.perturbation,
        args.amplitude,
        stepper.channels,
        args.seed,
        args.perturbation_option_values(),
    )
    request = RunRequest.for_stepper(
        stepper,
        initial.labels,
        steps,
        channels=args.channels,
        output_grid=Grid.parse(args.output_grid) if args.output_grid else None,
        members=members,
        perturbation=spec,
        layout=args.layout,
        compression=writer.compression,
        checkpoint_digest=models.digest(),
        store=storage.normalise(args.data),
        forcing_store=storage.normalise(args.forcing_store) if args.forcing_store else None,
        model_name=str(metadata.get("model", "")),
        batch_size=args.batch_size,
        max_memory=args.max_memory,
        on_blowup=args.on_blowup,
        overwrite=args.overwrite,
        reduce=tuple(args.reduce or ()),
        histogram_bins=args.histograms,
        output_every=output_every,
        restart_every=steps_of(args.restart_every, stepper.step, "--restart-every")
        if climate
        else 0,
    )

    def log(message: str) -> None:
        print(f"forecast run: {message}", file=sys.stderr)

    with lock(url, "forecast run") if url and rank == 0 else contextlib.nullcontext():
        if url and decide_remote(url, request) == "skip":
            if rank == 0:
                log(
                    f"{url}: the forecast from {format_time(init_times[0])} is already finished; nothing to do"
                )
            return 0
        with disk_full_names(out):
            result = run_forecast(
                models,
                initial,
                [build_perturbation(spec, model) for model in models.steppers],
                writer,
                request,
                show_progress=shows_progress(args.no_progress),
                log=log,
            )
        if url and rank == 0:
            publish_run(out, url)
    if rank == 0 and result.status == "finished":
        written = url or _written(result)
        seconds = time.perf_counter() - started
        counts = (len(init_times), members, steps)
        print(summary(result, written, counts, len(args.checkpoint), seconds))
    return 0


def _written(result) -> str:
    products = result.manifest.get("products")
    return ", ".join(products.values()) if products else str(result.out)
