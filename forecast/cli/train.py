"""Train an SFNO, AFNO or FNO model on a training store.

Reads windows of history and K future steps from the store, minimises the
area-weighted MSE over K autoregressive steps (K raised during training), or
the fair CRPS of a noise-perturbed ensemble with --ensemble-size, and
validates every --val-every steps against persistence. The run directory
receives latest.ckpt and best.ckpt (for `forecast run`), latest.state.pt (for
--resume), metrics.jsonl and the resolved config.yaml.

examples:
  forecast train --data store.zarr --model sfno --out runs/sfno --max-steps 2000 --rollout-steps 4
  forecast train --config configs/train/demo.yaml --data store.zarr --out runs/demo
  forecast train --data store.zarr --model sfno --out runs/sfno --resume
  torchrun --nproc_per_node 4 -m forecast train --data store.zarr --model sfno --out runs/ddp
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from forecast.errors import ConfigError


class TrainConfig(BaseModel):
    """The resolved options of ``forecast train`` (unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Path
    model: str
    out: Path
    hparams: dict[str, Any] = Field(default_factory=dict)
    channels: list[str] | None = None
    history: int = Field(1, ge=1)
    forcings: bool = True
    residual: bool = True
    diurnal_baseline: bool = False
    max_steps: int = Field(1000, ge=1)
    rollout_steps: int = Field(1, ge=1)
    rollout_schedule: list[tuple[int, int]] | None = None
    batch_size: int = Field(8, ge=1)
    accumulation: int = Field(1, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_factor: float = Field(0.01, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    channel_weights: dict[str, float] | None = None
    tendency_loss: bool = True
    ensemble_size: int = Field(1, ge=1)
    ensemble_noise: float = Field(0.05, ge=0)
    val_start: str | None = None
    val_end: str | None = None
    val_fraction: float | None = Field(0.1, ge=0, lt=1)
    val_every: int = Field(100, ge=1)
    val_samples: int | None = Field(32, ge=1)
    log_every: int = Field(10, ge=1)
    workers: int = Field(2, ge=0)
    prefetch: int = Field(4, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    resume: bool = False
    progress: bool = True

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.ensemble_size > 1 and self.ensemble_noise == 0:
            raise ValueError("an ensemble needs --ensemble-noise > 0")
        return self


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``forecast train`` (YAML keys mirror them)."""
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="training store (STORE.zarr from 'forecast ingest')")
    data.add_argument(
        "--channels", help="comma-separated channel ids to model (default: all in the store)"
    )
    data.add_argument(
        "--val-start", help="first time of the held-out validation period, e.g. 2014-01-01"
    )
    data.add_argument("--val-end", help="last time of the validation period (inclusive)")
    data.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="without --val-start/--val-end: hold out the last fraction of the store (default 0.1)",
    )
    data.add_argument(
        "--workers", type=int, default=None, help="data-loader worker processes (default 2)"
    )
    data.add_argument(
        "--prefetch", type=int, default=None, help="batches each worker reads ahead (default 4)"
    )

    model = parser.add_argument_group("model")
    model.add_argument("--model", help="backbone: sfno, afno or fno")
    model.add_argument(
        "--hparams",
        help="backbone hyperparameters as key=value,... (e.g. embed_dim=64,num_layers=4)",
    )
    model.add_argument(
        "--history", type=int, default=None, help="input states per step (default 1)"
    )
    model.add_argument(
        "--no-forcings",
        dest="forcings",
        action="store_false",
        default=None,
        help="do not feed time-of-day/year forcings",
    )
    model.add_argument(
        "--no-residual",
        dest="residual",
        action="store_false",
        default=None,
        help="predict the full state, not the tendency",
    )
    model.add_argument(
        "--diurnal-baseline",
        action="store_true",
        default=None,
        help="start each step from the store's climatological diurnal cycle (grids up to ~1 degree)",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--out", help="run directory for checkpoints, metrics and config")
    optim.add_argument("--max-steps", type=int, default=None, help="optimiser steps (default 1000)")
    optim.add_argument(
        "--rollout-steps",
        type=int,
        default=None,
        help="final autoregressive steps K in the loss (default 1)",
    )
    optim.add_argument(
        "--rollout-schedule", help="explicit curriculum as step:K pairs, e.g. 0:1,500:2,1000:4"
    )
    optim.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="samples per micro-step over all processes (default 8)",
    )
    optim.add_argument(
        "--accumulation", type=int, default=None, help="micro-steps per optimiser step (default 1)"
    )
    optim.add_argument(
        "--lr", type=float, default=None, help="peak learning rate of AdamW (default 1e-3)"
    )
    optim.add_argument(
        "--weight-decay", type=float, default=None, help="AdamW weight decay (default 0.01)"
    )
    optim.add_argument(
        "--warmup-steps",
        type=int,
        default=None,
        help="linear warm-up steps before the cosine decay (default 50)",
    )
    optim.add_argument(
        "--min-lr-factor",
        type=float,
        default=None,
        help="final learning rate as a fraction of --lr (default 0.01)",
    )
    optim.add_argument(
        "--grad-clip", type=float, default=None, help="max gradient norm (default 1.0; 0 disables)"
    )
    optim.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default=None,
        help="bf16 autocast or fp32 (auto: bf16 on CUDA)",
    )
    optim.add_argument(
        "--channel-weights", help="loss weight per channel as id=weight,... (others 1)"
    )
    optim.add_argument(
        "--state-loss",
        dest="tendency_loss",
        action="store_false",
        default=None,
        help="measure errors in state std units, not in one-step tendency std units",
    )
    optim.add_argument(
        "--ensemble-size",
        type=int,
        default=None,
        help="train an ensemble of M members on the fair CRPS (default 1: MSE)",
    )
    optim.add_argument(
        "--ensemble-noise",
        type=float,
        default=None,
        help="std of the initial-state noise of ensemble members, normalised units (default 0.05)",
    )
    optim.add_argument(
        "--seed", type=int, default=None, help="seed of weights, data order and noise (default 0)"
    )

    run = parser.add_argument_group("run")
    run.add_argument(
        "--val-every",
        type=int,
        default=None,
        help="validate and checkpoint every N steps (default 100)",
    )
    run.add_argument(
        "--val-samples", type=int, default=None, help="validation windows scored (default 32)"
    )
    run.add_argument(
        "--log-every",
        type=int,
        default=None,
        help="log the training loss every N steps (default 10)",
    )
    run.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="device (default auto)"
    )
    run.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue the run in --out exactly where it stopped",
    )
    run.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )


def _parse_pairs(text: Any, label: str, number: bool = False) -> dict[str, Any] | None:
    """``"a=1,b=x"`` (or a YAML mapping) -> dict with YAML-typed values."""
    import yaml

    if text is None or text == "":
        return None
    if isinstance(text, dict):
        return dict(text)
    out: dict[str, Any] = {}
    for part in str(text).split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"cannot parse --{label} {text!r}",
                hint=f"write key=value pairs separated by commas, e.g. --{label} a=1,b=2",
            )
        parsed = yaml.safe_load(value.strip())
        if number and not isinstance(parsed, (int, float)):
            raise ConfigError(f"--{label}: {key.strip()}={value.strip()} is not a number")
        out[key.strip()] = parsed
    return out


def _schedule(text: Any) -> list[tuple[int, int]] | None:
    from forecast.training.losses import RolloutCurriculum

    if not text:
        return None
    if isinstance(text, list):
        text = ",".join(str(t) for t in text)
    try:
        return list(RolloutCurriculum.parse_milestones(str(text)))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Validate the parsed flags into a :class:`TrainConfig`.

    Raises
    ------
    ConfigError
        Missing required options or invalid values, in one line.
    """
    missing = [flag for flag in ("data", "model", "out") if not getattr(args, flag, None)]
    if missing:
        raise ConfigError(
            f"missing {', '.join('--' + m for m in missing)}",
            hint="e.g. forecast train --data store.zarr --model sfno --out runs/sfno",
        )
    values: dict[str, Any] = {
        "data": args.data,
        "model": args.model,
        "out": args.out,
        "hparams": _parse_pairs(args.hparams, "hparams") or {},
        "channel_weights": _parse_pairs(args.channel_weights, "channel-weights", number=True),
        "rollout_schedule": _schedule(args.rollout_schedule),
    }
    if args.channels:
        values["channels"] = [c.strip() for c in str(args.channels).split(",") if c.strip()]
    for name in TrainConfig.model_fields:
        if name in values or name in ("channels",):
            continue
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    if values.get("grad_clip") == 0:
        values["grad_clip"] = None
    if values.get("val_fraction") is None and (args.val_start or args.val_end):
        values["val_fraction"] = None
    try:
        return TrainConfig(**values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        raise ConfigError(f"invalid option --{where.replace('_', '-')}: {first['msg']}") from None


def run(args: argparse.Namespace) -> int:
    """Run ``forecast train``; returns the exit code."""
    import os

    import yaml

    from forecast.files import atomic_write
    from forecast.training import train

    config = resolve_config(args)
    rank = int(os.environ.get("RANK", "0"))
    existing_run = (config.out / "latest.ckpt").exists() and not config.resume
    if rank == 0 and not existing_run:  # train() refuses an existing run: keep its config
        config.out.mkdir(parents=True, exist_ok=True)
        resolved = json.loads(config.model_dump_json())
        text = yaml.safe_dump(resolved, sort_keys=False)
        atomic_write(config.out / "config.yaml", lambda path: path.write_text(text))
    options = config.model_dump(exclude={"data", "model", "out"})
    result = train(config.data, config.model, config.out, **options)
    if rank == 0:
        line = f"trained {result.steps} steps; checkpoints in {config.out}"
        scores = result.last_validation
        if scores is not None:
            lead = scores.n_leads
            parts = [
                f"{channel} {scores.model[lead - 1, i]:.4g} (persistence {scores.persistence[lead - 1, i]:.4g})"
                for i, channel in enumerate(scores.channels)
            ]
            line += f"; validation RMSE at {lead} step(s): " + ", ".join(parts)
        print(line)
    return 0
