"""Distributed data parallel set-up for runs launched with ``torchrun``.

``torchrun --nproc_per_node N -m forecast train ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` then joins the
process group (``gloo`` on CPU, ``nccl`` on CUDA). A plain ``forecast train``
is a world of one and touches no process group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from forecast.errors import ConfigError

__all__ = ["DistributedContext", "init_distributed", "resolve_device"]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a (possibly single-process) run.

    Attributes
    ----------
    rank, world_size, local_rank : int
    device : torch.device
    initialized_here : bool
        Whether :func:`init_distributed` created the process group (and
        :meth:`close` should destroy it).
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0 (which writes files and shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (identity in a world of one)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"`` as a device for this rank.

    Raises
    ------
    ConfigError
        If ``"cuda"`` is asked for on a machine without CUDA, or the name is unknown.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "--device cuda was asked for but no CUDA device is available",
                hint="use --device cpu or auto",
            )
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    raise ConfigError(f"unknown device {name!r}", hint="use auto, cpu or cuda")


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the ``torchrun`` process group when the environment describes one.

    Parameters
    ----------
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda"``; the backend follows (nccl on CUDA, gloo on CPU).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, torch_device)
    created = False
    if not dist.is_initialized():
        if torch_device.type == "cuda":
            torch.cuda.set_device(torch_device)
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
        created = True
    return DistributedContext(
        dist.get_rank(), dist.get_world_size(), local_rank, torch_device, created
    )
