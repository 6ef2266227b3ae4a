"""How predictable is `forecast synth` weather? Twin experiments with the synthetic model itself.

From states of a spun-up run of the forced shallow-water model behind
``forecast synth`` (T15, as for a 32x64 grid), each forecast is made by the
model itself, so the only error left is the one no forecaster can remove:

- ``truth``: the run continued with its own stirring noise;
- ``twin``: the same state and the same current stirring, other future noise
  (an equally likely future);
- ``mean forcing``: the same state, the current stirring decaying as the AR(1)
  mean (no new noise): the best single deterministic forecast given the state
  *and* the current forcing, which a data-driven model must infer from history.

Prints the area-weighted RMSE of the 500 hPa geopotential (the layer's
geopotential anomaly) of each against persistence, at 6, 12 and 24 h, averaged
over ``--cases`` start times two days apart. A model trained on synth data
cannot beat the ``mean forcing`` ratio on average.

    .venv/bin/python benchmarks/synth_predictability.py [--cases 20] [--memory-days 2.0]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.synthetic_dynamics import ForcedShallowWater, config_for_output  # noqa: E402

STEP = 6 * 3600.0


def _phi(model: ForcedShallowWater, state: torch.Tensor) -> np.ndarray:
    return model.spec2grid(state[0]).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--spinup-days", type=float, default=20.0)
    parser.add_argument(
        "--memory-days", type=float, default=None, help="override the stirring memory"
    )
    parser.add_argument("--amplitude-factor", type=float, default=1.0, help="scale the stirring")
    parser.add_argument(
        "--relax-days", type=float, default=None, help="override the jet relaxation time"
    )
    parser.add_argument(
        "--eddy-relax-days", type=float, default=None, help="override the eddies' relaxation time"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = config_for_output(16)
    if args.memory_days is not None:
        config = dataclasses.replace(config, stir_memory_days=args.memory_days)
    config = dataclasses.replace(
        config, stir_amplitude=config.stir_amplitude * args.amplitude_factor
    )
    if args.relax_days is not None:
        config = dataclasses.replace(config, relax_days=args.relax_days)
    if args.eddy_relax_days is not None:
        config = dataclasses.replace(config, eddy_relax_days=args.eddy_relax_days)
    torch.set_num_threads(1)
    leads = (1, 2, 4)
    ratios = {name: {lead: [] for lead in leads} for name in ("twin", "mean forcing")}
    with torch.no_grad():
        model = ForcedShallowWater(config, args.seed)
        weights = np.cos(model.lats.numpy())[:, None] * np.ones((1, model.nlon))
        weights = weights / weights.mean()
        state = model.initial_state(0.05)
        year = 0.05
        for _ in range(int(args.spinup_days * 4)):
            model.set_season(year)
            state = model.advance(state, STEP)
        for case in range(args.cases):
            start = _phi(model, state)
            runs = {}
            for name in ("truth", "twin", "mean forcing"):
                member = copy.deepcopy(model)
                if name == "twin":
                    member.generator = torch.Generator().manual_seed(10_000 + case)
                s = state.clone()
                fields = {}
                for lead in range(1, max(leads) + 1):
                    member.set_season(year)
                    s = member.advance(
                        s, STEP, stirring="mean" if name == "mean forcing" else "random"
                    )
                    fields[lead] = _phi(member, s)
                runs[name] = fields
            for lead in leads:
                truth = runs["truth"][lead]
                persistence = math.sqrt(float(np.mean(weights * (start - truth) ** 2)))
                for name in ratios:
                    error = math.sqrt(float(np.mean(weights * (runs[name][lead] - truth) ** 2)))
                    ratios[name][lead].append(error / persistence)
            for _ in range(8):  # two days on to the next case, along the truth
                model.set_season(year)
                state = model.advance(state, STEP)
    print(f"{config}, {args.cases} cases, z500 RMSE / persistence RMSE")
    print("| forecast | 6 h | 12 h | 24 h |\n|---|---:|---:|---:|")
    for name, by_lead in ratios.items():
        print(f"| {name} | " + " | ".join(f"{np.mean(by_lead[lead]):.3f}" for lead in leads) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
