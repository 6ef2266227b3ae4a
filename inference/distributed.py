"""Several processes on one run (``torchrun``): ranks, and the few collectives a run needs.

Library functions read the rank from an initialised ``torch.distributed``
process group; :func:`init_from_env` (called by the command line, never on
import) creates one when ``torchrun`` has set ``WORLD_SIZE`` > 1.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist


def init_from_env(device: torch.device) -> bool:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns
    -------
    bool
        Whether this process is one of several.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def rank_and_size() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for all ranks (no-op alone)."""
    if rank_and_size()[1] > 1:
        dist.barrier()


def broadcast(value: Any, source: int = 0) -> Any:
    """Rank ``source``'s ``value`` on every rank (a picklable object)."""
    if rank_and_size()[1] == 1:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=source)
    return holder[0]


def gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    size = rank_and_size()[1]
    if size == 1:
        return [value]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, value)
    return out
