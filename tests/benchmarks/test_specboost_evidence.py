"""benchmarks/specboost_evidence.py: ``--first-hparams`` and ``--first-history`` train the
first model they name, and every model is scored from the same initial times.

As in ``test_dyffusion_evidence``, the script's ``forecast`` calls are recorded
instead of run and resolved by the real command-line parser and config merging.
"""

from __future__ import annotations

import numpy as np
import pytest

import forecast.checkpoint
import forecast.training.evaluate
from forecast.time import format_time
from tests.benchmarks.scripts import loaded, resolved
from tests.inference.conftest import write_store


@pytest.fixture(scope="module")
def specboost():
    yield from loaded("specboost_evidence")


@pytest.fixture
def recorded(specboost, monkeypatch):
    calls: list[list[str]] = []

    def fake(*argv: str, log=None) -> float:
        calls.append(list(argv))
        return 7.0

    monkeypatch.setattr(specboost, "forecast", fake)
    return calls


def test_first_hparams_train_the_configs_first_model_with_fewer_modes(
    specboost, recorded, tmp_path
):
    name = specboost.first_name("fno", "modes_lat=8,modes_lon=8")
    assert name == "first_fno_modes_lat8_modes_lon8"
    assert specboost.first_name("fno", "") == "first_fno"  # the earlier runs' directory
    cpu = specboost.train_first(
        tmp_path, tmp_path / "store.zarr", name, "fno", "modes_lat=8,modes_lon=8", 300
    )
    assert cpu == 7.0
    (argv,) = recorded
    assert argv[argv.index("--out") + 1] == str(tmp_path / name)
    request = resolved(argv).to_request()
    assert request.model == "fno" and request.max_steps == 300
    # the overrides replace the config's modes and keep the rest of its fno section
    assert (request.hparams["modes_lat"], request.hparams["modes_lon"]) == (8, 8)
    assert (request.hparams["embed_dim"], request.hparams["num_layers"]) == (32, 4)
    assert request.rollout_schedule == ((0, 1), (150, 2), (240, 4))
    specboost.train_first(tmp_path, tmp_path / "store.zarr", "first_fno", "fno", "", None)
    assert "--hparams" not in recorded[1] and "--max-steps" not in recorded[1]


def test_first_history_trains_the_first_model_on_more_input_states(specboost, recorded, tmp_path):
    name = specboost.first_name("fno", "", 3)
    assert name == "first_fno_history3"
    specboost.train_first(tmp_path, tmp_path / "store.zarr", name, "fno", "", 300, 3)
    (argv,) = recorded
    request = resolved(argv).to_request()
    assert request.history == 3 and request.diurnal_baseline is True  # the rest of the config
    assert request.hparams["embed_dim"] == 32 and request.hparams.get("modes_lat") is None


def test_models_of_any_history_are_scored_from_the_same_initial_times(
    specboost, tmp_path, monkeypatch
):
    store = write_store(tmp_path / "store.zarr", periods=40)
    times = np.array(
        [np.datetime64("2020-01-01T00") + np.timedelta64(6 * i, "h") for i in range(40)]
    )
    asked = {}

    def evaluate(checkpoint, store_path, n_steps, start, end, **kwargs):
        asked[checkpoint] = (start, end)
        return type("Scores", (), {"channels": ["z500"], "model": np.ones((4, 1)), "samples": 3})

    monkeypatch.setattr(forecast.training.evaluate, "evaluate_checkpoint", evaluate)
    monkeypatch.setattr(
        forecast.checkpoint, "read_metadata", lambda path: {"history": int(str(path)[-1])}
    )
    for history in (2, 3, 4):
        rmse, samples = specboost.rmse_by_lead(tmp_path / f"h{history}", store)
        assert rmse == {"z500": [1.0] * 4} and samples == 3
    # the windows start at the 85% mark (index 34) for two states, and one step earlier for
    # each further state, so that the first initial time, the window's last state, is index 35
    for history in (2, 3, 4):
        start, end = asked[tmp_path / f"h{history}"]
        assert start == format_time(times[34 - (history - 2)]) and end == format_time(times[-1])
