"""Optimiser and learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

__all__ = ["build_optimizer", "cosine_warmup_factor", "set_learning_rate"]


def build_optimizer(
    parameters: Iterable[torch.nn.Parameter],
    lr: float,
    weight_decay: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW over ``parameters``; biases and 1-D (norm) parameters get no weight decay.

    Parameters
    ----------
    parameters : iterable of torch.nn.Parameter
    lr : float
        Peak learning rate.
    weight_decay : float
        Decoupled weight decay of the matrices.
    betas : (float, float)
        Adam's moment decay rates.
    """
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for parameter in parameters:
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim >= 2 else no_decay).append(parameter)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def cosine_warmup_factor(
    step: int, max_steps: int, warmup_steps: int, min_factor: float = 0.01
) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_factor``.

    Parameters
    ----------
    step : int
        Optimiser step about to be taken (0-based).
    max_steps : int
        Steps of the whole run.
    warmup_steps : int
        Steps of the linear ramp from ``1 / warmup_steps`` to 1.
    min_factor : float
        Multiplier reached at ``max_steps``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(max_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
