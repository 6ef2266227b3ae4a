"""Validation scores: area-weighted RMSE per channel and lead, against baselines.

RMSE follows WeatherBench2: the area-weighted spatial MSE of each forecast,
averaged over initial times, then the square root; in physical units.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forecast.stepper import TrainableStepper
from forecast.training.distributed import DistributedContext
from forecast.training.rollout import Rollout, rollout_forcings

__all__ = ["RolloutScores", "evaluate_checkpoint", "score_rollouts"]


@dataclass(frozen=True)
class RolloutScores:
    """RMSE of a model and its baselines.

    Attributes
    ----------
    channels : tuple of str
    model, persistence : numpy.ndarray
        ``(lead, channel)`` RMSE in physical units; lead ``i`` is ``i + 1`` steps.
    climatology : numpy.ndarray or None
        ``(lead, channel)``, when a climatology was given.
    samples : int
        Initial times scored.
    """

    channels: tuple[str, ...]
    model: np.ndarray
    persistence: np.ndarray
    climatology: np.ndarray | None
    samples: int

    @property
    def n_leads(self) -> int:
        return self.model.shape[0]

    def at_lead(self, lead: int) -> dict[str, dict[str, float]]:
        """``{"model": {channel: rmse}, "persistence": {...}[, "climatology": {...}]}`` at ``lead`` steps (1-based)."""
        out = {
            "model": dict(zip(self.channels, self.model[lead - 1].tolist(), strict=True)),
            "persistence": dict(
                zip(self.channels, self.persistence[lead - 1].tolist(), strict=True)
            ),
        }
        if self.climatology is not None:
            out["climatology"] = dict(
                zip(self.channels, self.climatology[lead - 1].tolist(), strict=True)
            )
        return out

    def skill(self, lead: int) -> float:
        """Mean over channels of model RMSE / persistence RMSE at ``lead`` (lower is better)."""
        ratio = self.model[lead - 1] / np.maximum(self.persistence[lead - 1], 1e-30)
        return float(ratio.mean())


@torch.no_grad()
def score_rollouts(
    stepper: TrainableStepper,
    batches: Iterable[dict],
    times: np.ndarray,
    latitude_weights: np.ndarray,
    device: torch.device,
    context: DistributedContext | None = None,
    climatology: Callable[[np.ndarray], np.ndarray] | None = None,
    autocast_dtype: torch.dtype | None = None,
    n_leads: int | None = None,
) -> RolloutScores:
    """Roll a stepper out from each validation window and score every lead.

    Parameters
    ----------
    stepper : TrainableStepper
    batches : iterable of dict
        Loader batches with ``history`` ``(batch, history, channel, lat, lon)``,
        ``targets`` ``(batch, lead, channel, lat, lon)`` (physical) and ``start``.
        In a distributed run each rank passes its share.
    times : numpy.ndarray
        The store's times (for forcings and climatology).
    latitude_weights : numpy.ndarray
        ``(lat,)`` area weights, mean 1.
    device : torch.device
    context : DistributedContext, optional
        Sums the scores over ranks.
    climatology : callable, optional
        ``f(valid_times) -> (time, channel, lat, lon)`` array; adds a
        climatology baseline.
    autocast_dtype : torch.dtype, optional
        Run the model under autocast (e.g. bfloat16).
    n_leads : int, optional
        Leads each batch holds; needed when this rank may get no batch.

    Returns
    -------
    RolloutScores
    """
    rollout = Rollout(stepper)
    was_training = stepper.training
    stepper.eval()
    normalizer = stepper.normalizer
    history_length = stepper.history
    weights = torch.as_tensor(latitude_weights, dtype=torch.float64, device=device).reshape(-1, 1)
    n_rows = 3 if climatology is not None else 2
    n_channels = len(normalizer.channels)
    sums = (
        None
        if n_leads is None
        else torch.zeros(n_rows, n_leads, n_channels, dtype=torch.float64, device=device)
    )
    samples = torch.zeros(1, dtype=torch.float64, device=device)
    try:
        for batch in batches:
            history = batch["history"].to(device)
            targets = batch["targets"].to(device)
            starts = np.asarray(batch["start"])
            n_leads = targets.shape[1]
            forcings = rollout_forcings(stepper, times, starts, n_leads, device)
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.bfloat16,
                enabled=autocast_dtype is not None,
            ):
                predictions = rollout(stepper.normalize(history), forcings, n_leads)
            predictions = stepper.denormalize(predictions.float()).transpose(
                0, 1
            )  # (batch, lead, channel, lat, lon)
            truth = targets.double()
            rows = [
                _weighted_squared_error(predictions.double(), truth, weights),
                _weighted_squared_error(history[:, -1:].double().expand_as(truth), truth, weights),
            ]
            if climatology is not None:
                valid = times[starts[:, None] + history_length + np.arange(n_leads)[None, :]]
                clim = torch.as_tensor(
                    np.asarray(climatology(valid.reshape(-1)), dtype=np.float64), device=device
                )
                rows.append(_weighted_squared_error(clim.reshape(truth.shape), truth, weights))
            batch_sums = torch.stack(rows)  # (baseline, lead, channel)
            sums = batch_sums if sums is None else sums + batch_sums
            samples = samples + len(starts)
        if sums is None:
            raise ValueError("no validation windows to score")
        if context is not None:
            context.all_reduce_sum(sums)
            context.all_reduce_sum(samples)
    finally:
        stepper.train(was_training)
    if samples.item() == 0:
        raise ValueError("no validation windows to score")
    rmse = torch.sqrt(sums / samples).cpu().numpy()
    return RolloutScores(
        tuple(normalizer.channels),
        rmse[0],
        rmse[1],
        rmse[2] if climatology is not None else None,
        int(samples.item()),
    )


def _weighted_squared_error(
    forecast: torch.Tensor, truth: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Sum over the batch of area-weighted MSE: ``(lead, channel)`` from ``(batch, lead, channel, lat, lon)``."""
    return (((forecast - truth) ** 2) * weights).mean(dim=(-2, -1)).sum(dim=0)


def evaluate_checkpoint(
    checkpoint: str | Path,
    store: str | Path,
    n_steps: int,
    start: str | None = None,
    end: str | None = None,
    max_samples: int | None = 64,
    batch_size: int = 8,
    device: str = "cpu",
    with_climatology: bool = True,
) -> RolloutScores:
    """RMSE of a checkpoint's rollouts against persistence and climatology on a store.

    Parameters
    ----------
    checkpoint : str or Path
        A ``.ckpt`` written by training.
    store : str or Path
        A training store with the checkpoint's channels, grid and step.
    n_steps : int
        Rollout length; leads ``1 .. n_steps`` steps are scored.
    start, end : str, optional
        Only initial times whose whole rollout lies in this period (default: the whole store).
    max_samples : int, optional
        Evenly spaced initial times scored, at most.
    batch_size : int
        Rollouts run together.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    with_climatology : bool
        Also score the store's climatology (by day of year and hour).

    Returns
    -------
    RolloutScores
    """
    from forecast.checkpoint import check_compatible, load_checkpoint
    from forecast.store import climatology_at, open_store, store_channels, store_grid, store_step
    from forecast.training.data import WindowDataset, make_loader, split_windows, validation_batches
    from forecast.training.distributed import resolve_device

    torch_device = resolve_device(device)
    ds = open_store(store)
    stepper, metadata = load_checkpoint(checkpoint, map_location=torch_device)
    check_compatible(metadata, store_channels(ds), store_grid(ds), store_step(ds))
    channels = list(stepper.channels)
    times = np.asarray(ds["time"].values)
    window = stepper.history + n_steps
    if start is None and end is None:
        starts, _ = split_windows(times, window, val_fraction=None, path=store)
    else:
        calendar = str(ds.attrs.get("calendar", "standard"))
        _, starts = split_windows(times, window, start, end, calendar=calendar, path=store)
    index = store_channels(ds)
    dataset = WindowDataset(store, [index.index(c) for c in channels], stepper.history)
    batches = validation_batches(starts, n_steps, batch_size, max_samples)
    climatology = None
    if with_climatology:

        def climatology(valid: np.ndarray) -> np.ndarray:
            return climatology_at(ds, valid).sel(channel=channels).values

    return score_rollouts(
        stepper,
        make_loader(dataset, batches, workers=0),
        times,
        stepper.grid.area_weights(),
        torch_device,
        climatology=climatology,
        n_leads=n_steps,
    )
