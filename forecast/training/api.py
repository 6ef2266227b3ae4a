"""One call from a training store to a run directory of checkpoints: :func:`train`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from forecast import staging, storage
from forecast.errors import ConfigError, DataError
from forecast.grid import Grid
from forecast.prescribed import TRAINING_COVERAGE_HINT, ForcingStore, connect_forcing_store
from forecast.stepper import PrescribedStepper, TrainableStepper
from forecast.store import (
    open_store,
    require_channels,
    store_calendar,
    store_channels,
    store_grid,
    store_step,
)
from forecast.training.boost import boosted_stepper, load_first_model
from forecast.training.data import TrainingWindows, split_windows
from forecast.training.distributed import init_distributed
from forecast.training.families import family
from forecast.training.request import TrainRequest
from forecast.training.state import load_training_state
from forecast.training.trainer import (
    BEST,
    CONFIG,
    LATEST,
    METRICS,
    STATE,
    TrainingLoop,
    TrainingResult,
)

__all__ = ["train"]


def train(
    request: TrainRequest,
    *,
    stop_after: int | None = None,
    stepper: TrainableStepper | None = None,
) -> TrainingResult:
    """Train a stepper on a training store, as ``request`` says.

    Parameters
    ----------
    request : TrainRequest
        Data, model, run directory and every option (see its fields). With
        ``request.boost`` the stepper is a
        :class:`~forecast.steppers.BoostedStepper`: that checkpoint, frozen,
        and a fresh ``request.model`` booster trained on its residual.
    stop_after : int, optional
        Stop (with a checkpoint) once this many steps are done, before
        ``request.max_steps`` (a time-boxed run; resume it later).
    stepper : TrainableStepper, optional
        Start from this stepper (e.g. a loaded checkpoint, to train it on)
        instead of a fresh one; ignored when resuming.

    Returns
    -------
    TrainingResult

    Raises
    ------
    DataError
        Store lacks channels, is too short for history plus K steps, or the
        validation period lies outside it; the forcing store lacks a
        variable, is on another grid or calendar, or misses a time of the store.
    ConfigError
        Invalid options, an existing run in ``request.out`` without ``resume``,
        or a model with prescribed forcings and no ``request.forcing_store``.
    TrainingDivergedError
        The loss became NaN/inf (the message names the step and channels).
    """
    context = init_distributed(request.device)
    try:
        path = request.data
        ds = open_store(path)
        first = None
        if request.boost is not None and not request.resume:
            first = load_first_model(request, ds)
            stepper = None
        given = stepper if stepper is not None else first
        if given is not None:
            request = request.replace(history=given.history)
            if request.channels is None:
                request = request.replace(channels=tuple(given.channels))
        channels = list(request.channels) if request.channels else store_channels(ds)
        require_channels(ds, channels, path)
        times = np.asarray(ds["time"].values)
        calendar = store_calendar(ds)
        forcing = None
        fresh = not request.resume and stepper is None and first is None
        if request.forcing_vars and request.forcing_store is not None and fresh:
            forcing = ForcingStore(
                request.forcing_store, request.forcing_vars, store_grid(ds), calendar
            )
            forcing.check_covers(times, "the training store", TRAINING_COVERAGE_HINT)
        targets = family(request.model).window_targets(request)
        train_starts, val_starts = split_windows(
            times,
            request.history + targets,
            request.val_start,
            request.val_end,
            request.val_fraction,
            calendar=str(ds.attrs.get("calendar", "standard")),
            path=path,
        )
        request, remote = _run_directory(request, context)
        out_dir = Path(request.out)
        state = None
        if request.resume:
            stepper, state = _resume(out_dir, channels, store_grid(ds), store_step(ds))
        elif stepper is None and first is None:
            torch.manual_seed(request.seed)
            prescribed = forcing.statistics() if forcing is not None else None
            stepper = family(request.model).build(
                request, ds, channels, times[train_starts], prescribed
            )
        trained = stepper if stepper is not None else first
        assert trained is not None, "built, resumed, given or boosted"
        _connect_forcings(trained, request, forcing, calendar, times, out_dir)
        model_channels = list(trained.channels)
        if model_channels != channels:
            raise DataError(
                f"the run was trained on channels {model_channels}, not {channels}",
                path=out_dir,
                hint="resume with the original --channels",
            )
        store_index = store_channels(ds)
        windows = TrainingWindows(
            path,
            times,
            tuple(store_index.index(c) for c in channels),
            train_starts,
            val_starts,
        )
        if first is not None:
            torch.manual_seed(request.seed)
            stepper = boosted_stepper(first, request, windows, context.device)
        assert stepper is not None
        provenance = _provenance(request, stepper, context.world_size)
        on_save = None if remote is None else _publisher(out_dir, remote)
        loop = TrainingLoop(
            stepper, windows, context, request, provenance=provenance, on_save=on_save
        )
        if state is not None:
            loop.load_state_dict(state)
            if context.is_main:
                _truncate_metrics(out_dir / METRICS, loop.step)
        return loop.run(stop_after=stop_after)
    finally:
        context.close()


def _run_directory(request: TrainRequest, context) -> tuple[TrainRequest, str | None]:
    """Check and create the run directory; returns the request with its local ``out`` and the URL.

    A run directory on object storage is built in a local stage, where an
    earlier run of it is pulled to resume, and each save is published
    (:mod:`forecast.staging`); the URL is ``None`` for a local one.
    """
    remote = None if isinstance(request.out, Path) else request.out
    if remote is not None:
        stage = staging.stage(remote)
        if int(os.environ.get("LOCAL_RANK", "0")) == 0:
            _pull_run(remote, stage)
        context.barrier()
        request = request.replace(out=stage)
    out_dir = Path(request.out)
    _check_run_directory(out_dir, request.resume, shown=remote)
    if context.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    context.barrier()
    return request, remote


def _connect_forcings(
    trained: TrainableStepper,
    request: TrainRequest,
    forcing: ForcingStore | None,
    calendar: str,
    times: np.ndarray,
    out_dir: Path,
) -> None:
    """Give the model its prescribed forcings: ``forcing`` if opened already, else ``request``'s store.

    Raises
    ------
    ConfigError
        ``--forcing-vars`` other than those the model takes.
    DataError
        The forcing store does not cover the training store (see
        :func:`~forecast.prescribed.connect_forcing_store`).
    """
    taken = tuple(getattr(trained, "prescribed_names", ()))
    if request.forcing_vars and tuple(request.forcing_vars) != taken:
        raise ConfigError(
            f"the model takes the prescribed forcings {list(taken)}, not --forcing-vars "
            f"{','.join(request.forcing_vars)}",
            path=out_dir if request.resume else None,
            hint="resume with the original --forcing-vars, or drop the option",
        )
    if forcing is not None:  # opened and checked before, for the fresh model's statistics
        assert isinstance(trained, PrescribedStepper), "built with prescribed forcings"
        trained.use_forcing_store(forcing)
        return
    connect_forcing_store(
        trained,
        request.forcing_store,
        calendar,
        times,
        model=_model_label(request),
        what="the training store",
        hint=TRAINING_COVERAGE_HINT,
    )


def _provenance(request: TrainRequest, stepper: TrainableStepper, world_size: int) -> dict:
    """What the checkpoints record of how they were trained."""
    provenance = {
        "store": storage.normalise(request.data),
        "model": stepper.config().get("model", request.model),
        "max_steps": request.max_steps,
        "rollout_steps": request.rollout_steps,
        "batch_size": request.batch_size,
        "seed": request.seed,
        "world_size": world_size,
    }
    if request.boost is not None:
        provenance["boost"] = storage.normalise(request.boost)
    if request.forcing_store is not None:
        provenance["forcing_store"] = storage.normalise(request.forcing_store)
    return provenance


def _model_label(request: TrainRequest) -> str:
    """How messages name the model a run trains (a resumed run, a boosted checkpoint, a fresh one)."""
    if request.resume:
        return f"the run in {request.out}"
    if request.boost is not None:
        return f"the --boost checkpoint {request.boost}"
    return f"--model {request.model} without --forcing-vars"


def _check_run_directory(out_dir: Path, resume: bool, shown: str | None = None) -> None:
    has_run = (out_dir / LATEST).exists()
    if has_run and not resume:
        raise ConfigError(
            "the run directory already holds a run",
            path=shown or out_dir,
            hint="pass --resume to continue it or choose another --out",
        )
    if resume and not has_run:
        raise ConfigError(
            "nothing to resume: no latest.ckpt",
            path=shown or out_dir,
            hint="start without --resume",
        )


#: Files of a run directory, in the order a save writes them.
RUN_FILES = (CONFIG, STATE, LATEST, BEST, METRICS)


def _pull_run(url: str, stage: Path) -> None:
    """Make the local stage of a run on object storage a copy of what is published there."""
    import shutil

    shutil.rmtree(stage, ignore_errors=True)  # the published run is the truth, not an older stage
    stage.mkdir(parents=True)
    for name in RUN_FILES:
        location = storage.join(url, name)
        if storage.exists(location):
            (stage / name).write_bytes(storage.read_bytes(location))


def _publisher(stage: Path, url: str):
    """The ``on_save`` of a run on object storage: upload each file written, as one object, in order.

    The resume state goes before latest.ckpt, as locally, so a published
    latest.ckpt always has its state (resuming checks that their steps agree).
    """

    def publish(names: list[str]) -> None:
        for name in names:
            if (stage / name).exists():
                staging.publish(stage / name, storage.join(url, name))

    return publish


def _resume(out_dir: Path, channels: list[str], grid: Grid, step) -> tuple[TrainableStepper, dict]:
    from forecast.checkpoint import check_compatible, load_checkpoint

    stepper, metadata = load_checkpoint(out_dir / LATEST)
    check_compatible(metadata, channels, grid, step)
    state = load_training_state(out_dir / STATE)
    provenance = metadata.get("provenance") or {}
    saved_step = provenance.get("step")
    if saved_step is not None and int(saved_step) != int(state["step"]):
        raise ConfigError(
            f"latest.ckpt (step {saved_step}) and latest.state.pt (step {state['step']}) disagree",
            path=out_dir,
            hint="the run was interrupted while saving; start a new run from best.ckpt",
        )
    return stepper, state


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop metric records written after ``step`` (by the interrupted part of a run)."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))
