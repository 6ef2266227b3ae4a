"""Plain Fourier neural operator (Li et al. 2021) on a rectangular grid: the simple baseline.

Layout: a 1x1 lifting to ``embed_dim`` channels, ``num_layers`` Fourier layers
(2-D real FFT, a learned complex channel mixing of the lowest
``modes_lat x modes_lon`` modes, inverse FFT, plus a 1x1 skip, then the
activation), and a two-layer pointwise projection to the output channels.
The FFT treats both axes as periodic, so it runs on global and regional grids
alike (the latitude axis is not truly periodic: expect edge effects).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import PositiveInt
from torch import nn

from forecast.grid import Grid
from forecast.models.layers import ACTIVATIONS, PointwiseMLP, pointwise_linear
from forecast.models.registry import HParams, ModelSpec


class FNOHParams(HParams):
    """Hyperparameters of :class:`FNO`.

    ``modes_lat``/``modes_lon`` default to ``min(16, nlat // 2)`` and
    ``min(16, nlon // 2)``; larger values are clipped to what the grid holds.
    """

    embed_dim: PositiveInt = 32
    num_layers: PositiveInt = 4
    modes_lat: PositiveInt | None = None
    modes_lon: PositiveInt | None = None
    activation: Literal["gelu", "relu", "silu"] = "gelu"


class SpectralConv2d(nn.Module):
    """Fourier layer: ``irfft2(W * rfft2(x))`` on the lowest modes of both axes.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel sizes.
    modes_lat : int
        Kept wavenumbers along latitude, taken at both ends of the (two-sided) axis.
    modes_lon : int
        Kept wavenumbers along longitude (one-sided, real FFT).
    """

    def __init__(self, in_channels: int, out_channels: int, modes_lat: int, modes_lon: int):
        super().__init__()
        self.modes_lat = modes_lat
        self.modes_lon = modes_lon
        scale = 1.0 / math.sqrt(in_channels)
        # (ends, in, out, modes_lat, modes_lon, re/im), stored real so any optimiser/DDP handles it
        self.weight = nn.Parameter(
            scale
            * torch.randn(2, in_channels, out_channels, modes_lat, modes_lon, 2)
            / math.sqrt(2.0)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, lat, lon) -> (batch, out_channels, lat, lon)``."""
        dtype = x.dtype
        nlat, nlon = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            spectrum = torch.fft.rfft2(x.float(), norm="ortho")
            weight = torch.view_as_complex(self.weight.float())
            m1, m2 = self.modes_lat, self.modes_lon
            low = torch.einsum("bilm,iolm->bolm", spectrum[..., :m1, :m2], weight[0])
            high = torch.einsum("bilm,iolm->bolm", spectrum[..., -m1:, :m2], weight[1])
            out = spectrum.new_zeros(x.shape[0], weight.shape[2], nlat, nlon // 2 + 1)
            out[..., :m1, :m2] = low
            out[..., -m1:, :m2] = high
            y = torch.fft.irfft2(out, s=(nlat, nlon), norm="ortho")
        return y.to(dtype)


class FNO(nn.Module):
    """Fourier neural operator: ``(batch, in_channels, lat, lon) -> (batch, out_channels, lat, lon)``.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    grid : Grid
        Any rectangular grid.
    hparams : FNOHParams
        See the class for defaults.
    """

    def __init__(self, in_channels: int, out_channels: int, grid: Grid, hparams: FNOHParams):
        super().__init__()
        nlat, nlon = grid.shape
        modes_lat = min(hparams.modes_lat or min(16, nlat // 2), max(nlat // 2, 1))
        modes_lon = min(hparams.modes_lon or min(16, nlon // 2), nlon // 2 + 1)
        width = hparams.embed_dim
        self.lift = pointwise_linear(in_channels, width, bias=True)
        self.spectral = nn.ModuleList(
            SpectralConv2d(width, width, modes_lat, modes_lon) for _ in range(hparams.num_layers)
        )
        self.skips = nn.ModuleList(
            pointwise_linear(width, width, bias=True) for _ in range(hparams.num_layers)
        )
        self.act = ACTIVATIONS[hparams.activation]()
        self.project = PointwiseMLP(width, 2 * width, out_channels, hparams.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, lat, lon) -> (batch, out_channels, lat, lon)``."""
        x = self.lift(x)
        last = len(self.spectral) - 1
        for index, (spectral, skip) in enumerate(zip(self.spectral, self.skips, strict=True)):
            x = spectral(x) + skip(x)
            if index < last:
                x = self.act(x)
        return self.project(x)


def build(in_channels: int, out_channels: int, grid: Grid, hparams: FNOHParams) -> FNO:
    """Registry builder of :class:`FNO`."""
    return FNO(in_channels, out_channels, grid, hparams)


SPEC = ModelSpec(
    "fno",
    FNOHParams,
    build,
    "plain 2-D Fourier neural operator (baseline); global or regional grids",
)
