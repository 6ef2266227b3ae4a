"""Work plan of a run: which (init, member) pairs go through the model together.

The batch size comes from a memory budget: a probe measures what one more
member costs in one model step (peak GPU memory on CUDA, peak resident memory
on CPU), so that a 1,000-member run needs no hand tuning.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from forecast.errors import ConfigError
from forecast.stepper import Stepper
from inference.initial import InitialStates

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "m": 1e6,
    "mb": 1e6,
    "g": 1e9,
    "gb": 1e9,
    "t": 1e12,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}

#: Share of free memory used when no budget is given.
DEFAULT_SHARE = {"cpu": 0.5, "cuda": 0.8}


def parse_memory(text: str | int | float) -> int:
    """Parse a memory size: ``"8GB"``, ``"512MiB"``, ``"2e9"`` (bytes).

    Returns
    -------
    int
        Bytes, positive.
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ConfigError(
                f"cannot parse memory size {text!r}",
                hint="write e.g. 8GB, 512MiB or a number of bytes",
            )
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value <= 0:
        raise ConfigError(f"memory size {text!r} must be positive")
    return int(value)


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: GPU memory on CUDA, ``MemAvailable`` on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def default_budget(device: torch.device) -> int:
    """A safe share of the free memory of ``device``."""
    return int(free_memory(device) * DEFAULT_SHARE.get(device.type, 0.5))


def _peak_rss() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _current_rss() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


StepFunction = Callable[[torch.Tensor, np.ndarray], torch.Tensor]


def _probe_bytes(step_fn: StepFunction, state: torch.Tensor, times: np.ndarray) -> int | None:
    """Peak extra memory of one call of ``step_fn(state, times)``."""
    device = state.device
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step_fn(state, times)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    if not _reset_peak_rss():
        return None
    before = _current_rss()
    step_fn(state, times)
    peak = _peak_rss()
    if before is None or peak is None:
        return None
    return max(peak - before, 0)


def member_bytes(
    step_fn: StepFunction, state: torch.Tensor, times: np.ndarray, queued_states: int = 4
) -> int:
    """Memory one member costs: model activations per member plus the states it keeps.

    Parameters
    ----------
    step_fn : callable
        ``step_fn(state, times) -> next state`` (one model step under inference mode).
    state : torch.Tensor
        A representative state of one member, shape ``(1, history, channel, lat, lon)``.
    times : numpy.ndarray
        Shape ``(1,)``.
    queued_states : int
        States per member held besides the model's working memory (history
        window, perturbation, the output waiting for the writer).

    Returns
    -------
    int
        Bytes per member. Measured as the difference between batches of 2 and
        1 members where the platform allows (falls back to 64 state sizes).
    """
    state_bytes = state[:, -1].numel() * state.element_size()
    kept = state_bytes * (state.shape[1] + queued_states)
    small = _probe_bytes(
        step_fn, state.expand(1, *state.shape[1:]).contiguous(), np.repeat(times, 1)
    )
    large = _probe_bytes(
        step_fn, state.expand(2, *state.shape[1:]).contiguous(), np.repeat(times, 2)
    )
    if small is None or large is None or large <= small:
        activations = 64 * state_bytes
    else:
        activations = large - small
    return int(activations + kept)


def choose_batch_size(budget: int, per_member: int, total: int, fixed_bytes: int = 0) -> int:
    """How many members fit in ``budget`` bytes (at least 1, at most ``total``)."""
    usable = budget - fixed_bytes
    return int(max(1, min(total, usable // max(per_member, 1))))


def auto_batch_size(
    stepper: Stepper | Sequence[Stepper],
    initial: InitialStates,
    total: int,
    max_memory: str | int | None = None,
) -> int:
    """Members per model call that fit the memory budget, measured on the first initial state.

    Parameters
    ----------
    stepper : Stepper or sequence of Stepper
        The model, on its device; or the models of a multi-checkpoint
        ensemble (all held in memory: their weights add up, and a batch
        gets the largest per-member cost of any of them).
    initial : InitialStates
        The run's initial conditions (the first one is stepped twice to measure).
    total : int
        Members of the whole run (the batch never exceeds it).
    max_memory : str or int, optional
        Budget (``"8GB"``); default a safe share of the device's free memory.
    """
    steppers = cast(
        "list[Stepper]", list(stepper) if isinstance(stepper, (list, tuple)) else [stepper]
    )
    device = steppers[0].device
    budget = parse_memory(max_memory) if max_memory is not None else default_budget(device)
    state = initial.load(np.arange(1)).to(device)
    per_member = 0
    fixed = 0
    for model in steppers:

        def step(batch: torch.Tensor, times: np.ndarray, model: Stepper = model) -> torch.Tensor:
            with torch.inference_mode():
                return model.advance(batch, times, check_finite=False)

        per_member = max(per_member, member_bytes(step, state, initial.times[:1]))
        fixed += sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return choose_batch_size(budget, per_member, total, fixed)


@dataclass(frozen=True)
class Batch:
    """Members that go through the model together.

    Attributes
    ----------
    index : int
        Position of the batch in the run's plan.
    init_index : numpy.ndarray
        Shape ``(batch,)``: index of each item's init time in the run.
    member : numpy.ndarray
        Shape ``(batch,)``: member index of each item.
    model : int
        The checkpoint every item runs (:class:`inference.members.MemberModels`; 0 for one).
    """

    index: int
    init_index: np.ndarray
    member: np.ndarray
    model: int = 0

    def __len__(self) -> int:
        return len(self.member)

    def regions(self) -> list[tuple[int, int, int, int]]:
        """Contiguous pieces ``(init_index, member_start, member_stop, batch_start)`` for writing."""
        pieces = []
        start = 0
        for k in range(1, len(self) + 1):
            if (
                k == len(self)
                or self.init_index[k] != self.init_index[start]
                or self.member[k] != self.member[k - 1] + 1
            ):
                pieces.append(
                    (
                        int(self.init_index[start]),
                        int(self.member[start]),
                        int(self.member[k - 1]) + 1,
                        start,
                    )
                )
                start = k
        return pieces


def member_chunk(
    batch_size: int, members: int, field_bytes: int, max_chunk_bytes: int = 64 * 2**20
) -> int:
    """Members per output chunk: the batch (so each lead time of a batch is one write per channel), capped in bytes.

    Parameters
    ----------
    batch_size : int
        Members per model call.
    members : int
        Ensemble size.
    field_bytes : int
        Bytes of one member's field of one channel on the output grid.
    max_chunk_bytes : int
        Largest chunk wanted.
    """
    cap = max(1, max_chunk_bytes // max(field_bytes, 1))
    return int(max(1, min(batch_size, members, cap)))


def plan_batches(
    n_init: int, n_members: int, batch_size: int, chunk: int = 1, models: int = 1
) -> list[Batch]:
    """Split all ``(init, member)`` pairs, init-major, into batches of at most ``batch_size``.

    Batches never share an output chunk of ``chunk`` members: a batch smaller
    than the ensemble covers a multiple of ``chunk`` consecutive members of one
    init (the last one of an init may be shorter); a larger batch covers whole
    inits. So ranks and batches write disjoint chunks, and a resumed run
    redoes whole chunks.

    With ``models`` checkpoints (member ``m`` runs checkpoint ``m mod models``)
    every batch holds the members of one checkpoint, checkpoint-major; the
    output chunk must then be one member (``chunk == 1``), so that batches of
    different checkpoints never share a chunk.
    """
    if batch_size < 1 or chunk < 1 or models < 1:
        raise ValueError("batch size, chunk and models must be at least 1")
    if models > 1 and chunk != 1:
        raise ValueError("an ensemble of several checkpoints writes one member per chunk")
    batches: list[Batch] = []
    for model in range(models):
        members = np.arange(model, n_members, models)
        if len(members):
            _plan_members(batches, n_init, members, batch_size, chunk, model)
    return batches


def _plan_members(
    batches: list[Batch], n_init: int, members: np.ndarray, batch_size: int, chunk: int, model: int
) -> None:
    """Append the batches of ``members`` (of checkpoint ``model``) over every init to ``batches``."""
    count = len(members)
    if batch_size >= count:
        per = batch_size // count
        for first in range(0, n_init, per):
            inits = np.arange(first, min(first + per, n_init))
            batches.append(
                Batch(len(batches), np.repeat(inits, count), np.tile(members, len(inits)), model)
            )
        return
    size = max(chunk, (batch_size // chunk) * chunk)
    for init in range(n_init):
        for start in range(0, count, size):
            part = members[start : start + size]
            batches.append(Batch(len(batches), np.full(len(part), init), part, model))


def batches_for_rank(batches: list[Batch], rank: int, world_size: int) -> list[Batch]:
    """The contiguous share of ``batches`` that rank ``rank`` of ``world_size`` runs."""
    bounds = np.linspace(0, len(batches), world_size + 1).round().astype(int)
    return batches[bounds[rank] : bounds[rank + 1]]
