"""Deterministic and ensemble forecasts from many initial times, streamed to Zarr or NetCDF.

:func:`run_forecast` is the one function to call: it checks the inputs before
any compute, plans batches of (init, member) pairs from a memory budget,
perturbs the initial states, rolls each batch out, and hands each lead time
to a background writer while the next one is computed. It holds the output's
lock, keeps a manifest, and resumes an interrupted Zarr run from its last
complete lead time.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm.auto import tqdm

from forecast import __version__
from forecast.errors import ConfigError, DataError, ForecastError
from forecast.grid import Grid
from forecast.regrid import Regridder
from forecast.store import store_calendar
from forecast.time import format_step, format_time
from inference import distributed
from inference.batching import (
    Batch,
    batches_for_rank,
    choose_batch_size,
    default_budget,
    member_bytes,
    member_chunk,
    parse_memory,
    plan_batches,
)
from inference.initial import check_init_times, check_store_matches, load_initial_state
from inference.perturbations import create_perturbation, parse_amplitude
from inference.rollout import BlowUp, BlowUpError, BlowUpGuard, model_step, rollout
from inference.schedule import (
    FAILED,
    FINISHED,
    RUNNING,
    Progress,
    RunLock,
    manifest_path,
    read_manifest,
    same_request,
    write_json_atomic,
)
from inference.writers import (
    DEFAULT_COMPRESSION,
    BackgroundWriter,
    forecast_template,
    writer_for,
)

#: What ``on_blowup`` accepts.
ON_BLOWUP = ("continue", "stop")


@dataclass
class RunResult:
    """What a call of :func:`run_forecast` did.

    Attributes
    ----------
    out : Path
        The output.
    status : str
        ``"finished"`` or ``"skipped"`` (the output already held this forecast).
    batch_size : int
        Members per model call.
    blowups : list of BlowUp
        Members that left their bounds.
    timings : dict
        Seconds spent: ``total``, ``setup``, ``perturbation``, ``compute``
        (rollout on the main thread), ``write`` (writer thread, overlapped),
        ``wait`` (main thread waiting for the writer).
    manifest : dict
        The manifest written next to the output.
    """

    out: Path
    status: str
    batch_size: int = 0
    blowups: list[BlowUp] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def _stepper_device(stepper) -> torch.device:
    for tensor in list(stepper.parameters()) + list(stepper.buffers()):
        return tensor.device
    return torch.device("cpu")


def run_forecast(
    stepper,
    store: xr.Dataset,
    init_times: np.ndarray,
    steps: int,
    out: str | Path,
    *,
    members: int = 1,
    perturbation: str = "none",
    amplitude: float | str | Sequence[float] = 0.05,
    seed: int = 0,
    perturbation_options: dict[str, Any] | None = None,
    max_memory: str | int | None = None,
    batch_size: int | None = None,
    channels: Sequence[str] | None = None,
    output_grid: Grid | None = None,
    on_blowup: str = "continue",
    blowup_sigmas: float = 50.0,
    checkpoint_digest: str | None = None,
    model_name: str | None = None,
    store_path: str | Path | None = None,
    overwrite: bool = False,
    show_progress: bool = True,
    log=print,
    layout: str = "default",
    compression: str = DEFAULT_COMPRESSION,
) -> RunResult:
    """Run forecasts from each of ``init_times`` and stream them to ``out``.

    Parameters
    ----------
    stepper : forecast.stepper.Stepper
        The model, already on its device; ``channels``, ``grid``, ``step``,
        ``history``, ``normalizer`` and ``step(state, times)``.
    store : xarray.Dataset
        The training store (``forecast.store.open_store``) with the initial states.
    init_times : numpy.ndarray
        Shape ``(time,)``, in the store's calendar.
    steps : int
        Model steps per forecast; the output has ``steps + 1`` lead times.
    out : str or Path
        ``OUT.zarr`` or ``OUT.nc`` (the suffix chooses the writer).
    members : int
        Ensemble size per init time.
    perturbation : str
        A key of :data:`inference.perturbations.PERTURBATIONS`.
    amplitude : float, str or sequence of float
        Perturbation amplitude in units of each channel's std (see
        :func:`inference.perturbations.parse_amplitude`), or one value per channel.
    seed : int
        Ensemble seed: same seed, same ensemble, whatever the batch size.
    perturbation_options : dict, optional
        ``length_scale_km``/``alpha`` (grf), ``cycles`` (bred).
    max_memory : str or int, optional
        Memory budget for a batch (``"8GB"``); default a safe share of free memory.
    batch_size : int, optional
        Members per model call; chosen from ``max_memory`` when not given.
    channels : sequence of str, optional
        Channels to write (default: all the model's).
    output_grid : Grid, optional
        Regrid members to this grid at write time.
    on_blowup : str
        ``"continue"`` (report and carry on) or ``"stop"`` (raise
        :class:`~inference.rollout.BlowUpError` after writing that step).
    blowup_sigmas : float
        A value further than this many std from the channel mean is a blow-up.
    checkpoint_digest, model_name, store_path
        Provenance for the output attributes and the manifest.
    overwrite : bool
        Replace an output that holds a different or finished forecast.
    show_progress : bool
        Show a progress bar over steps (rank 0).
    log : callable
        Receives one-line messages (blow-ups, resume, skip).
    layout : str
        A key of :data:`inference.writers.LAYOUTS`: ``default``, ``wb2`` or ``cdo``.
    compression : str
        ``auto`` (zstd for Zarr, none for NetCDF), ``zstd``, ``deflate`` or ``none``;
        the manifest records the codec it resolves to.

    Returns
    -------
    RunResult

    Raises
    ------
    CheckpointError, DataError, ConfigError
        Before any compute, when the store and the model disagree, an init
        time (or its history) is missing, or an option is invalid.
    LockedError
        When another run is writing ``out``.
    BlowUpError
        When a member blows up and ``on_blowup == "stop"``.
    """
    started = time.perf_counter()
    out = Path(out)
    rank, world_size = distributed.rank_and_size()
    model_channels = [str(c) for c in stepper.channels]
    init_times = np.asarray(init_times)
    if steps < 1:
        raise ConfigError(f"--steps must be at least 1, not {steps}")
    if members < 1:
        raise ConfigError(f"--members must be at least 1, not {members}")
    if on_blowup not in ON_BLOWUP:
        raise ConfigError(f"--on-blowup {on_blowup!r} is not one of {', '.join(ON_BLOWUP)}")
    if len(init_times) == 0:
        raise ConfigError("no initial times to forecast from")
    write_channels = list(channels) if channels else model_channels
    unknown = [c for c in write_channels if c not in model_channels]
    if unknown:
        raise ConfigError(
            f"--channels names channel(s) {', '.join(unknown)} the model does not forecast",
            hint=f"it forecasts {', '.join(model_channels)}",
        )
    writer = writer_for(out, layout, compression)
    if world_size > 1 and not writer.parallel:
        raise ConfigError(
            f"{writer.suffix} output cannot be written by {world_size} ranks",
            hint="write .zarr when running under torchrun",
        )
    check_store_matches(store, model_channels, stepper.grid, stepper.step, stepper.normalizer)
    check_init_times(store, init_times, stepper.history)
    std = np.asarray(stepper.normalizer.std)[
        [list(stepper.normalizer.channels).index(c) for c in model_channels]
    ]
    if isinstance(amplitude, str) or np.ndim(amplitude) == 0:
        amplitude_std = parse_amplitude(amplitude, model_channels)
    else:
        amplitude_std = np.asarray(amplitude, dtype=np.float64)
    perturber = create_perturbation(
        perturbation, amplitude_std * std, stepper.grid, seed, **(perturbation_options or {})
    )
    regridder = (
        Regridder(stepper.grid, output_grid, path="--output-grid")
        if output_grid is not None and not output_grid.same_as(stepper.grid)
        else None
    )
    grid_out = output_grid if regridder is not None else stepper.grid
    device = _stepper_device(stepper)
    calendar = store_calendar(store)
    init_text = [format_time(t) for t in init_times]
    request = {
        "checkpoint_digest": checkpoint_digest,
        "store": str(store_path) if store_path is not None else None,
        "init_times": init_text,
        "steps": int(steps),
        "members": int(members),
        "perturbation": perturbation,
        "amplitude": {c: float(a) for c, a in zip(model_channels, amplitude_std, strict=True)},
        "seed": int(seed),
        "channels": write_channels,
        "output_grid": grid_out.describe(),
        "layout": layout,
        "compression": writer.compression,
    }

    with contextlib.ExitStack() as stack:
        # Rank 0 takes the lock and decides: skip, resume or start afresh; the others follow.
        decision, failure = None, None
        if rank == 0:
            try:
                stack.enter_context(RunLock(out))
                decision = _decide(out, writer, request, overwrite)
            except ForecastError as err:
                failure, decision = err, {"action": "error", "message": str(err)}
        decision = distributed.broadcast(decision)
        if decision["action"] == "error":
            raise failure or ForecastError(f"rank 0 stopped: {decision['message']}")
        if decision["action"] == "skip":
            if rank == 0:
                log(
                    f"{out}: the forecast from {_short(init_text)} is already finished; nothing to do"
                )
            return RunResult(
                out,
                "skipped",
                int(decision["manifest"].get("batch_size", 0)),
                manifest=decision["manifest"],
            )
        resuming = decision["action"] == "resume"

        # Batch size: recorded one when resuming (identical batches give identical output).
        if resuming:
            size = int(decision["manifest"]["batch_size"])
        elif batch_size is not None:
            size = int(batch_size)
        else:
            size = (
                _auto_batch_size(
                    stepper, store, init_times, members * len(init_times), max_memory, device
                )
                if rank == 0
                else 0
            )
            size = distributed.broadcast(size)
        if size < 1:
            raise ConfigError(f"batch size must be at least 1, not {size}")

        attrs = {
            "title": f"forecast from {model_name or 'a checkpoint'}",
            "model": model_name or "",
            "checkpoint_digest": checkpoint_digest or "",
            "perturbation": perturbation,
            "perturbation_seed": int(seed),
            "source_store": str(store_path) if store_path is not None else "",
            "time_step": format_step(dt.timedelta(seconds=stepper.step.total_seconds())),
        }
        chunk = member_chunk(size, members, grid_out.nlat * grid_out.nlon * 4)
        template = forecast_template(
            write_channels,
            grid_out,
            init_times,
            steps,
            dt.timedelta(seconds=stepper.step.total_seconds()),
            members,
            calendar,
            attrs,
            chunk,
        )
        progress = Progress(out)
        manifest = {
            **request,
            "status": RUNNING,
            "output": str(out),
            "format": writer.suffix.lstrip("."),
            "calendar": calendar,
            "batch_size": size,
            "ranks": world_size,
            "software_version": __version__,
            "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "resumed": bool(resuming),
            "blowups": [],
        }
        if rank == 0:
            if resuming:
                manifest["started"] = decision["manifest"].get("started", manifest["started"])
                manifest["resumed_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                try:
                    writer.resume(template)
                    progress.ensure()
                    log(f"{out}: resuming an interrupted run")
                except (ForecastError, OSError, ValueError, KeyError) as err:
                    # killed while the output was being created: start it again
                    log(f"{out}: cannot resume ({' '.join(str(err).split())}); starting again")
                    resuming = False
                    manifest["resumed"] = False
            # the manifest comes first, so that an output is never left without one
            write_json_atomic(manifest_path(out), manifest)
            if not resuming:
                writer.create(template)
                progress.reset()
        resuming = distributed.broadcast(resuming)
        distributed.barrier()
        if rank != 0:
            writer.resume(template)

        batches = batches_for_rank(
            plan_batches(len(init_times), members, size, chunk), rank, world_size
        )
        guard = BlowUpGuard.from_normalizer(stepper.normalizer, model_channels, blowup_sigmas)
        write_index = [model_channels.index(c) for c in write_channels]
        can_restart_from_output = (
            regridder is None and write_channels == model_channels and writer.resumable
        )
        timings = {
            "setup": time.perf_counter() - started,
            "perturbation": 0.0,
            "compute": 0.0,
            "wait": 0.0,
        }
        background = BackgroundWriter(max_pending=2)
        blowups: list[BlowUp] = []
        todo = sum(steps - max(progress.completed(b.index) if resuming else 0, 0) for b in batches)
        bar = tqdm(
            total=todo,
            desc="forecast steps",
            unit="step",
            disable=not show_progress or rank != 0,
            leave=False,
        )
        context = _BatchContext(
            stepper=stepper,
            store=store,
            init_times=init_times,
            init_text=init_text,
            steps=steps,
            perturber=perturber,
            guard=guard,
            regridder=regridder,
            write_index=write_index,
            writer=writer,
            background=background,
            progress=progress,
            can_restart_from_output=can_restart_from_output,
            timings=timings,
            bar=bar,
            on_blowup=on_blowup,
            log=log,
        )
        try:
            for batch in batches:
                done = progress.completed(batch.index) if resuming else -1
                if done >= steps:
                    continue
                batch_blowups = _run_batch(context, batch, done)
                blowups.extend(batch_blowups)
            wait = time.perf_counter()
            background.close()
            timings["wait"] += time.perf_counter() - wait
        except BaseException as err:
            bar.close()
            try:
                background.close()
            except BaseException:
                pass
            writer.close()
            if rank == 0:
                failed = {
                    **manifest,
                    "status": FAILED,
                    "error": " ".join(str(err).split()) or type(err).__name__,
                }
                if isinstance(err, BlowUpError):
                    failed["blowups"] = [
                        vars(b) for b in blowups + list(getattr(err, "blowups", []))
                    ]
                write_json_atomic(manifest_path(out), failed)
            raise
        bar.close()
        timings["write"] = background.busy_seconds
        all_blowups = [b for part in distributed.gather(blowups) for b in part]
        distributed.barrier()
        timings["total"] = time.perf_counter() - started
        if rank == 0:
            writer.finish()
            progress.remove()
            forecasts = len(init_times) * members
            manifest.update(
                status=FINISHED,
                finished=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                blowups=[vars(b) for b in all_blowups],
                timings={k: round(v, 3) for k, v in timings.items()},
                members_per_second=round(forecasts / max(timings["total"], 1e-9), 3),
            )
            write_json_atomic(manifest_path(out), manifest)
        else:
            writer.close()
        return RunResult(out, FINISHED, size, all_blowups, timings, manifest)


def _short(texts: list[str]) -> str:
    return texts[0] if len(texts) == 1 else f"{texts[0]} ... {texts[-1]} ({len(texts)} init times)"


def _decide(out: Path, writer, request: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Skip, resume or create: from the manifest next to ``out``."""
    manifest = read_manifest(out)
    exists = out.exists() or (manifest is not None and manifest.get("status") != FINISHED)
    if manifest is None or overwrite:
        if out.exists() and not overwrite and manifest is None:
            raise DataError(
                "output exists but was not written by 'forecast run' (no manifest)",
                path=out,
                hint="choose another --out, or pass --overwrite to replace it",
            )
        return {"action": "create", "manifest": manifest or {}}
    differ = same_request(manifest, request)
    if differ:
        state = "finished" if manifest.get("status") == FINISHED else "unfinished"
        raise DataError(
            f"output holds a {state} forecast with other settings ({', '.join(differ)})",
            path=out,
            hint="choose another --out, or pass --overwrite to replace it",
        )
    if manifest.get("status") == FINISHED and out.exists():
        return {"action": "skip", "manifest": manifest}
    if exists and writer.resumable and out.exists() and "batch_size" in manifest:
        return {"action": "resume", "manifest": manifest}
    return {"action": "create", "manifest": manifest}


def _auto_batch_size(
    stepper, store: xr.Dataset, init_times: np.ndarray, total: int, max_memory, device: torch.device
) -> int:
    """Members per model call that fit the memory budget."""
    budget = parse_memory(max_memory) if max_memory is not None else default_budget(device)
    state = load_initial_state(store, list(stepper.channels), init_times[:1], stepper.history).to(
        device
    )
    per_member = member_bytes(lambda s, t: model_step(stepper, s, t), state, init_times[:1])
    fixed = sum(p.numel() * p.element_size() for p in stepper.parameters())
    return choose_batch_size(budget, per_member, total, fixed)


@dataclass
class _BatchContext:
    """What every batch of one run shares: the model, the data, the output and the bookkeeping."""

    stepper: Any
    store: xr.Dataset
    init_times: np.ndarray
    init_text: list[str]
    steps: int
    perturber: Any
    guard: BlowUpGuard
    regridder: Regridder | None
    write_index: list[int]
    writer: Any
    background: BackgroundWriter
    progress: Any
    can_restart_from_output: bool
    timings: dict[str, float]
    bar: Any
    on_blowup: str
    log: Any


def _run_batch(context: _BatchContext, batch: Batch, done: int) -> list[BlowUp]:
    """Roll one batch out from lead ``done + 1`` (or from the start) and queue its writes."""
    stepper, store, init_times = context.stepper, context.store, context.init_times
    writer, background, progress = context.writer, context.background, context.progress
    timings, steps = context.timings, context.steps
    device = _stepper_device(stepper)
    history = stepper.history
    times = init_times[batch.init_index]
    labels = [context.init_text[i] for i in batch.init_index]
    start_lead = 0
    tick = time.perf_counter()
    if done >= 0 and context.can_restart_from_output:
        start_lead = done
        needed = range(done - history + 1, done + 1)
        slices = []
        initial = None
        for lead in needed:
            if lead < 0:
                if initial is None:
                    initial = _perturbed_initial(
                        stepper, store, batch, init_times, labels, context.perturber, device
                    )
                slices.append(initial[:, history - 1 + lead])
            else:
                slices.append(torch.from_numpy(_read_batch(writer, batch, lead)).to(device))
        state = torch.stack(slices, dim=1)
    else:
        state = _perturbed_initial(
            stepper, store, batch, init_times, labels, context.perturber, device
        )
    timings["perturbation"] += time.perf_counter() - tick
    members = batch.member
    found: list[BlowUp] = []
    tick = time.perf_counter()
    for lead_state in rollout(stepper, state, times, steps, start_lead=start_lead):
        lead = lead_state.lead
        if lead <= done:  # already written (the state a resumed run starts from)
            continue
        new = context.guard.check(lead_state.state, labels, members, lead)
        for blowup in new:
            context.log(f"warning: {blowup.describe()}")
        found.extend(new)
        fields = (
            lead_state.state[:, context.write_index]
            if len(context.write_index) != lead_state.state.shape[1]
            else lead_state.state
        )
        if context.regridder is not None:
            with torch.inference_mode():
                fields = context.regridder.regrid_tensor(fields)
        block = fields.detach().to("cpu", torch.float32).numpy()
        timings["compute"] += time.perf_counter() - tick
        tick = time.perf_counter()
        for init_index, member_start, member_stop, offset in batch.regions():
            background.submit(
                writer.write,
                init_index,
                member_start,
                lead,
                block[offset : offset + member_stop - member_start],
            )
        background.submit(progress.mark, batch.index, lead)
        timings["wait"] += time.perf_counter() - tick
        if lead > 0:
            context.bar.update(1)
        if new and context.on_blowup == "stop":
            wait = time.perf_counter()
            background.close()
            timings["wait"] += time.perf_counter() - wait
            error = BlowUpError(
                "; ".join(b.describe() for b in new),
                hint="the run stopped (--on-blowup stop); use --on-blowup continue to carry on",
            )
            error.blowups = new
            raise error
        tick = time.perf_counter()
    return found


def _perturbed_initial(
    stepper, store, batch: Batch, init_times, labels, perturber, device
) -> torch.Tensor:
    """Initial states of a batch, perturbed: ``(batch, history, channel, lat, lon)``."""
    unique, inverse = np.unique(batch.init_index, return_inverse=True)
    states = load_initial_state(
        store, list(stepper.channels), init_times[unique], stepper.history
    ).to(device)
    state = states[torch.as_tensor(inverse, device=device)]
    return perturber(
        state, labels, batch.member, stepper=stepper, times=init_times[batch.init_index]
    )


def _read_batch(writer, batch: Batch, lead: int) -> np.ndarray:
    """A batch's state at ``lead`` read back from the output: ``(batch, channel, lat, lon)``."""
    return np.concatenate(
        [writer.read(i, m0, m1, lead) for i, m0, m1, _ in batch.regions()], axis=0
    )
