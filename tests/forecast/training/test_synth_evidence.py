"""Fast version of the documented evidence: synth -> ingest -> train SFNO -> beat persistence.

docs/performance.md ("## Training") has the full run (32x64, demo config,
24 h lead at most half of persistence's RMSE, 5-day rollout below
climatology); this test runs the same chain at 16x32 for a few steps.
"""

from __future__ import annotations

import numpy as np
import torch

from forecast.cli.main import main
from forecast.training import TrainRequest, train
from forecast.training.evaluate import evaluate_checkpoint


def test_synth_ingest_train_beats_persistence(tmp_path, capsys):
    torch.set_num_threads(1)
    synth, store = tmp_path / "synth", tmp_path / "store.zarr"
    assert main(["synth", str(synth), "--grid", "16x32", "--days", "12", "--spinup-days", "3"]) == 0
    files = sorted(str(p) for p in synth.glob("*.nc"))
    assert (
        main(["ingest", *files, "--out", str(store), "--channels", "z500,t850,u10m", "--quiet"])
        == 0
    )
    capsys.readouterr()
    result = train(TrainRequest(
        store, "sfno", tmp_path / "run", hparams={"embed_dim": 16, "num_layers": 2}, max_steps=60,
        rollout_steps=2, batch_size=4, lr=3e-3, warmup_steps=5, val_fraction=0.25, val_every=60,
        val_samples=8, workers=0, device="cpu", progress=False,
    ))  # fmt: skip
    scores = evaluate_checkpoint(result.latest, store, n_steps=4, max_samples=8)
    assert np.isfinite(scores.model).all()
    # one step (6 h) and two steps (12 h): better than persistence in every channel
    assert (scores.model[:2] < scores.persistence[:2]).all(), (scores.model, scores.persistence)
    assert scores.climatology is not None and np.isfinite(scores.climatology).all()
