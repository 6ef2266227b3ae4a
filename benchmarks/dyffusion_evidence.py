"""Evidence for Spherical DYffusion on the demo's synthetic data, in one command.

    .venv/bin/python benchmarks/dyffusion_evidence.py --workdir /tmp/dy17
    .venv/bin/python benchmarks/dyffusion_evidence.py --workdir /tmp/dy17 --dropout 0.3 --dyffusion-grf

Stages (each skipped when its product exists, so a rerun continues):

1. ``store``: the demo's store (``forecast synth`` + ``forecast ingest`` with
   configs/demo/synth.yaml and ingest.yaml: 120 days, 32x64, 12 channels).
2. ``dyffusion``: ``forecast train --config configs/train/dyffusion_demo.yaml``
   (stage 1 the interpolator, stage 2 the forecaster), its process CPU time
   measured (user + system of the training process and its loader workers);
   ``--dropout P`` trains it with interpolator dropout ``P`` instead, in
   ``dyffusion_dropoutP`` (so both can live in one work directory);
   ``--chain-steps N`` ends it with N steps of both networks on the sampled
   horizon (``--chain-lr``: that stage's learning rate), in ``..._chainN``.
3. ``sfno``: the deterministic SFNO of configs/demo/train.yaml, trained for the
   same total CPU time: its number of steps is set from a calibration of its
   marginal CPU cost per step (30 minus 10 steps, at K = 1 and at K = 4), or ``--sfno-steps``,
   its curriculum scaled (K = 1 for 50% of the steps, 2 from 50%, 4 from 80%, as the demo's).
4. ``run``: 16-member ensembles from the held-out initial times (the last 15%
   of the store): DYffusion sampled (no perturbation, or with ``--dyffusion-grf``
   the SFNO's GRF perturbations as well), and the SFNO with the demo's GRF
   initial perturbations (configs/demo/run.yaml amplitudes); 20 steps (120 h).
5. ``score``: ``forecast score`` of both; the table of fair CRPS (DYffusion /
   SFNO) at 24, 72 and 120 h, spread-skill ratios of both at 24-120 h, and the
   ratio of forecast to truth power in the highest third of spherical-harmonic
   degrees at 120 h (member 0, init mean), per channel; and what the CRPS target
   asks of DYffusion's ensemble mean: the RMSE ratio (DYffusion / SFNO) at
   which a calibrated ensemble has 0.9x the SFNO's CRPS, given the SFNO's
   spread-skill ratio (Gaussian errors, ``rmse_ratio_needed``), beside the
   measured one.
6. ``long``: a 1,460-step (one year at 6 h) DYffusion rollout from the store's
   first initial time, and a year of synthetic truth (``forecast synth --days
   366`` from the same start, ingested the same way): the annual-mean
   global-mean bias of the rollout per channel, in units of the channel's std.

CPU times are process CPU seconds (the machine is shared; wall times are noisy).
Prints markdown tables and writes ``evidence.json`` (``evidence_NAME.json`` for a variant) in
the work directory.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from forecast.files import atomic_write  # noqa: E402

FORECAST = [sys.executable, "-m", "forecast"]
DEMO = REPO / "configs" / "demo"
DYFFUSION_CONFIG = REPO / "configs" / "train" / "dyffusion_demo.yaml"
LEADS_H = (24, 72, 120)
SSR_LEADS_H = (24, 48, 72, 96, 120)


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def forecast(*argv: str, log: Path | None = None) -> float:
    """Run ``forecast ARGV`` in a child process (one torch thread); its CPU seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    before = children_cpu()
    started = time.perf_counter()
    with open(log or os.devnull, "a") as out:
        subprocess.run(
            [*FORECAST, *argv], check=True, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    cpu = children_cpu() - before
    print(
        f"   forecast {argv[0]}: {cpu:.0f} CPU-s, {time.perf_counter() - started:.0f} s wall",
        flush=True,
    )
    return cpu


def build_store(work: Path, name: str = "store.zarr", days: int | None = None) -> Path:
    store = work / name
    if store.exists():
        return store
    synth = work / (name.replace(".zarr", "") + "_synth")
    extra = ["--days", str(days)] if days else []
    forecast("synth", str(synth), "--config", str(DEMO / "synth.yaml"), *extra, "--no-progress")
    forecast("ingest", *sorted(glob.glob(str(synth / "*.nc"))), "--out", str(store),
             "--config", str(DEMO / "ingest.yaml"), "--no-progress")  # fmt: skip
    return store


def trained(run_dir: Path) -> bool:
    return (run_dir / "latest.ckpt").exists() and (run_dir / "cpu.json").exists()


@dataclass(frozen=True)
class Recipe:
    """What a DYffusion run changes from configs/train/dyffusion_demo.yaml, and its directory.

    Parameters
    ----------
    dropout : float, optional
        The interpolator's dropout (None: the config's).
    forecaster_dropout : float, optional
        The forecaster's, kept on when sampling (``forecaster_sampling=true``;
        None: the config's 0, off). Each network samples at the rate it was
        trained with.
    ensemble_size : int
        Above 1, each stage trains on the fair CRPS of that many dropout samples
        (``--ensemble-size``); 1: the MSE of one sample.
    masks : str
        What one dropout mask value covers in both networks (``dropout_masks``).
    seed : int
        Seeds the weights, the data order and the training masks (``forecast
        train --seed``); 0 is the earlier runs' default.
    chain_steps : int
        The last optimiser steps that fine-tune both networks on the sampled
        horizon (``forecast train --chain-steps``); 0: none.
    chain_lr : float, optional
        That stage's peak learning rate (``--chain-lr``; None: the config's ``lr``).
    """

    dropout: float | None = None
    forecaster_dropout: float | None = None
    ensemble_size: int = 1
    masks: str = "element"
    seed: int = 0
    chain_steps: int = 0
    chain_lr: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Recipe:
        """The recipe of this script's command line."""
        return cls(args.dropout, args.forecaster_dropout, args.ensemble_size,
                   args.dropout_masks, args.train_seed, args.chain_steps,
                   args.chain_lr)  # fmt: skip

    @property
    def name(self) -> str:
        """The run directory: ``dyffusion``, plus ``_dropoutP``, ``_fdropoutP``, ``_ensM``,
        ``_channel`` or ``_block``, ``_chainN`` (``_chainN_lrX``) and ``_seedN`` for what differs
        from the defaults."""
        name = "dyffusion" if self.dropout is None else f"dyffusion_dropout{self.dropout:g}"
        if self.forecaster_dropout is not None:
            name = f"{name}_fdropout{self.forecaster_dropout:g}"
        name = name if self.ensemble_size == 1 else f"{name}_ens{self.ensemble_size}"
        name = name if self.masks == "element" else f"{name}_{self.masks}"
        name = name if self.chain_steps == 0 else f"{name}_chain{self.chain_steps}"
        name = name if self.chain_lr is None else f"{name}_lr{self.chain_lr:g}"
        return name if self.seed == 0 else f"{name}_seed{self.seed}"

    def options(self) -> list[str]:
        """The ``forecast train`` options of what differs from the config."""
        values = [] if self.dropout is None else [f"dropout={self.dropout:g}"]
        if self.forecaster_dropout is not None:
            values += [
                f"forecaster_dropout={self.forecaster_dropout:g}",
                "forecaster_sampling=true",
            ]
        if self.masks != "element":
            values.append(f"dropout_masks={self.masks}")
        options = ["--hparams", ",".join(values)] if values else []
        if self.ensemble_size > 1:
            options += ["--ensemble-size", str(self.ensemble_size)]
        if self.chain_steps:
            options += ["--chain-steps", str(self.chain_steps)]
        if self.chain_lr is not None:
            options += ["--chain-lr", f"{self.chain_lr:g}"]
        return options + (["--seed", str(self.seed)] if self.seed != 0 else [])


def train_dyffusion(
    work: Path, store: Path, recipe: Recipe = Recipe(), budget: Sequence[str] = ()
) -> float:
    """Train DYffusion with ``recipe`` in ``work / recipe.name``; its CPU seconds.

    ``budget``: extra ``forecast train`` options (steps). A run that is there is reused.
    """
    run_dir = work / recipe.name
    if not trained(run_dir):
        cpu = forecast("train", "--config", str(DYFFUSION_CONFIG), "--data", str(store),
                       "--out", str(run_dir), "--no-progress", *budget, *recipe.options(),
                       log=work / f"{recipe.name}.log")  # fmt: skip
        atomic_write(
            run_dir / "cpu.json", lambda temporary: temporary.write_text(json.dumps({"cpu_s": cpu}))
        )
    return json.loads((run_dir / "cpu.json").read_text())["cpu_s"]


def sfno_schedule(steps: int) -> str:
    return f"0:1,{int(0.5 * steps)}:2,{int(0.8 * steps)}:4"


def calibrate_sfno(work: Path, store: Path) -> dict[int, float]:
    """Marginal CPU seconds per optimiser step of the demo SFNO at K = 1 and K = 4.

    The difference of a 10-step and a 30-step run, over 20: the process start,
    the store's opening and the final checkpoint cancel (a 20-step run alone
    counted them as steps and gave the SFNO 57% of DYffusion's CPU time).
    """
    path = work / "sfno_calibration.json"
    if path.exists():
        return {int(k): v for k, v in json.loads(path.read_text()).items()}
    costs = {}
    for k in (1, 4):
        cpu = {}
        for steps in (10, 30):
            run_dir = work / f"calibrate_k{k}_{steps}"
            cpu[steps] = forecast("train", "--config", str(DEMO / "train.yaml"), "--data", str(store),
                                  "--out", str(run_dir), "--max-steps", str(steps), "--rollout-steps",
                                  str(k), "--rollout-schedule", f"0:{k}", "--val-every", "1000",
                                  "--no-progress")  # fmt: skip
        costs[k] = max(cpu[30] - cpu[10], 1e-3) / 20
    atomic_write(path, lambda temporary: temporary.write_text(json.dumps(costs)))
    return costs


def train_sfno(
    work: Path, store: Path, budget: float, steps: int | None = None
) -> tuple[float, int]:
    """Train the demo SFNO for ``budget`` CPU seconds (or ``steps`` steps); CPU seconds, steps."""
    run_dir = work / "sfno"
    if not trained(run_dir):
        if steps is None:
            cost = calibrate_sfno(work, store)
            per_k = {1: cost[1], 4: cost[4], 2: cost[1] + (cost[4] - cost[1]) / 3}
            per_step = 0.5 * per_k[1] + 0.3 * per_k[2] + 0.2 * per_k[4]
            steps = max(int(budget / per_step), 50)
        cpu = forecast("train", "--config", str(DEMO / "train.yaml"), "--data", str(store),
                       "--out", str(run_dir), "--max-steps", str(steps),
                       "--rollout-schedule", sfno_schedule(steps),
                       "--val-every", str(max(steps // 4, 1)), "--no-progress",
                       log=work / "sfno.log")  # fmt: skip
        atomic_write(
            run_dir / "cpu.json",
            lambda temporary: temporary.write_text(json.dumps({"cpu_s": cpu, "steps": steps})),
        )
    record = json.loads((run_dir / "cpu.json").read_text())
    return record["cpu_s"], record["steps"]


def held_out_inits(store: Path, history: int = 2, lead_steps: int = 20, every_h: int = 12) -> str:
    """Initial times whose history and 120 h of truth lie in the last 15% of the store."""
    from forecast.store import open_store
    from forecast.time import format_time

    times = open_store(store)["time"].values
    first = int(round(len(times) * 0.85)) + history - 1
    last = len(times) - 1 - lead_steps
    return f"{format_time(times[first])}/{format_time(times[last])}/{every_h}h"


def grf_options(amplitude: str | None) -> tuple[str, list[str]]:
    """Name suffix and ``forecast run`` options of the demo's GRF perturbations at ``amplitude``.

    None: no perturbation (``""``, no options); ``"demo"``: configs/demo/run.yaml as
    the SFNO has it; otherwise its length scale and shape with ``--amplitude AMPLITUDE``
    (``A`` or ``CH=A,...``, in units of each channel's std).
    """
    if amplitude is None:
        return "", []
    options = ["--config", str(DEMO / "run.yaml")]
    if amplitude == "demo":
        return "_grf", options
    tag = amplitude.replace(",", "_").replace("=", "")
    return f"_grf{tag}", [*options, "--amplitude", amplitude]


def run_and_score(work: Path, store: Path, name: str, checkpoint: Path, inits: str, *extra: str):
    """Run and score the 16-member ensemble ``name`` from ``inits``; its scores.

    Scores already there are reused only when they are of the same initial times
    and checkpoint (``{name}_run_cpu.json`` records both, the checkpoint by its SHA-256).
    """
    from forecast.checkpoint import checkpoint_digest

    out, scores = work / f"{name}.zarr", work / f"{name}_scores.nc"
    record = work / f"{name}_run_cpu.json"
    of = {"inits": inits, "checkpoint": checkpoint_digest(checkpoint)}
    recorded = json.loads(record.read_text()) if record.exists() else {}
    if not (scores.exists() and all(recorded.get(key) == value for key, value in of.items())):
        cpu = forecast("run", "--checkpoint", str(checkpoint), "--data", str(store), "--init", inits,
                       "--steps", "20", "--members", "16", "--seed", "0", "--out", str(out),
                       "--no-progress", "--overwrite", *extra, log=work / f"{name}_run.log")  # fmt: skip
        forecast("score", str(out), "--truth", str(store), "--out", str(scores),
                 "--region", "global", "--no-progress", log=work / f"{name}_score.log")  # fmt: skip
        atomic_write(
            record,
            lambda temporary: temporary.write_text(json.dumps({"cpu_s": cpu, **of})),
        )
    from forecast.scoring.scores_file import open_scores

    return open_scores(scores)


def _at(scores, metric: str, hours: int):
    import pandas as pd

    values = scores[metric].sel(model="forecast")
    if "region" in values.dims:
        values = values.sel(region="global")
    return values.sel(lead_time=pd.Timedelta(hours=hours))


def high_degree_power_ratio(scores, hours: int = 120):
    """Forecast / truth power summed over the highest third of the degrees, per channel."""
    import pandas as pd

    lead = pd.Timedelta(hours=hours)
    fc = scores["power_spectrum"].sel(lead_time=lead)
    truth = scores["truth_power_spectrum"].sel(lead_time=lead)
    if "region" in fc.dims:
        fc, truth = fc.isel(region=0), truth.isel(region=0)
    n = fc.sizes["wavenumber"]
    top = slice(int(np.ceil(2 * n / 3)), n)
    return fc.isel(wavenumber=top).sum("wavenumber") / truth.isel(wavenumber=top).sum("wavenumber")


def gaussian_crps(spread_skill: float) -> float:
    """Expected CRPS of a Gaussian ensemble, in units of its ensemble mean's RMSE.

    The truth departs from the ensemble mean by ``N(0, e**2)`` and the
    ensemble is ``N(mean, (r e)**2)`` (``r`` the spread-skill ratio, many
    members): ``E|X - y| = sqrt(2 / pi) * e * sqrt(1 + r**2)`` and
    ``E|X - X'| / 2 = r e / sqrt(pi)``, so the CRPS is their difference;
    ``1 / sqrt(pi)`` for a calibrated ensemble (``r = 1``), ``sqrt(2 / pi)``,
    the mean absolute error, for a deterministic one (``r = 0``).
    """
    r = float(spread_skill)
    return float(np.sqrt(2.0 / np.pi) * np.sqrt(1.0 + r * r) - r / np.sqrt(np.pi))


def rmse_ratio_needed(sfno_spread_skill: float, target: float = 0.9) -> float:
    """Ensemble-mean RMSE, DYffusion / SFNO, at which a calibrated DYffusion has ``target`` x the CRPS.

    Both ensembles Gaussian (``gaussian_crps``): DYffusion's CRPS is
    ``e_dy / sqrt(pi)``, the SFNO's ``e_sfno * gaussian_crps(r_sfno)``. Where
    the SFNO's own ensemble is nearly calibrated, calibration gains nothing
    and DYffusion's mean must itself be about ``target`` x as wrong.
    """
    return target * gaussian_crps(sfno_spread_skill) / gaussian_crps(1.0)


def attainability(dy, sfno, channels: list[str], leads_h=LEADS_H) -> dict:
    """What the CRPS target asks of DYffusion's ensemble mean, per channel and lead.

    ``needed``: the ensemble-mean RMSE ratio (DYffusion / SFNO) at which a
    calibrated DYffusion meets CRPS <= 0.9x the SFNO's (``rmse_ratio_needed``
    of the SFNO's spread-skill ratio); ``measured``: the ratio DYffusion has.
    """
    table = {}
    for channel in channels:
        table[channel] = {
            h: {
                "needed": rmse_ratio_needed(float(_at(sfno, "ssr", h).sel(channel=channel))),
                "measured": float(_at(dy, "rmse", h).sel(channel=channel))
                / float(_at(sfno, "rmse", h).sel(channel=channel)),
            }
            for h in leads_h
        }
    return table


def long_run(work: Path, store: Path, checkpoint: Path, name: str = "long") -> dict:
    """Annual-mean global-mean bias of a 1,460-step rollout against a synthetic truth year.

    The rollout is written to ``name.zarr`` in ``work`` (and reused from there).
    """
    from forecast.store import open_store

    truth_store = build_store(work, "truth_year.zarr", days=367)
    out = work / f"{name}.zarr"
    init = str(open_store(store)["time"].values[1])[:16]
    if not (work / f"{name}_cpu.json").exists():
        cpu = forecast("run", "--checkpoint", str(checkpoint), "--data", str(store), "--init", init,
                       "--steps", "1460", "--members", "1", "--seed", "0", "--out", str(out),
                       "--no-progress", "--overwrite", log=work / f"{name}_run.log")  # fmt: skip
        atomic_write(
            work / f"{name}_cpu.json",
            lambda temporary: temporary.write_text(json.dumps({"cpu_s": cpu})),
        )
    return annual_bias(out, truth_store)


def annual_bias(out: Path, truth_store: Path, member: int | None = 0) -> dict:
    """Run-mean global-mean bias per channel of the forecast ``out`` against ``truth_store``.

    Over the forecast's leads after the initial state (init 0), area-weighted,
    in units of the truth store's std of each channel. ``member``: that member,
    or None for the ensemble mean.
    """
    import xarray as xr

    from forecast.grid import Grid
    from forecast.store import open_store, store_grid

    fc = xr.open_zarr(out).load()  # one read of each chunk (a 1,460-step run: 36 MB a member)
    truth = open_store(truth_store)
    grid: Grid = store_grid(truth)
    # weights without a latitude coordinate: the forecast's and the store's latitudes may differ
    # in the last bits (1e-14), and aligning them by label would drop those rows
    weights = xr.DataArray(grid.area_weights(), dims="latitude")
    valid = fc["valid_time"].isel(time=0).values[1:]
    truth_data = truth["data"].sel(time=valid).load()
    channels = [str(c) for c in truth["channel"].values if str(c) in fc]
    result = {}
    for channel in channels:
        values = fc[channel].isel(time=0, lead_time=slice(1, None))
        values = values.mean("member") if member is None else values.isel(member=member)
        finite = bool(np.isfinite(values.values).all())
        model = float(values.weighted(weights).mean(("latitude", "longitude")).mean())
        true = float(
            truth_data.sel(channel=channel).weighted(weights).mean(("latitude", "longitude")).mean()
        )
        std = float(truth["std"].sel(channel=channel))
        result[channel] = {"finite": finite, "bias_over_std": (model - true) / std}
    return result


def parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="work/dyffusion_evidence")
    parser.add_argument("--skip-long", action="store_true", help="skip the one-year rollout")
    parser.add_argument(
        "--max-steps", type=int, help="DYffusion's optimiser steps (default: its config's)"
    )
    parser.add_argument(
        "--interpolator-steps", type=int, help="of which stage 1 (default: its config's)"
    )
    parser.add_argument("--init-every", type=int, default=12, help="hours between held-out inits")
    parser.add_argument(
        "--dropout",
        type=float,
        help="train DYffusion with this interpolator dropout (its run directory "
        "dyffusion_dropoutP; default: the config's 0.1, directory dyffusion)",
    )
    parser.add_argument(
        "--forecaster-dropout",
        type=float,
        help="train DYffusion's forecaster with this dropout and keep it on when sampling "
        "(forecaster_sampling; run directory ..._fdropoutP; default: the config's 0, off)",
    )
    parser.add_argument(
        "--ensemble-size",
        type=int,
        default=1,
        help="train each DYffusion stage on the fair CRPS of this many dropout samples "
        "(run directory ..._ensM; default 1: MSE of one sample)",
    )
    from forecast.models.conditioned import DROPOUT_MASKS

    parser.add_argument(
        "--dropout-masks",
        choices=DROPOUT_MASKS,
        default="element",
        help="what one dropout mask value covers in both DYffusion networks: a feature value "
        "(default), a whole feature map or a row's whole block features (run directory "
        "..._channel or ..._block)",
    )
    parser.add_argument(
        "--train-seed",
        type=int,
        default=0,
        help="seed of DYffusion's weights, data order and training masks (forecast train "
        "--seed; run directory ..._seedN unless 0, the default): a second run of one recipe",
    )
    parser.add_argument(
        "--chain-steps",
        type=int,
        default=0,
        help="end DYffusion's training with this many steps of both networks on the sampled "
        "horizon, out of --max-steps (forecast train --chain-steps; run directory ..._chainN)",
    )
    parser.add_argument(
        "--chain-lr",
        type=float,
        help="peak learning rate of the --chain-steps stage (forecast train --chain-lr; run "
        "directory ..._chainN_lrX; default: the config's lr)",
    )
    parser.add_argument(
        "--dyffusion-grf",
        nargs="?",
        const="demo",
        metavar="A|CH=A,...",
        help="also perturb DYffusion's initial states with the SFNO's GRF perturbations "
        "(configs/demo/run.yaml), at their amplitude or at this one (default: none)",
    )
    parser.add_argument(
        "--sfno-steps",
        type=int,
        help="train the SFNO this many steps instead of calibrating them from DYffusion's CPU time",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print("== store", flush=True)
    store = build_store(work)
    print("== train DYffusion", flush=True)
    budget = [f"--{k.replace('_', '-')}={v}" for k, v in
              (("max_steps", args.max_steps), ("interpolator_steps", args.interpolator_steps),
               ("val_every", args.max_steps)) if v]  # fmt: skip
    recipe = Recipe.from_args(args)
    dy_name = recipe.name
    dy_cpu = train_dyffusion(work, store, recipe, budget)
    dy_checkpoint = work / dy_name / "best.ckpt"
    print("== train the deterministic SFNO for the same CPU time", flush=True)
    sfno_cpu, sfno_steps = train_sfno(work, store, dy_cpu, args.sfno_steps)
    inits = held_out_inits(store, every_h=args.init_every)
    print(f"== ensembles from {inits}", flush=True)
    suffix, perturbation = grf_options(args.dyffusion_grf)
    dy = run_and_score(work, store, dy_name + suffix, dy_checkpoint, inits,
                       *perturbation)  # fmt: skip
    sfno = run_and_score(work, store, "sfno", work / "sfno" / "best.ckpt", inits,
                         "--config", str(DEMO / "run.yaml"))  # fmt: skip
    channels = [str(c) for c in dy["channel"].values]
    report: dict = {
        "cpu_s": {"dyffusion": dy_cpu, "sfno": sfno_cpu, "sfno_steps": sfno_steps},
        "inits": inits,
    }
    print(
        f"\nTraining CPU time: DYffusion {dy_cpu:.0f} s, SFNO {sfno_cpu:.0f} s ({sfno_steps} steps)\n"
    )
    print("| channel | " + " | ".join(f"CRPS {h} h DY / SFNO" for h in LEADS_H) + " | "
          + " | ".join(f"SSR {h} h DY, SFNO" for h in SSR_LEADS_H) + " | power 120 h DY, SFNO |")  # fmt: skip
    print("| --- " * (1 + len(LEADS_H) + len(SSR_LEADS_H) + 1) + "|")
    power_dy, power_sfno = high_degree_power_ratio(dy), high_degree_power_ratio(sfno)
    for channel in channels:
        row = {"crps_ratio": {}, "ssr": {}, "crps": {}}
        cells = []
        for h in LEADS_H:
            a = float(_at(dy, "crps", h).sel(channel=channel))
            b = float(_at(sfno, "crps", h).sel(channel=channel))
            row["crps"][h] = {"dyffusion": a, "sfno": b}
            row["crps_ratio"][h] = a / b
            cells.append(f"{a / b:.3f}")
        for h in SSR_LEADS_H:
            a = float(_at(dy, "ssr", h).sel(channel=channel))
            b = float(_at(sfno, "ssr", h).sel(channel=channel))
            row["ssr"][h] = {"dyffusion": a, "sfno": b}
            cells.append(f"{a:.2f}, {b:.2f}")
        p_dy, p_sfno = float(power_dy.sel(channel=channel)), float(power_sfno.sel(channel=channel))
        row["power_120h"] = {"dyffusion": p_dy, "sfno": p_sfno}
        cells.append(f"{p_dy:.3f}, {p_sfno:.3f}")
        report[channel] = row
        print(f"| {channel} | " + " | ".join(cells) + " |")
    crps_ok = all(report[c]["crps_ratio"][h] <= 0.9 for c in channels for h in LEADS_H)
    ssr_ok = all(
        0.8 <= report[c]["ssr"][h]["dyffusion"] <= 1.2 for c in channels for h in SSR_LEADS_H
    )
    power_ok = all(
        abs(report[c]["power_120h"]["dyffusion"] - 1) < abs(report[c]["power_120h"]["sfno"] - 1)
        for c in channels
    )
    print(f"\nCRPS <= 0.9x everywhere: {crps_ok}; SSR in [0.8, 1.2] everywhere: {ssr_ok}; "
          f"high-degree power closer to 1 everywhere: {power_ok}")  # fmt: skip
    report["targets"] = {"crps": crps_ok, "ssr": ssr_ok, "power": power_ok}
    report["attainability"] = attainability(dy, sfno, channels)
    print("\nEnsemble-mean RMSE, DY / SFNO: needed by a calibrated DYffusion for CRPS <= 0.9x "
          "(from the SFNO's spread-skill), and measured")  # fmt: skip
    print("| channel | " + " | ".join(f"{h} h needed, measured" for h in LEADS_H) + " |")
    print("| --- " * (1 + len(LEADS_H)) + "|")
    for channel in channels:
        cells = report["attainability"][channel]
        print(f"| {channel} | " + " | ".join(
            f"{cells[h]['needed']:.3f}, {cells[h]['measured']:.3f}" for h in LEADS_H) + " |")  # fmt: skip
    if not args.skip_long:
        print("\n== one-year DYffusion rollout", flush=True)
        variant = dy_name.removeprefix("dyffusion")
        long = long_run(work, store, dy_checkpoint, f"long{variant}")
        report["long_run"] = long
        print("| channel | finite | annual-mean global-mean bias / std |\n| --- | --- | --- |")
        for channel, values in long.items():
            print(f"| {channel} | {values['finite']} | {values['bias_over_std']:+.3f} |")
    name = dy_name + suffix
    report["dyffusion"] = name
    evidence = "evidence.json" if name == "dyffusion" else f"evidence_{name}.json"
    atomic_write(
        work / evidence,
        lambda temporary: temporary.write_text(json.dumps(report, indent=1, default=float)),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
