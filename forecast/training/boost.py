"""SpecBoost's training set-up: the frozen first model, its residual scale, the boosted stepper.

``forecast train --boost CKPT --model fno ...`` loads ``CKPT`` (a backbone
checkpoint) as the frozen first model (:func:`load_first_model`), measures
the RMS of its one-step residual on training windows
(:func:`residual_scale`), and builds the
:class:`~forecast.steppers.BoostedStepper` whose booster the training loop
then fits (:func:`boosted_stepper`).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from forecast import staging
from forecast.errors import ConfigError
from forecast.forcings import select_step
from forecast.models import MODELS
from forecast.steppers import BackboneStepper, BoostedStepper
from forecast.store import store_channels, store_grid, store_step
from forecast.training.data import TrainingWindows, WindowDataset, make_loader, validation_batches
from forecast.training.request import TrainRequest
from forecast.training.rollout import rollout_forcings

__all__ = ["boosted_stepper", "load_first_model", "residual_scale"]

#: Training windows the residual scale is measured on.
RESIDUAL_SAMPLES = 64


def load_first_model(request: TrainRequest, ds: xr.Dataset) -> BackboneStepper:
    """The checkpoint ``request.boost``, checked against the store and the request.

    Raises
    ------
    CheckpointError
        Unreadable, or it does not match the store.
    ConfigError
        Not a backbone checkpoint, a booster that is not a backbone, or other
        ``--channels`` than the checkpoint's.
    """
    from forecast.checkpoint import check_compatible, load_checkpoint

    if request.model not in MODELS:
        raise ConfigError(
            f"--boost trains a backbone on the first model's residual; {request.model!r} is not one",
            hint=f"use --model {', '.join(sorted(MODELS))}",
        )
    assert request.boost is not None
    first, metadata = load_checkpoint(staging.local_copy(request.boost))  # a URL is downloaded
    if not isinstance(first, BackboneStepper):
        raise ConfigError(
            f"SpecBoost boosts a backbone checkpoint, this one is a {metadata.get('stepper')!r} model",
            path=request.boost,
            hint="pass --boost a checkpoint trained with --model sfno, afno or fno",
        )
    check_compatible(metadata, store_channels(ds), store_grid(ds), store_step(ds))
    if request.channels is not None and list(request.channels) != list(first.channels):
        raise ConfigError(
            f"--channels {','.join(request.channels)} differ from the first model's {','.join(first.channels)}",
            path=request.boost,
            hint="drop --channels: a boosted model forecasts the first model's channels",
        )
    return first


@torch.no_grad()
def residual_scale(
    first: BackboneStepper,
    windows: TrainingWindows,
    device: torch.device,
    samples: int = RESIDUAL_SAMPLES,
    batch_size: int = 8,
) -> np.ndarray:
    """Area-weighted RMS of the first model's one-step residual, per channel, normalised units.

    Measured on ``samples`` training windows evenly spread over the training
    period (the same ones every time).

    Returns
    -------
    numpy.ndarray
        ``(channel,)``, positive.
    """
    first = first.to(device).eval()
    dataset = WindowDataset(windows.store_path, windows.channel_indices, first.history)
    batches = validation_batches(windows.train_starts, 1, batch_size, samples)
    weights = torch.as_tensor(first.grid.area_weights(), dtype=torch.float64, device=device)
    total = torch.zeros(len(first.channels), dtype=torch.float64, device=device)
    count = 0
    for batch in make_loader(dataset, batches, workers=0):
        history = first.normalize(batch["history"].to(device))
        target = first.normalize(batch["targets"][:, 0].to(device))
        forcings = rollout_forcings(first, windows.times, batch["start"].numpy(), 1, device)
        prediction = first.forward_normalized(history, select_step(forcings, 0))
        squared = (prediction - target).double() ** 2 * weights.reshape(-1, 1)
        total += squared.mean(dim=(-2, -1)).sum(dim=0)
        count += history.shape[0]
    scale = torch.sqrt(total / max(count, 1)).cpu().numpy()
    return np.maximum(scale, 1e-6)


def boosted_stepper(
    first: BackboneStepper, request: TrainRequest, windows: TrainingWindows, device: torch.device
) -> BoostedStepper:
    """``first`` (frozen) with a fresh ``request.model`` booster scaled to its residual."""
    scale = residual_scale(first, windows, device)
    return BoostedStepper(first, request.model, dict(request.hparams), scale).to(device)
