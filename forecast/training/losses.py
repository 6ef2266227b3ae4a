"""Training losses on the sphere, in normalised units.

All losses weight grid cells by their area (the quadrature weights of
:meth:`forecast.grid.Grid.area_weights`, mean 1 over latitude), so that the
crowded polar rows of a lat/lon grid do not dominate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "RolloutCurriculum",
    "area_weighted_mse",
    "channel_weight_tensor",
    "fair_crps",
    "per_channel_fair_crps",
    "per_channel_mse",
    "per_channel_zonal_mse",
    "reduce_channels",
]


def _weights(latitude_weights: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return latitude_weights.to(device=like.device, dtype=like.dtype).reshape(-1, 1)


def _area_mean_square(error: torch.Tensor, latitude_weights: torch.Tensor) -> torch.Tensor:
    """``(channel,)`` area-weighted mean of ``error ** 2`` over batch, latitude and longitude."""
    squared = error**2
    return (squared * _weights(latitude_weights, squared)).mean(dim=(0, 2, 3))


def per_channel_mse(
    prediction: torch.Tensor, target: torch.Tensor, latitude_weights: torch.Tensor
) -> torch.Tensor:
    """Area-weighted mean squared error of each channel.

    Parameters
    ----------
    prediction, target : torch.Tensor
        ``(batch, channel, lat, lon)``, normalised units.
    latitude_weights : torch.Tensor
        ``(lat,)`` area weights with mean 1.

    Returns
    -------
    torch.Tensor
        ``(channel,)``, mean over batch and the (weighted) grid.
    """
    return _area_mean_square(prediction - target, latitude_weights)


def per_channel_zonal_mse(
    prediction: torch.Tensor, target: torch.Tensor, latitude_weights: torch.Tensor
) -> torch.Tensor:
    """Area-weighted mean square of the zonal-mean error of each channel.

    The zonal mean (the order ``m = 0``) of the error, squared and averaged
    over latitude with the area weights: the part of :func:`per_channel_mse`
    that the zonal means carry (the rest is the eddies', departures from the
    zonal mean; the two add up to it exactly on a regular longitude grid).
    A climate run's zonal means settle where the per-step bias of the
    model's zonal means puts them, so a loss can give this part more weight.

    Parameters
    ----------
    prediction, target : torch.Tensor
        ``(batch, channel, lat, lon)``, normalised units.
    latitude_weights : torch.Tensor
        ``(lat,)`` area weights with mean 1.

    Returns
    -------
    torch.Tensor
        ``(channel,)``, mean over batch and the (weighted) latitudes.
    """
    return _area_mean_square((prediction - target).mean(dim=-1, keepdim=True), latitude_weights)


def area_weighted_mse(
    prediction: torch.Tensor,
    target: torch.Tensor,
    latitude_weights: torch.Tensor,
    channel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Area-weighted MSE over batch, channels and grid (a scalar).

    Parameters
    ----------
    prediction, target : torch.Tensor
        ``(batch, channel, lat, lon)``, normalised units.
    latitude_weights : torch.Tensor
        ``(lat,)`` area weights with mean 1.
    channel_weights : torch.Tensor, optional
        ``(channel,)`` relative weights of the channels; normalised here to
        mean 1, so only their ratios matter. Default: equal.
    """
    return reduce_channels(per_channel_mse(prediction, target, latitude_weights), channel_weights)


def per_channel_fair_crps(
    ensemble: torch.Tensor, target: torch.Tensor, latitude_weights: torch.Tensor
) -> torch.Tensor:
    """The fair (unbiased) ensemble CRPS of each channel, area-weighted.

    ``CRPS = mean_i |X_i - y| - sum_{i,j} |X_i - X_j| / (2 M (M - 1))`` per grid
    point (Ferro 2014; WeatherBench2's fair CRPS), computed from the sorted
    members in ``O(M log M)``: ``sum_{i,j} |X_i - X_j| = 2 sum_k (2k - M - 1) X_(k)``.

    Parameters
    ----------
    ensemble : torch.Tensor
        ``(member, batch, channel, lat, lon)`` with at least 2 members.
    target : torch.Tensor
        ``(batch, channel, lat, lon)``.
    latitude_weights : torch.Tensor
        ``(lat,)`` area weights with mean 1.

    Returns
    -------
    torch.Tensor
        ``(channel,)``, mean over batch and the (weighted) grid, in the units of the inputs.
    """
    members = ensemble.shape[0]
    if members < 2:
        raise ValueError("the fair CRPS needs an ensemble of at least 2 members")
    skill = (ensemble - target.unsqueeze(0)).abs().mean(dim=0)
    ordered, _ = torch.sort(ensemble, dim=0)
    rank = torch.arange(1, members + 1, device=ensemble.device, dtype=ensemble.dtype)
    coefficient = (2 * rank - members - 1).reshape(-1, *([1] * (ensemble.ndim - 1)))
    pair_sum = 2 * (coefficient * ordered).sum(dim=0)
    crps = skill - pair_sum / (2 * members * (members - 1))
    return (crps * _weights(latitude_weights, crps)).mean(dim=(0, 2, 3))


def fair_crps(
    ensemble: torch.Tensor,
    target: torch.Tensor,
    latitude_weights: torch.Tensor,
    channel_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The area-weighted fair CRPS averaged over channels (a scalar); see :func:`per_channel_fair_crps`.

    Parameters
    ----------
    ensemble : torch.Tensor
        ``(member, batch, channel, lat, lon)``.
    target : torch.Tensor
        ``(batch, channel, lat, lon)``.
    latitude_weights : torch.Tensor
        ``(lat,)`` area weights with mean 1.
    channel_weights : torch.Tensor, optional
        ``(channel,)`` relative channel weights.
    """
    return reduce_channels(
        per_channel_fair_crps(ensemble, target, latitude_weights), channel_weights
    )


def reduce_channels(
    per_channel: torch.Tensor, channel_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Weighted mean of per-channel losses (equal weights by default)."""
    if channel_weights is None:
        return per_channel.mean()
    channel_weights = channel_weights.to(per_channel)
    return (per_channel * channel_weights).sum() / channel_weights.sum()


def channel_weight_tensor(
    channels: Sequence[str], weights: dict[str, float] | None
) -> torch.Tensor | None:
    """``(channel,)`` weights from a mapping of channel id to weight (missing ids weigh 1).

    Raises
    ------
    ValueError
        If ``weights`` names a channel that is not trained, or a weight is negative.
    """
    if not weights:
        return None
    unknown = [name for name in weights if name not in channels]
    if unknown:
        raise ValueError(
            f"channel weights name unknown channel(s) {', '.join(unknown)}; the model has {', '.join(channels)}"
        )
    values = np.array([float(weights.get(name, 1.0)) for name in channels])
    if (values < 0).any() or values.sum() <= 0:
        raise ValueError("channel weights must be non-negative and not all zero")
    return torch.as_tensor(values, dtype=torch.float32)


@dataclass(frozen=True)
class RolloutCurriculum:
    """How many autoregressive steps the loss covers at each optimiser step.

    By default training starts with single steps and, from
    ``start_fraction * max_steps`` on, raises the rollout length linearly to
    ``rollout_steps``, which it reaches at ``end_fraction * max_steps`` (the
    multi-step fine-tuning of FourCastNet, spread over the end of training).
    Explicit ``milestones`` (``((step, K), ...)``, ascending) replace that.

    Parameters
    ----------
    max_steps : int
        Optimiser steps of the whole run.
    rollout_steps : int
        The final (largest) rollout length K.
    start_fraction, end_fraction : float
        Where the ramp starts and ends, as fractions of ``max_steps``.
    milestones : tuple of (int, int), optional
        From each ``step`` on, use ``K``.
    """

    max_steps: int
    rollout_steps: int
    start_fraction: float = 0.4
    end_fraction: float = 0.8
    milestones: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        if self.rollout_steps < 1:
            raise ValueError(f"rollout steps must be at least 1, got {self.rollout_steps}")
        if self.milestones:
            steps = [step for step, _ in self.milestones]
            if steps != sorted(steps) or any(
                k < 1 or k > self.rollout_steps for _, k in self.milestones
            ):
                raise ValueError(
                    f"rollout milestones {self.milestones} must ascend in step with 1 <= K <= {self.rollout_steps}"
                )

    def __call__(self, step: int) -> int:
        """The rollout length K at optimiser step ``step`` (0-based)."""
        if self.rollout_steps == 1:
            return 1
        if self.milestones:
            current = 1
            for start, k in self.milestones:
                if step >= start:
                    current = k
            return current
        begin = self.start_fraction * self.max_steps
        end = max(self.end_fraction * self.max_steps, begin + 1)
        if step < begin:
            return 1
        progress = min((step - begin) / (end - begin), 1.0)
        return int(min(self.rollout_steps, 2 + np.floor(progress * (self.rollout_steps - 1))))

    @staticmethod
    def parse_milestones(text: str) -> tuple[tuple[int, int], ...]:
        """Parse ``"0:1,500:2,1000:4"`` (step:K pairs)."""
        pairs = []
        for part in text.split(","):
            step, _, k = part.partition(":")
            try:
                pairs.append((int(step), int(k)))
            except ValueError as err:
                raise ValueError(
                    f"cannot parse rollout schedule {text!r}; write step:K pairs such as 0:1,500:2,1000:4"
                ) from err
        return tuple(pairs)
