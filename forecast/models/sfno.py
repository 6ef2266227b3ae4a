"""Spherical Fourier neural operator (Bonev et al. 2023) on torch-harmonics' transforms.

Layout, for an input on a global grid of ``nlat x nlon`` points::

    encoder      pointwise MLP, in_channels -> embed_dim
    pos_embed    optional: learned field, or spherical harmonics up to a degree
    block 0      SHT on the input grid -> spectral conv -> inverse SHT on the inner grid
    block 1..    SHT / inverse SHT on the inner grid (``scale_factor`` times coarser)
    block L-1    SHT on the inner grid -> inverse SHT on the input grid
    decoder      pointwise MLP, embed_dim (+ in_channels with ``big_skip``) -> out_channels

Each block is: spectral convolution (a complex channel-mixing weight per
spherical-harmonic degree ``l``, the same for every order ``m``, so the kernel
is isotropic and the block commutes with rotations), normalisation, optional
inner skip, pointwise MLP, and the outer skip. The first and last blocks
resample the skip path spectrally (inverse transform of the same
coefficients), so no separate down/up-sampling layer is needed.

The spectrum is truncated at ``lmax = mmax = floor(min(inner_nlat, inner_nlon // 2)
* hard_thresholding_fraction)``. Without a positional embedding the model is
equivariant to rotations in longitude by whole grid columns (of the inner
grid when ``scale_factor > 1``). The learned weights do not depend on the grid,
so :meth:`SFNO.with_grid` evaluates the same operator at another resolution.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveInt
from torch import nn
from torch_harmonics import InverseRealSHT, RealSHT

from forecast.errors import GridError
from forecast.grid import Grid
from forecast.models.layers import PointwiseMLP, make_norm, pointwise_linear, pointwise_stack
from forecast.models.registry import HParams, ModelSpec


class SFNOHParams(HParams):
    """Hyperparameters of :class:`SFNO` (names as in torch-harmonics and makani).

    Attributes
    ----------
    embed_dim : int
        Channels inside the blocks.
    num_layers : int
        Number of SFNO blocks.
    scale_factor : int
        The inner blocks run on a grid ``scale_factor`` times coarser in each direction.
    inner_grid : str
        Grid of the inner blocks: ``"auto"`` (the input grid's kind when
        ``scale_factor == 1``, Legendre-Gauss otherwise), ``"equiangular"`` or ``"legendre-gauss"``.
    hard_thresholding_fraction : float
        Fraction of the spherical-harmonic degrees kept, in (0, 1].
    mlp_ratio : float
        Hidden size of each block's MLP relative to ``embed_dim``.
    activation : str
        ``"gelu"``, ``"relu"`` or ``"silu"``.
    normalization : str
        ``"instance_norm"``, ``"layer_norm"`` (over channels) or ``"none"``.
    inner_skip, outer_skip : str
        ``"none"``, ``"identity"`` or ``"linear"`` (a 1x1 convolution).
    encoder_layers : int
        Hidden layers of the encoder and decoder MLPs (0: a single linear map).
    pos_embed : str
        ``"none"`` (default; keeps longitude equivariance), ``"learned"`` (a
        free field per channel and grid point) or ``"spherical_harmonics"``
        (real spherical harmonics up to ``pos_embed_degree``, linearly projected).
    pos_embed_degree : int
        Highest degree of the spherical-harmonic location encoding.
    big_skip : bool
        Feed the input to the decoder as well (a long residual path).
    """

    embed_dim: PositiveInt = 256
    num_layers: PositiveInt = 4
    scale_factor: PositiveInt = 1
    inner_grid: Literal["auto", "equiangular", "legendre-gauss"] = "auto"
    hard_thresholding_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    mlp_ratio: Annotated[float, Field(gt=0.0)] = 2.0
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    normalization: Literal["instance_norm", "layer_norm", "none"] = "instance_norm"
    inner_skip: Literal["none", "identity", "linear"] = "none"
    outer_skip: Literal["none", "identity", "linear"] = "identity"
    encoder_layers: NonNegativeInt = 1
    pos_embed: Literal["none", "learned", "spherical_harmonics"] = "none"
    pos_embed_degree: PositiveInt = 4
    big_skip: bool = False


def inner_shape(grid: Grid, scale_factor: int) -> tuple[int, int]:
    """Shape ``(nlat, nlon)`` of the grid the inner blocks run on."""
    if scale_factor == 1:
        return grid.shape
    return max(math.ceil(grid.nlat / scale_factor), 2), max(grid.nlon // scale_factor, 2)


def spectral_truncation(grid: Grid, hparams: SFNOHParams) -> int:
    """Number of degrees (and orders) kept: ``lmax = mmax``."""
    nlat, nlon = inner_shape(grid, hparams.scale_factor)
    return max(int(min(nlat, nlon // 2) * hparams.hard_thresholding_fraction), 1)


class _ShapeOnlyTransform(nn.Module):
    """Stand-in for a spherical-harmonic transform when building on the meta device.

    Only the sizes are known; there is nothing to compute on meta tensors, and
    precomputing Legendre weights at 0.25 degrees would take many seconds.
    """

    def __init__(self, nlat: int, nlon: int, lmax: int, mmax: int):
        super().__init__()
        self.nlat, self.nlon, self.lmax, self.mmax = nlat, nlon, lmax, mmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "this SFNO was built on the meta device: build it on a real device to run it"
        )


def sht_pair(nlat: int, nlon: int, kind: str, lmax: int) -> tuple[nn.Module, nn.Module]:
    """Forward and inverse real SHT of a grid (shape-only stand-ins on the meta device)."""
    if torch.empty(0).device.type == "meta":
        return _ShapeOnlyTransform(nlat, nlon, lmax, lmax), _ShapeOnlyTransform(
            nlat, nlon, lmax, lmax
        )
    forward = RealSHT(nlat, nlon, lmax=lmax, mmax=lmax, grid=kind).float()
    inverse = InverseRealSHT(nlat, nlon, lmax=lmax, mmax=lmax, grid=kind).float()
    return forward, inverse


class SpectralConvS2(nn.Module):
    """Spectral convolution on the sphere (Driscoll-Healy): one complex weight per degree.

    ``y = ISHT(W_l . SHT(x))`` with ``W`` of shape ``(out, in, lmax)``: the same
    channel mixing for every order ``m`` of a degree ``l``. Forward and
    inverse transforms may live on different grids (resampling). The
    transforms run in float32 even under autocast.

    Parameters
    ----------
    forward_transform : RealSHT
        Transform of the input grid.
    inverse_transform : InverseRealSHT
        Transform to the output grid; same ``lmax``/``mmax``.
    in_channels, out_channels : int
        Channel sizes.
    gain : float
        Variance gain of the weight initialisation.
    """

    def __init__(
        self,
        forward_transform: RealSHT,
        inverse_transform: InverseRealSHT,
        in_channels: int,
        out_channels: int,
        gain: float = 2.0,
    ):
        super().__init__()
        self.forward_transform = forward_transform
        self.inverse_transform = inverse_transform
        self.resamples = (forward_transform.nlat, forward_transform.nlon) != (
            inverse_transform.nlat,
            inverse_transform.nlon,
        )
        lmax = inverse_transform.lmax
        # complex weights stored as a real (..., 2) view: plain float parameters for optimisers and DDP
        std = math.sqrt(gain / in_channels / 2.0)
        self.weight = nn.Parameter(std * torch.randn(out_channels, in_channels, lmax, 2))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolve ``x`` (batch, in, lat_in, lon_in).

        Returns
        -------
        y : torch.Tensor
            ``(batch, out, lat_out, lon_out)``, float32.
        skip : torch.Tensor
            ``x`` on the output grid (spectrally resampled when the grids differ), float32.
        """
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            coefficients = self.forward_transform(x)  # (batch, in, lmax, mmax) complex
            weight = torch.view_as_complex(self.weight.float())
            mixed = torch.einsum("bilm,oil->bolm", coefficients, weight)
            y = self.inverse_transform(mixed)
            skip = self.inverse_transform(coefficients) if self.resamples else x
        return y, skip


class SFNOBlock(nn.Module):
    """One SFNO block: spectral convolution, normalisation, skips and pointwise MLP.

    ``(batch, embed, lat_in, lon_in) -> (batch, embed, lat_out, lon_out)``.
    """

    def __init__(
        self,
        forward_transform: RealSHT,
        inverse_transform: InverseRealSHT,
        dim: int,
        hparams: SFNOHParams,
    ):
        super().__init__()
        gain = 1.0 if hparams.inner_skip != "none" else 2.0
        self.filter = SpectralConvS2(forward_transform, inverse_transform, dim, dim, gain=gain)
        self.norm = make_norm(hparams.normalization, dim)
        self.inner_skip = self._skip(hparams.inner_skip, dim)
        mlp_gain = 0.5 if hparams.outer_skip != "none" else 1.0
        self.mlp = PointwiseMLP(
            dim, max(int(dim * hparams.mlp_ratio), 1), dim, hparams.activation, gain=mlp_gain
        )
        self.outer_skip = self._skip(hparams.outer_skip, dim)

    @staticmethod
    def _skip(kind: str, dim: int) -> nn.Module | None:
        if kind == "linear":
            return pointwise_linear(dim, dim, gain=0.5)
        if kind == "identity":
            return nn.Identity()
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, embed, lat_in, lon_in) -> (batch, embed, lat_out, lon_out)``."""
        dtype = x.dtype
        y, skip = self.filter(x)
        y, skip = y.to(dtype), skip.to(dtype)
        y = self.norm(y)
        if self.inner_skip is not None:
            y = y + self.inner_skip(skip)
        y = self.mlp(y)
        if self.outer_skip is not None:
            y = y + self.outer_skip(skip)
        return y


class SphericalHarmonicEmbedding(nn.Module):
    """Location encoding by real spherical harmonics up to ``degree``, projected to ``dim`` channels.

    The ``(degree + 1)**2`` functions (``P_l^m cos(m lon)`` and ``P_l^m sin(m lon)``,
    scaled to unit mean square) are fixed buffers; the projection is learned.
    """

    def __init__(self, grid: Grid, degree: int, dim: int):
        super().__init__()
        modes = degree + 1
        isht = InverseRealSHT(grid.nlat, grid.nlon, lmax=modes, mmax=modes, grid=grid.kind)
        coefficients = []
        for degree_l in range(modes):
            for order in range(degree_l + 1):
                for part in ((1.0, 0.0), (0.0, 1.0)) if order > 0 else ((1.0, 0.0),):
                    c = torch.zeros(modes, modes, dtype=torch.complex64)
                    # the real transform doubles orders m > 0: halve their power for unit mean square
                    c[degree_l, order] = complex(*part) * (math.sqrt(0.5) if order > 0 else 1.0)  # type: ignore[assignment]
                    coefficients.append(c)
        functions = isht(torch.stack(coefficients)) * math.sqrt(4.0 * math.pi)
        self.register_buffer(
            "functions", functions.unsqueeze(0), persistent=False
        )  # (1, (degree+1)**2, lat, lon)
        self.project = pointwise_linear(functions.shape[0], dim, gain=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the embedding to ``x`` (batch, dim, lat, lon)."""
        return x + self.project(self.functions.to(x.dtype))


class LearnedEmbedding(nn.Module):
    """A learned field per channel and grid point, added to the encoded input."""

    def __init__(self, grid: Grid, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(0.02 * torch.randn(1, dim, grid.nlat, grid.nlon))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Add the embedding to ``x`` (batch, dim, lat, lon)."""
        return x + self.embedding.to(x.dtype)


class SFNO(nn.Module):
    """Spherical Fourier neural operator.

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts of input and output.
    grid : Grid
        A global grid (equiangular or legendre-gauss).
    hparams : SFNOHParams
        Hyperparameters.
    lmax : int, optional
        Spectral truncation; default from :func:`spectral_truncation`
        (:meth:`with_grid` passes the original one).

    Input ``(batch, in_channels, nlat, nlon)``, output ``(batch, out_channels, nlat, nlon)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: Grid,
        hparams: SFNOHParams,
        lmax: int | None = None,
    ):
        super().__init__()
        if not grid.is_global:
            raise GridError(
                f"SFNO needs a global equiangular or legendre-gauss grid, got {grid.describe()}",
                hint="use the afno or fno model for regional grids",
            )
        self.in_channels, self.out_channels, self.grid, self.hparams = (
            in_channels,
            out_channels,
            grid,
            hparams,
        )
        limit = spectral_truncation(
            grid, hparams.model_copy(update={"hard_thresholding_fraction": 1.0})
        )
        self.lmax = spectral_truncation(grid, hparams) if lmax is None else lmax
        if self.lmax > limit:
            raise GridError(
                f"grid {grid.describe()} resolves degrees below {limit}, but this SFNO uses {self.lmax}",
                hint="evaluate it on a finer grid",
            )
        self.inner_shape = inner_shape(grid, hparams.scale_factor)
        inner_kind: str = hparams.inner_grid
        if inner_kind == "auto":
            inner_kind = grid.kind if hparams.scale_factor == 1 else "legendre-gauss"
        dim = hparams.embed_dim
        outer_sht, outer_isht = sht_pair(*grid.shape, grid.kind, self.lmax)
        if self.inner_shape == grid.shape and inner_kind == grid.kind:
            inner_sht, inner_isht = outer_sht, outer_isht
        else:
            inner_sht, inner_isht = sht_pair(*self.inner_shape, inner_kind, self.lmax)

        self.encoder = pointwise_stack(
            in_channels, dim, dim, hparams.encoder_layers, hparams.activation
        )
        if hparams.pos_embed == "learned":
            self.pos_embed: nn.Module = LearnedEmbedding(grid, dim)
        elif hparams.pos_embed == "spherical_harmonics":
            self.pos_embed = SphericalHarmonicEmbedding(grid, hparams.pos_embed_degree, dim)
        else:
            self.pos_embed = nn.Identity()
        last = hparams.num_layers - 1
        self.blocks = nn.ModuleList(
            SFNOBlock(
                outer_sht if i == 0 else inner_sht,
                outer_isht if i == last else inner_isht,
                dim,
                hparams,
            )
            for i in range(hparams.num_layers)
        )
        decoder_in = dim + (in_channels if hparams.big_skip else 0)
        self.decoder = pointwise_stack(
            decoder_in, dim, out_channels, hparams.encoder_layers, hparams.activation
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, nlat, nlon) -> (batch, out_channels, nlat, nlon)``."""
        if x.shape[-2:] != self.grid.shape:
            raise GridError(
                f"SFNO built for {self.grid.describe()} got a field of shape {tuple(x.shape[-2:])}",
                hint="use model.with_grid(grid) to evaluate it at another resolution",
            )
        inputs = x
        x = self.pos_embed(self.encoder(x))
        for block in self.blocks:
            x = block(x)
        if self.hparams.big_skip:
            x = torch.cat([x, inputs.to(x.dtype)], dim=1)
        return self.decoder(x)

    def with_grid(self, grid: Grid) -> SFNO:
        """The same operator (shared weights, same truncation) on another global grid.

        Raises
        ------
        GridError
            If the model has a learned positional embedding (tied to its grid)
            or the new grid cannot resolve the truncation.
        """
        if self.hparams.pos_embed == "learned":
            raise GridError(
                "an SFNO with a learned positional embedding is tied to its grid",
                hint="use pos_embed='spherical_harmonics' or 'none'",
            )
        other = SFNO(self.in_channels, self.out_channels, grid, self.hparams, lmax=self.lmax)
        other.load_state_dict(self.state_dict())
        device = next(self.parameters()).device
        return other.to(device)


def build(in_channels: int, out_channels: int, grid: Grid, hparams: SFNOHParams) -> SFNO:
    """Registry builder of :class:`SFNO`."""
    return SFNO(in_channels, out_channels, grid, hparams)


SPEC = ModelSpec(
    "sfno",
    SFNOHParams,
    build,
    "spherical Fourier neural operator (torch-harmonics); global grids only",
    global_only=True,
)
