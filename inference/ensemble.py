"""Deterministic and ensemble forecasts from many initial times, streamed to Zarr or NetCDF.

:func:`run_forecast` is a workflow in the manner of earth2studio's: it is
handed built collaborators — a :class:`~forecast.stepper.Stepper`, the
:class:`~inference.initial.InitialStates`, a
:class:`~inference.perturbations.Perturbation`, a
:class:`~inference.writers.Writer` — and one frozen
:class:`~inference.request.RunRequest`. It plans batches of (init, member)
pairs, perturbs the initial states, rolls each batch out and hands each lead
time to a background writer while the next one is computed. The output's
lock, the skip/resume/create decision, the manifest and the record of
finished leads belong to a :class:`~inference.run.ForecastRun`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm.auto import tqdm

from forecast.stepper import SamplingStepper, Stepper
from forecast.steppers.stacked import StackedBackbones, stack_backbones
from forecast.time import format_step
from inference import distributed
from inference.batching import (
    Batch,
    auto_batch_size,
    batches_for_rank,
    member_chunk,
    plan_batches,
)
from inference.initial import InitialStates
from inference.members import MemberModels
from inference.output import OutputFields
from inference.perturbations import Perturbation, member_seed
from inference.request import RunRequest
from inference.restart import Restart, rng_state, set_rng_state
from inference.rollout import BlowUp, BlowUpError, BlowUpGuard, rollout
from inference.run import ForecastRun
from inference.writers import BackgroundWriter, Writer, forecast_template

Log = Callable[[str], Any]


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


def run_forecast(
    stepper: Stepper | MemberModels,
    initial: InitialStates,
    perturbation: Perturbation | Sequence[Perturbation],
    writer: Writer,
    request: RunRequest,
    *,
    show_progress: bool = True,
    log: Log = print,
) -> RunResult:
    """Run the forecasts ``request`` asks for and stream them through ``writer``.

    Parameters
    ----------
    stepper : Stepper or MemberModels
        The model, already on its device; or the models of a multi-checkpoint
        ensemble (member ``m`` runs checkpoint ``m mod K``; the output holds
        one member per chunk and a ``checkpoint`` coordinate on ``member``).
        Checkpoints that differ only in their network weights (one recipe,
        other seeds: :func:`forecast.steppers.stacked.why_not_stackable`)
        share batches and step as one model call
        (:mod:`forecast.models.stacked`); other sets run a batch per
        checkpoint.
    initial : InitialStates
        The init times, checked against the store, and their states.
    perturbation : Perturbation or sequence of Perturbation
        Built from ``request.perturbation`` (its ``spec`` must be that); with
        several checkpoints, one for each (:func:`inference.perturbations.build_perturbation`
        of each, so that each member's amplitudes are in its own
        checkpoint's stds), or one for all.
    writer : Writer
        The output; ``writer.path`` is where it goes.
    request : RunRequest
        What to compute and how; the output's identity.
    show_progress : bool
        Show a progress bar over steps (rank 0).
    log : callable
        Receives one-line messages (blow-ups, resume, skip).

    Returns
    -------
    RunResult

    Raises
    ------
    ValueError
        Collaborators that do not belong to ``request`` (a programming error).
    ConfigError
        An output format that several ranks cannot share.
    DataError
        The output holds a forecast of another request (naming the settings).
    LockedError
        When another run is writing the output.
    BlowUpError
        When a member blows up and ``request.on_blowup == "stop"``.
    """
    started = time.perf_counter()
    models = MemberModels.of(stepper)
    stepper = models.first
    perturbations = _per_model(perturbation, len(models))
    _check_agree(stepper, initial, perturbations, writer, request)
    output = OutputFields(stepper.channels, stepper.grid, request.channels, request.output_grid)
    with ForecastRun(writer, request, log=log) as run:
        if run.action == "skip":
            size = int(run.previous.get("batch_size", 0))
            return RunResult(writer.path, "skipped", size, manifest=run.previous)
        stacked = _stacking(run, models)
        size = _batch_size(run, request, models, initial, stacked)
        chunk = (
            member_chunk(size, request.members, output.grid.nlat * output.grid.nlon * 4)
            if len(models) == 1
            else 1  # batches of different checkpoints never share a chunk
        )
        template = forecast_template(
            list(output.channels),
            output.grid,
            initial.times,
            request.steps,
            stepper.step,
            request.members,
            initial.calendar,
            _attributes(request, stepper),
            chunk,
            models.member_checkpoints(request.members) if len(models) > 1 else None,
        )
        batching = None if len(models) == 1 else "mixed" if stacked else "per-checkpoint"
        run.start(template, size, initial.calendar, checkpoint_batches=batching)
        rank, world_size = distributed.rank_and_size()
        # a mixed batch holds members of every checkpoint: planned as for one model
        per_batch = 1 if stacked is not None else len(models)
        plan = plan_batches(len(initial), request.members, size, chunk, per_batch)
        members = _Members(
            models, initial, perturbations, output, writer, run, request, log, stacked
        )
        members.timings["setup"] = time.perf_counter() - started
        blowups = members.run(batches_for_rank(plan, rank, world_size), show_progress)
        distributed.barrier()
        members.timings["total"] = time.perf_counter() - started
        manifest = run.finish(
            blowups,
            members.timings,
            len(initial) * request.members,
            checkpoint_stacking=None if stacked is None else stacked.strategy,
        )
        return RunResult(writer.path, "finished", size, blowups, members.timings, manifest)


def _per_model(
    perturbation: Perturbation | Sequence[Perturbation], models: int
) -> tuple[Perturbation, ...]:
    """One perturbation per checkpoint: ``perturbation`` itself for each, or the ``models`` given."""
    if isinstance(perturbation, (list, tuple)):
        if len(perturbation) != models:
            raise ValueError(f"{len(perturbation)} perturbations for {models} checkpoints")
        return tuple(perturbation)
    return (cast(Perturbation, perturbation),) * models


def _check_agree(
    stepper: Stepper,
    initial: InitialStates,
    perturbations: tuple[Perturbation, ...],
    writer: Writer,
    request: RunRequest,
) -> None:
    """The collaborators were built for ``request``: the identity describes what is computed."""
    if tuple(initial.labels) != tuple(request.init_times):
        raise ValueError(
            f"the initial states are for {initial.labels}, the request for {request.init_times}"
        )
    for perturbation in perturbations:
        if perturbation.spec != request.perturbation:
            raise ValueError(
                f"the perturbation was built from {perturbation.spec}, the request names {request.perturbation}"
            )
    if writer.compression != request.compression:
        raise ValueError(
            f"the writer compresses with {writer.compression}, the request names {request.compression}"
        )
    if list(initial.channels) != list(stepper.channels):
        raise ValueError("the initial states were loaded for another model's channels")


def _stacking(run: ForecastRun, models: MemberModels) -> StackedBackbones | None:
    """The checkpoints as one stacked model, when they can be and the run's plan has mixed batches.

    A resumed run keeps the plan of the run it continues: one that ran a
    batch per checkpoint (an output of an earlier version has no
    ``checkpoint_batches``) goes on that way.
    """
    if len(models) < 2:
        return None
    if run.resuming and run.previous.get("checkpoint_batches") != "mixed":
        return None
    return stack_backbones(models.steppers)


def _batch_size(
    run: ForecastRun,
    request: RunRequest,
    models: MemberModels,
    initial: InitialStates,
    stacked: StackedBackbones | None = None,
) -> int:
    """The recorded batch size when resuming, else the requested one, else one that fits memory.

    A memory-sized batch of ``stacked`` checkpoints holds a multiple of
    their number when it can, so that every call has as many rows of each
    (their stacked weights are the networks' own, held once).
    """
    recorded = run.recorded_batch_size()
    if recorded is not None:
        return recorded
    if request.batch_size is not None:
        return request.batch_size
    total = request.members * len(initial)
    rank, _ = distributed.rank_and_size()
    size = auto_batch_size(models.steppers, initial, total, request.max_memory) if rank == 0 else 0
    size = int(distributed.broadcast(size))
    count = len(models)
    if stacked and size > count and size < total:
        size -= size % count
    return size


def _attributes(request: RunRequest, stepper: Stepper) -> dict[str, str | int | float]:
    """Global attributes of the output (provenance)."""
    return {
        "title": f"forecast from {request.model_name or 'a checkpoint'}",
        "model": request.model_name,
        "checkpoint_digest": request.checkpoint_digest,
        "perturbation": request.perturbation.name,
        "perturbation_seed": int(request.perturbation.seed),
        "source_store": request.store,
        "time_step": format_step(stepper.step),
    }


class _Members:
    """Rolls a rank's batches of members out and queues their writes.

    Holds what every batch of one run shares: the collaborators, the blow-up
    guards (one per checkpoint), the background writer, the timings and the
    progress bar.
    """

    def __init__(
        self,
        models: MemberModels,
        initial: InitialStates,
        perturbations: tuple[Perturbation, ...],
        output: OutputFields,
        writer: Writer,
        run: ForecastRun,
        request: RunRequest,
        log: Log,
        stacked: StackedBackbones | None = None,
    ):
        self.models = models
        #: the checkpoints as one model (batches then hold members of all of them)
        self.stacked = stacked
        self.stepper = stepper = models.first  # the device and history they share
        self.initial = initial
        self.perturbations = perturbations  # one per checkpoint
        self.output = output
        self.writer = writer
        self.run_record = run
        self.steps = request.steps
        self.stop_on_blowup = request.on_blowup == "stop"
        self.seed = request.perturbation.seed
        self.log = log
        # each checkpoint's members are checked against the bounds of its own normaliser
        self.guards = tuple(
            BlowUpGuard.from_normalizer(
                model.normalizer, model.channels, request.blowup_sigmas, model.grid.area_weights()
            )
            for model in models.steppers
        )
        # a resumed batch restarts from its last written lead only if the output holds the state;
        # a stateful writer (climate products) restarts from restart files every restart_every steps
        self.stateful = bool(getattr(writer, "stateful", False))
        self.restartable = output.is_model_state and writer.resumable and not self.stateful
        self.restart_every = request.restart_every if self.stateful and writer.resumable else 0
        if self.restart_every and isinstance(stepper, SamplingStepper):
            block = int(stepper.block_steps)  # sampling resumes at the start of a block only
            self.restart_every = -(-self.restart_every // block) * block
        self.timings = {"setup": 0.0, "perturbation": 0.0, "compute": 0.0, "wait": 0.0}
        self.blowups: list[BlowUp] = []
        self.background = BackgroundWriter(max_pending=2)

    def run(self, batches: list[Batch], show_progress: bool) -> list[BlowUp]:
        """Every batch, then wait for the writes; returns the blow-ups of all ranks."""
        done = {batch.index: self.run_record.completed(batch.index) for batch in batches}
        todo = sum(self.steps - max(done[b.index], 0) for b in batches)
        bar = tqdm(
            total=todo,
            desc="forecast steps",
            unit="step",
            disable=not show_progress or self.run_record.rank != 0,
            leave=False,
        )
        try:
            for batch in batches:
                if done[batch.index] < self.steps:
                    self._batch(batch, done[batch.index], bar)
            self._drain()
        except BaseException as err:
            bar.close()
            try:
                self.background.close()
            except BaseException:
                pass
            self.run_record.fail(err, self.blowups)
            raise
        bar.close()
        self.timings["write"] = self.background.busy_seconds
        return [b for part in distributed.gather(self.blowups) for b in part]

    def _drain(self) -> None:
        wait = time.perf_counter()
        self.background.close()
        self.timings["wait"] += time.perf_counter() - wait

    def _batch(self, batch: Batch, done: int, bar: tqdm) -> None:
        """Roll one batch out from lead ``done + 1`` (or from the start) and queue its writes."""
        times = self.initial.times[batch.init_index]
        labels = [self.initial.labels[i] for i in batch.init_index]
        tick = time.perf_counter()
        state, start_lead = self._start(batch, labels, done)
        self.timings["perturbation"] += time.perf_counter() - tick
        seeds = [
            member_seed(self.seed, label, int(member))
            for label, member in zip(labels, batch.member, strict=True)
        ]
        tick = time.perf_counter()
        stepper = self._stepper(batch)
        for lead_state in rollout(
            stepper, state, times, self.steps, start_lead=start_lead, seeds=seeds
        ):
            lead = lead_state.lead
            if lead <= done:  # already written (the state a resumed run starts from)
                continue
            new = self.guards[batch.model].check(lead_state.state, labels, batch.member, lead)
            for blowup in new:
                self.log(f"warning: {blowup.describe()}")
            self.blowups.extend(new)
            block = self.output(lead_state.state)
            self.timings["compute"] += time.perf_counter() - tick
            tick = time.perf_counter()
            for init_index, member_start, member_stop, offset in batch.regions():
                self.background.submit(
                    self.writer.write,
                    init_index,
                    member_start,
                    lead,
                    block[offset : offset + member_stop - member_start],
                )
            if not self.stateful:
                self.background.submit(self.run_record.mark, batch.index, lead)
            elif self.restart_every and (lead == self.steps or lead % self.restart_every == 0):
                self._queue_restart(batch, lead_state.lead, lead_state.history)
            self.timings["wait"] += time.perf_counter() - tick
            if lead > 0:
                bar.update(1)
            if new and self.stop_on_blowup:
                self._drain()
                raise BlowUpError(
                    new,
                    hint="the run stopped (--on-blowup stop); use --on-blowup continue to carry on",
                )
            tick = time.perf_counter()

    def _stepper(self, batch: Batch) -> Stepper:
        """The model of a batch: its checkpoint's, or the stacked checkpoints bound to its rows."""
        if self.stacked is None:
            return self.models.steppers[batch.model]
        return self.stacked.for_rows(batch.member % len(self.models))

    def _queue_restart(self, batch: Batch, lead: int, history: torch.Tensor) -> None:
        """Save the batch's restart at ``lead`` once the writes queued so far are done.

        At the run's last lead only the completion (and the generators'
        state, from which the next batch starts) is kept.
        """
        window = None if lead == self.steps else history.detach().to("cpu", copy=True)
        restart = Restart(
            lead,
            window,
            rng=rng_state(self.stepper.device),
            blowups=[vars(b) for b in self.blowups],
            reported=[list(key) for key in sorted(set().union(*(g.reported for g in self.guards)))],
        )
        regions = batch.regions()

        def save() -> None:
            if window is not None:
                restart.writer = {str(m0): self.writer.snapshot(m0) for _, m0, _, _ in regions}
            self.run_record.save_restart(batch.index, restart)

        self.background.submit(save)

    def _restore(self, batch: Batch, done: int) -> tuple[torch.Tensor, int] | None:
        """The state and lead a stateful writer's batch resumes from (None: start afresh).

        Restores the generators, the blow-ups and the writer's accumulators
        as they were at that lead; a batch that had not started takes the
        generators' state at the end of the batch before it.
        """
        restart = self.run_record.restart(batch.index) if done >= 0 else None
        if restart is None or restart.history is None:
            previous = self.run_record.restart(batch.index - 1) if batch.index > 0 else None
            if previous is not None and previous.rng:
                set_rng_state(previous.rng, self.stepper.device)
                self._restore_blowups(previous)
            return None
        set_rng_state(restart.rng, self.stepper.device)
        self._restore_blowups(restart)
        for _, m0, m1, _ in batch.regions():
            self.background.submit(self.writer.restore, m0, m1, restart.writer.get(str(m0), {}))
        return restart.history.to(self.stepper.device), restart.lead

    def _restore_blowups(self, restart: Restart) -> None:
        self.blowups = [BlowUp(**fields) for fields in restart.blowups]
        reported = {(str(label), int(member)) for label, member in restart.reported}
        for guard in self.guards:  # a member runs one checkpoint: the others never see its key
            guard.reported = set(reported)

    def _start(self, batch: Batch, labels: list[str], done: int) -> tuple[torch.Tensor, int]:
        """The state ``(batch, history, channel, lat, lon)`` a batch starts from, and its lead.

        A resumed batch restarts from its last written lead when the output
        holds the model's state (a sampling stepper: from the start of the
        block that lead is in), reading the history back from the output
        (and from the perturbed initial state for leads before 0); with a
        stateful writer, from its restart file.
        """
        if self.stateful and self.run_record.resuming:
            restored = self._restore(batch, done)
            if restored is not None:
                return restored
            return self._perturbed_initial(batch, labels), 0
        if isinstance(self.stepper, SamplingStepper) and done > 0:
            done -= done % self.stepper.block_steps
        if done < 0 or not self.restartable:
            return self._perturbed_initial(batch, labels), 0
        history = self.stepper.history
        device = self.stepper.device
        slices = []
        initial = None
        for lead in range(done - history + 1, done + 1):
            if lead < 0:
                if initial is None:
                    initial = self._perturbed_initial(batch, labels)
                slices.append(initial[:, history - 1 + lead])
            else:
                read = [self.writer.read(i, m0, m1, lead) for i, m0, m1, _ in batch.regions()]
                slices.append(torch.from_numpy(np.concatenate(read, axis=0)).to(device))
        return torch.stack(slices, dim=1), done

    def _perturbed_initial(self, batch: Batch, labels: list[str]) -> torch.Tensor:
        """Initial states of a batch, perturbed: ``(batch, history, channel, lat, lon)``."""
        device = self.stepper.device
        unique, inverse = np.unique(batch.init_index, return_inverse=True)
        states = self.initial.load(unique).to(device)
        state = states[torch.as_tensor(inverse, device=device)]
        return self.perturbations[batch.model](
            state,
            labels,
            batch.member,
            stepper=self.models.steppers[batch.model],
            times=self.initial.times[batch.init_index],
        )
