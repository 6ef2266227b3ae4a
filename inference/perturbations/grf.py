"""Gaussian random fields on the sphere (torch-harmonics' ``GaussianRandomFieldS2``).

Spatially correlated noise with a Matérn-like spectrum
``C_l ~ (l (l + 1) + tau**2) ** -alpha`` on the unit sphere; the correlation
length is about ``1 / tau`` radii, so ``tau = earth radius / length scale``.
Each member's field is scaled to an area-weighted RMS of one, then by the
channel amplitude.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Annotated, cast

import numpy as np
import torch
from pydantic import Field
from torch_harmonics import InverseRealSHT
from torch_harmonics.random_fields import GaussianRandomFieldS2

from forecast.errors import GridError
from forecast.grid import Grid
from inference.perturbations.base import (
    BasePerturbation,
    PerturbationOptions,
    area_rms,
    member_generator,
)

#: Mean radius of the Earth in km.
EARTH_RADIUS_KM = 6371.0


class GRFPerturbation(BasePerturbation):
    """Gaussian random fields with correlation length ``length_scale_km``.

    Parameters
    ----------
    amplitude : numpy.ndarray
        Shape ``(channel,)``, physical units.
    grid : Grid
        A global grid (equiangular or legendre-gauss).
    seed : int
        Seed of the ensemble.
    options : GRFPerturbation.Options, optional
        ``length_scale_km`` and ``alpha``.
    """

    name = "grf"

    class Options(PerturbationOptions):
        """Options of grf perturbations.

        Attributes
        ----------
        length_scale_km : float
            Correlation length of the fields, km.
        alpha : float
            Spectral exponent; larger is smoother.
        """

        length_scale_km: Annotated[float, Field(gt=0)] = 1000.0
        alpha: Annotated[float, Field(gt=0)] = 2.0

    def __init__(
        self,
        amplitude: np.ndarray,
        grid: Grid,
        seed: int = 0,
        options: PerturbationOptions | None = None,
    ):
        super().__init__(amplitude, grid, seed, options)
        if not grid.is_global:
            raise GridError(
                f"grf perturbations need a global grid, not {grid.describe()}",
                hint="use --perturbation gaussian",
            )
        options = cast(GRFPerturbation.Options, self.options)
        length_scale_km, alpha = options.length_scale_km, options.alpha
        self.length_scale_km = float(length_scale_km)
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # torch-harmonics' note on its default truncation
            field = GaussianRandomFieldS2(
                grid.nlat,
                alpha=alpha,
                tau=EARTH_RADIUS_KM / length_scale_km,
                grid=grid.kind,
                dtype=torch.float32,
            )
            if grid.nlon != 2 * grid.nlat:
                lmax = field.isht.lmax
                mmax = min(field.isht.mmax, grid.nlon // 2 + 1)
                field.isht = InverseRealSHT(
                    grid.nlat, grid.nlon, lmax=lmax, mmax=mmax, grid=grid.kind, norm="backward"
                )
                field.sqrt_eig = field.sqrt_eig[..., :mmax].contiguous()
        self.field = field
        self.weights = torch.as_tensor(grid.area_weights(), dtype=torch.float32)

    def noise(
        self, init_labels: Sequence[str], members: Sequence[int] | np.ndarray, channels: int
    ) -> torch.Tensor:
        lmax, mmax = self.field.isht.lmax, self.field.isht.mmax
        xi = torch.stack(
            [
                torch.randn(
                    (channels, lmax, mmax, 2), generator=member_generator(self.seed, label, m)
                )
                for label, m in zip(init_labels, members, strict=True)
            ]
        )
        with torch.no_grad():
            fields = self.field(
                len(members), xi=torch.view_as_complex(xi)
            )  # (batch, channel, lat, lon)
        return fields / area_rms(fields, self.weights)[..., None, None].clamp_min(1e-12)
