"""Windows, validation split, data order and the Zarr reader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from forecast.errors import DataError
from forecast.training.data import StepBatchSampler, WindowDataset, make_loader, split_windows

TIMES = pd.date_range("2013-01-01", "2014-12-31T18:00", freq="6h").values


def test_val_period_splits_without_overlap():
    train, val = split_windows(TIMES, 5, "2014-01-01", "2014-12-31T18:00")
    first_val = int(np.searchsorted(TIMES, np.datetime64("2014-01-01")))
    assert val[0] == first_val and val[-1] == len(TIMES) - 5
    assert train[-1] + 5 - 1 < first_val  # no training window reaches into validation
    assert len(train) == first_val - 4


def test_val_fraction_holds_out_the_end():
    train, val = split_windows(TIMES[:100], 3, val_fraction=0.2)
    assert val[0] == 80 and val[-1] == 97 and train[-1] == 77


def test_store_too_short():
    with pytest.raises(
        DataError,
        match=r"store has 3 time step\(s\) but one sample needs 5 \(history plus rollout steps\)",
    ):
        split_windows(TIMES[:3], 5)


def test_val_period_outside_store():
    with pytest.raises(
        DataError,
        match=r"validation period 2016-01-01T00:00 \.\. 2016-12-31T00:00 lies outside the store",
    ):
        split_windows(TIMES, 5, "2016-01-01", "2016-12-31")


def test_data_order_is_a_function_of_the_step():
    starts = np.arange(50)
    sampler = StepBatchSampler(
        starts,
        8,
        seed=3,
        first_micro_step=0,
        n_micro_steps=12,
        targets_of_micro_step=lambda m: 1 + m // 6,
    )
    batches = list(sampler)
    resumed = list(
        StepBatchSampler(
            starts,
            8,
            seed=3,
            first_micro_step=7,
            n_micro_steps=5,
            targets_of_micro_step=lambda m: 1 + m // 6,
        )
    )
    assert batches[7:] == resumed
    assert batches[0][0][1] == 1 and batches[11][0][1] == 2
    epoch = [start for batch in batches[:6] for start, _ in batch]
    assert len(set(epoch)) == 48  # one epoch: 6 batches of 8 distinct windows
    ranks = [
        list(StepBatchSampler(starts, 8, 3, 0, 12, lambda m: 1, rank=r, world_size=2))
        for r in (0, 1)
    ]
    for step in range(12):
        assert [s for s, _ in ranks[0][step] + ranks[1][step]] == [s for s, _ in batches[step]]


def test_loader_reads_the_right_windows(toy_store):
    dataset = WindowDataset(toy_store, [1, 0], history=2)
    loader = make_loader(dataset, [[(5, 3), (40, 3)]], workers=1, prefetch=2)
    batch = next(iter(loader))
    assert batch["history"].shape == (2, 2, 2, 16, 32) and batch["targets"].shape == (
        2,
        3,
        2,
        16,
        32,
    )
    truth = xr.open_zarr(toy_store)["data"]
    np.testing.assert_array_equal(
        batch["history"][1].numpy(), truth.isel(time=slice(40, 42), channel=[1, 0]).values
    )
    np.testing.assert_array_equal(
        batch["targets"][0].numpy(), truth.isel(time=slice(7, 10), channel=[1, 0]).values
    )
    assert batch["start"].tolist() == [5, 40]
