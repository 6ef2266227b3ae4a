"""Training: data loader over the store, losses, schedules, the loop, distributed runs.

The entry point is :func:`forecast.training.api.train` (re-exported here)::

    from forecast.training import TrainRequest, train
    request = TrainRequest("store.zarr", "sfno", "runs/demo", max_steps=500, rollout_steps=4)
    result = train(request)
"""

from __future__ import annotations

from forecast.training.api import train
from forecast.training.request import TrainRequest
from forecast.training.trainer import TrainingDivergedError, TrainingResult

__all__ = ["TrainRequest", "TrainingDivergedError", "TrainingResult", "train"]
