"""Resumable training state: optimiser, RNG and position, saved without pickled code.

The state file sits next to ``latest.ckpt`` and holds only tensors, numbers,
strings, lists and dicts, so :func:`load_training_state` reads it with
``torch.load(..., weights_only=True)``. Every file is written to a temporary
name in the same directory and renamed into place, so an interrupted write
never leaves half a file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from forecast.errors import CheckpointError
from forecast.files import atomic_write

__all__ = [
    "capture_rng",
    "load_training_state",
    "restore_rng",
    "save_training_state",
]

#: Version of the training-state layout.
STATE_FORMAT_VERSION = 1


def capture_rng(
    device: torch.device, noise_generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """The random-number states a resumed run must restore (CPU, CUDA device, noise)."""
    states = {"torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["torch_cuda"] = torch.cuda.get_rng_state(device)
    if noise_generator is not None:
        states["noise"] = noise_generator.get_state()
    return states


def restore_rng(
    states: dict[str, torch.Tensor],
    device: torch.device,
    noise_generator: torch.Generator | None = None,
) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(states["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in states:
        torch.cuda.set_rng_state(states["torch_cuda"], device)
    if noise_generator is not None and "noise" in states:
        noise_generator.set_state(states["noise"])


def save_training_state(path: str | Path, state: dict) -> Path:
    """Write a training state dict (atomically) with its format version."""
    payload = {"state_format_version": STATE_FORMAT_VERSION, **state}
    return atomic_write(path, lambda temporary: torch.save(payload, temporary))


def load_training_state(path: str | Path) -> dict:
    """Read a training state written by :func:`save_training_state`.

    Raises
    ------
    CheckpointError
        If the file is unreadable or of an unknown version.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            "no training state to resume from", path=path, hint="start without --resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt file
        raise CheckpointError(
            f"cannot read training state ({type(err).__name__}: {err})",
            path=path,
            hint="start a new run without --resume",
        ) from err
    version = state.get("state_format_version") if isinstance(state, dict) else None
    if version != STATE_FORMAT_VERSION:
        raise CheckpointError(
            f"training state format version {version} is not {STATE_FORMAT_VERSION}",
            path=path,
            hint="start a new run without --resume",
        )
    return state
