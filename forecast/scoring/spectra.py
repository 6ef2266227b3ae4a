"""Power spectra of fields: spherical-harmonic (torch-harmonics' SHT) or zonal.

Blurring — the loss of small-scale variance that MSE-trained models show as
lead time grows — is seen by comparing the power spectrum of a forecast
with that of the truth (WeatherBench2 plots zonal energy spectra for the
same purpose). On a global grid the spectrum is by total spherical-harmonic
wavenumber ``l``; on a regional grid, by zonal wavenumber ``k`` along each
latitude circle, area-averaged over latitudes.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from forecast.grid import Grid


@functools.lru_cache(maxsize=8)
def _sht(nlat: int, nlon: int, kind: str):
    from torch_harmonics import RealSHT

    # torch-harmonics' own truncation (explicit, so that it does not warn):
    # Gaussian grids resolve l < nlat, equiangular grids l < (nlat + 1) // 2.
    lmax = nlat if kind == "legendre-gauss" else (nlat + 1) // 2
    return RealSHT(nlat, nlon, lmax=lmax, mmax=min(lmax, nlon // 2 + 1), grid=kind, norm="ortho")


def spectrum_size(grid: Grid) -> int:
    """Number of wavenumbers :func:`power_spectrum` returns on ``grid``."""
    if grid.is_global:
        return _sht(grid.nlat, grid.nlon, grid.kind).lmax
    return grid.nlon // 2 + 1


def power_spectrum(
    fields: np.ndarray, grid: Grid, area_weights: np.ndarray | None = None
) -> np.ndarray:
    """Power of ``fields`` by wavenumber; the powers sum to the area-mean square.

    Parameters
    ----------
    fields : numpy.ndarray
        ``(..., latitude, longitude)`` on ``grid`` (latitude descending).
    grid : Grid
        Global grids use the spherical-harmonic transform (orthonormal, so
        ``P(l) = (|c_l0|^2 + 2 sum_{m>0} |c_lm|^2) / (4 pi)``); regional grids
        the zonal FFT, ``P(k) = sum_lat w(lat) c_k |F_k(lat)|^2 / nlon^2`` with
        ``c_0 = 1`` and ``c_k = 2`` for ``k > 0`` (1 at the Nyquist wavenumber).
    area_weights : numpy.ndarray, optional
        Latitude weights for the zonal spectrum (default the grid's, mean 1).

    Returns
    -------
    numpy.ndarray
        ``(..., wavenumber)`` float64, in the squared units of the fields.
    """
    values = np.asarray(fields)
    lead_shape = values.shape[:-2]
    flat = values.reshape((-1, grid.nlat, grid.nlon))
    if grid.is_global:
        # float32 transform of the anomaly from the global mean (added back to l = 0 exactly)
        mean = flat.mean(axis=(-2, -1), dtype=np.float64)
        anomaly = np.array(flat - mean[:, None, None], dtype=np.float32)
        with torch.no_grad():
            coefficients = _sht(grid.nlat, grid.nlon, grid.kind)(torch.from_numpy(anomaly)).numpy()
        coefficients = coefficients.astype(np.complex128)
        coefficients[:, 0, 0] += mean * np.sqrt(4.0 * np.pi)  # the constant is Y_00 * sqrt(4 pi)
        power = np.abs(coefficients) ** 2  # (sample, l, m)
        power[..., 1:] *= 2.0
        spectrum = power.sum(axis=-1) / (4.0 * np.pi)
    else:
        transform = np.fft.rfft(flat, axis=-1) / grid.nlon
        power = np.abs(transform) ** 2
        power[..., 1:] *= 2.0
        if grid.nlon % 2 == 0:
            power[..., -1] /= 2.0
        weights = grid.area_weights() if area_weights is None else np.asarray(area_weights)
        spectrum = np.einsum("slk,l->sk", power, weights / weights.sum())
    return spectrum.reshape((*lead_shape, spectrum.shape[-1]))
