"""Batch plans and the batch size chosen from a memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from forecast.errors import ConfigError
from inference.batching import (
    batches_for_rank,
    choose_batch_size,
    member_bytes,
    member_chunk,
    parse_memory,
    plan_batches,
)
from inference.initial import load_initial_state, parse_init_spec
from tests.inference.conftest import CHANNELS


def test_parse_memory():
    assert parse_memory("8GB") == 8_000_000_000
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(1000) == 1000
    with pytest.raises(ConfigError, match="cannot parse memory size 'lots'"):
        parse_memory("lots")


def test_plan_never_shares_a_chunk_between_batches():
    # batches larger than the ensemble hold whole init times
    batches = plan_batches(n_init=3, n_members=4, batch_size=9)
    assert [len(b) for b in batches] == [8, 4]
    assert batches[0].regions() == [(0, 0, 4, 0), (1, 0, 4, 4)]
    # smaller ones hold a multiple of the chunk, within one init time
    batches = plan_batches(n_init=2, n_members=5, batch_size=5 - 2, chunk=2)
    assert [(int(b.init_index[0]), b.regions()[0][1:3]) for b in batches] == [
        (0, (0, 2)),
        (0, (2, 4)),
        (0, (4, 5)),
        (1, (0, 2)),
        (1, (2, 4)),
        (1, (4, 5)),
    ]
    split = [batches_for_rank(batches, r, 4) for r in range(4)]
    assert [[b.index for b in part] for part in split] == [[0, 1], [2], [3], [4, 5]]
    assert member_chunk(batch_size=16, members=1000, field_bytes=721 * 1440 * 4) == 16
    assert member_chunk(batch_size=64, members=1000, field_bytes=721 * 1440 * 4) == 16  # 64 MB cap


def test_choose_batch_size_from_budget():
    assert choose_batch_size(budget=10_000, per_member=1_000, total=1000) == 10
    assert choose_batch_size(budget=10_000, per_member=1_000, total=4) == 4
    assert choose_batch_size(budget=500, per_member=1_000, total=1000) == 1
    assert choose_batch_size(budget=10_000, per_member=1_000, total=1000, fixed_bytes=5_000) == 5


def test_member_bytes_measures_more_than_the_state(store, stepper):
    init = parse_init_spec("2020-01-01T06", "standard")
    state = load_initial_state(store, CHANNELS, init, 1)
    per_member = member_bytes(
        lambda s, t: stepper.advance(s, t, check_finite=False), state, np.asarray(init)
    )
    state_bytes = 4 * 16 * 32 * 4
    assert per_member >= 5 * state_bytes
    assert per_member < 2**30
