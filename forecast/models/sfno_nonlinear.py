"""SFNO with the non-linear spectral filter: the architecture of FourCastNet v2-small.

Bonev et al. 2023 (arXiv 2306.03838) describe two spectral filters for the
spherical Fourier neural operator: the linear one of :mod:`forecast.models.sfno`
(a channel-mixing weight per degree) and a *non-linear* one, a complex-valued
MLP applied to every spherical-harmonic coefficient. NVIDIA's published
FourCastNet v2-small uses the non-linear filter in this layout, for an input on
an ``nlat x nlon`` global grid::

    encoder      1x1 MLP in_channels -> embed_dim -> embed_dim (GELU, no output bias)
    pos_embed    learned field (1, embed_dim, nlat, nlon), added
    block 0      norm0 -> SHT (input grid) -> spectral MLP -> inverse SHT (inner grid)
                 -> norm1 -> MLP
    block i      norm0 -> SHT -> spectral MLP -> inverse SHT (inner grid)
                 + linear inner skip -> norm1 -> MLP -> + outer (identity) skip
    block L-1    norm0 -> SHT (inner grid) -> spectral MLP -> inverse SHT (input grid) -> norm1
    decoder      1x1 MLP embed_dim + in_channels (big skip) -> embed_dim -> out_channels

The inner grid is Legendre-Gauss with ``nlat // scale_factor x nlon // scale_factor``
points (floor, as the publisher does; for 721 x 1440 and ``scale_factor`` 6:
120 x 240). The first and last blocks change resolution and have no skips; the
last one has no MLP. The spectrum keeps ``lmax = mmax = min(int(h * f), int((w // 2 + 1) * f))``
degrees and orders (torch-harmonics' triangular truncation of the publisher's
request, ``h x w`` the inner grid, ``f`` the ``hard_thresholding_fraction``).

The spectral MLP: per coefficient ``a_lm`` (a complex vector over channels),
``spectral_layers`` complex linear layers ``embed_dim -> hidden -> ... -> hidden``
(``hidden = mlp_ratio * embed_dim``, no bias) each followed by a complex ReLU,
then a complex linear layer back to ``embed_dim``. ``complex_activation="real"``
(the publisher's) applies ReLU to the real part and leaves the imaginary part;
``"cartesian"`` applies it to both. Without bias the map sends zero to zero,
so the coefficients with ``m > l`` (identically zero in a real SHT) are
skipped: half the work of applying the MLP to the full ``lmax x mmax`` array.
Each complex product is one real matrix product on ``[re, im]`` rows.

The publisher scales its transforms by ``1e5`` and ``1e-5`` around the filter;
the filter is positively homogeneous (linear layers without bias and ReLU), so
that is the identity map and is left out here.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn
from torch_harmonics import InverseRealSHT, truncate_sht

from forecast.errors import GridError
from forecast.grid import Grid
from forecast.models.layers import ACTIVATIONS, make_norm, pointwise_linear, pointwise_stack
from forecast.models.registry import HParams, ModelSpec
from forecast.models.sfno import LearnedEmbedding, sht_pair


class SFNONonlinearHParams(HParams):
    """Hyperparameters of :class:`SFNONonlinear` (names as in FourCastNet v2 and makani).

    Defaults are those of the published FourCastNet v2-small.

    Attributes
    ----------
    embed_dim : int
        Channels inside the blocks.
    num_layers : int
        Number of blocks (the first and last change resolution).
    scale_factor : int
        The inner grid has ``nlat // scale_factor x nlon // scale_factor`` points.
    spectral_layers : int
        Hidden complex layers of the spectral MLP.
    mlp_ratio : float
        Hidden width of the spectral MLP and of each block's MLP relative to ``embed_dim``.
    hard_thresholding_fraction : float
        Fraction of the inner grid's degrees and orders kept, in (0, 1].
    activation : str
        Activation of the encoder, decoder and block MLPs.
    complex_activation : str
        ``"real"``: ReLU on the real part of each hidden coefficient; ``"cartesian"``:
        ReLU on the real and imaginary parts.
    normalization : str
        ``"instance_norm"`` (per channel over the grid, affine) or ``"none"``.
    pos_embed : str
        ``"learned"`` (a free field per channel and grid point) or ``"none"``.
    big_skip : bool
        Feed the input to the decoder as well.
    """

    embed_dim: PositiveInt = 256
    num_layers: PositiveInt = 12
    scale_factor: PositiveInt = 6
    spectral_layers: PositiveInt = 3
    mlp_ratio: Annotated[float, Field(gt=0.0)] = 2.0
    hard_thresholding_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    activation: Literal["gelu", "relu", "silu"] = "gelu"
    complex_activation: Literal["real", "cartesian"] = "real"
    normalization: Literal["instance_norm", "none"] = "instance_norm"
    pos_embed: Literal["learned", "none"] = "learned"
    big_skip: bool = True


def inner_shape(grid: Grid, scale_factor: int) -> tuple[int, int]:
    """``(nlat // scale_factor, nlon // scale_factor)``: the grid of the inner blocks."""
    return grid.nlat // scale_factor, grid.nlon // scale_factor


def spectral_modes(grid: Grid, hparams: SFNONonlinearHParams) -> int:
    """Degrees (and orders) kept: ``lmax = mmax``."""
    nlat, nlon = inner_shape(grid, hparams.scale_factor)
    fraction = hparams.hard_thresholding_fraction
    lmax, _ = truncate_sht(
        nlat, nlon, int(nlat * fraction), int((nlon // 2 + 1) * fraction), "legendre-gauss"
    )
    return lmax


def _complex_weight(rows: int, columns: int) -> nn.Parameter:
    """A complex ``(rows, columns)`` matrix stored as ``(rows, columns, 2)`` real and imaginary parts."""
    return nn.Parameter(0.02 * torch.randn(rows, columns, 2))


def _real_form(weight: torch.Tensor) -> torch.Tensor:
    """``(n, k, 2)`` complex weight -> ``(2n, 2k)`` real matrix acting on ``[re, im]`` rows.

    ``[x_re, x_im] @ [[W_re, W_im], [-W_im, W_re]] = [re(xW), im(xW)]``.
    """
    real, imag = weight[..., 0], weight[..., 1]
    return torch.cat([torch.cat([real, imag], dim=1), torch.cat([-imag, real], dim=1)], dim=0)


class SpectralMLPS2(nn.Module):
    """The non-linear spectral filter: SHT, a complex MLP per coefficient, inverse SHT.

    Parameters
    ----------
    forward_transform : torch_harmonics.RealSHT
        Transform of the input grid.
    inverse_transform : torch_harmonics.InverseRealSHT
        Transform to the output grid (same ``lmax``/``mmax``).
    embed_dim : int
        Channels in and out.
    hidden : int
        Width of the hidden complex layers.
    spectral_layers : int
        Number of hidden layers.
    complex_activation : str
        ``"real"`` or ``"cartesian"`` (see :class:`SFNONonlinearHParams`).

    Attributes
    ----------
    weights : nn.ParameterList
        ``(embed_dim, hidden, 2)``, then ``(hidden, hidden, 2)`` per further layer.
    weight_out : nn.Parameter
        ``(hidden, embed_dim, 2)``.
    """

    def __init__(
        self,
        forward_transform: nn.Module,
        inverse_transform: InverseRealSHT,
        embed_dim: int,
        hidden: int,
        spectral_layers: int,
        complex_activation: str,
    ):
        super().__init__()
        self.forward_transform = forward_transform
        self.inverse_transform = inverse_transform
        self.hidden = hidden
        self.complex_activation = complex_activation
        sizes = [embed_dim] + [hidden] * spectral_layers
        self.weights = nn.ParameterList(_complex_weight(a, b) for a, b in itertools.pairwise(sizes))
        self.weight_out = _complex_weight(hidden, embed_dim)
        lmax, mmax = int(inverse_transform.lmax), int(inverse_transform.mmax)
        degree, order = torch.tril_indices(lmax, mmax)  # the coefficients with m <= l
        self.register_buffer("modes", degree * mmax + order, persistent=False)

    def _activate(self, rows: torch.Tensor) -> torch.Tensor:
        """Complex ReLU on ``(n, 2 * hidden)`` ``[re, im]`` rows."""
        if self.complex_activation == "cartesian":
            return F.relu(rows)
        return torch.cat([F.relu(rows[:, : self.hidden]), rows[:, self.hidden :]], dim=1)

    def mlp(self, rows: torch.Tensor) -> torch.Tensor:
        """The complex MLP on ``(n, 2 * embed_dim)`` ``[re, im]`` rows -> ``(n, 2 * embed_dim)``."""
        for weight in self.weights:
            rows = self._activate(rows @ _real_form(weight).to(rows.dtype))
        return rows @ _real_form(self.weight_out).to(rows.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, embed, lat_in, lon_in) -> (batch, embed, lat_out, lon_out)``, float32."""
        batch, channels = x.shape[:2]
        with torch.autocast(device_type=x.device.type, enabled=False):
            coefficients = self.forward_transform(x.float())  # (batch, embed, lmax, mmax) complex
        lmax, mmax = coefficients.shape[-2:]
        kept = coefficients.reshape(batch, channels, lmax * mmax).index_select(-1, self.modes)
        kept = kept.transpose(1, 2)  # (batch, modes, embed)
        rows = torch.cat([kept.real, kept.imag], dim=-1).reshape(-1, 2 * channels)
        rows = self.mlp(rows).float().reshape(batch, -1, 2, channels)
        mixed = torch.complex(rows[:, :, 0], rows[:, :, 1]).transpose(1, 2)  # (batch, embed, modes)
        full = coefficients.new_zeros(batch, channels, lmax * mmax)
        full.index_copy_(-1, self.modes, mixed.contiguous())
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.inverse_transform(full.reshape(batch, channels, lmax, mmax))


class SFNONonlinearBlock(nn.Module):
    """One block: ``norm0``, spectral MLP filter, optional inner skip, ``norm1``, optional MLP and outer skip.

    ``(batch, embed, lat_in, lon_in) -> (batch, embed, lat_out, lon_out)``; the
    skips exist only when input and output grids are the same (inner blocks).
    """

    def __init__(
        self,
        forward_transform: nn.Module,
        inverse_transform: InverseRealSHT,
        dim: int,
        hparams: SFNONonlinearHParams,
        skips: bool,
        mlp: bool,
    ):
        super().__init__()
        hidden = int(dim * hparams.mlp_ratio)
        self.norm0 = make_norm(hparams.normalization, dim)
        self.filter = SpectralMLPS2(
            forward_transform,
            inverse_transform,
            dim,
            hidden,
            hparams.spectral_layers,
            hparams.complex_activation,
        )
        self.inner_skip = pointwise_linear(dim, dim, gain=0.5, bias=True) if skips else None
        self.norm1 = make_norm(hparams.normalization, dim)
        self.mlp = (
            nn.Sequential(
                pointwise_linear(dim, hidden, gain=2.0, bias=True),
                ACTIVATIONS[hparams.activation](),
                pointwise_linear(hidden, dim, gain=0.5, bias=True),
            )
            if mlp
            else None
        )
        self.outer_skip = skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, embed, lat_in, lon_in) -> (batch, embed, lat_out, lon_out)``."""
        y = self.filter(self.norm0(x)).to(x.dtype)
        if self.inner_skip is not None:
            y = y + self.inner_skip(x)
        y = self.norm1(y)
        if self.mlp is not None:
            y = self.mlp(y)
        if self.outer_skip:
            y = y + x
        return y


class SFNONonlinear(nn.Module):
    """SFNO with the non-linear spectral filter (FourCastNet v2-small).

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts.
    grid : Grid
        A global grid (equiangular or legendre-gauss); FourCastNet v2-small uses
        the 721 x 1440 equiangular grid.
    hparams : SFNONonlinearHParams
        Hyperparameters.

    Input ``(batch, in_channels, nlat, nlon)``, output ``(batch, out_channels, nlat, nlon)``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, grid: Grid, hparams: SFNONonlinearHParams
    ):
        super().__init__()
        if not grid.is_global:
            raise GridError(
                f"the non-linear SFNO needs a global equiangular or legendre-gauss grid, got {grid.describe()}",
                hint="use the afno or fno model for regional grids",
            )
        inner = inner_shape(grid, hparams.scale_factor)
        if min(inner) < 2:
            raise GridError(
                f"scale_factor {hparams.scale_factor} leaves an inner grid of {inner[0]}x{inner[1]} points for {grid.describe()}",
                hint="use a smaller scale_factor or a finer grid",
            )
        self.grid, self.hparams, self.inner_shape = grid, hparams, inner
        self.lmax = spectral_modes(grid, hparams)
        dim = hparams.embed_dim
        outer_sht, outer_isht = sht_pair(*grid.shape, grid.kind, self.lmax)
        inner_sht, inner_isht = sht_pair(*inner, "legendre-gauss", self.lmax)
        self.encoder = pointwise_stack(in_channels, dim, dim, 1, hparams.activation)
        self.pos_embed = LearnedEmbedding(grid, dim) if hparams.pos_embed == "learned" else None
        last = hparams.num_layers - 1
        self.blocks = nn.ModuleList(
            SFNONonlinearBlock(
                outer_sht if i == 0 else inner_sht,
                outer_isht if i == last else inner_isht,
                dim,
                hparams,
                skips=0 < i < last,
                mlp=i < last,
            )
            for i in range(hparams.num_layers)
        )
        decoder_in = dim + (in_channels if hparams.big_skip else 0)
        self.decoder = pointwise_stack(decoder_in, dim, out_channels, 1, hparams.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, in_channels, nlat, nlon) -> (batch, out_channels, nlat, nlon)``."""
        if x.shape[-2:] != self.grid.shape:
            raise GridError(
                f"non-linear SFNO built for {self.grid.describe()} got a field of shape {tuple(x.shape[-2:])}"
            )
        inputs = x
        x = self.encoder(x)
        if self.pos_embed is not None:
            x = self.pos_embed(x)
        for block in self.blocks:
            x = block(x)
        if self.hparams.big_skip:
            x = torch.cat([x, inputs.to(x.dtype)], dim=1)
        return self.decoder(x)


def build(
    in_channels: int, out_channels: int, grid: Grid, hparams: SFNONonlinearHParams
) -> SFNONonlinear:
    """Registry builder of :class:`SFNONonlinear`."""
    return SFNONonlinear(in_channels, out_channels, grid, hparams)


SPEC = ModelSpec(
    "sfno-nonlinear",
    SFNONonlinearHParams,
    build,
    "SFNO with the non-linear spectral filter (FourCastNet v2-small); global grids only",
    global_only=True,
)
