"""The reductions of the reference store that a climate score needs, in one pass over the store.

:func:`reference_reductions` reads the store's states that a run's products
cover once, in blocks of whole store chunks (the next block is read while
the last one is reduced), and adds every block to all the reductions at
once: the means over the periods of each product, kept as the float64 sums
:class:`forecast.accumulators.MeanSum` that ``forecast run --reduce`` keeps,
and the per-latitude-row histogram counts
:class:`forecast.accumulators.Histogram` of the run's histograms. The mean
of a period covers the store's states valid in ``[start, end)`` of the
product's ``time_bnds``; the histograms count the states of the histogram
product's single period.

The store's chunks hold one time step each (the store contract): opened
with :func:`forecast.store.open_store`'s default of a Dask task per chunk,
scheduling the tasks costs several times the reading. Open it with
``open_store(path, chunk_bytes=CHUNK_BYTES)``, as ``forecast score
--climate`` does (docs/performance.md, "Scoring the climate").
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cftime
import numpy as np
import xarray as xr

from forecast.accumulators import Histogram, MeanSum
from forecast.errors import DataError

#: Bytes of store states (float32) read per block.
BLOCK_BYTES = 64 * 2**20
#: Bytes per Dask chunk to open the store with (``open_store(path, chunk_bytes=CHUNK_BYTES)``):
#: a block is read by a few Dask tasks, each reading its store chunks in one go.
CHUNK_BYTES = 16 * 2**20


@dataclass
class ReferenceReductions:
    """What :func:`reference_reductions` computed.

    Attributes
    ----------
    means : dict of str to xarray.DataArray
        By product name: the store's float64 means over the product's
        periods, ``(time, channel, latitude, longitude)``, ``time`` the
        product's.
    histogram : Histogram or None
        Counts ``(1, channel, latitude, bins)`` of the store's states in the
        histogram product's bins; None without a histogram product.
    """

    means: dict[str, xr.DataArray]
    histogram: Histogram | None


def _seconds(times: np.ndarray, calendar: str) -> np.ndarray:
    """Times (datetime64 or cftime) as float seconds since 1970-01-01 in their calendar."""
    times = np.asarray(times)
    if np.issubdtype(times.dtype, np.datetime64):
        return (times - np.datetime64("1970-01-01")) / np.timedelta64(1, "s")
    return np.asarray(
        cftime.date2num(times, "seconds since 1970-01-01", calendar=calendar), dtype=np.float64
    )


def _period_labels(store: xr.Dataset, bounds: np.ndarray, calendar: str) -> np.ndarray:
    """For each store time, the index of the period ``[start, end)`` of ``bounds`` holding it, or -1.

    ``bounds`` has shape ``(period, 2)``.
    """
    times = _seconds(store["time"].values, calendar)
    edges = _seconds(bounds.reshape(-1), calendar).reshape(-1, 2)
    labels = np.full(len(times), -1, dtype=np.int64)
    for number, (start, end) in enumerate(edges):
        labels[(times >= start) & (times < end)] = number
    return labels


def _checked_labels(store: xr.Dataset, name: str, product: xr.Dataset) -> np.ndarray:
    """:func:`_period_labels` of a period product, after checking the store holds every state it averaged.

    Raises
    ------
    DataError
        When the store lacks states the run averaged.
    """
    calendar = product.attrs.get("calendar", "standard")
    labels = _period_labels(store, product["time_bnds"].values, calendar)
    counts = np.bincount(labels[labels >= 0], minlength=product.sizes["time"])
    expected = product["samples"].values
    if (counts < expected).any():
        first = int(np.argmax(counts < expected))
        raise DataError(
            f"the reference store holds {counts[first]} of the {expected[first]} states of period "
            f"{first} of the {product.attrs.get('climate_product', name)} means",
            hint="score against a store that covers the whole run at the model's step",
        )
    return labels


def _histogram(histograms: xr.Dataset, channels: list[str], rows: int) -> Histogram:
    """Empty counts in the bins of the run's histogram product (``{channel}_bin_bnds``)."""
    bounds = [histograms[f"{c}_bin_bnds"].values for c in channels]
    low = np.asarray([b[0, 0] for b in bounds])
    high = np.asarray([b[-1, 1] for b in bounds])
    return Histogram(low, high, len(bounds[0]), (1, len(channels), rows))


def _blocks(first: int, last: int, states: int, chunk: int) -> list[tuple[int, int]]:
    """``[start, end)`` blocks over ``[first, last)`` of about ``states`` states, on chunk boundaries."""
    size = max(chunk, states // chunk * chunk)
    edges = [first, *range((first // size + 1) * size, last, size), last]
    return list(itertools.pairwise(edges))


def reference_reductions(
    store: xr.Dataset,
    products: Mapping[str, xr.Dataset],
    channels: list[str],
    histograms: xr.Dataset | None = None,
    block_bytes: int = BLOCK_BYTES,
    progress: bool = False,
) -> ReferenceReductions:
    """The store's means over the periods of ``products`` and its histograms, reading it once.

    Parameters
    ----------
    store : xarray.Dataset
        The reference store (:func:`forecast.store.open_store`).
    products : mapping of str to xarray.Dataset
        Period products (``time_bnds``, ``samples``) by name.
    channels : list of str
        Channels to reduce, in this order.
    histograms : xarray.Dataset, optional
        The run's histogram product: the store is counted in its bins over its period.
    block_bytes : int
        About this many bytes of the store are read per block (at least one store chunk).
    progress : bool
        Show a tqdm progress bar over the states read.

    Raises
    ------
    DataError
        When the store lacks states the run averaged.
    """
    labels = {name: _checked_labels(store, name, p) for name, p in products.items()}
    counted = None
    if histograms is not None:
        calendar = histograms.attrs.get("calendar", "standard")
        counted = _period_labels(store, histograms["time_bnds"].values, calendar) == 0
    data = store["data"].sel(channel=channels)
    nlat, nlon = data.sizes["latitude"], data.sizes["longitude"]
    shape = (len(channels), nlat, nlon)
    sums = {name: [MeanSum(shape) for _ in range(p.sizes["time"])] for name, p in products.items()}
    histogram = _histogram(histograms, channels, nlat) if histograms is not None else None
    needed = np.zeros(store.sizes["time"], dtype=bool)
    for label in labels.values():
        needed |= label >= 0
    if counted is not None:
        needed |= counted
    wanted = np.flatnonzero(needed)
    blocks = []
    if len(wanted):
        chunks = data.chunks[0][0] if data.chunks else 1
        per_state = int(np.prod(shape)) * data.dtype.itemsize
        blocks = _blocks(int(wanted[0]), int(wanted[-1]) + 1, block_bytes // per_state, chunks)

    def read(block: tuple[int, int]) -> np.ndarray:
        return np.asarray(data.isel(time=slice(*block)).values)

    from tqdm.auto import tqdm

    bar = tqdm(
        total=len(wanted), desc="reference", unit="state", disable=not progress, dynamic_ncols=True
    )
    with bar, ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(read, blocks[0]) if blocks else None
        for number, (start, end) in enumerate(blocks):
            assert pending is not None  # submitted before the loop and at each turn
            values = pending.result()
            if number + 1 < len(blocks):
                pending = pool.submit(read, blocks[number + 1])
            for name, label in labels.items():
                part = label[start:end]
                for period in np.unique(part[part >= 0]):
                    sums[name][period].add_stack(values[part == period])
            if histogram is not None and counted is not None and counted[start:end].any():
                rows = values[counted[start:end]]  # (time, channel, lat, lon)
                histogram.add(np.moveaxis(rows, 0, 2).reshape(1, len(channels), nlat, -1))
            bar.update(int(needed[start:end].sum()))
    coords = {
        "channel": channels,
        "latitude": store["latitude"].values,
        "longitude": store["longitude"].values,
    }
    means = {
        name: xr.DataArray(
            np.stack([total.mean(np.float64) for total in sums[name]]),
            dims=("time", "channel", "latitude", "longitude"),
            coords={"time": product["time"].values, **coords},
        )
        for name, product in products.items()
    }
    return ReferenceReductions(means, histogram)
