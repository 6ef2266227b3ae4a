"""Regridding members at write time (``--output-grid``), with torch-harmonics' ``ResampleS2``."""

from __future__ import annotations

import torch
from torch_harmonics import ResampleS2

from forecast.errors import GridError
from forecast.grid import Grid


class OutputRegridder(torch.nn.Module):
    """Bilinear resampling on the sphere from the model grid to an output grid.

    Parameters
    ----------
    source, target : Grid
        Global grids (equiangular or legendre-gauss), store orientation.
    """

    def __init__(self, source: Grid, target: Grid):
        super().__init__()
        for grid in (source, target):
            if not grid.is_global:
                raise GridError(f"--output-grid needs global grids, got {grid.describe()}")
        self.source, self.target = source, target
        self.resample = ResampleS2(
            source.nlat,
            source.nlon,
            target.nlat,
            target.nlon,
            grid_in=source.kind,
            grid_out=target.kind,
        )

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``(batch, channel, nlat_in, nlon_in)`` -> ``(batch, channel, nlat_out, nlon_out)``."""
        return self.resample(state)
