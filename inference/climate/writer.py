"""The writer of a climate run: period means, histograms and snapshots, computed as leads arrive.

:class:`ClimateWriter` satisfies :class:`inference.writers.base.Writer`: the
run workflow hands it every lead of every batch of members, as it hands a
forecast writer, and it keeps only what was asked for:

- ``--reduce monthly,seasonal,annual,time-mean``: one product file each,
  ``OUT.monthly.zarr`` ... (:mod:`inference.climate.layout`), written when a
  period closes;
- ``--histograms BINS``: ``OUT.histograms.zarr``, written at the end;
- ``--output-every 1d``: snapshots every so many steps in the forecast
  layout, at ``OUT`` itself.

Its accumulators live in memory, so it is *stateful*: a resumable run saves
them with the model state in restart files (:mod:`inference.restart`) through
:meth:`ClimateWriter.snapshot` and :meth:`ClimateWriter.restore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from forecast.accumulators import bin_edges
from forecast.errors import ConfigError, DataError
from forecast.periods import PERIOD_KINDS
from inference.climate.layout import histogram_dataset, period_dataset
from inference.climate.reduce import BatchReducer, HistogramSpec, Record, RunPeriods
from inference.climate.stores import ProductStore, product_path, product_store
from inference.writers.base import ForecastWriter
from inference.writers.compression import DEFAULT_COMPRESSION, resolve_compression

#: Name of the histogram product.
HISTOGRAMS = "histograms"


class ClimateWriter(ForecastWriter):
    """Climate products of one run (one init time, any number of members).

    Parameters
    ----------
    out : Path
        ``--out``: the snapshots go there, product ``P`` to ``OUT.P.SUFFIX``;
        the lock and the manifest sit beside ``OUT``.
    reduce : sequence of str
        Period kinds to write (keys of :data:`forecast.periods.PERIOD_KINDS`).
    histograms : HistogramSpec, optional
        Bins of the per-channel histograms (None: no histograms).
    snapshots : ForecastWriter, optional
        Writer of the snapshots (None: none).
    output_every : int
        Steps between snapshots (lead 0, ``output_every``, ...).
    compression : str
        Codec of the products (``auto``: as :mod:`inference.writers.compression`
        chooses for the format); the snapshots' writer has its own.

    Notes
    -----
    Products are chunked by the members of the template's chunks, so that
    batches and ranks write disjoint chunks.
    """

    stateful = True

    def __init__(
        self,
        out: Path,
        reduce: Sequence[str] = (),
        histograms: HistogramSpec | None = None,
        snapshots: ForecastWriter | None = None,
        output_every: int = 1,
        compression: str = DEFAULT_COMPRESSION,
    ):
        super().__init__(Path(out))
        unknown = [k for k in reduce if k not in PERIOD_KINDS]
        if unknown:
            raise ConfigError(
                f"--reduce {','.join(unknown)} is not one of {', '.join(PERIOD_KINDS)}"
            )
        if not reduce and histograms is None and snapshots is None:
            raise ConfigError(
                "a climate run must write something",
                hint="give --reduce, --histograms or --output-every",
            )
        if output_every < 1:
            raise ConfigError(f"--output-every must be at least one step, not {output_every}")
        self.suffix = self.path.suffix.lower()
        self.reduce = tuple(dict.fromkeys(reduce))
        self.histogram_spec = histograms
        self.snapshots = snapshots
        self.output_every = int(output_every)
        self.stores: dict[str, ProductStore] = {
            name: product_store(product_path(self.path, name), compression)
            for name in self.product_names
        }
        self.compression = resolve_compression(
            compression, "zarr" if self.suffix == ".zarr" else "netcdf"
        )
        self.resumable = all(s.resumable for s in self.stores.values()) and (
            snapshots is None or snapshots.resumable
        )
        self.parallel = self.resumable and (snapshots is None or snapshots.parallel)
        self._reducers: dict[int, BatchReducer] = {}
        self._periods: RunPeriods | None = None

    @property
    def product_names(self) -> list[str]:
        """The reduced products, in the order written."""
        return [*self.reduce, *([HISTOGRAMS] if self.histogram_spec is not None else [])]

    def products(self) -> dict[str, str]:
        """Product name -> path (``snapshots`` -> OUT when there are snapshots)."""
        paths = {name: str(store.path) for name, store in self.stores.items()}
        if self.snapshots is not None:
            paths["snapshots"] = str(self.snapshots.path)
        return paths

    # -- layout ---------------------------------------------------------------------------------------
    def _datasets(self, template: xr.Dataset) -> dict[str, xr.Dataset]:
        if template.sizes["time"] != 1:
            raise ConfigError(
                f"a climate run starts from one init time, not {template.sizes['time']}",
                hint="give --init a single time (members may be many)",
            )
        steps = template.sizes["lead_time"] - 1
        leads = template["lead_time"].values
        step = (leads[1] - leads[0]).astype("timedelta64[s]").item()
        self.steps = steps
        self.shape = (
            len(template.data_vars),
            template.sizes["latitude"],
            template.sizes["longitude"],
        )
        start = template["time"].values[0]
        first = next(iter(template.data_vars.values()))
        chunk = int(first.encoding.get("chunks", (1, 1, 1))[2])
        self._periods = RunPeriods(self.reduce, start, steps, step)
        datasets = {
            kind: period_dataset(template, kind, self._periods.periods[kind], chunk)
            for kind in self.reduce
        }
        if self.histogram_spec is not None:
            whole = RunPeriods(("time-mean",), start, steps, step).periods["time-mean"][0]
            spec = self.histogram_spec
            edges = bin_edges(spec.low, spec.high, spec.bins)
            datasets[HISTOGRAMS] = histogram_dataset(template, whole, edges, chunk)
        return datasets

    def _snapshot_template(self, template: xr.Dataset) -> xr.Dataset:
        return template.isel(lead_time=slice(0, None, self.output_every))

    # -- Writer -----------------------------------------------------------------------------------------
    def create(self, template: xr.Dataset) -> None:
        self.channels = [str(c) for c in template.data_vars]
        for name, dataset in self._datasets(template).items():
            self.stores[name].create(dataset)
        if self.snapshots is not None:
            self.snapshots.create(self._snapshot_template(template))
        self._reducers = {}

    def resume(self, template: xr.Dataset) -> None:
        self.channels = [str(c) for c in template.data_vars]
        for name, dataset in self._datasets(template).items():
            self.stores[name].reopen(dataset)
        if self.snapshots is not None:
            self.snapshots.resume(self._snapshot_template(template))
        self._reducers = {}

    def write(self, init_index: int, member_start: int, lead: int, block: np.ndarray) -> None:
        if self.snapshots is not None and lead % self.output_every == 0:
            self.snapshots.write(init_index, member_start, lead // self.output_every, block)
        if not self.stores or lead >= self.steps:  # the final state closes the last step
            return
        reducer = self._reducers.get(member_start)
        if reducer is None:
            reducer = self._reducer(block.shape[0])
            self._reducers[member_start] = reducer
        for record in reducer.add(lead, block):
            self._write(record, member_start)
        if lead == self.steps - 1:
            self._reducers.pop(member_start, None)

    def _reducer(self, members: int) -> BatchReducer:
        assert self._periods is not None, "create() or resume() comes first"
        return BatchReducer(self._periods, (members, *self.shape), self.histogram_spec)

    def _write(self, record: Record, member_start: int) -> None:
        store = self.stores[record.product]
        if record.product == HISTOGRAMS:
            counts = record.values
            if max(int(v.max(initial=0)) for v in counts.values()) >= np.iinfo(np.int32).max:
                raise DataError(
                    "histogram counts overflow int32",
                    path=store.path,
                    hint="use fewer members per run",
                )
            members = slice(member_start, member_start + counts["counts"].shape[0])
            for k, channel in enumerate(self.channels):
                store.write(channel, (0, members), counts["counts"][:, k].astype(np.int32))
                store.write(
                    f"{channel}_below", (0, members), counts["below"][:, k].astype(np.int32)
                )
                store.write(
                    f"{channel}_above", (0, members), counts["above"][:, k].astype(np.int32)
                )
            return
        mean = record.values["mean"]
        members = slice(member_start, member_start + mean.shape[0])
        for k, channel in enumerate(self.channels):
            store.write(channel, (record.index, members), mean[:, k])

    def read(self, init_index: int, member_start: int, member_stop: int, lead: int) -> np.ndarray:
        raise DataError(
            "a climate output does not hold every state; runs restart from restart files",
            path=self.path,
        )

    # -- restart ----------------------------------------------------------------------------------------
    def snapshot(self, member_start: int) -> dict[str, Any]:
        """The accumulators of the batch starting at ``member_start`` (empty before its first lead)."""
        reducer = self._reducers.get(member_start)
        return {} if reducer is None else reducer.state()

    def restore(self, member_start: int, member_stop: int, state: dict[str, Any]) -> None:
        """Continue the batch ``member_start:member_stop`` from :meth:`snapshot`'s ``state``."""
        if not self.stores or not state:
            return
        reducer = self._reducer(member_stop - member_start)
        reducer.load_state(state)
        self._reducers[member_start] = reducer

    def finish(self) -> None:
        for store in self.stores.values():
            store.finish()
        if self.snapshots is not None:
            self.snapshots.finish()

    def close(self) -> None:
        for store in self.stores.values():
            store.close()
        if self.snapshots is not None:
            self.snapshots.close()

    def exists(self) -> bool:
        """Whether any of the run's files is there."""
        return any(s.exists() for s in self.stores.values()) or (
            self.snapshots is not None and self.snapshots.path.exists()
        )
