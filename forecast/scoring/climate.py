"""Climate scores of a climate run's products against the same reductions of a reference store.

ACE's and Spherical DYffusion's headline metrics (docs/metrics.md, "Climate"):

- ``time_mean_bias_map(channel, latitude, longitude)``: the run's time mean
  (ensemble mean) minus the reference's over the same interval;
  ``time_mean_rmse(channel)`` and ``time_mean_bias(channel)``: its
  area-weighted root mean square and mean;
- ``annual_cycle(source, month, channel)``: area-weighted global means of the
  monthly means, averaged by calendar month, for ``forecast`` and
  ``reference``; ``annual_cycle_rmse(channel)``;
- ``annual_global_mean(source, year, channel)`` of whole years, the
  reference's ``interannual_std(channel)`` of them, and
  ``drift(channel)``: (last year - first year of the run) / that std;
- ``wasserstein(channel)``: Wasserstein-1 distance between the run's
  area-weighted histogram and the reference's, binned alike.

The reference means cover exactly the intervals in each product's
``time_bnds`` (the store's states valid in ``[start, end)``); the reference
must hold every state the run averaged. Every reduction of the reference is
computed in one pass over the store
(:func:`forecast.scoring.climate_reference.reference_reductions`).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import cftime
import numpy as np
import xarray as xr

from forecast.errors import DataError, GridError
from forecast.files import atomic_write
from forecast.grid import Grid
from forecast.scoring.climate_reference import reference_reductions
from forecast.store import store_grid

#: Products a climate score reads, by the ``climate_product`` attribute of their files.
PERIOD_PRODUCTS = ("monthly", "seasonal", "annual", "time-mean")
HISTOGRAMS = "histograms"


def open_products(path: str | Path) -> dict[str, xr.Dataset]:
    """The climate products of a run: by its ``--out`` (the manifest lists them) or one product file.

    Raises
    ------
    DataError
        When nothing there is a climate product.
    """
    path = Path(path)
    manifest = path.with_name(path.name + ".manifest.json")
    paths: dict[str, Path] = {}
    if manifest.exists():
        products = json.loads(manifest.read_text()).get("products") or {}
        paths = {name: Path(p) for name, p in products.items() if name != "snapshots"}
    elif path.exists():
        paths = {"": path}
    if not paths:
        raise DataError(
            "no climate products found",
            path=path,
            hint="pass the --out of a run with --reduce or --histograms, or one of its product files",
        )
    opened = {}
    for file in paths.values():
        if not file.exists():
            raise DataError("climate product missing (is the run finished?)", path=file)
        ds = _open(file)
        kind = ds.attrs.get("climate_product")
        if kind not in (*PERIOD_PRODUCTS, HISTOGRAMS):
            raise DataError(
                "not a climate product (no climate_product attribute)",
                path=file,
                hint="write it with forecast run --reduce or --histograms",
            )
        opened[kind] = ds
    return opened


def _open(path: Path) -> xr.Dataset:
    coder = xr.coders.CFDatetimeCoder(use_cftime=None)
    if path.is_dir():
        return xr.open_zarr(path, consolidated=None, decode_times=coder)
    return xr.open_dataset(path, decode_times=coder)


def _global_mean(values: xr.DataArray, weights: xr.DataArray) -> xr.DataArray:
    return values.weighted(weights).mean(("latitude", "longitude"))


def _stack(product: xr.Dataset, channels: list[str]) -> xr.DataArray:
    """Ensemble-mean period means ``(time, channel, latitude, longitude)``."""
    fields = [product[c].mean("member") for c in channels]
    return xr.concat(fields, dim=xr.DataArray(channels, dims="channel", name="channel"))


def _month(time) -> int:
    if isinstance(time, cftime.datetime):
        return int(time.month)
    return int(str(np.datetime64(time, "M")).split("-")[1])


def _year(time) -> int:
    if isinstance(time, cftime.datetime):
        return int(time.year)
    return int(str(np.datetime64(time, "Y")))


def climate_scores(
    products: dict[str, xr.Dataset], store: xr.Dataset, progress: bool = False
) -> xr.Dataset:
    """Score a run's climate products against the store (see the module docstring).

    The store is read once, for every reduction the scores need, and the
    products once (the scores come back computed, not lazy).

    Parameters
    ----------
    products : dict of str to xarray.Dataset
        :func:`open_products`.
    store : xarray.Dataset
        The reference store (:func:`forecast.store.open_store`).
    progress : bool
        Show a progress bar over the store's states read.

    Raises
    ------
    DataError, GridError
        No period product, other channels or grid, or a store that does not cover the run.
    """
    periods = [k for k in PERIOD_PRODUCTS if k in products]
    any_product = products[periods[0]] if periods else products.get(HISTOGRAMS)
    if any_product is None:
        raise DataError("no climate product to score")
    channels = [
        str(c)
        for c in any_product.data_vars
        if "latitude" in any_product[c].dims and not str(c).endswith(("_below", "_above"))
    ]
    missing = [c for c in channels if c not in store["channel"].values]
    if missing:
        raise DataError(f"the reference store lacks channel(s) {', '.join(missing)}")
    grid = store_grid(store)
    longitude = (
        any_product["longitude"].values
        if "longitude" in any_product.coords
        else store["longitude"].values  # histograms keep no longitude
    )
    product_grid = Grid.from_coords(any_product["latitude"].values, longitude)
    if not grid.same_as(product_grid):
        raise GridError(
            f"the products are on {product_grid.describe()}, the store on {grid.describe()}"
        )
    weights = xr.DataArray(
        grid.area_weights(), dims="latitude", coords={"latitude": store["latitude"].values}
    )
    time_mean = periods[-1] if periods else None
    yearly = next((k for k in ("annual", "monthly") if k in products), None)
    needed = {k for k in (time_mean, "monthly" if "monthly" in products else None, yearly) if k}
    reference = reference_reductions(
        store,
        {k: products[k] for k in PERIOD_PRODUCTS if k in needed},
        channels,
        histograms=products.get(HISTOGRAMS),
        progress=progress,
    )
    means = reference.means
    parts = [xr.Dataset(coords={"channel": channels})]
    if time_mean is not None:
        parts.append(_time_mean_scores(products[time_mean], means[time_mean], channels, weights))
    if "monthly" in products:
        parts.append(_annual_cycle_scores(products["monthly"], means["monthly"], channels, weights))
    if yearly is not None:
        parts.append(_drift_scores(products[yearly], means[yearly], channels, weights))
    if HISTOGRAMS in products:
        parts.append(
            _histogram_scores(products[HISTOGRAMS], reference.histogram, channels, weights)
        )
    # each part scores other variables over the same channels: nothing to override or conflict
    scores = xr.merge(parts, compat="no_conflicts", join="outer")
    scores.attrs = {
        "title": "climate scores",
        "history": f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ} forecast score --climate",
        "products": ", ".join(products),
        "run_start": str(any_product["time_bnds"].values[0, 0]),
        "run_end": str(any_product["time_bnds"].values[-1, 1]),
    }
    return scores.load()  # the run's side in one Dask pass over its products


def _time_mean_scores(product, reference_means, channels, weights) -> xr.Dataset:
    """Bias map, its RMSE and mean over the whole product (periods weighted by their states)."""
    samples = xr.DataArray(product["samples"].values.astype(np.float64), dims="time")
    forecast = (_stack(product, channels) * samples).sum("time") / samples.sum()
    reference = (reference_means * samples).sum("time") / samples.sum()
    bias = (forecast - reference.values).assign_coords(latitude=weights["latitude"].values)
    return xr.Dataset(
        {
            "time_mean_bias_map": bias.drop_vars(["time"], errors="ignore"),
            "time_mean_rmse": np.sqrt(_global_mean(bias**2, weights)),
            "time_mean_bias": _global_mean(bias, weights),
            "time_mean_reference": reference.drop_vars(["time"], errors="ignore").assign_coords(
                latitude=weights["latitude"].values
            ),
        }
    )


def _annual_cycle_scores(product, reference_means, channels, weights) -> xr.Dataset:
    months = xr.DataArray(
        [_month(t) for t in product["time_bnds"].values[:, 0]], dims="time", name="month"
    )
    forecast = _global_mean(
        _stack(product, channels).assign_coords(latitude=weights["latitude"].values), weights
    )
    reference = _global_mean(
        reference_means.assign_coords(latitude=weights["latitude"].values),
        weights,
    )
    cycle = xr.concat(
        [forecast.groupby(months).mean(), reference.groupby(months).mean()],
        dim=xr.DataArray(["forecast", "reference"], dims="source", name="source"),
    )
    rmse = np.sqrt(
        ((cycle.sel(source="forecast") - cycle.sel(source="reference")) ** 2).mean("month")
    )
    return xr.Dataset(
        {"annual_cycle": cycle.drop_vars("time", errors="ignore"), "annual_cycle_rmse": rmse}
    )


def _drift_scores(product, reference_means, channels, weights) -> xr.Dataset:
    """Global means of whole years (complete periods only) and the drift of the last from the first."""
    complete = product["complete"].values.astype(bool)
    years = np.asarray([_year(t) for t in product["time_bnds"].values[:, 0]])
    if product.attrs["climate_product"] == "monthly":
        whole = [y for y in np.unique(years) if (complete & (years == y)).sum() == 12]
    else:
        whole = [y for y, c in zip(years, complete, strict=True) if c]
    if len(whole) < 2:
        return xr.Dataset()
    keep = np.flatnonzero(np.isin(years, whole) & complete)
    samples = xr.DataArray(product["samples"].values[keep].astype(np.float64), dims="time")
    label = xr.DataArray(years[keep], dims="time", name="year")
    lat = weights["latitude"].values
    forecast = _global_mean(
        _stack(product.isel(time=keep), channels).assign_coords(latitude=lat), weights
    )
    reference = _global_mean(
        reference_means.isel(time=keep).assign_coords(latitude=lat),
        weights,
    )

    def yearly(values):
        return (values * samples).groupby(label).sum() / samples.groupby(label).sum()

    annual = xr.concat(
        [yearly(forecast.drop_vars("time")), yearly(reference.drop_vars("time"))],
        dim=xr.DataArray(["forecast", "reference"], dims="source", name="source"),
    )
    spread = annual.sel(source="reference").std("year", ddof=1)
    run = annual.sel(source="forecast")
    return xr.Dataset(
        {
            "annual_global_mean": annual,
            "interannual_std": spread,
            "drift": (run.isel(year=-1) - run.isel(year=0)).drop_vars("year", errors="ignore")
            / spread,
        }
    )


def _histogram_scores(product, reference, channels, weights) -> xr.Dataset:
    """Wasserstein-1 distance between area-weighted histograms of the run and of the store.

    ``reference`` is the store's :class:`~forecast.accumulators.Histogram` in the run's bins.
    """
    bins = reference.bins
    area = weights.values
    distances = []
    for k, channel in enumerate(channels):
        run = _distribution(
            product[channel].values.sum(axis=(0, 1)),
            product[f"{channel}_below"].values.sum(axis=(0, 1)),
            product[f"{channel}_above"].values.sum(axis=(0, 1)),
            area,
        )
        truth = _distribution(
            reference.counts[0, k], reference.below[0, k], reference.above[0, k], area
        )
        width = (reference.high[k] - reference.low[k]) / bins
        distances.append(float(np.abs(np.cumsum(run) - np.cumsum(truth)).sum() * width))
    return xr.Dataset({"wasserstein": ("channel", np.asarray(distances))})


def _distribution(
    counts: np.ndarray, below: np.ndarray, above: np.ndarray, area: np.ndarray
) -> np.ndarray:
    """Area-weighted probabilities of the bins ``(bins,)``; values outside go to the end bins."""
    counts = counts.astype(np.float64).copy()
    counts[:, 0] += below
    counts[:, -1] += above
    weighted = (counts * area[:, None]).sum(axis=0)
    return weighted / weighted.sum()


#: Columns of :func:`format_climate_table`: variable, heading.
TABLE_COLUMNS = (
    ("time_mean_rmse", "time-mean RMSE"),
    ("time_mean_bias", "time-mean bias"),
    ("annual_cycle_rmse", "annual-cycle RMSE"),
    ("drift", "drift / interannual std"),
    ("wasserstein", "Wasserstein-1"),
)


def write_climate_scores(scores: xr.Dataset, path: str | Path) -> Path:
    """Write :func:`climate_scores` to NetCDF-4 atomically (temporary name, then rename).

    The per-lead scores file (:func:`forecast.scoring.scores_file.write_scores`)
    has another layout (lead times, regions); climate scores keep the
    dataset's own variables, dims and attributes and open with plain
    ``xarray.open_dataset``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda temporary: scores.to_netcdf(temporary, format="NETCDF4"))


def format_climate_table(scores: xr.Dataset) -> str:
    """One row per channel, one column per climate score present (channel units, drift in std)."""
    columns = [(name, title) for name, title in TABLE_COLUMNS if name in scores]
    header = f"{'channel':<8}" + "".join(f"{title:>25}" for _, title in columns)
    lines = [
        f"climate scores {scores.attrs.get('run_start', '')} .. {scores.attrs.get('run_end', '')}",
        header,
    ]
    for channel in scores["channel"].values:
        row = "".join(f"{float(scores[name].sel(channel=channel)):>25.4g}" for name, _ in columns)
        lines.append(f"{channel!s:<8}{row}")
    return "\n".join(lines)
