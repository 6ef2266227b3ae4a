"""Training: data loader over the store, losses, schedules, the loop, distributed runs.

The entry point is :func:`forecast.training.api.train` (re-exported here)::

    from forecast.training import train
    result = train("store.zarr", "sfno", "runs/demo", max_steps=500, rollout_steps=4)
"""

from __future__ import annotations

from forecast.training.api import train
from forecast.training.trainer import TrainingDivergedError, TrainingResult

__all__ = ["TrainingDivergedError", "TrainingResult", "train"]
