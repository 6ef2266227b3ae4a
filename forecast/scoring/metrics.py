"""Skill metrics the WeatherBench2 way, over xarray objects (lazy with Dask).

Scoring happens in two steps:

1. :func:`sample_statistics` reduces every sample (one initialisation at one
   lead time) of a forecast to a few area-weighted statistics per region
   (:data:`forecast.scoring.kernels.STATISTICS`) and the rank histogram, in
   one pass over the data;
2. each metric of :data:`METRICS` averages those statistics over the
   initialisations and finishes them (a square root, a ratio).

An ensemble forecast is scored by its ensemble mean for ``rmse``, ``bias``,
``mae`` and ``acc`` (as WeatherBench2 scores ensemble means); a
deterministic forecast is a one-member ensemble. Missing truth (NaN
statistics) is skipped in the mean over initialisations; ``n_init`` counts
the initialisations that were scored. Formulas and sources: ``docs/metrics.md``.

The one-call functions :func:`rmse`, :func:`bias`, :func:`mae`,
:func:`acc`, :func:`spread`, :func:`ssr`, :func:`crps` and
:func:`rank_histogram` score a single DataArray against its truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import xarray as xr

from forecast.dims import MEMBER as MEMBER_DIM
from forecast.dims import SPACE as SPACE_DIMS
from forecast.dims import TIME as INIT_DIM
from forecast.scoring.kernels import STATISTICS, block_statistics


@dataclass(frozen=True)
class Metric:
    """A score finished from the init-mean of per-sample statistics.

    Attributes
    ----------
    name : str
        Variable name in the scores file.
    long_name : str
        Description for the ``long_name`` attribute.
    units : str
        ``"data"`` (the channel's units) or ``"1"`` (dimensionless).
    ensemble : bool
        Whether the metric is about the ensemble distribution (``spread``,
        ``ssr``, ``crps``) rather than the ensemble mean.
    finish : callable
        ``finish(statistics, members) -> DataArray``: from the per-sample
        statistics (a Dataset with dim ``time``) and the ensemble size.
    """

    name: str
    long_name: str
    units: str
    ensemble: bool
    finish: Callable[[xr.Dataset, int], xr.DataArray]


def _init_mean(statistics: xr.Dataset, name: str) -> xr.DataArray:
    return statistics[name].mean(INIT_DIM, skipna=True)


def _rmse(statistics: xr.Dataset, members: int) -> xr.DataArray:
    return np.sqrt(_init_mean(statistics, "squared_error"))  # type: ignore[return-value]


def _spread(statistics: xr.Dataset, members: int) -> xr.DataArray:
    return np.sqrt(_init_mean(statistics, "ensemble_variance"))  # type: ignore[return-value]


def _ssr(statistics: xr.Dataset, members: int) -> xr.DataArray:
    correction = np.sqrt((members + 1.0) / members)
    return correction * _spread(statistics, members) / _rmse(statistics, members)


#: Metrics by name, in the order of the scores file and the printed table.
METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("rmse", "root mean squared error of the ensemble mean", "data", False, _rmse),
        Metric(
            "bias",
            "mean error (forecast - truth) of the ensemble mean",
            "data",
            False,
            lambda s, m: _init_mean(s, "error"),
        ),
        Metric(
            "mae",
            "mean absolute error of the ensemble mean",
            "data",
            False,
            lambda s, m: _init_mean(s, "abs_error"),
        ),
        Metric(
            "acc",
            "anomaly correlation coefficient of the ensemble mean",
            "1",
            False,
            lambda s, m: _init_mean(s, "acc"),
        ),
        Metric(
            "spread",
            "ensemble spread (root mean unbiased ensemble variance)",
            "data",
            True,
            _spread,
        ),
        Metric("ssr", "spread-skill ratio with finite-ensemble correction", "1", True, _ssr),
        Metric(
            "crps",
            "fair continuous ranked probability score",
            "data",
            True,
            lambda s, m: _init_mean(s, "crps"),
        ),
    )
}


def sample_statistics(
    forecast: xr.DataArray,
    truth: xr.DataArray,
    weights: xr.DataArray,
    climatology: xr.DataArray | None = None,
) -> tuple[xr.Dataset, xr.DataArray]:
    """Per-sample area-weighted statistics and rank histograms (lazy with Dask).

    Parameters
    ----------
    forecast : xarray.DataArray
        dims ``(..., [member], latitude, longitude)``, e.g.
        ``(time, lead_time, member, latitude, longitude)``; without a
        ``member`` dim it is a deterministic forecast. Dask chunks along
        member, latitude and longitude are merged (the kernel needs them whole).
    truth : xarray.DataArray
        The verifying fields at each valid time, dims ``forecast``'s without
        ``member``; NaN where missing.
    weights : xarray.DataArray
        ``(region, latitude, longitude)`` from
        :func:`forecast.scoring.regions.region_weights`.
    climatology : xarray.DataArray, optional
        Climatology at each valid time, dims as ``truth``; without it ACC is NaN.

    Returns
    -------
    statistics : xarray.Dataset
        One variable per name of :data:`~forecast.scoring.kernels.STATISTICS`,
        dims ``(..., region)``.
    histogram : xarray.DataArray
        dims ``(..., region, rank)``: the area fraction of the region where the
        truth has each rank among the members (ranks 0..M).
    """
    if MEMBER_DIM not in forecast.dims:
        forecast = forecast.expand_dims({MEMBER_DIM: 1})
    for dim in truth.dims:  # e.g. persistence has no lead_time: broadcast it
        if dim not in forecast.dims:
            forecast = forecast.expand_dims(
                {dim: truth[dim].values if dim in truth.coords else truth.sizes[dim]}
            )
    truth = truth.transpose(..., *SPACE_DIMS)
    loop_dims = [d for d in truth.dims if d not in SPACE_DIMS]
    forecast = forecast.transpose(*loop_dims, MEMBER_DIM, *SPACE_DIMS)
    if climatology is None:
        climatology = xr.full_like(truth, np.nan)
    climatology = climatology.transpose(..., *SPACE_DIMS)
    whole = {dim: -1 for dim in (MEMBER_DIM, *SPACE_DIMS)}
    if forecast.chunks:  # the kernel needs members and space in one block
        forecast = forecast.chunk(whole)
    truth = truth.chunk({d: -1 for d in SPACE_DIMS}) if truth.chunks else truth
    climatology = (
        climatology.chunk({d: -1 for d in SPACE_DIMS}) if climatology.chunks else climatology
    )
    members = forecast.sizes[MEMBER_DIM]
    quantities = len(STATISTICS) + members + 1
    core = list(SPACE_DIMS)
    combined = xr.apply_ufunc(
        block_statistics,
        forecast,
        truth,
        climatology,
        kwargs={"weights": np.asarray(weights.transpose("region", *SPACE_DIMS).values)},
        input_core_dims=[[MEMBER_DIM, *core], core, core],
        output_core_dims=[["region", "quantity"]],
        dask="parallelized",
        output_dtypes=[np.float64],
        dask_gufunc_kwargs={
            "output_sizes": {"region": weights.sizes["region"], "quantity": quantities}
        },
    ).assign_coords(region=weights["region"].values)
    statistics = xr.Dataset(
        {name: combined.isel(quantity=index, drop=True) for index, name in enumerate(STATISTICS)}
    )
    histogram = combined.isel(quantity=slice(len(STATISTICS), None)).rename(quantity="rank")
    histogram = histogram.assign_coords(rank=np.arange(members + 1))
    return statistics, histogram


def finish_metrics(
    statistics: xr.Dataset, members: int, names: list[str] | None = None
) -> xr.Dataset:
    """Average per-sample statistics over initialisations and finish each metric.

    Parameters
    ----------
    statistics : xarray.Dataset
        From :func:`sample_statistics` (dims include ``time``).
    members : int
        Ensemble size (1 for a deterministic forecast).
    names : list of str, optional
        Metric names (keys of :data:`METRICS`); all by default.

    Returns
    -------
    xarray.Dataset
        One variable per metric, without the ``time`` dim.
    """
    chosen = list(METRICS) if names is None else names
    return xr.Dataset({name: METRICS[name].finish(statistics, members) for name in chosen})


def _one_metric(name: str, forecast, truth, weights, climatology=None) -> xr.DataArray:
    statistics, _ = sample_statistics(forecast, truth, weights, climatology)
    members = forecast.sizes.get(MEMBER_DIM, 1)
    return METRICS[name].finish(statistics, members).rename(name)


def rmse(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """RMSE of the (ensemble mean) forecast: ``sqrt(mean_t sum_ij w_ij (f - y)^2)``.

    Parameters as :func:`sample_statistics`; the result keeps all dims but
    ``time`` (averaged), ``member``, ``latitude`` and ``longitude``, plus ``region``.
    """
    return _one_metric("rmse", forecast, truth, weights)


def bias(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Mean error ``mean_t sum_ij w_ij (f - y)`` of the (ensemble mean) forecast."""
    return _one_metric("bias", forecast, truth, weights)


def mae(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Mean absolute error ``mean_t sum_ij w_ij |f - y|`` of the (ensemble mean) forecast."""
    return _one_metric("mae", forecast, truth, weights)


def acc(
    forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray, climatology: xr.DataArray
) -> xr.DataArray:
    """Anomaly correlation against ``climatology``, per init, then averaged over inits."""
    return _one_metric("acc", forecast, truth, weights, climatology)


def spread(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """``sqrt(mean_t sum_ij w_ij var_ddof1(x))``: the root mean unbiased ensemble variance."""
    return _one_metric("spread", forecast, truth, weights)


def ssr(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Spread-skill ratio ``sqrt((M + 1) / M) * spread / rmse(ensemble mean)``."""
    return _one_metric("ssr", forecast, truth, weights)


def crps(forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    """Area-weighted, init-averaged fair ensemble CRPS (one member: the MAE)."""
    return _one_metric("crps", forecast, truth, weights)


def rank_histogram(
    forecast: xr.DataArray, truth: xr.DataArray, weights: xr.DataArray
) -> xr.DataArray:
    """Rank histogram: the init-mean area fraction of each rank of the truth (sums to 1)."""
    _, histogram = sample_statistics(forecast, truth, weights)
    return histogram.mean(INIT_DIM, skipna=True).rename("rank_histogram")
