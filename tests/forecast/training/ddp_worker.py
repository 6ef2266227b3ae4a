"""Run by ``torchrun`` in the DDP test: train, then save this rank's weights to OUT/rank<R>.pt."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from forecast.training import TrainRequest, train

if __name__ == "__main__":
    store, out, options = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    torch.set_num_threads(1)
    result = train(TrainRequest(store, "sfno", out, progress=False, device="cpu", **options))
    rank = int(__import__("os").environ.get("RANK", "0"))
    torch.save(result.stepper.model.state_dict(), out / f"rank{rank}.pt")
