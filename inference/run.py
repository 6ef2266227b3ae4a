"""A run's hold on its output: :class:`ForecastRun` owns the lock, the decision, the manifest and the progress.

Used as a context manager around the compute of
:func:`inference.ensemble.run_forecast`. On entry rank 0 takes the output's
lock and decides, from the manifest next to the output and the
:class:`~inference.request.RunRequest`, whether to *skip* (that forecast is
finished), *resume* (it was interrupted) or *create* the output; the other
ranks follow rank 0's decision. :meth:`ForecastRun.start` writes the manifest
(before anything else, so an output is never left without one) and opens the
writer; :meth:`ForecastRun.mark` records each batch's last complete lead
time; :meth:`ForecastRun.finish` or :meth:`ForecastRun.fail` closes the record.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from pathlib import Path
from typing import Any, Literal

import xarray as xr

from forecast import __version__
from forecast.errors import ConfigError, DataError, ForecastError
from forecast.locking import lock
from forecast.overwrite import check_replaceable, involves
from inference import distributed
from inference.request import RunRequest
from inference.restart import Restart, RestartFiles
from inference.rollout import BlowUp
from inference.schedule import (
    FAILED,
    FINISHED,
    RUNNING,
    Progress,
    manifest_path,
    read_manifest,
    write_json_atomic,
)
from inference.writers.base import Writer

Action = Literal["skip", "resume", "create"]


def decide(out: Path, writer: Writer, request: RunRequest) -> tuple[Action, dict[str, Any]]:
    """Skip, resume or create ``out`` for ``request``, from the manifest next to it.

    Returns
    -------
    action : {"skip", "resume", "create"}
    manifest : dict
        The manifest found (empty when there is none).

    Raises
    ------
    DataError
        The output exists without a manifest, or holds a forecast of another
        request (naming the differing settings), and ``request.overwrite`` is off.
    forecast.overwrite.OverwriteError
        ``request.overwrite`` is on but the output is the store, lies in it or
        holds it, or is something else than a forecast of this software.
    """
    manifest = read_manifest(out)
    exists = writer.exists()
    if request.overwrite and exists:
        _check_overwrite(out, manifest, request)
    if manifest is None or request.overwrite:
        if exists and not request.overwrite and manifest is None:
            raise DataError(
                "output exists but was not written by 'forecast run' (no manifest)",
                path=out,
                hint="choose another --out, or pass --overwrite to replace it",
            )
        return "create", manifest or {}
    differ = request.differences(manifest)
    if differ:
        state = "finished" if manifest.get("status") == FINISHED else "unfinished"
        raise DataError(
            f"output holds a {state} forecast with other settings ({', '.join(differ)})",
            path=out,
            hint="choose another --out, or pass --overwrite to replace it",
        )
    if manifest.get("status") == FINISHED and exists:
        return "skip", manifest
    if writer.resumable and exists and "batch_size" in manifest:
        return "resume", manifest
    return "create", manifest


def _check_overwrite(out: Path, manifest: dict[str, Any] | None, request: RunRequest) -> None:
    """Let ``--overwrite`` replace only a forecast of ours, never the store it reads."""
    inputs = [request.store] if request.store else []
    # beside a manifest of forecast run it is ours; either way it must not be the store
    if manifest is None or involves(out, inputs) is not None:
        check_replaceable(out, inputs=inputs, kinds=("forecast",))


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ForecastRun:
    """The lock, the skip/resume/create decision, the manifest and the progress of one output.

    Parameters
    ----------
    writer : Writer
        The output's writer; ``writer.path`` is the output.
    request : RunRequest
        What the run computes (its identity) and how.
    log : callable
        Receives one-line messages (skip, resume).

    Attributes
    ----------
    action : {"skip", "resume", "create"}
        The decision, after entering (``"create"`` again if resuming failed in :meth:`start`).
    previous : dict
        The manifest found next to the output (empty when there was none).
    manifest : dict
        The manifest of this run, after :meth:`start`.
    """

    def __init__(self, writer: Writer, request: RunRequest, *, log=print):
        self.writer = writer
        self.request = request
        self.out = Path(writer.path)
        self.log = log
        self.rank, self.world_size = distributed.rank_and_size()
        self.progress = Progress(self.out)
        # a stateful writer (climate products) resumes from restart files, not from its output
        self.stateful = bool(getattr(writer, "stateful", False))
        self.restarts = RestartFiles(self.out)
        self.action: Action = "create"
        self.previous: dict[str, Any] = {}
        self.manifest: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ForecastRun:
        if self.world_size > 1 and not self.writer.parallel:
            raise ConfigError(
                f"{self.writer.suffix} output cannot be written by {self.world_size} ranks",
                hint="write .zarr when running under torchrun",
            )
        decision: dict[str, Any] | None = None
        failure: ForecastError | None = None
        if self.rank == 0:
            try:
                self._stack.enter_context(lock(self.out, "forecast run"))
                action, manifest = decide(self.out, self.writer, self.request)
                decision = {"action": action, "manifest": manifest}
            except ForecastError as err:
                failure, decision = err, {"action": "error", "message": str(err)}
        decision = distributed.broadcast(decision)
        assert decision is not None
        if decision["action"] == "error":
            self._stack.close()
            raise failure or ForecastError(f"rank 0 stopped: {decision['message']}")
        self.action, self.previous = decision["action"], decision["manifest"]
        if self.action == "skip" and self.rank == 0:
            self.log(
                f"{self.out}: the forecast from {_short(self.request.init_times)} is already finished; nothing to do"
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def resuming(self) -> bool:
        """Whether this run continues an interrupted one."""
        return self.action == "resume"

    def recorded_batch_size(self) -> int | None:
        """The batch size of the interrupted run when resuming (identical batches, identical output)."""
        return int(self.previous["batch_size"]) if self.resuming else None

    def start(
        self,
        template: xr.Dataset,
        batch_size: int,
        calendar: str,
        checkpoint_batches: str | None = None,
    ) -> None:
        """Write the manifest, then create or reopen the output from ``template``.

        ``checkpoint_batches`` (a multi-checkpoint run): ``"mixed"`` when
        batches hold members of every checkpoint, ``"per-checkpoint"`` when
        each holds one checkpoint's; a resumed run plans as the run it continues.
        """
        manifest = {
            **self.request.manifest(),
            "status": RUNNING,
            "output": str(self.out),
            "format": self.writer.suffix.lstrip("."),
            "calendar": calendar,
            "batch_size": int(batch_size),
            **({"checkpoint_batches": checkpoint_batches} if checkpoint_batches else {}),
            "ranks": self.world_size,
            "software_version": __version__,
            "started": _now(),
            "resumed": self.resuming,
            "blowups": [],
        }
        products = getattr(self.writer, "products", None)
        if products is not None:
            manifest["products"] = products()
        resuming = self.resuming
        if self.rank == 0:
            if resuming:
                manifest["started"] = self.previous.get("started", manifest["started"])
                manifest["resumed_at"] = _now()
                try:
                    self.writer.resume(template)
                    self.progress.ensure()
                    self.log(f"{self.out}: resuming an interrupted run")
                except (ForecastError, OSError, ValueError, KeyError) as err:
                    # killed while the output was being created: start it again
                    self.log(
                        f"{self.out}: cannot resume ({' '.join(str(err).split())}); starting again"
                    )
                    resuming = False
                    manifest["resumed"] = False
            # the manifest comes first, so that an output is never left without one
            write_json_atomic(manifest_path(self.out), manifest)
            if not resuming:
                self.writer.create(template)
                self.progress.reset()
                if self.stateful:
                    self.restarts.reset()
        resuming = distributed.broadcast(resuming)
        self.action = "resume" if resuming else "create"
        distributed.barrier()
        if self.rank != 0:
            self.writer.resume(template)
        self.manifest = manifest

    def completed(self, batch: int) -> int:
        """Last lead written completely for ``batch`` by an interrupted run; -1 if none (or not resuming).

        For a stateful writer, the lead of the batch's restart file.
        """
        if not self.resuming:
            return -1
        if self.stateful:
            restart = self.restarts.load(batch)
            return -1 if restart is None else restart.lead
        return self.progress.completed(batch)

    def restart(self, batch: int) -> Restart | None:
        """The restart file of ``batch`` when resuming, else None."""
        return self.restarts.load(batch) if self.resuming else None

    def save_restart(self, batch: int, restart: Restart) -> None:
        """Record a batch's restart (called in order with the writes it follows)."""
        self.restarts.save(batch, restart)

    def mark(self, batch: int, lead: int) -> None:
        """Record that ``batch`` is written up to and including ``lead``."""
        self.progress.mark(batch, lead)

    def fail(self, error: BaseException, blowups: list[BlowUp]) -> None:
        """Release the writer and record the failure in the manifest (rank 0)."""
        self.writer.close()
        if self.rank == 0:
            failed = {
                **self.manifest,
                "status": FAILED,
                "error": " ".join(str(error).split()) or type(error).__name__,
                "blowups": [vars(b) for b in blowups],
            }
            write_json_atomic(manifest_path(self.out), failed)

    def finish(
        self,
        blowups: list[BlowUp],
        timings: dict[str, float],
        forecasts: int,
        checkpoint_stacking: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Make the output final and record the finished run (rank 0); returns the manifest.

        ``checkpoint_stacking``: how a mixed multi-checkpoint run's stacked
        networks ran (:attr:`forecast.steppers.stacked.StackedBackbones.strategy`).
        """
        if self.rank != 0:
            self.writer.close()
            return self.manifest
        self.writer.finish()
        self.progress.remove()
        self.restarts.remove()
        self.manifest.update(
            status=FINISHED,
            finished=_now(),
            blowups=[vars(b) for b in blowups],
            timings={k: round(v, 3) for k, v in timings.items()},
            members_per_second=round(forecasts / max(timings["total"], 1e-9), 3),
        )
        if checkpoint_stacking is not None:
            self.manifest["checkpoint_stacking"] = dict(checkpoint_stacking)
        write_json_atomic(manifest_path(self.out), self.manifest)
        return self.manifest


def _short(texts: tuple[str, ...]) -> str:
    return texts[0] if len(texts) == 1 else f"{texts[0]} ... {texts[-1]} ({len(texts)} init times)"
