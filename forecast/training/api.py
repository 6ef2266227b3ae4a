"""One call from a training store to a run directory of checkpoints: :func:`train`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecast.errors import ConfigError, DataError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.store import (
    diurnal_cycle,
    open_store,
    require_channels,
    store_channels,
    store_grid,
    store_step,
)
from forecast.training.data import split_windows
from forecast.training.distributed import init_distributed
from forecast.training.losses import RolloutCurriculum, channel_weight_tensor
from forecast.training.state import load_training_state
from forecast.training.trainer import LATEST, METRICS, STATE, TrainingLoop, TrainingResult

__all__ = ["train"]


def train(
    data: str | Path,
    model: str,
    out: str | Path,
    *,
    hparams: dict[str, Any] | None = None,
    channels: Sequence[str] | None = None,
    history: int = 1,
    forcings: bool = True,
    residual: bool = True,
    diurnal_baseline: bool = False,
    max_steps: int = 1000,
    rollout_steps: int = 1,
    rollout_schedule: Sequence[tuple[int, int]] | None = None,
    batch_size: int = 8,
    accumulation: int = 1,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    warmup_steps: int = 50,
    min_lr_factor: float = 0.01,
    grad_clip: float | None = 1.0,
    precision: str = "auto",
    channel_weights: dict[str, float] | None = None,
    tendency_loss: bool = True,
    ensemble_size: int = 1,
    ensemble_noise: float = 0.05,
    val_start: str | None = None,
    val_end: str | None = None,
    val_fraction: float | None = 0.1,
    val_every: int = 100,
    val_samples: int | None = 32,
    log_every: int = 10,
    workers: int = 2,
    prefetch: int = 4,
    seed: int = 0,
    device: str = "auto",
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainingResult:
    """Train an SFNO/AFNO/FNO stepper on a training store.

    Parameters
    ----------
    data : str or Path
        Training store (``forecast ingest`` output).
    model : str
        Backbone name (``"sfno"``, ``"afno"``, ``"fno"``).
    out : str or Path
        Run directory; receives ``latest.ckpt``, ``best.ckpt``,
        ``latest.state.pt`` and ``metrics.jsonl``.
    hparams : dict, optional
        Backbone hyperparameters.
    channels : sequence of str, optional
        Channels to model (default: all of the store's).
    history : int
        Input states per step.
    forcings, residual : bool
        Feed time-of-day/year forcings; predict tendencies.
    max_steps : int
        Optimiser steps of the run (the learning-rate and rollout schedules span them).
    rollout_steps : int
        Final number K of autoregressive steps in the loss (validation scores leads 1..K).
    rollout_schedule : sequence of (step, K), optional
        Explicit curriculum; default: K = 1 for the first 40 % of steps, then
        rising to ``rollout_steps`` at 80 %.
    batch_size : int
        Samples per micro-step over all processes.
    accumulation : int
        Micro-steps (gradient accumulation) per optimiser step.
    lr, weight_decay, warmup_steps, min_lr_factor, grad_clip
        AdamW with linear warm-up and cosine decay to ``lr * min_lr_factor``;
        gradient-norm clipping (None: off).
    diurnal_baseline : bool
        Start the residual from the climatological diurnal cycle of the
        training period (:func:`forecast.store.diurnal_cycle`), stored in the
        checkpoint: ``hour x channel x lat x lon`` numbers, so meant for grids
        up to about 1 degree.
    precision : str
        ``"auto"`` (bf16 autocast on CUDA, fp32 on CPU), ``"fp32"`` or ``"bf16"``.
    channel_weights : dict, optional
        Loss weight per channel id (others 1).
    tendency_loss : bool
        Measure each channel's error in units of its one-step tendency std
        (``diff_std``) rather than its state std, so that slowly changing
        channels are not drowned by fast ones (persistence scores about 1
        everywhere).
    ensemble_size : int
        Above 1: train on the fair CRPS of that many members made with
        Gaussian initial-state noise of std ``ensemble_noise`` (normalised units).
    val_start, val_end : str, optional
        Held-out validation period (inclusive), e.g. ``"2014-01-01"``, ``"2014-12-31"``.
    val_fraction : float, optional
        Without a period: hold out the last fraction of the store (0 or None: no validation).
    val_every, val_samples, log_every : int
        Validate (and checkpoint) every ``val_every`` steps on at most
        ``val_samples`` windows; log the training loss every ``log_every`` steps.
    workers, prefetch : int
        Data-loader processes and batches each prefetches.
    seed : int
        Seeds the initial weights, the data order and the noise.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``.
    resume : bool
        Continue the run in ``out`` exactly where its latest checkpoint left it.
    stop_after : int, optional
        Stop (with a checkpoint) once this many steps are done, before ``max_steps``.
    progress : bool
        Show a progress bar.

    Returns
    -------
    TrainingResult

    Raises
    ------
    DataError
        Store lacks channels, is too short for history plus K steps, or the
        validation period lies outside it.
    ConfigError
        Invalid options, or an existing run in ``out`` without ``resume``.
    TrainingDivergedError
        The loss became NaN/inf (the message names the step and channels).
    """
    from forecast.stepper import Stepper

    if history < 1 or rollout_steps < 1:
        raise ConfigError(
            f"--history and --rollout-steps must be at least 1, got {history} and {rollout_steps}"
        )
    context = init_distributed(device)
    try:
        path = Path(data)
        ds = open_store(path)
        channels = list(channels) if channels else store_channels(ds)
        require_channels(ds, channels, path)
        grid = store_grid(ds)
        step = store_step(ds)
        times = np.asarray(ds["time"].values)
        calendar = str(ds.attrs.get("calendar", "standard"))
        train_starts, val_starts = split_windows(
            times,
            history + rollout_steps,
            val_start,
            val_end,
            val_fraction,
            calendar=calendar,
            path=path,
        )
        out_dir = Path(out)
        has_run = (out_dir / LATEST).exists()
        if has_run and not resume:
            raise ConfigError(
                "the run directory already holds a run",
                path=out_dir,
                hint="pass --resume to continue it or choose another --out",
            )
        if resume and not has_run:
            raise ConfigError(
                "nothing to resume: no latest.ckpt", path=out_dir, hint="start without --resume"
            )
        if context.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
        context.barrier()
        if resume:
            stepper, state = _resume(out_dir, channels, grid, step)
        else:
            torch.manual_seed(seed)
            diurnal = None
            if diurnal_baseline:
                start_times = times[np.asarray(train_starts, dtype=np.int64)]
                diurnal = diurnal_cycle(ds, channels, start_times)
            stepper = Stepper(
                model,
                dict(hparams or {}),
                channels,
                grid,
                step,
                Normalizer.from_store(ds, channels),
                history=history,
                forcings=forcings,
                residual=residual,
                diurnal=diurnal,
            )
            state = None
        store_index = store_channels(ds)
        channel_indices = [store_index.index(c) for c in stepper.channels]
        if list(stepper.channels) != channels:
            raise DataError(
                f"the run was trained on channels {list(stepper.channels)}, not {channels}",
                path=out_dir,
                hint="resume with the original --channels",
            )
        if precision == "auto":
            precision = "bf16" if context.device.type == "cuda" else "fp32"
        curriculum = RolloutCurriculum(
            max_steps,
            rollout_steps,
            milestones=tuple(rollout_schedule) if rollout_schedule else None,
        )
        provenance = {
            "store": str(path.resolve()),
            "model": getattr(stepper, "model_name", model),
            "max_steps": max_steps,
            "rollout_steps": rollout_steps,
            "batch_size": batch_size,
            "seed": seed,
            "world_size": context.world_size,
        }
        loop = TrainingLoop(
            stepper, path, times, channel_indices, train_starts, val_starts, out_dir, context,
            max_steps=max_steps, curriculum=curriculum, batch_size=batch_size, accumulation=accumulation,
            lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps, min_lr_factor=min_lr_factor,
            grad_clip=grad_clip, precision=precision,
            channel_weights=_channel_weights(stepper.channels, channel_weights),
            tendency_loss=tendency_loss,
            ensemble_size=ensemble_size, ensemble_noise=ensemble_noise, val_every=val_every,
            val_samples=val_samples, log_every=log_every, workers=workers, prefetch=prefetch, seed=seed,
            provenance=provenance, progress=progress,
        )  # fmt: skip
        if state is not None:
            loop.load_state_dict(state)
            if context.is_main:
                _truncate_metrics(out_dir / METRICS, loop.step)
        return loop.run(stop_after=stop_after)
    finally:
        context.close()


def _channel_weights(
    channels: Sequence[str], weights: dict[str, float] | None
) -> torch.Tensor | None:
    try:
        return channel_weight_tensor(list(channels), weights)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _resume(out_dir: Path, channels: list[str], grid: Grid, step) -> tuple[torch.nn.Module, dict]:
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
    import json

    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line).get("step", 0) <= step
    ]
    path.write_text("".join(line + "\n" for line in kept))
