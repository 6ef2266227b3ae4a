"""Restart files of long runs: the model state and the writer's accumulators at a lead, per batch.

A climate run does not write every state, so an interrupted one cannot
restart from its output. Every ``restart_every`` steps it saves, per batch of
members, ``OUT.restart/batch-NNNNNN.pt``: the lead, the history window of
states ``(batch, history, channel, lat, lon)``, the writer's accumulators
(:meth:`inference.climate.ClimateWriter.snapshot`), the random number
generators' states and the blow-ups so far. A resumed run loads it and
carries on from that lead; it redoes the steps after it, and since the
writes after that lead are the same again, the result is identical to an
uninterrupted run. When a batch finishes, its file records only that (and
the generators' state, from which the next batch starts).

Files are written atomically (a temporary file and a rename) and read with
``torch.load(weights_only=True)``: they hold tensors, numbers and text only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from forecast.files import atomic_write


def restart_dir(out: Path) -> Path:
    """``OUT.restart/``."""
    out = Path(out)
    return out.with_name(out.name + ".restart")


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global generators' states: torch's CPU one and, on CUDA, the device's."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class Restart:
    """A batch's saved state.

    Attributes
    ----------
    lead : int
        The last lead the writer received (the run's steps when the batch finished).
    history : torch.Tensor or None
        ``(batch, history, channel, lat, lon)`` float32 on the CPU, the window
        whose last state is valid at ``lead`` (None for a finished batch).
    writer : dict
        Per written region ``"MEMBER_START"``: the writer's snapshot.
    rng : dict
        :func:`rng_state` after the step to ``lead``.
    blowups : list of dict
        Blow-ups of the run so far (their fields).
    reported : list of [str, int]
        (init label, member) pairs the blow-up guard has reported.
    """

    lead: int
    history: torch.Tensor | None
    writer: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] = field(default_factory=dict)
    blowups: list[dict[str, Any]] = field(default_factory=list)
    reported: list[list[Any]] = field(default_factory=list)


class RestartFiles:
    """The restart files of one output.

    Parameters
    ----------
    out : Path
        The output; files live in ``OUT.restart/``.
    """

    def __init__(self, out: Path):
        self.directory = restart_dir(Path(out))

    def path(self, batch: int) -> Path:
        """The file of batch ``batch``."""
        return self.directory / f"batch-{batch:06d}.pt"

    def reset(self) -> None:
        """Forget every restart (a fresh run)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)

    def save(self, batch: int, restart: Restart) -> None:
        """Write batch ``batch``'s restart atomically."""
        self.directory.mkdir(parents=True, exist_ok=True)
        content = {
            "lead": int(restart.lead),
            "history": restart.history,
            "writer": restart.writer,
            "rng": restart.rng,
            "blowups": restart.blowups,
            "reported": restart.reported,
        }
        atomic_write(self.path(batch), lambda temporary: torch.save(content, temporary))

    def load(self, batch: int) -> Restart | None:
        """Batch ``batch``'s restart, or None when it has none (or it is unreadable)."""
        path = self.path(batch)
        if not path.exists():
            return None
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError):
            return None
        return Restart(
            int(content["lead"]),
            content["history"],
            content.get("writer", {}),
            content.get("rng", {}),
            list(content.get("blowups", [])),
            [list(item) for item in content.get("reported", [])],
        )

    def remove(self) -> None:
        """Delete the files (the run finished)."""
        shutil.rmtree(self.directory, ignore_errors=True)
