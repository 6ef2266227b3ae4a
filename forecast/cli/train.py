"""Train an SFNO, AFNO, FNO or DYffusion model on a training store.

Reads windows of history and K future steps from the store, minimises the
area-weighted MSE over K autoregressive steps (K raised during training), or
the fair CRPS of a noise-perturbed ensemble with --ensemble-size, and
validates every --val-every steps against persistence. The run directory
receives latest.ckpt and best.ckpt (for `forecast run`), latest.state.pt (for
--resume), metrics.jsonl and the resolved config.yaml.

--model dyffusion trains in two stages in one run: the first
--interpolator-steps steps the interpolator, the rest of --max-steps the
forecaster (interpolator frozen); --resume continues either stage exactly.
With --ensemble-size M each stage minimises the fair CRPS of M samples of its
dropout instead (--ensemble-noise is not used: the members differ by their masks).
--boost CKPT (SpecBoost) trains the --model backbone on the one-step
residual of the frozen checkpoint CKPT; the checkpoint written holds both.

A config's `model` key holds the backbone's name and, under each backbone's
name, its hyperparameters (model: {name: sfno, sfno: {...}, afno: {...}}),
so that one config trains any backbone: --model picks another, --hparams
overrides single values of the chosen one.

examples:
  forecast train --data store.zarr --model sfno --out runs/sfno --max-steps 2000 --rollout-steps 4
  forecast train --config configs/demo/train.yaml --data store.zarr --out runs/demo
  forecast train --config configs/demo/train.yaml --model afno --data store.zarr --out runs/afno
  forecast train --data store.zarr --model sfno --out runs/sfno --resume
  torchrun --nproc_per_node 4 -m forecast train --data store.zarr --model sfno --out runs/ddp
  forecast train --data store.zarr --model dyffusion --hparams horizon=4,embed_dim=32 \
      --max-steps 1200 --interpolator-steps 600 --out runs/dyffusion
  forecast train --data store.zarr --boost runs/sfno/best.ckpt --model fno --out runs/boosted
  forecast train --data store.zarr --forcing-store sst.zarr --forcing-vars sst --model sfno \
      --out runs/sst

--forcing-store STORE.zarr --forcing-vars sst feeds prescribed fields (a store
of 'forecast ingest' on the same grid and calendar, covering every time of
--data) to the backbone at each step's input time, normalised with that
store's statistics; the checkpoint records them, so 'forecast run' asks for
a --forcing-store of its own.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from forecast.cli.config import CommandConfig, option
from forecast.cli.progress import shows_progress
from forecast.models import hparams_to_dict
from forecast.training.families import FAMILIES, family, family_names, validate_family_hparams
from forecast.training.request import TrainRequest, parse_schedule

#: Flags whose spelling is not derived from the field name.
FLAGS = {"tendency_loss": ("--state-loss",)}

#: ``--help`` group of each option (the rest are "run").
GROUPS = {
    "data": (
        "data", "channels", "forcing_store", "forcing_vars", "val_start", "val_end",
        "val_fraction", "workers", "prefetch",
    ),
    "model": ("model", "hparams", "history", "forcings", "residual", "diurnal_baseline",
              "seasonal_baseline", "boost"),
    "optimisation": (
        "out", "max_steps", "rollout_steps", "rollout_schedule", "interpolator_steps",
        "chain_steps", "chain_lr", "batch_size", "accumulation",
        "lr", "weight_decay", "warmup_steps", "min_lr_factor", "grad_clip", "precision",
        "channel_weights", "tendency_loss", "zonal_mean_weight", "ensemble_size", "ensemble_noise", "input_noise",
        "seed",
    ),
}  # fmt: skip


class ModelSection(BaseModel):
    """The ``model`` key of a train config: the model's name and each model's hyperparameters.

    ``model: sfno`` is short for ``model: {name: sfno}``. Every name of
    :data:`forecast.training.families.FAMILIES` (the backbones and
    ``dyffusion``) may have a section, validated by its hyperparameter class
    whether it is chosen or not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sections: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"name": value}
        if isinstance(value, dict) and "sections" not in value:
            sections = {k: v for k, v in value.items() if k != "name"}
            return {"name": value.get("name"), "sections": sections}
        return value

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        family(name)
        return name

    @field_validator("sections")
    @classmethod
    def _sections(cls, sections: dict[str, Any]) -> dict[str, Any]:
        unknown = [name for name in sections if name not in FAMILIES]
        if unknown:
            raise ValueError(
                f"no model called {', '.join(unknown)} (sections are {', '.join(family_names())})"
            )
        return {
            name: hparams_to_dict(validate_family_hparams(name, values))
            for name, values in sections.items()
        }

    def hparams(self) -> dict[str, Any]:
        """The chosen backbone's hyperparameters from its section (empty without one)."""
        return dict(self.sections.get(self.name, {}))


def _request_fields() -> dict[str, Any]:
    """The fields of ``Config``: those of TrainRequest, with their help, bounds and defaults."""
    hints = typing.get_type_hints(TrainRequest)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(TrainRequest):
        if item.name in OWN_FIELDS:
            fields[item.name] = OWN_FIELDS[item.name]
            continue
        metadata = dict(item.metadata)
        help_text = metadata.pop("help", "")
        group = next((g for g, names in GROUPS.items() if item.name in names), "run")
        kwargs: dict[str, Any] = {"flags": FLAGS.get(item.name), "group": group, **metadata}
        if item.default is not dataclasses.MISSING:
            kwargs["default"] = item.default
        elif item.default_factory is not dataclasses.MISSING:
            kwargs["default"] = item.default_factory()
        field = option(help=help_text, **kwargs)
        fields[item.name] = (hints[item.name], field)
    return fields


#: Options whose command-line form differs from the request's field.
OWN_FIELDS: dict[str, Any] = {
    "model": (
        ModelSection,
        option(
            help="backbone (sfno, afno, fno) or dyffusion; in a config, also the hyperparameters of each",
            metavar="NAME",
            group="model",
        ),
    ),
    "hparams": (
        dict[str, Any],
        option(
            {},
            "hyperparameters of the chosen model as key=value,..., over its config section "
            "(e.g. embed_dim=64,num_layers=4; dyffusion also horizon=4,dropout=0.1)",
            metavar="KEY=VALUE,...",
            group="model",
        ),
    ),
}


class _TrainOptions(CommandConfig):
    """Behaviour of ``Config``; its fields come from :class:`TrainRequest`."""

    if TYPE_CHECKING:  # fields made by create_model below
        model: ModelSection
        hparams: dict[str, Any]

    @field_validator("rollout_schedule", mode="before", check_fields=False)
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        return parse_schedule(value) if value else None

    @classmethod
    def merge(cls, from_file: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """Flags over the file; ``--model NAME`` keeps the file's hyperparameter sections."""
        merged = {**from_file, **given}
        section = from_file.get("model")
        if "model" in given and isinstance(section, dict):
            merged["model"] = {**section, "name": given["model"]}
        return merged

    def to_request(self) -> TrainRequest:
        """The library's :class:`TrainRequest` (the chosen backbone's hyperparameters merged)."""
        values = self.model_dump(exclude={"model", "hparams"})
        hparams = {**self.model.hparams(), **self.hparams}
        return TrainRequest(model=self.model.name, hparams=hparams, **values)


Config = create_model(
    "Config", __base__=_TrainOptions, __doc__="Options of ``forecast train``.", **_request_fields()
)


def run(args: Any) -> int:
    """Run ``forecast train``; returns the exit code."""
    import contextlib
    import os

    from forecast import storage
    from forecast.locking import lock
    from forecast.training import train

    request = args.to_request()
    if request.progress and not shows_progress(False):
        request = dataclasses.replace(request, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    local = storage.is_local(request.out)
    existed = False
    with contextlib.ExitStack() as held:
        if rank == 0:  # one training per run directory (torchrun's other ranks follow rank 0)
            held.enter_context(lock(request.out, "forecast train"))
            if local:
                existed = request.out.exists()
                _prepare_run_directory(request)
            else:
                _write_remote_config(request)
        try:
            result = train(request)
        except BaseException:
            if rank == 0 and local:
                _remove_unstarted(request, existed)
            raise
    if rank == 0:
        line = f"trained {result.steps} steps; checkpoints in {request.out}"
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


#: What ``forecast train`` writes into a run directory before its first checkpoint.
_UNSTARTED = ("config.yaml", "metrics.jsonl")


def _prepare_run_directory(request: Any) -> None:
    """Check ``--out`` (under its lock), clear what an unstarted run left, write config.yaml.

    The run directory must not be, hold or lie in the store, and an existing
    non-empty folder must be a run directory of ``forecast train``; a fresh
    run clears the config and metrics of a run that stopped before its first
    checkpoint.
    """
    import yaml

    from forecast.files import atomic_write
    from forecast.overwrite import check_replaceable, involves
    from forecast.training.trainer import LATEST

    out = request.out
    inputs = [request.data] + ([request.forcing_store] if request.forcing_store else [])
    empty = out.is_dir() and not any(out.iterdir())
    if not empty or involves(out, inputs) is not None:
        check_replaceable(
            out, inputs=inputs, kinds=("run-directory",), flag="--out", action="write into"
        )
    started = (out / LATEST).exists()
    if started and not request.resume:
        return  # train() refuses an existing run: keep its config
    if not started and not request.resume:
        for name in _UNSTARTED:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(json.loads(json.dumps(request.options())), sort_keys=False)
    atomic_write(out / "config.yaml", lambda path: path.write_text(text))


def _write_remote_config(request: Any) -> None:
    """Write config.yaml of a run directory on object storage (one object), unless the run has begun."""
    import yaml

    from forecast import storage
    from forecast.training.trainer import LATEST

    if storage.exists(storage.join(request.out, LATEST)) and not request.resume:
        return  # train() refuses an existing run: keep its config
    text = yaml.safe_dump(json.loads(json.dumps(request.options())), sort_keys=False)
    storage.write_bytes(storage.join(request.out, "config.yaml"), text.encode())


def _remove_unstarted(request: Any, existed: bool) -> None:
    """After a failure before training began, leave no run directory of only config.yaml.

    Metrics of a run that trained (and stopped before its first checkpoint)
    stay for the user to read; the next fresh start clears them.
    """
    from forecast.training.trainer import LATEST, METRICS

    out = request.out
    if not out.is_dir() or (out / LATEST).exists() or (out / METRICS).exists():
        return
    (out / "config.yaml").unlink(missing_ok=True)
    if not existed and not any(out.iterdir()):
        out.rmdir()
