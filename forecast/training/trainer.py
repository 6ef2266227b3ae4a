"""The training loop: from a store to checkpoints that beat persistence.

:func:`train` is the entry point. It builds (or resumes) a
:class:`forecast.stepper.Stepper`, reads windows from the store with worker
processes, minimises the area-weighted MSE over K autoregressive steps (K
raised by a :class:`~forecast.training.losses.RolloutCurriculum`) or the fair
CRPS of a noise-perturbed ensemble, validates every ``val_every`` steps
against persistence, and keeps ``latest.ckpt`` and ``best.ckpt`` in the run
directory together with ``latest.state.pt`` (optimiser, RNG, position) and
``metrics.jsonl``. Under ``torchrun`` it trains with DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from forecast.errors import ConfigError, ForecastError
from forecast.forcings import select_step
from forecast.stepper import StagedStepper, TrainableStepper
from forecast.time import format_time
from forecast.training.data import (
    StepBatchSampler,
    TrainingWindows,
    WindowDataset,
    make_loader,
    unwrap_worker_error,
    validation_batches,
)
from forecast.training.distributed import DistributedContext
from forecast.training.evaluate import RolloutScores, score_rollouts
from forecast.training.losses import (
    RolloutCurriculum,
    channel_weight_tensor,
    per_channel_fair_crps,
    per_channel_mse,
    per_channel_zonal_mse,
    reduce_channels,
)
from forecast.training.optim import build_optimizer, set_learning_rate
from forecast.training.request import TrainRequest
from forecast.training.rollout import Rollout, repeat_forcings, rollout_forcings
from forecast.training.stages import StageObjective, StagePlan, score_interpolation
from forecast.training.state import capture_rng, restore_rng, save_training_state

__all__ = ["TrainingDivergedError", "TrainingLoop", "TrainingResult"]

LATEST = "latest.ckpt"
BEST = "best.ckpt"
STATE = "latest.state.pt"
METRICS = "metrics.jsonl"
CONFIG = "config.yaml"


class TrainingDivergedError(ForecastError, RuntimeError):
    """The loss or the gradients became NaN or infinite; training stopped."""


@dataclass
class TrainingResult:
    """What a finished (or stopped) run produced.

    Attributes
    ----------
    steps : int
        Optimiser steps completed.
    latest, best : Path or None
        Checkpoint paths (``best`` is None without validation).
    last_validation : RolloutScores or None
    best_score : float or None
        Mean over channels of RMSE / persistence RMSE at the longest lead (lower is better).
    step_seconds : list of float
        Wall-clock seconds of each optimiser step of this process, with data
        waiting, loss and logging, without validation and checkpoints.
    stepper : torch.nn.Module or None
        The trained stepper (this process's copy).
    """

    steps: int
    latest: Path | None
    best: Path | None
    last_validation: RolloutScores | None
    best_score: float | None
    step_seconds: list[float] = field(default_factory=list)
    stepper: nn.Module | None = None


class TrainingLoop:
    """Optimise a stepper on windows of a store (one process of a possibly distributed run).

    Parameters
    ----------
    stepper : TrainableStepper
        The model to train.
    windows : TrainingWindows
        The store, its times, the model's channel positions and the window starts.
    context : DistributedContext
        This process's rank, device and collectives.
    request : TrainRequest
        The run's options (optimiser, schedules, loss, validation, loader);
        ``request.out`` is the run directory. ``precision`` ``"auto"`` means
        bf16 on CUDA, fp32 elsewhere.
    provenance : dict, optional
        Recorded in every checkpoint.
    val_batch_size : int, optional
        Validation windows per batch on this rank (default: the training
        micro-batch of one rank).
    on_save : callable, optional
        Called on the main process after each save with the names of the
        files written, in the order written (a run directory on object
        storage publishes them: :func:`forecast.training.api.train`).

    Notes
    -----
    The loss is the area-weighted MSE over the curriculum's K steps or, with
    ``ensemble_size > 1``, the fair CRPS of an ensemble made by adding
    Gaussian noise of std ``ensemble_noise`` (normalised units) to the initial
    state; with ``input_noise`` every input state of a window gets Gaussian
    noise of std ``input_noise`` one-step tendency stds per channel (the
    targets stay clean, so the model learns to pull perturbed states back:
    the noise injection of Sanchez-Gonzalez et al. 2020 for stable long
    rollouts); with ``tendency_loss`` each channel's error is divided by its
    normalised tendency scale ``diff_std / std`` (so persistence scores about
    1 in every channel); with ``zonal_mean_weight`` W each step's squared
    error is its MSE plus W times the area-weighted mean square of its zonal
    mean (:func:`~forecast.training.losses.per_channel_zonal_mse`), so the
    zonal means count 1 + W times.

    A :class:`~forecast.stepper.StagedStepper` (DYffusion) is trained stage by
    stage (:class:`~forecast.training.stages.StagePlan`: the first
    ``request.interpolator_steps`` steps, then the rest), each stage with its
    own optimiser and learning-rate schedule, on the area-weighted MSE of its
    ``training_pairs`` or, with ``ensemble_size > 1``, the fair CRPS of that
    many samples of its dropout (``ensemble_noise`` is not used: the members
    differ by their dropout masks), plus the zonal-mean term with
    ``zonal_mean_weight``; ``input_noise`` perturbs the history at the start of
    each window (not its end, which the interpolator sees, nor the targets);
    ``best.ckpt`` is chosen in the last stage only. With ``chain_steps`` the
    run ends with the stepper's joint stage (DYffusion's ``"chain"``): every
    network at once, on the same loss of the whole sampled block.
    """

    def __init__(
        self,
        stepper: TrainableStepper,
        windows: TrainingWindows,
        context: DistributedContext,
        request: TrainRequest,
        *,
        provenance: dict | None = None,
        val_batch_size: int | None = None,
        on_save: Callable[[list[str]], None] | None = None,
    ):
        if request.batch_size % context.world_size:
            raise ConfigError(
                f"--batch-size {request.batch_size} must be a multiple of the {context.world_size} processes"
            )
        self.request = request
        self.context = context
        self.device = context.device
        self.stepper = stepper.to(self.device)
        self.times = np.asarray(windows.times)
        self.dataset = WindowDataset(windows.store_path, windows.channel_indices, stepper.history)
        self.train_starts = np.asarray(windows.train_starts)
        self.val_starts = np.asarray(windows.val_starts)
        self.out_dir = Path(request.out)
        self.on_save = on_save
        self.max_steps = request.max_steps
        self.curriculum = RolloutCurriculum(
            request.max_steps, request.rollout_steps, milestones=request.rollout_schedule or None
        )
        self.batch_size = request.batch_size
        self.accumulation = request.accumulation
        self.seed = request.seed
        precision = request.precision
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        self.autocast_dtype = torch.bfloat16 if precision == "bf16" else None
        weights = _channel_weights(stepper.channels, request.channel_weights)
        self.channel_weights = None if weights is None else weights.to(self.device)
        normalizer = stepper.normalizer
        scale = np.asarray(normalizer.diff_std, dtype=np.float64) / np.asarray(
            normalizer.std, dtype=np.float64
        )
        self.error_scale = torch.as_tensor(
            1.0 / scale**2 if request.tendency_loss else np.ones_like(scale),
            dtype=torch.float32,
            device=self.device,
        )
        # std of the input noise in normalised units: --input-noise tendency stds per channel
        self.input_noise_std = torch.as_tensor(
            request.input_noise * scale, dtype=torch.float32, device=self.device
        ).reshape(1, 1, -1, 1, 1)
        self.val_batch_size = val_batch_size or max(request.batch_size // context.world_size, 1)
        self.provenance = dict(provenance or {})
        self.progress = request.progress and context.is_main
        self.channels = tuple(stepper.normalizer.channels)
        self.latitude_weights = torch.as_tensor(
            stepper.grid.area_weights(), dtype=torch.float32, device=self.device
        )
        self.staged = isinstance(stepper, StagedStepper)
        if isinstance(stepper, StagedStepper):
            if request.rollout_steps > 1 or request.rollout_schedule:
                raise ConfigError(
                    f"a {stepper.kind} model trains each stage on windows of its horizon; "
                    "--rollout-steps and --rollout-schedule do not apply",
                    hint="drop --rollout-steps and --rollout-schedule (the horizon is a hyperparameter)",
                )
            self.plan = StagePlan.split(
                stepper.stages,
                request.max_steps,
                request.interpolator_steps,
                request.chain_steps,
                stepper.joint_stage,
            )
        else:  # --chain-steps is refused for a single-network model when the request is made
            self.plan = StagePlan.single(request.max_steps)
        self.stage = ""
        self._enter_stage(self.plan.stage_at(0))
        self.noise = torch.Generator(device=self.device)
        self.noise.manual_seed(request.seed * 1000 + context.rank)
        self.step = 0
        self.best_score: float | None = None
        self.last_validation: RolloutScores | None = None
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor, int, float]] = []
        #: Per pending step: (start indices, non-finite mask (sample, time, channel)) of its batches.
        self._pending_inputs: list[list[tuple[np.ndarray, torch.Tensor]]] = []
        self._step_inputs: list[tuple[np.ndarray, torch.Tensor]] = []
        self._last_loss: float | None = None

    # -- stages -----------------------------------------------------------------------
    def _enter_stage(self, stage: str) -> None:
        """Train ``stage`` from now on: its module (wrapped for DDP) and a fresh optimiser."""
        if self.staged:
            self.stepper.set_stage(stage)
            module: nn.Module = StageObjective(self.stepper)
        else:
            module = Rollout(self.stepper)
        if self.context.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids)
        self.rollout = module
        self.stage = stage
        self.optimizer = build_optimizer(
            self.stepper.parameters(), lr=self._peak_lr(), weight_decay=self.request.weight_decay
        )

    def _peak_lr(self) -> float:
        """The current stage's peak learning rate: ``chain_lr`` in the joint stage, else ``lr``."""
        request = self.request
        joint = request.chain_steps > 0 and self.stage == self.plan.names[-1]
        return request.chain_lr if joint and request.chain_lr is not None else request.lr

    def targets_at(self, step: int) -> int:
        """Future states each window of optimiser step ``step`` holds."""
        if self.staged:
            return int(self.stepper.window_targets)
        return int(self.curriculum(step))

    # -- state ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything beyond the weights that a resumed run needs (safe to load with weights_only)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "rng": capture_rng(self.device, self.noise),
            "best_score": self.best_score,
            "seed": self.seed,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "accumulation": self.accumulation,
            "world_size": self.context.world_size,
            "stage": self.stage,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (weights come from the checkpoint)."""
        for key in ("seed", "max_steps", "batch_size", "accumulation"):
            if state[key] != getattr(self, key):
                raise ConfigError(
                    f"cannot resume: the run was started with {key.replace('_', '-')} {state[key]}, now {getattr(self, key)}",
                    path=self.out_dir,
                    hint="resume with the original settings, or start a new --out",
                )
        self._enter_stage(state.get("stage", self.plan.names[0]))
        self.optimizer.load_state_dict(state["optimizer"])
        restore_rng(state["rng"], self.device, self.noise)
        self.step = int(state["step"])
        self.best_score = state["best_score"]

    # -- one optimiser step -----------------------------------------------------------
    def _loss_per_channel(self, batch: dict, n_steps: int) -> torch.Tensor:
        # which store values of the batch are NaN/inf, per (sample, time, channel): read only if the loss is
        window = torch.cat([batch["history"], batch["targets"][:, :n_steps]], dim=1)
        self._step_inputs.append(
            (np.asarray(batch["start"]), (~torch.isfinite(window)).flatten(3).any(dim=-1))
        )
        history = self.stepper.normalize(batch["history"].to(self.device, non_blocking=True))
        targets = self.stepper.normalize(batch["targets"].to(self.device, non_blocking=True))
        if self.staged:
            return self._stage_loss_per_channel(batch, history, targets)
        forcings = rollout_forcings(
            self.stepper, self.times, batch["start"].numpy(), n_steps, self.device
        )
        if self.request.input_noise > 0:
            history = history + self.input_noise_std * torch.randn(
                history.shape, generator=self.noise, device=self.device, dtype=history.dtype
            )
        members = self.request.ensemble_size
        if members > 1:
            history = history.repeat(members, 1, 1, 1, 1)
            noise = torch.randn(
                history.shape, generator=self.noise, device=self.device, dtype=history.dtype
            )
            history = history + self.request.ensemble_noise * noise
            forcings = repeat_forcings(forcings, members)
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        ):
            predictions = self.rollout(history, forcings, n_steps)
        predictions = predictions.float()  # (step, [member x] batch, channel, lat, lon)
        losses = []
        for k in range(n_steps):
            if members > 1:
                ensemble = predictions[k].reshape(members, -1, *predictions.shape[2:])
                losses.append(per_channel_fair_crps(ensemble, targets[:, k], self.latitude_weights))
            else:
                losses.append(self._squared_error(predictions[k], targets[:, k]))
        scale = (
            self.error_scale if members == 1 else self.error_scale.sqrt()
        )  # CRPS is linear in the error
        return torch.stack(losses).mean(dim=0) * scale

    def _stage_loss_per_channel(
        self, batch: dict, history: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Area-weighted MSE of the current stage's prediction (a staged stepper).

        With ``ensemble_size > 1``: the fair CRPS of that many samples of the
        stage's stochastic network (its dropout masks), in units of the
        tendency std when ``tendency_loss`` (the square root of the MSE's
        scale: the CRPS is linear in the error).
        """
        forcings = rollout_forcings(
            self.stepper, self.times, batch["start"].numpy(), 1, self.device
        )
        if self.request.input_noise > 0:  # the window's start; its end and targets stay clean
            history = history + self.input_noise_std * torch.randn(
                history.shape, generator=self.noise, device=self.device, dtype=history.dtype
            )
        members = self.request.ensemble_size
        with torch.autocast(
            self.device.type,
            dtype=self.autocast_dtype or torch.bfloat16,
            enabled=self.autocast_dtype is not None,
        ):
            prediction, target = self.rollout(
                history, targets, select_step(forcings, 0), self.noise, members
            )
        if members > 1:
            crps = per_channel_fair_crps(prediction.float(), target, self.latitude_weights)
            return crps * self.error_scale.sqrt()
        return self._squared_error(prediction.float(), target) * self.error_scale

    def _squared_error(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``(channel,)``: the area-weighted MSE, plus ``zonal_mean_weight`` times its zonal-mean part.

        ``prediction`` and ``target`` are ``(batch, channel, lat, lon)``, normalised.
        """
        loss = per_channel_mse(prediction, target, self.latitude_weights)
        if self.request.zonal_mean_weight > 0:
            zonal = per_channel_zonal_mse(prediction, target, self.latitude_weights)
            loss = loss + self.request.zonal_mean_weight * zonal
        return loss

    def _optimizer_step(self, batches, n_steps: int) -> None:
        request = self.request
        stage = self.plan.stage_at(self.step)
        if stage != self.stage:
            self._enter_stage(stage)
            self.best_score = None  # best.ckpt is chosen among the last stage's checkpoints
        factor = self.plan.lr_factor(self.step, request.warmup_steps, request.min_lr_factor)
        lr = self._peak_lr() * factor
        set_learning_rate(self.optimizer, lr)
        channel_loss = torch.zeros(len(self.channels), device=self.device)
        for micro in range(self.accumulation):
            try:
                batch = next(batches)
            except (
                ForecastError
            ) as err:  # a worker's (a damaged chunk of the store): one line again
                unwrapped = unwrap_worker_error(err)
                if unwrapped is err:
                    raise
                raise unwrapped from err
            last = micro == self.accumulation - 1
            sync = (
                contextlib.nullcontext()
                if last or not self.context.distributed
                else self.rollout.no_sync()  # type: ignore[operator]  # DistributedDataParallel
            )
            with sync:
                per_channel = self._loss_per_channel(batch, n_steps)
                loss = reduce_channels(per_channel, self.channel_weights) / self.accumulation
                loss.backward()
            channel_loss += per_channel.detach() / self.accumulation
        parameters = [p for p in self.stepper.parameters() if p.grad is not None]
        if request.grad_clip:
            grad_norm = torch.nn.utils.clip_grad_norm_(parameters, request.grad_clip)
        else:
            grad_norm = torch.linalg.vector_norm(
                torch.stack([torch.linalg.vector_norm(p.grad) for p in parameters])
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if self.staged:
            trained = self.stepper.trained_steps
            trained[self.stage] = trained.get(self.stage, 0) + 1
        self._pending.append(
            (self.step, channel_loss, grad_norm.detach().float().reshape(1), n_steps, lr)
        )
        self._pending_inputs.append(self._step_inputs)
        self._step_inputs = []

    # -- logging and checks -----------------------------------------------------------
    def _flush(self) -> None:
        """Synchronise pending step losses, stop on NaN, and log the mean loss."""
        if not self._pending:
            return
        losses = torch.stack([entry[1] for entry in self._pending])
        norms = torch.cat([entry[2] for entry in self._pending])
        combined = torch.cat([losses, norms[:, None]], dim=1)
        self.context.all_reduce_sum(combined)
        values = (combined / self.context.world_size).cpu().numpy()
        losses_np, norms_np = values[:, :-1], values[:, -1]
        pending, self._pending = self._pending, []
        inputs, self._pending_inputs = self._pending_inputs, []
        bad_rows = np.flatnonzero(~np.isfinite(losses_np).all(axis=1) | ~np.isfinite(norms_np))
        if len(bad_rows):
            row = bad_rows[0]
            step = pending[row][0]
            bad_channels = [self.channels[i] for i in np.flatnonzero(~np.isfinite(losses_np[row]))]
            what = (
                f"the loss became {_nonfinite_word(losses_np[row])} at step {step} in channel(s) {', '.join(bad_channels)}"
                if bad_channels
                else f"the gradients became non-finite at step {step} (the loss was finite)"
            )
            source = self._nonfinite_inputs(inputs[row] if row < len(inputs) else [])
            if source:  # the store's NaNs, not the optimisation: name them, not every channel they spread to
                what = f"the loss became {_nonfinite_word(losses_np[row])} at step {step} because {source}"
            latest = self.out_dir / LATEST
            kept = (
                f"the last good checkpoint is {latest}"
                if latest.exists()
                else "no checkpoint was written yet"
            )
            self._log({"step": step, "kind": "diverged", "channels": bad_channels})
            raise TrainingDivergedError(
                f"{what}; training stopped and {kept}",
                hint="lower --lr, tighten --grad-clip or check the store for NaNs in those channels",
            )
        mean = losses_np.mean(axis=0)
        weights = None if self.channel_weights is None else self.channel_weights.cpu()
        self._last_loss = float(reduce_channels(torch.as_tensor(mean), weights))
        last_step, _, _, n_steps, lr = pending[-1]
        self._log(
            {
                "step": last_step,
                "kind": "train",
                "loss": self._last_loss,
                "loss_per_channel": dict(zip(self.channels, mean.tolist(), strict=True)),
                "grad_norm": float(norms_np.mean()),
                "rollout_steps": n_steps,
                "lr": lr,
                "steps_averaged": len(pending),
            }
        )

    def _nonfinite_inputs(self, batches: list[tuple[np.ndarray, torch.Tensor]]) -> str:
        """``the store S holds NaN/inf in channel(s) C at T`` for a step's batches, or empty."""
        channels: list[str] = []
        times: list[str] = []
        for starts, mask in batches:
            for sample, offset, channel in zip(*np.nonzero(mask.cpu().numpy()), strict=True):
                if self.channels[channel] not in channels:
                    channels.append(self.channels[channel])
                when = format_time(self.times[int(starts[sample]) + int(offset)])
                if when not in times:
                    times.append(when)
        if not channels:
            return ""
        shown = ", ".join(sorted(times)[:3]) + (
            f" and {len(times) - 3} more" if len(times) > 3 else ""
        )
        return f"the store {self.request.data} holds NaN/inf in channel(s) {', '.join(channels)} at {shown}"

    def _log(self, record: dict) -> None:
        if self.context.is_main:
            with open(self.out_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record) + "\n")

    # -- validation and checkpoints ---------------------------------------------------
    def validate(self) -> RolloutScores | None:
        """Score the model at every lead up to the final rollout length, against persistence.

        A staged stepper in its first stage (a DYffusion interpolator) is scored
        at ``i = 1 .. h-1`` from the true ends of each window, against the
        linear interpolation (in the ``persistence_*`` fields of the record).
        """
        if len(self.val_starts) == 0:
            return None
        n_leads = self.stepper.window_targets if self.staged else self.curriculum.rollout_steps
        batches = validation_batches(
            self.val_starts, n_leads, self.val_batch_size, self.request.val_samples
        )
        mine = batches[self.context.rank :: self.context.world_size]
        loader = make_loader(
            self.dataset,
            mine,
            workers=min(self.request.workers, len(mine)),
            prefetch=self.request.prefetch,
            pin_memory=self.device.type == "cuda",
        )
        if self.staged and self.stage == self.plan.names[0]:
            scores = score_interpolation(
                self.stepper,
                loader,
                self.times,
                self.stepper.grid.area_weights(),
                self.device,
                context=self.context,
            )
        else:
            scores = score_rollouts(
                self.stepper,
                loader,
                self.times,
                self.stepper.grid.area_weights(),
                self.device,
                context=self.context,
                autocast_dtype=self.autocast_dtype,
                n_leads=n_leads,
            )
        n_leads = scores.n_leads
        self.last_validation = scores
        record = {
            "step": self.step,
            "kind": "validation",
            "stage": self.stage,
            "samples": scores.samples,
            "skill": scores.skill(n_leads),
        }
        for lead in sorted({1, n_leads}):
            values = scores.at_lead(lead)
            record[f"rmse_{lead}"] = values["model"]
            record[f"persistence_{lead}"] = values["persistence"]
        self._log(record)
        return scores

    def save(self, best: bool) -> None:
        """Write latest.ckpt and the resume state (and best.ckpt when ``best``), atomically."""
        if not self.context.is_main:
            return
        from forecast.checkpoint import save_checkpoint

        provenance = {**self.provenance, "step": self.step, "best_score": self.best_score}
        save_training_state(self.out_dir / STATE, self.state_dict())
        save_checkpoint(self.out_dir / LATEST, self.stepper, provenance=provenance)  # atomic itself
        if best:
            save_checkpoint(self.out_dir / BEST, self.stepper, provenance=provenance)
        if self.on_save is not None:
            self.on_save([STATE, LATEST, *([BEST] if best else []), METRICS])

    def _validate_and_save(self) -> None:
        scores = self.validate()
        improved = False
        if scores is not None and self.plan.is_last(self.stage):
            score = scores.skill(scores.n_leads)
            improved = math.isfinite(score) and (self.best_score is None or score < self.best_score)
            if improved:
                self.best_score = score
        self.save(best=improved)
        self.context.barrier()

    # -- the loop ---------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> TrainingResult:
        """Train from :attr:`step` to ``max_steps`` (or to ``stop_after`` steps, for a time-boxed run).

        Raises
        ------
        TrainingDivergedError
            If the loss or gradients become NaN/inf; no checkpoint is written after that step.
        """
        end = self.max_steps if stop_after is None else min(stop_after, self.max_steps)
        first = self.step
        accumulation = self.accumulation
        sampler = StepBatchSampler(
            self.train_starts,
            self.batch_size,
            self.seed,
            first_micro_step=first * accumulation,
            n_micro_steps=max(end - first, 0) * accumulation,
            targets_of_micro_step=lambda micro: self.targets_at(micro // accumulation),
            rank=self.context.rank,
            world_size=self.context.world_size,
        )
        loader = make_loader(
            self.dataset,
            sampler,
            self.request.workers,
            self.request.prefetch,
            pin_memory=self.device.type == "cuda",
        )
        batches = iter(loader)
        bar = _progress_bar(self.progress, first, self.max_steps)
        seconds: list[float] = []
        self.stepper.train()
        try:
            while self.step < end:
                started = time.perf_counter()
                self._optimizer_step(batches, self.targets_at(self.step))
                validate_now = self.step % self.request.val_every == 0
                if self.step % self.request.log_every == 0 or validate_now or self.step == end:
                    self._flush()
                seconds.append(time.perf_counter() - started)
                if validate_now:
                    self._validate_and_save()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        _postfix(
                            self._last_loss, self.targets_at(self.step - 1), self.last_validation
                        ),
                        refresh=False,
                    )
            self._flush()
            just_saved = self.step > first and self.step % self.request.val_every == 0
            if not just_saved:
                if self.step >= self.max_steps:
                    self._validate_and_save()
                else:
                    self.save(best=False)
        finally:
            if bar is not None:
                bar.close()
            del batches
        best = self.out_dir / BEST
        return TrainingResult(
            self.step,
            self.out_dir / LATEST,
            best if best.exists() else None,
            self.last_validation,
            self.best_score,
            seconds,
            self.stepper,
        )


def _channel_weights(
    channels: Sequence[str], weights: Mapping[str, float] | None
) -> torch.Tensor | None:
    try:
        return channel_weight_tensor(list(channels), dict(weights) if weights else None)
    except ValueError as err:
        raise ConfigError(str(err)) from err


def _nonfinite_word(values: np.ndarray) -> str:
    return "NaN" if np.isnan(values).any() else "infinite"


def _progress_bar(enabled: bool, initial: int, total: int):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True)


def _postfix(loss: float | None, n_steps: int, scores: RolloutScores | None) -> dict[str, str]:
    out = {}
    if loss is not None:
        out["loss"] = f"{loss:.4g}"
    out["K"] = str(n_steps)
    if scores is not None:
        lead = scores.n_leads
        channel = scores.channels[0]
        out[f"rmse{lead}_{channel}"] = f"{scores.model[lead - 1, 0]:.4g}"
        out["vs_persist"] = f"{scores.skill(lead):.3f}"
    return out
