"""Distributed data parallel on CPU (gloo): two processes against one with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from forecast.training import TrainRequest, train

WORKER = Path(__file__).with_name("ddp_worker.py")
OPTIONS = {
    "hparams": {"embed_dim": 8, "num_layers": 1},
    "max_steps": 3,
    "batch_size": 4,
    "val_every": 3,
    "val_samples": 4,
    "workers": 0,
    "warmup_steps": 0,
    "lr": 1e-2,
}


def _check_against_single_process(ddp_dir: Path, toy_store: Path, tmp_path: Path) -> None:
    rank0 = torch.load(ddp_dir / "rank0.pt", weights_only=True)
    rank1 = torch.load(ddp_dir / "rank1.pt", weights_only=True)
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    torch.set_num_threads(1)
    single = train(
        TrainRequest(
            toy_store, "sfno", tmp_path / "single", progress=False, device="cpu", **OPTIONS
        )
    )
    reference = single.stepper.model.state_dict()
    torch.manual_seed(0)  # the initial weights, drawn as train() draws them
    initial = type(single.stepper).from_config(single.stepper.config()).model.state_dict()
    moved = sum(((reference[n] - initial[n]) ** 2).sum() for n in reference).sqrt()
    difference = sum(((reference[n] - rank0[n]) ** 2).sum() for n in reference).sqrt()
    assert moved > 1e-3
    assert difference < 0.02 * moved  # same global batch: same update up to float reduction order

    def losses(run_dir: Path) -> list[float]:
        records = map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
        return [r["loss"] for r in records if r["kind"] == "train"]

    assert losses(ddp_dir) == pytest.approx(losses(tmp_path / "single"), rel=1e-3)


@pytest.mark.slow
def test_torchrun_two_processes_agree_and_match_one_process(toy_store, tmp_path):
    """``torchrun --nproc_per_node 2``: 3 Python processes import torch, hence slow on 2 cores."""
    ddp_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(WORKER), str(toy_store), str(ddp_dir), json.dumps(OPTIONS),
    ]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    _check_against_single_process(ddp_dir, toy_store, tmp_path)
