"""A real dask.distributed cluster writes the same store as the threaded scheduler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from forecast.store import open_store
from pipelines.ingest import ingest
from tests.pipelines.sources_factory import era5_like, hours, write_netcdf


def test_local_cluster_store_identical_to_threads(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    ds = era5_like(hours("2020-01-01", 24))
    files = [write_netcdf(ds.isel(valid_time=slice(0, 12)), tmp_path / "a.nc"), write_netcdf(ds.isel(valid_time=slice(12, 24)), tmp_path / "b.nc")]
    threaded, clustered = tmp_path / "threads.zarr", tmp_path / "cluster.zarr"
    ingest(files, threaded, grid="16x32", progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        ingest(files, clustered, grid="16x32", scheduler=cluster.scheduler_address, progress=False)
    a, b = open_store(threaded), open_store(clustered)
    for name in ("data", "mean", "std", "diff_std", "climatology"):
        np.testing.assert_array_equal(a[name].values, b[name].values)
    np.testing.assert_array_equal(a["time"].values, b["time"].values)


def test_unreachable_scheduler_is_a_clear_error(tmp_path: Path) -> None:
    from forecast.errors import DataError

    write_netcdf(era5_like(hours("2020-01-01", 4)), tmp_path / "a.nc")
    with pytest.raises(DataError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:1"):
        ingest([tmp_path / "a.nc"], tmp_path / "s.zarr", scheduler="tcp://127.0.0.1:1", progress=False)
    assert not (tmp_path / "s.zarr").exists()
