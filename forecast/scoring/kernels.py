"""NumPy kernels that reduce one block of forecast fields to area-weighted statistics.

Every score of :mod:`forecast.scoring.metrics` is a function of a few
per-sample statistics (a sample is one initialisation at one lead time),
each an area-weighted mean over a region. :func:`block_statistics` computes
all of them in one pass over a block of members, so that a forecast is read
once. The formulas (WeatherBench2's) are in ``docs/metrics.md``.
"""

from __future__ import annotations

import numpy as np

#: Per-sample statistics, in the order of the last axis of :func:`block_statistics`.
#: ``error``: weighted mean of (ensemble mean - truth); ``abs_error``: of its absolute
#: value; ``squared_error``: of its square; ``acc``: anomaly correlation of the ensemble
#: mean (NaN without climatology); ``ensemble_variance``: weighted mean of the unbiased
#: ensemble variance (0 for one member); ``crps``: weighted mean of the fair CRPS.
STATISTICS: tuple[str, ...] = (
    "error",
    "abs_error",
    "squared_error",
    "acc",
    "ensemble_variance",
    "crps",
)


def fair_crps(forecast: np.ndarray, truth: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """Pointwise fair (unbiased) ensemble CRPS in O(M log M) per point.

    ``CRPS_fair = mean_i |x_i - y| - 1 / (2 M (M - 1)) * sum_ij |x_i - x_j|``;
    with the members sorted, ``sum_ij |x_i - x_j| = 2 sum_i (2 i - M - 1) x_(i)``
    (i from 1), so a sort replaces the double sum (Zamo & Naveau 2018,
    WeatherBench2's ``_pointwise_crps_spread``). One member gives ``|x - y|``.

    Parameters
    ----------
    forecast : numpy.ndarray
        Members along ``member_axis``, any other shape.
    truth : numpy.ndarray
        ``forecast``'s shape without ``member_axis`` (or broadcastable to it).
    member_axis : int
        Axis of the members in ``forecast``.

    Returns
    -------
    numpy.ndarray
        The CRPS at each point, shape of ``truth`` broadcast, in the units of the data.
    """
    ordered = sorted_members(forecast, member_axis)
    return fair_crps_sorted(ordered, np.asarray(truth), member_axis)


def sorted_members(forecast: np.ndarray, member_axis: int) -> np.ndarray:
    """A C-contiguous copy of ``forecast`` with its members sorted along ``member_axis``.

    NumPy sorts a contiguous last axis several times faster than a strided
    one, so the members are moved last for the sort and moved back after,
    which keeps later reductions over members vectorised along the cells.
    """
    values = np.asarray(forecast)
    moved = np.moveaxis(values, member_axis, -1).copy()
    moved.sort(axis=-1)
    return np.ascontiguousarray(np.moveaxis(moved, -1, member_axis))


def fair_crps_sorted(ordered: np.ndarray, truth: np.ndarray, member_axis: int = 0) -> np.ndarray:
    """Fair CRPS from members sorted along ``member_axis``; ``truth`` without that axis.

    The spread term is computed from deviations from the ensemble mean (it is
    unchanged by a common shift because the coefficients sum to zero), which
    keeps float32 fields with a large offset, such as geopotential, accurate.
    """
    members = np.moveaxis(ordered, member_axis, 0)
    count = members.shape[0]
    skill = np.abs(members - truth[None]).mean(axis=0)
    if count < 2:
        return skill
    center = members.mean(axis=0)
    coefficients = (2.0 * np.arange(1, count + 1) - count - 1).astype(members.dtype)
    coefficients = coefficients.reshape((count,) + (1,) * (members.ndim - 1))
    spread = (coefficients * (members - center[None])).sum(axis=0)
    return skill - spread / (count * (count - 1))


def rank_histogram_weights(
    ordered: np.ndarray, truth: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Area-weighted rank histogram per sample and region, ties split evenly.

    The rank of the truth is the number of members below it. Where the truth
    equals ``e`` members exactly (a bounded variable at its bound, a field
    copied from the analysis), its rank is any of ``below .. below + e``
    with equal chance: each of those ``e + 1`` bins gets ``1 / (e + 1)`` of
    the cell's weight. That is the mean of WeatherBench2's tie-breaking by
    random perturbation (``RankHistogram(break_ties_randomly=True)``),
    without its sampling noise. Ties among members alone do not change the
    rank and need nothing.

    Parameters
    ----------
    ordered : numpy.ndarray
        ``(samples, member, cells)``, members sorted (NaN last).
    truth : numpy.ndarray
        ``(samples, cells)``.
    weights : numpy.ndarray
        ``(cells, region)``, each region's weights summing to 1.

    Returns
    -------
    numpy.ndarray
        ``(samples, member + 1, region)`` float64.
    """
    samples, count = ordered.shape[:2]
    below = (ordered < truth[:, None, :]).sum(axis=1)
    tied = (ordered == truth[:, None, :]).sum(axis=1)
    share = 1.0 / (tied + 1.0)
    # a difference array over the bins: +share at the first tied rank, -share after the last
    width = count + 2
    base = np.arange(samples)[:, None] * width
    keys = np.concatenate([(base + below).ravel(), (base + below + tied + 1).ravel()])
    histogram = np.empty((samples, count + 1, weights.shape[1]))
    for region in range(weights.shape[1]):
        cell_share = (share * weights[None, :, region]).ravel()
        steps = np.bincount(
            keys, weights=np.concatenate([cell_share, -cell_share]), minlength=samples * width
        ).reshape(samples, width)
        histogram[..., region] = np.cumsum(steps, axis=1)[:, : count + 1]
    return histogram


def block_statistics(
    forecast: np.ndarray,
    truth: np.ndarray,
    climatology: np.ndarray,
    weights: np.ndarray,
) -> np.ndarray:
    """All per-sample statistics and the rank histogram of a block of fields.

    Parameters
    ----------
    forecast : numpy.ndarray
        ``(..., member, latitude, longitude)``; one member for a deterministic forecast.
    truth : numpy.ndarray
        ``(..., latitude, longitude)``, the verifying analysis at each valid time
        (NaN where missing).
    climatology : numpy.ndarray
        ``(..., latitude, longitude)``, the climatology at each valid time (for ACC).
    weights : numpy.ndarray
        ``(region, latitude, longitude)``, each region's area weights summing to 1.

    Returns
    -------
    numpy.ndarray
        ``(..., region, len(STATISTICS) + member + 1)`` float64: the statistics of
        :data:`STATISTICS`, then the area fraction of each rank of the truth
        among the members (0: truth below all members, M: above all; ties
        split evenly, :func:`rank_histogram_weights`).
    """
    lead_shape = truth.shape[:-2]
    count = forecast.shape[-3]
    cells = truth.shape[-2] * truth.shape[-1]
    samples = int(np.prod(lead_shape, dtype=np.int64))
    # (samples, member, cells) with the members sorted: one copy serves every statistic
    ordered = sorted_members(forecast.reshape((samples, count, cells)), member_axis=1)
    truth_flat = truth.reshape((samples, cells))
    clim_flat = climatology.reshape((samples, cells)).astype(np.float64)
    w = weights.reshape((weights.shape[0], cells)).T  # (cells, region)

    def wmean(field: np.ndarray) -> np.ndarray:  # (samples, cells) -> (samples, region)
        return np.asarray(field, dtype=np.float64) @ w

    ensemble_mean = ordered.mean(axis=1, dtype=np.float64)
    error = ensemble_mean - truth_flat
    forecast_anomaly = ensemble_mean - clim_flat
    truth_anomaly = truth_flat - clim_flat
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = wmean(forecast_anomaly * truth_anomaly) / np.sqrt(
            wmean(forecast_anomaly**2) * wmean(truth_anomaly**2)
        )
    # per-point quantities in the data's precision, about the ensemble mean
    deviation = ordered - ensemble_mean.astype(ordered.dtype)[:, None, :]
    variance = np.square(deviation).sum(axis=1) / max(count - 1, 1)
    skill = np.abs(ordered - truth_flat[:, None, :]).mean(axis=1)
    if count > 1:
        coefficients = (2.0 * np.arange(1, count + 1) - count - 1).astype(ordered.dtype)
        crps = skill - (coefficients[None, :, None] * deviation).sum(axis=1) / (count * (count - 1))
    else:
        crps = skill
    stats = [wmean(error), wmean(np.abs(error)), wmean(error**2), acc, wmean(variance), wmean(crps)]
    histogram = rank_histogram_weights(ordered, truth_flat, w)
    out = np.concatenate(
        [np.stack(stats, axis=-1), histogram.transpose(0, 2, 1)], axis=-1
    )  # (samples, region, quantity)
    missing = ~np.isfinite(truth_flat).all(axis=1)
    out[missing] = np.nan
    return out.reshape((*lead_shape, weights.shape[0], out.shape[-1]))
