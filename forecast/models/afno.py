"""Adaptive Fourier neural operator (Guibas et al. 2021) as in FourCastNet v1 (Pathak et al. 2022).

Layout::

    pad          to a multiple of the patch (circular in longitude on a global grid)
    patch_embed  convolution with kernel = stride = patch_size -> embed_dim tokens on an h x w grid
    pos_embed    learned, one vector per token
    depth x      LayerNorm -> AFNO filter -> + skip -> LayerNorm -> MLP -> + skip
    head         linear embed_dim -> out_channels * patch area, then unpatchify and crop

The AFNO filter takes the 2-D real FFT of the token grid, splits the channels
into ``num_blocks`` blocks and applies a two-layer complex MLP with
block-diagonal weights to each kept mode (ReLU, then soft-shrinkage with
``sparsity_threshold`` for sparsity), zeroes the modes beyond
``hard_thresholding_fraction`` (hard mode truncation), and transforms back.
It runs on any rectangular grid, global or regional.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt, field_validator
from torch import nn

from forecast.grid import Grid
from forecast.models.layers import TokenMLP
from forecast.models.registry import HParams, ModelSpec


class AFNOHParams(HParams):
    """Hyperparameters of :class:`AFNO` (names as in FourCastNet).

    Attributes
    ----------
    patch_size : int or (int, int)
        Patch height and width in grid points.
    embed_dim : int
        Token width; must be divisible by ``num_blocks``.
    depth : int
        Number of AFNO blocks.
    num_blocks : int
        Diagonal blocks of the complex MLP in each filter.
    mlp_ratio : float
        Hidden size of each block's MLP relative to ``embed_dim``.
    sparsity_threshold : float
        Soft-shrinkage threshold ``lambda`` in the filter.
    hard_thresholding_fraction : float
        Fraction of the Fourier modes kept, in (0, 1].
    hidden_size_factor : int
        Width of the filter's complex MLP relative to the block size.
    activation : str
        Activation of the block MLP.
    mode_truncation : str
        Which Fourier modes of the ``h x w`` token grid the filter keeps.
        ``"per_axis"``: the lowest ``int((h // 2 + 1) * f)`` latitude
        wavenumbers (both ends of the two-sided axis) and ``int((w // 2 + 1) * f)``
        longitude ones, ``f`` the ``hard_thresholding_fraction``.
        ``"fourcastnet"``: the block that FourCastNet's (and physicsnemo's)
        ``AFNO2D`` keeps, with ``k = int((h // 2 + 1) * f)``: latitude rows
        ``h // 2 + 1 - k`` to ``h // 2 + k`` and longitude wavenumbers ``0`` to
        ``k - 1``. At ``f = 1`` that is every latitude wavenumber and the
        ``h // 2 + 1`` lowest longitude ones (46 of 91 on FourCastNet's
        90 x 180 tokens); the published weights need it.
    """

    patch_size: PositiveInt | tuple[PositiveInt, PositiveInt] = 8
    embed_dim: PositiveInt = 256
    depth: PositiveInt = 4
    num_blocks: PositiveInt = 8
    mlp_ratio: Annotated[float, Field(gt=0.0)] = 4.0
    sparsity_threshold: Annotated[float, Field(ge=0.0)] = 0.01
    hard_thresholding_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    hidden_size_factor: PositiveInt = 1
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    mode_truncation: Literal["per_axis", "fourcastnet"] = "per_axis"

    @field_validator("patch_size")
    @classmethod
    def _pair(cls, value: int | tuple[int, int]) -> tuple[int, int]:
        return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))

    @field_validator("num_blocks")
    @classmethod
    def _divides(cls, value: int, info) -> int:
        embed_dim = info.data.get("embed_dim")
        if embed_dim is not None and embed_dim % value:
            raise ValueError(f"must divide embed_dim={embed_dim}")
        return value


class AFNOFilter(nn.Module):
    """The AFNO token mixer: FFT, block-diagonal complex MLP, soft-shrinkage, inverse FFT.

    Parameters
    ----------
    dim : int
        Channels (``embed_dim``).
    num_blocks : int
        Diagonal blocks.
    sparsity_threshold : float
        Soft-shrinkage ``lambda``.
    hard_thresholding_fraction : float
        Fraction of modes kept.
    hidden_size_factor : int
        Hidden width factor of the complex MLP.
    mode_truncation : str
        ``"per_axis"`` or ``"fourcastnet"`` (see :class:`AFNOHParams`).
    """

    def __init__(
        self,
        dim: int,
        num_blocks: int,
        sparsity_threshold: float,
        hard_thresholding_fraction: float,
        hidden_size_factor: int,
        mode_truncation: str = "per_axis",
    ):
        super().__init__()
        self.mode_truncation = mode_truncation
        self.num_blocks = num_blocks
        self.block_size = dim // num_blocks
        self.sparsity_threshold = sparsity_threshold
        self.hard_thresholding_fraction = hard_thresholding_fraction
        hidden = self.block_size * hidden_size_factor
        scale = 0.02
        # first index: real and imaginary parts
        self.w1 = nn.Parameter(scale * torch.randn(2, num_blocks, self.block_size, hidden))
        self.b1 = nn.Parameter(scale * torch.randn(2, num_blocks, hidden))
        self.w2 = nn.Parameter(scale * torch.randn(2, num_blocks, hidden, self.block_size))
        self.b2 = nn.Parameter(scale * torch.randn(2, num_blocks, self.block_size))

    @staticmethod
    def _real_form(weight: torch.Tensor) -> torch.Tensor:
        """``(2, blocks, n, m)`` real/imag parts -> ``(blocks, 2n, 2m)`` acting on ``[re, im]`` rows."""
        real, imag = weight[0], weight[1]
        return torch.cat([torch.cat([real, imag], dim=2), torch.cat([-imag, real], dim=2)], dim=1)

    def _complex_block_mlp(self, modes: torch.Tensor) -> torch.Tensor:
        """The block-diagonal complex MLP on ``(batch, h, w, dim)`` complex modes.

        Each complex product is one real matrix product on ``[re, im]`` rows
        (``[re, im] @ [[Wr, Wi], [-Wi, Wr]]``): one batched GEMM per layer over
        the blocks instead of four per layer on strided real/imaginary views.
        """
        lead = modes.shape[:3]
        count = modes.shape[0] * modes.shape[1] * modes.shape[2]
        blocks, size = self.num_blocks, self.block_size
        rows = torch.view_as_real(modes).reshape(count, blocks, size, 2)
        rows = rows.permute(1, 0, 3, 2).reshape(
            blocks, count, 2 * size
        )  # (blocks, modes, [re, im])
        b1 = torch.cat([self.b1[0], self.b1[1]], dim=1).float().unsqueeze(1)
        b2 = torch.cat([self.b2[0], self.b2[1]], dim=1).float().unsqueeze(1)
        hidden = F.relu(torch.baddbmm(b1, rows, self._real_form(self.w1.float())))
        out = torch.baddbmm(b2, hidden, self._real_form(self.w2.float()))
        out = F.softshrink(out, self.sparsity_threshold)
        out = out.reshape(blocks, count, 2, size).permute(1, 0, 3, 2).contiguous()
        return torch.view_as_complex(out).reshape(*lead, blocks * size)

    def _kept_modes(self, height: int, width: int) -> tuple[list[int] | slice | None, int]:
        """Latitude rows (None: all) and number of longitude wavenumbers the filter keeps."""
        fraction = self.hard_thresholding_fraction
        half = height // 2 + 1
        if self.mode_truncation == "fourcastnet":
            kept = int(half * fraction)
            start, stop = max(half - kept, 0), min(half + kept, height)
            rows = None if (start, stop) == (0, height) else slice(start, stop)
            return rows, min(kept, width // 2 + 1)
        kept_w = max(int((width // 2 + 1) * fraction), 1)
        kept_h = max(int(half * fraction), 1)
        # latitude wavenumbers are two-sided: keep the lowest at both ends
        if kept_h >= half:
            return None, kept_w
        return sorted(set(range(kept_h)) | set(range(height - kept_h + 1, height))), kept_w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, h, w, dim) -> (batch, h, w, dim)``; the filter output plus its input (bias path)."""
        dtype = x.dtype
        height, width = x.shape[1:3]
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            spectrum = torch.fft.rfft2(x, dim=(1, 2), norm="ortho")  # (batch, h, w//2+1, dim)
            total = width // 2 + 1
            rows, kept_w = self._kept_modes(height, width)
            modes = spectrum[:, :, :kept_w] if rows is None else spectrum[:, rows, :kept_w]
            filtered = self._complex_block_mlp(modes)
            if rows is None and kept_w == total:
                out = filtered  # all modes kept: no scatter into a zero spectrum
            else:
                out = torch.zeros_like(spectrum)
                if rows is None:
                    out[:, :, :kept_w] = filtered
                else:
                    out[:, rows, :kept_w] = filtered
            y = torch.fft.irfft2(out, s=(height, width), dim=(1, 2), norm="ortho")
        return (y + x).to(dtype)


class AFNOBlock(nn.Module):
    """``x + MLP(LN(x + AFNO(LN(x))))`` in FourCastNet's double-skip form, on ``(batch, h, w, dim)`` tokens."""

    def __init__(self, dim: int, hparams: AFNOHParams):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.filter = AFNOFilter(
            dim,
            hparams.num_blocks,
            hparams.sparsity_threshold,
            hparams.hard_thresholding_fraction,
            hparams.hidden_size_factor,
            hparams.mode_truncation,
        )
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = max(int(dim * hparams.mlp_ratio), 1)
        self.mlp = TokenMLP(dim, hidden, dim, hparams.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, h, w, dim) -> (batch, h, w, dim)``."""
        x = x + self.filter(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class AFNO(nn.Module):
    """FourCastNet's AFNO backbone.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    grid : Grid
        Any rectangular grid; it is padded to whole patches (circularly in
        longitude when global, by edge replication otherwise) and cropped back.
    hparams : AFNOHParams
        Hyperparameters.

    Input ``(batch, in_channels, nlat, nlon)``, output ``(batch, out_channels, nlat, nlon)``.
    """

    def __init__(self, in_channels: int, out_channels: int, grid: Grid, hparams: AFNOHParams):
        super().__init__()
        self.grid, self.hparams, self.out_channels = grid, hparams, out_channels
        patch_h, patch_w = hparams.patch_size  # type: ignore[misc]  # a pair once validated
        self.patch = (patch_h, patch_w)
        self.padded = (
            math.ceil(grid.nlat / patch_h) * patch_h,
            math.ceil(grid.nlon / patch_w) * patch_w,
        )
        self.tokens = (self.padded[0] // patch_h, self.padded[1] // patch_w)
        dim = hparams.embed_dim
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=self.patch, stride=self.patch)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, *self.tokens, dim))
        self.blocks = nn.ModuleList(AFNOBlock(dim, hparams) for _ in range(hparams.depth))
        self.head = nn.Linear(dim, out_channels * patch_h * patch_w, bias=False)
        nn.init.trunc_normal_(self.head.weight, std=0.02)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        pad_lat = self.padded[0] - self.grid.nlat
        pad_lon = self.padded[1] - self.grid.nlon
        if pad_lon:
            mode = "circular" if self.grid.is_global else "replicate"
            x = F.pad(x, (0, pad_lon, 0, 0), mode=mode)
        if pad_lat:
            x = F.pad(x, (0, 0, 0, pad_lat), mode="replicate")
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, nlat, nlon) -> (batch, out_channels, nlat, nlon)``."""
        if x.shape[-2:] != self.grid.shape:
            raise ValueError(
                f"AFNO built for {self.grid.describe()} got a field of shape {tuple(x.shape[-2:])}"
            )
        batch = x.shape[0]
        # (batch, h, w, dim), made contiguous: the blocks work on the last axis
        x = self.patch_embed(self._pad(x)).permute(0, 2, 3, 1).contiguous()
        x = x + self.pos_embed.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.head(x)  # (batch, h, w, out * ph * pw)
        (h, w), (ph, pw) = self.tokens, self.patch
        x = x.reshape(batch, h, w, self.out_channels, ph, pw).permute(0, 3, 1, 4, 2, 5)
        x = x.reshape(batch, self.out_channels, h * ph, w * pw)
        return x[..., : self.grid.nlat, : self.grid.nlon]


def build(in_channels: int, out_channels: int, grid: Grid, hparams: AFNOHParams) -> AFNO:
    """Registry builder of :class:`AFNO`."""
    return AFNO(in_channels, out_channels, grid, hparams)


SPEC = ModelSpec(
    "afno",
    AFNOHParams,
    build,
    "adaptive Fourier neural operator (FourCastNet v1); global or regional grids",
)
