"""What of each model state a run writes: a channel subset, on the output grid."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from forecast.errors import ConfigError
from forecast.grid import Grid
from forecast.regrid import Regridder


class OutputFields:
    """Selects the written channels of a state and regrids them to the output grid.

    Parameters
    ----------
    model_channels : sequence of str
        The model's channels, in state order.
    model_grid : Grid
        The model's grid.
    channels : sequence of str
        Channels to write, a subset of ``model_channels``.
    grid : Grid
        Grid to write (``model_grid`` for no regridding).

    Raises
    ------
    ConfigError
        A channel the model does not forecast.
    GridError
        A grid the model's fields cannot be regridded to.
    """

    def __init__(
        self,
        model_channels: Sequence[str],
        model_grid: Grid,
        channels: Sequence[str],
        grid: Grid,
    ):
        model = [str(c) for c in model_channels]
        unknown = [c for c in channels if c not in model]
        if unknown:
            raise ConfigError(
                f"--channels names channel(s) {', '.join(unknown)} the model does not forecast",
                hint=f"it forecasts {', '.join(model)}",
            )
        self.channels = tuple(channels)
        self.index = [model.index(c) for c in self.channels]
        self.all_channels = self.channels == tuple(model)
        self.regridder = (
            None if grid.same_as(model_grid) else Regridder(model_grid, grid, path="--output-grid")
        )
        self.grid = grid if self.regridder is not None else model_grid

    @property
    def is_model_state(self) -> bool:
        """Whether the output holds the model's full state (so a rollout can restart from it)."""
        return self.regridder is None and self.all_channels

    def __call__(self, state: torch.Tensor) -> np.ndarray:
        """``(batch, model channel, lat, lon)`` -> written fields ``(batch, channel, lat', lon')`` float32 on CPU."""
        fields = state if self.all_channels else state[:, self.index]
        if self.regridder is not None:
            with torch.inference_mode():
                fields = self.regridder.regrid_tensor(fields)
        return fields.detach().to("cpu", torch.float32).numpy()
