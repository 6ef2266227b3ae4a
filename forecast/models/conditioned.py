"""An SFNO conditioned on a time within a horizon, with dropout that can be kept on to sample.

:class:`TimeConditionedSFNO` is the network of both halves of DYffusion
(Rühling Cachay et al. 2023, 2024; :mod:`forecast.steppers.dyffusion`): the
plain :class:`~forecast.models.sfno.SFNO` with its conditioning hook filled
in. The time ``tau`` (the interpolation time ``i`` divided by the horizon
``h``, in [0, 1]) is embedded by sinusoids of ``frequencies`` octaves and a
two-layer MLP; in every block a learned linear map of that embedding gives a
per-channel scale ``s`` and shift ``b`` of the block's normalised spectral
features, ``y -> y * (1 + tanh s) + tanh b`` (initialised to zero, so an
untrained model starts as the unconditioned SFNO), followed by dropout. The
``tanh`` bounds keep the features from collapsing to constants: unbounded,
at the demo's learning rate (5e-3), the scales and shifts grew within 40
steps until every block's output was flat in space and the gradients
vanished (the interpolator stayed at the linear interpolation). The last
layer of the decoder starts at zero too: the network predicts a residual
around a strong baseline, and starting from that baseline (rather than from a
random residual the first steps would rush to shrink) is what keeps the
spectral path alive.

Dropout (:class:`MemberDropout`) drops single feature values (``masks=
"element"``, as ``torch.nn.Dropout``), whole feature maps of a row
(``masks="channel"``, as ``torch.nn.Dropout2d``) or a row's whole block
features (``masks="block"``). An element mask is white noise on the grid, so
it perturbs every spherical-harmonic degree alike; a channel mask removes a
whole feature map, and its perturbation has the features' own spatial
scales. A block mask is stochastic depth of the spectral path (Huang et al.
2016; the drop-path of the Spherical DYffusion interpolator): a dropped
block of a row passes its skip path and the MLP of zero features (a
constant) on, and the kept blocks' features are scaled by ``1 / (1 - p)``.
It is on in training and off in eval mode, unless the call passes
generators: one ``torch.Generator`` draws the masks of the whole batch
(training, so that a resumed run draws exactly the masks of an uninterrupted
one, whatever else used torch's global generator), one per batch row draws
each row's masks from its own generator (sampling: a sample depends only on
its row's seed, never on which other rows share the batch, so an ensemble is
the same whatever the batch size).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
from torch import nn

from forecast.grid import Grid
from forecast.models.sfno import SFNO, SFNOHParams

__all__ = [
    "DROPOUT_MASKS",
    "DropoutMasks",
    "Generators",
    "MemberDropout",
    "TimeConditionedSFNO",
    "time_features",
]

#: What one dropout mask value covers: a single feature value, a row's whole feature map, or
#: a row's whole block features.
DropoutMasks = Literal["element", "channel", "block"]
DROPOUT_MASKS: tuple[str, ...] = get_args(DropoutMasks)

#: torch's own dropout of the mask kinds it has, for masks from its global generator.
_TORCH_DROPOUT = {"element": nn.functional.dropout, "channel": nn.functional.dropout2d}

#: Where dropout masks come from: torch's global generator (None), one generator for the
#: batch, or one per batch row.
Generators = torch.Generator | Sequence[torch.Generator] | None


class MemberDropout(nn.Module):
    """Dropout of probability ``p`` whose masks may come from one generator per batch row.

    Parameters
    ----------
    p : float
        Probability of zeroing an element, in [0, 1).
    masks : {"element", "channel", "block"}
        What one mask value covers: one feature value, the whole map
        ``x[b, c]`` of a channel of a row, or a row's whole ``x[b]``.
    """

    def __init__(self, p: float, masks: DropoutMasks = "element"):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must lie in [0, 1), got {p}")
        if masks not in DROPOUT_MASKS:
            raise ValueError(f"dropout masks must be one of {DROPOUT_MASKS}, got {masks!r}")
        self.p = float(p)
        self.masks = masks

    def forward(self, x: torch.Tensor, generators: Generators = None) -> torch.Tensor:
        """Drop elements of ``x`` ``(batch, ...)`` and rescale by ``1 / (1 - p)``.

        With one generator (on ``x``'s device) the whole batch's masks are
        drawn from it; with a sequence of them (one per row) the masks of row
        ``b`` are drawn from ``generators[b]``; either way whatever the mode.
        Without, masks come from torch's global generator in training mode
        (``torch.nn.functional.dropout`` or ``dropout2d`` for element and
        channel masks), and eval mode is the identity.
        """
        if self.p == 0.0 or (generators is None and not self.training):
            return x
        if generators is None and self.masks in _TORCH_DROPOUT:
            return _TORCH_DROPOUT[self.masks](x, self.p, training=True)
        # one mask value per element, per (row, channel) or per row, broadcast over the rest
        kept = {"element": x.ndim, "channel": 2, "block": 1}[self.masks]
        shape = (*x.shape[:kept], *(1,) * (x.ndim - kept))
        if generators is None:  # block masks in training: torch has no per-row dropout
            keep = torch.rand(shape, device=x.device) >= self.p
        elif isinstance(generators, torch.Generator):
            keep = torch.rand(shape, generator=generators, device=generators.device) >= self.p
        else:
            if len(generators) != x.shape[0]:
                raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]}")
            keep = torch.stack(
                [
                    torch.rand(shape[1:], generator=generator, device=x.device) >= self.p
                    for generator in generators
                ]
            )
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, masks={self.masks}"


def time_features(tau: torch.Tensor, frequencies: int) -> torch.Tensor:
    """Sinusoids of ``tau`` ``(batch,)`` in [0, 1]: ``(batch, 2 * frequencies)``.

    ``sin`` and ``cos`` of ``pi * 2**k * tau`` for ``k = 0 .. frequencies - 1``.
    """
    octaves = math.pi * 2.0 ** torch.arange(frequencies, device=tau.device, dtype=torch.float32)
    angles = tau.to(torch.float32)[:, None] * octaves[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeConditionedSFNO(nn.Module):
    """An SFNO whose blocks are scaled and shifted by an embedding of a time in [0, 1].

    Parameters
    ----------
    in_channels, out_channels : int
        Channel counts of input and output.
    grid : Grid
        A global grid.
    hparams : SFNOHParams
        Hyperparameters of the SFNO.
    dropout : float
        Dropout of the modulated block features, in [0, 1).
    dropout_masks : {"element", "channel", "block"}
        What one dropout mask value covers (see :class:`MemberDropout`).
    frequencies : int
        Octaves of the sinusoidal time features.

    Input ``(batch, in_channels, nlat, nlon)`` and ``tau`` ``(batch,)``; output
    ``(batch, out_channels, nlat, nlon)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        grid: Grid,
        hparams: SFNOHParams,
        dropout: float = 0.0,
        frequencies: int = 8,
        dropout_masks: DropoutMasks = "element",
    ):
        super().__init__()
        self.sfno = SFNO(in_channels, out_channels, grid, hparams)
        # a residual around a strong baseline: start from a zero output (the baseline itself)
        output_layer = [m for m in self.sfno.decoder.modules() if isinstance(m, nn.Conv2d)][-1]
        nn.init.zeros_(output_layer.weight)
        dim = hparams.embed_dim
        self.frequencies = int(frequencies)
        self.time_embedding = nn.Sequential(
            nn.Linear(2 * self.frequencies, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, 2 * dim)
        )
        self.modulations = nn.ModuleList()
        for _ in self.sfno.blocks:
            layer = nn.Linear(2 * dim, 2 * dim)
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
            self.modulations.append(nn.Sequential(nn.SiLU(), layer))
        self.dropout = MemberDropout(dropout, dropout_masks)

    def forward(
        self,
        x: torch.Tensor,
        tau: torch.Tensor,
        generators: Generators = None,
    ) -> torch.Tensor:
        """``(batch, in, lat, lon)`` at times ``tau`` ``(batch,)`` -> ``(batch, out, lat, lon)``.

        ``generators`` (one, or one per row) draw the dropout masks; see :class:`MemberDropout`.
        """
        if tau.shape != (x.shape[0],):
            raise ValueError(f"tau has shape {tuple(tau.shape)}, expected ({x.shape[0]},)")
        embedding = self.time_embedding(time_features(tau, self.frequencies).to(x.dtype))

        def hook(index: int, features: torch.Tensor) -> torch.Tensor:
            scale, shift = self.modulations[index](embedding).to(features.dtype).chunk(2, dim=1)
            scale, shift = torch.tanh(scale), torch.tanh(shift)  # bounded: no collapse to constants
            features = features * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]
            return self.dropout(features, generators)

        return self.sfno(x, hook)
