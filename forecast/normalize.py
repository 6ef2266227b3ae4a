"""Per-channel normalisation of model states."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.dims import CHANNEL


@dataclass(frozen=True)
class Normalizer:
    """Mean/std normalisation per channel, and the std of one-step tendencies.

    Attributes
    ----------
    channels : tuple of str
        Channel ids, in tensor order.
    mean, std, diff_std : numpy.ndarray
        Shape ``(channel,)``, float64, in each channel's physical units.
    """

    channels: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    diff_std: np.ndarray

    @classmethod
    def from_store(cls, ds: xr.Dataset, channels: list[str] | None = None) -> Normalizer:
        """Read the statistics of ``channels`` (default: all) from a training store."""
        channels = list(channels) if channels is not None else [str(c) for c in ds[CHANNEL].values]
        sel = {CHANNEL: channels}
        return cls(
            tuple(channels),
            ds["mean"].sel(sel).values.astype(np.float64),
            ds["std"].sel(sel).values.astype(np.float64),
            ds["diff_std"].sel(sel).values.astype(np.float64),
        )

    def to_dict(self) -> dict[str, list]:
        """Plain lists, for a checkpoint."""
        return {
            "channels": list(self.channels),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "diff_std": self.diff_std.tolist(),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Normalizer:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(values["channels"]),
            np.asarray(values["mean"]),
            np.asarray(values["std"]),
            np.asarray(values["diff_std"]),
        )
