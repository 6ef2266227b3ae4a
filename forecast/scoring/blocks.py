"""The scoring graph of a whole forecast: one Dask task per (init, lead block, channel).

:func:`forecast.scoring.metrics.sample_statistics` works on any xarray
objects; for a whole forecast against a store, gathering the truth per
sample through xarray's vectorised indexing makes tens of thousands of tiny
Dask tasks whose scheduling costs more than the arithmetic. Here each task
receives one forecast block and the store chunks (one per time step, the
store contract) of the valid times it needs, and computes the forecast's
statistics, both baselines and the power spectra in one go, so a forecast is
read once and the store's fields once per distinct time.
"""

from __future__ import annotations

from dataclasses import dataclass

import dask
import dask.array as da
import numpy as np
import xarray as xr

from forecast.dims import SPACE
from forecast.grid import Grid
from forecast.scoring.kernels import STATISTICS, block_statistics
from forecast.scoring.matching import INIT_DIM, LEAD_DIM, MEMBER_DIM, Matched
from forecast.scoring.spectra import power_spectrum, spectrum_size

#: Bytes of forecast per task.
BLOCK_BYTES = 128 * 2**20


@dataclass
class BlockResults:
    """Per-sample results of the whole forecast, as NumPy arrays.

    Attributes
    ----------
    statistics : dict of str to numpy.ndarray
        Per model, ``(time, lead_time, channel, region, quantity)``: the
        :data:`~forecast.scoring.kernels.STATISTICS` then the rank histogram.
    spectra : dict of str to numpy.ndarray
        ``"forecast"`` (member 0) and ``"truth"``, ``(time, lead_time, channel,
        wavenumber)``; NaN where the truth is missing. Empty without spectra.
    """

    statistics: dict[str, np.ndarray]
    spectra: dict[str, np.ndarray]


def _field(chunk: np.ndarray | None, channel: int, shape: tuple[int, int]) -> np.ndarray:
    if chunk is None:
        return np.full(shape, np.nan, dtype=np.float32)
    return np.asarray(chunk)[0, channel] if np.ndim(chunk) == 4 else np.asarray(chunk)[channel]


def score_block(
    forecast: np.ndarray,
    truth_chunks: list,
    climatology_chunks: list,
    init_chunk,
    channel: int,
    weights: np.ndarray,
    models: tuple[str, ...],
    grid: Grid | None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Statistics (and spectra) of one forecast block and its baselines.

    Parameters
    ----------
    forecast : numpy.ndarray
        ``(lead, member, latitude, longitude)`` for one init and channel.
    truth_chunks : list
        Per lead, the store chunk ``(1, channel, latitude, longitude)`` at the
        valid time, or None where the store lacks it.
    climatology_chunks : list
        Per lead, the climatology ``(1, channel, latitude, longitude)`` at the valid time.
    init_chunk : numpy.ndarray or None
        The store chunk at the initialisation time (persistence), or None.
    channel : int
        Index of the channel in the chunks.
    weights : numpy.ndarray
        ``(region, latitude, longitude)``.
    models : tuple of str
        ``"forecast"`` and any of ``"persistence"``, ``"climatology"``.
    grid : Grid or None
        The grid, for spectra; None skips them.

    Returns
    -------
    statistics, spectra : dict
        Per model, ``(lead, region, quantity)``; for ``"forecast"`` (member 0)
        and ``"truth"``, ``(lead, wavenumber)``.
    """
    shape = forecast.shape[-2:]
    truth = np.stack([_field(chunk, channel, shape) for chunk in truth_chunks])
    climatology = np.stack([_field(chunk, channel, shape) for chunk in climatology_chunks])
    missing = ~np.isfinite(truth).all(axis=(-2, -1))
    init_field = _field(init_chunk, channel, shape)
    candidates = {
        "forecast": lambda: forecast,
        "persistence": lambda: np.broadcast_to(init_field, truth.shape)[:, None],
        "climatology": lambda: climatology[:, None],
    }
    statistics, spectra = {}, {}
    for model in models:
        fields = candidates[model]()
        statistics[model] = block_statistics(fields, truth, climatology, weights)
    if grid is not None:  # blurring shows in a member, not in baselines: forecast and truth only
        for name, fields in (("forecast", forecast[:, 0]), ("truth", truth)):
            spectrum = power_spectrum(np.where(missing[:, None, None], 0.0, fields), grid)
            spectrum[missing] = np.nan
            spectra[name] = spectrum
    return statistics, spectra


def score_blocks(
    matched: Matched,
    weights: xr.DataArray,
    models: tuple[str, ...],
    spectra: bool,
    progress: bool = False,
) -> BlockResults:
    """Build and run the scoring graph; returns per-sample results.

    Parameters
    ----------
    matched : Matched
        From :func:`forecast.scoring.matching.match`.
    weights : xarray.DataArray
        ``(region, latitude, longitude)`` region weights.
    models : tuple of str
        Models to score (``"forecast"`` first, then baselines).
    spectra : bool
        Whether to compute power spectra.
    progress : bool
        Show a tqdm progress bar over the tasks.
    """
    forecast = matched.forecast
    n_init, n_lead = forecast.sizes[INIT_DIM], forecast.sizes[LEAD_DIM]
    members = forecast.sizes[MEMBER_DIM]
    n_channel = len(matched.channels)
    field_bytes = matched.grid.nlat * matched.grid.nlon * 4
    lead_block = max(1, min(n_lead, BLOCK_BYTES // max(1, members * field_bytes)))
    starts = list(range(0, n_lead, lead_block))

    store_chunks = matched.fields.data.rechunk({0: 1, 1: -1, 2: -1, 3: -1}).to_delayed()[:, 0, 0, 0]
    clim_chunks = matched.climatology_fields.data.rechunk({0: 1, 1: -1, 2: -1, 3: -1}).to_delayed()[
        :, 0, 0, 0
    ]
    weight_values = np.asarray(weights.transpose("region", *SPACE).values)
    shared_weights = dask.delayed(weight_values, name="scoring-weights")
    grid = matched.grid if spectra else None

    tasks, where = [], []
    for index, channel in enumerate(matched.channels):
        array = forecast[channel].data
        if not hasattr(array, "to_delayed"):
            array = da.from_array(np.asarray(array), chunks=-1)
        blocks = array.rechunk((1, lead_block, -1, -1, -1)).to_delayed()
        for init in range(n_init):
            init_position = matched.init_positions[init]
            init_chunk = store_chunks[init_position] if init_position >= 0 else None
            for block, start in enumerate(starts):
                leads = range(start, min(start + lead_block, n_lead))
                truth = [
                    store_chunks[p] if p >= 0 else None for p in matched.positions[init, leads]
                ]
                climatology = [clim_chunks[c] for c in matched.climatology_index[init, leads]]
                forecast_block = dask.delayed(np.squeeze)(blocks[init, block, 0, 0, 0], axis=0)
                task = dask.delayed(score_block, pure=True)(
                    forecast_block,
                    truth,
                    climatology,
                    init_chunk,
                    index,
                    shared_weights,
                    models,
                    grid,
                )
                tasks.append(task)
                where.append((init, slice(start, start + len(leads)), index))

    if progress:
        from tqdm.dask import TqdmCallback

        with TqdmCallback(desc="scoring", unit="task"):
            results = dask.compute(*tasks)
    else:
        results = dask.compute(*tasks)

    quantities = len(STATISTICS) + members + 1
    regions = weight_values.shape[0]
    statistics = {}
    for model in models:
        size = quantities if model == "forecast" else len(STATISTICS) + 2
        statistics[model] = np.full((n_init, n_lead, n_channel, regions, size), np.nan)
    spectra_out = {}
    if spectra:
        size = spectrum_size(matched.grid)
        spectra_out = {
            name: np.full((n_init, n_lead, n_channel, size), np.nan)
            for name in ("forecast", "truth")
        }
    for (init_at, lead_slice, channel_at), (block_stats, block_spectra) in zip(
        where, results, strict=True
    ):
        for model, values in block_stats.items():
            statistics[model][init_at, lead_slice, channel_at] = values
        for name, values in block_spectra.items():
            spectra_out[name][init_at, lead_slice, channel_at] = values
    return BlockResults(statistics=statistics, spectra=spectra_out)
