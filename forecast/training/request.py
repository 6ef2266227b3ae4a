"""What a training run is asked to do: :class:`TrainRequest`, every option with its one default.

The library (:func:`forecast.training.train`, :class:`~forecast.training.trainer.TrainingLoop`)
takes a request; ``forecast train`` generates its flags and YAML keys from the
same fields (their ``help`` metadata and bounds), so an option is added in
one place: a field here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from forecast.errors import ConfigError


def _option(default: Any, help: str, **bounds: float) -> Any:
    """A field with its help text and its bounds (``ge``, ``gt``, ``le``, ``lt``)."""
    factory = {"default_factory": dict} if default == {} else {"default": default}
    return field(metadata={"help": help, **bounds}, **factory)


@dataclass(frozen=True)
class TrainRequest:
    """A training run: data, model, optimisation and bookkeeping options.

    Every attribute's meaning, default and range are in its field's metadata
    (``dataclasses.fields(TrainRequest)``); ``forecast train --help`` lists them.

    Raises
    ------
    ConfigError
        On construction, for a value out of its range or options that contradict each other.
    """

    # -- what is trained ------------------------------------------------------------------------
    data: str | Path = field(
        metadata={"help": "training store (STORE.zarr from 'forecast ingest'; a path or URL)"}
    )
    model: str = field(metadata={"help": "backbone (sfno, afno, fno) or model family (dyffusion)"})
    out: str | Path = field(
        metadata={"help": "run directory for checkpoints, metrics and config (a path or URL)"}
    )
    hparams: Mapping[str, Any] = _option({}, "backbone hyperparameters (default: the backbone's)")
    channels: tuple[str, ...] | None = _option(
        None, "channel ids to model (default: all in the store)"
    )
    history: int = _option(1, "input states per step", ge=1)
    forcings: bool = _option(True, "feed time-of-day/year forcings")
    residual: bool = _option(
        True, "predict the tendency, not the full state (dyffusion: the forecaster's)"
    )
    diurnal_baseline: bool = _option(
        False,
        "start each step from the store's climatological diurnal cycle (grids up to ~1 degree)",
    )
    seasonal_baseline: bool = _option(
        False,
        "with --no-residual: forecast departures from the store's climatological seasonal cycle "
        "(4 annual harmonics; with --diurnal-baseline plus its hour-of-day cycle); dyffusion: "
        "both networks work on the departures",
    )
    boost: str | Path | None = field(
        default=None,
        metadata={
            "help": "SpecBoost: train the --model backbone on the one-step residual of this "
            "frozen checkpoint; the result holds both (its history, forcings and channels are used)"
        },
    )
    forcing_store: str | Path | None = field(
        default=None,
        metadata={
            "help": "forcing store (a store of 'forecast ingest' on the same grid and calendar, "
            "a path or URL) holding the --forcing-vars fields over the whole training store",
            "metavar": "STORE.zarr",
        },
    )
    forcing_vars: tuple[str, ...] | None = field(
        default=None,
        metadata={
            "help": "prescribed fields of --forcing-store (e.g. sst) fed to the backbone at each "
            "step's input time; the checkpoint records them, and 'forecast run' then needs "
            "--forcing-store",
            "metavar": "VAR,...",
        },
    )
    # -- data -------------------------------------------------------------------------------------
    val_start: str | None = _option(
        None, "first time of the held-out validation period, e.g. 2014-01-01"
    )
    val_end: str | None = _option(None, "last time of the validation period (inclusive)")
    val_fraction: float | None = _option(
        0.1,
        "without --val-start/--val-end: hold out the last fraction of the store (0: none)",
        ge=0,
        lt=1,
    )
    workers: int = _option(2, "data-loader worker processes", ge=0)
    prefetch: int = _option(4, "batches each worker reads ahead", ge=1)
    # -- optimisation -----------------------------------------------------------------------------
    max_steps: int = _option(1000, "optimiser steps", ge=1)
    rollout_steps: int = _option(1, "final autoregressive steps K in the loss", ge=1)
    interpolator_steps: int | None = _option(
        None,
        "dyffusion: optimiser steps of stage 1 (the interpolator); stage 2 (the forecaster, "
        "interpolator frozen) takes the rest of --max-steps (default: half)",
        ge=1,
    )
    chain_steps: int = _option(
        0,
        "dyffusion: the last N of --max-steps fine-tune both networks together on the loss "
        "(with --ensemble-size, the fair CRPS) of every state of the cold-sampled horizon, "
        "the chain that forecast run samples (0: no such stage)",
        ge=0,
    )
    chain_lr: float | None = _option(
        None,
        "dyffusion: peak learning rate of the --chain-steps stage (default: --lr); lower "
        "fine-tunes the two trained networks more gently",
        gt=0,
    )
    rollout_schedule: tuple[tuple[int, int], ...] | None = _option(
        None,
        "explicit curriculum as step:K pairs, e.g. 0:1,500:2,1000:4 "
        "(default K=1 for 40% of the steps, rising to --rollout-steps at 80%)",
    )
    batch_size: int = _option(8, "samples per micro-step over all processes", ge=1)
    accumulation: int = _option(1, "micro-steps per optimiser step", ge=1)
    lr: float = _option(1e-3, "peak learning rate of AdamW", gt=0)
    weight_decay: float = _option(0.01, "AdamW weight decay", ge=0)
    warmup_steps: int = _option(50, "linear warm-up steps before the cosine decay", ge=0)
    min_lr_factor: float = _option(0.01, "final learning rate as a fraction of --lr", ge=0, le=1)
    grad_clip: float | None = _option(1.0, "max gradient norm (0 or none: no clipping)", ge=0)
    precision: Literal["auto", "fp32", "bf16"] = _option(
        "auto", "bf16 autocast or fp32 (auto: bf16 on CUDA)"
    )
    channel_weights: Mapping[str, float] | None = _option(
        None, "loss weight per channel as id=weight,... (others 1)"
    )
    tendency_loss: bool = _option(
        True, "measure errors in one-step tendency std units, not in state std units"
    )
    zonal_mean_weight: float = _option(
        0.0,
        "extra weight of the zonal-mean part of each step's squared error (0: plain MSE; "
        "W: the zonal means count 1 + W times, the eddies once), against the zonal-mean bias "
        "of long climate runs",
        ge=0,
    )
    ensemble_size: int = _option(
        1,
        "train an ensemble of M members on the fair CRPS (1: MSE); for dyffusion, M dropout "
        "samples of each stage's network per window",
        ge=1,
    )
    ensemble_noise: float = _option(
        0.05,
        "std of the initial-state noise of ensemble members, normalised units (dyffusion: not "
        "used, its members differ by their dropout masks)",
        ge=0,
    )
    input_noise: float = _option(
        0.0,
        "std of Gaussian noise added to every input state of a training window, in units of "
        "each channel's one-step tendency std (0: none); the targets stay clean, so the model "
        "learns to pull a perturbed state back (long-rollout stability)",
        ge=0,
    )
    seed: int = _option(0, "seed of weights, data order and noise")
    # -- bookkeeping ------------------------------------------------------------------------------
    val_every: int = _option(100, "validate and checkpoint every N steps", ge=1)
    val_samples: int | None = _option(32, "validation windows scored", ge=1)
    log_every: int = _option(10, "log the training loss every N steps", ge=1)
    device: Literal["auto", "cpu", "cuda"] = _option("auto", "device")
    resume: bool = _option(False, "continue the run in --out exactly where it stopped")
    progress: bool = _option(
        True, "show a progress bar (forecast train: only where stderr is a terminal)"
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _location(self.data))
        object.__setattr__(self, "out", _location(self.out))
        if self.boost is not None:
            object.__setattr__(self, "boost", _location(self.boost))
        if self.forcing_store is not None:
            object.__setattr__(self, "forcing_store", _location(self.forcing_store))
        if self.forcing_vars is not None:
            names = tuple(str(c) for c in self.forcing_vars)
            object.__setattr__(self, "forcing_vars", names or None)
        object.__setattr__(self, "hparams", dict(self.hparams or {}))
        if self.channels is not None:
            object.__setattr__(self, "channels", tuple(str(c) for c in self.channels))
        if self.rollout_schedule is not None:
            pairs = tuple((int(step), int(k)) for step, k in self.rollout_schedule)
            object.__setattr__(self, "rollout_schedule", pairs)
        if self.channel_weights is not None:
            object.__setattr__(self, "channel_weights", dict(self.channel_weights))
        if self.grad_clip == 0:
            object.__setattr__(self, "grad_clip", None)
        for item in dataclasses.fields(self):
            _check_bounds(item.name, getattr(self, item.name), item.metadata)
        _check_rollout_applies(self)
        _check_chain_applies(self)
        if self.rollout_schedule is not None:
            _check_schedule(self.rollout_schedule, self.rollout_steps, self.max_steps)
        if self.ensemble_size > 1 and self.ensemble_noise == 0 and not _staged(self.model):
            raise ConfigError(  # a staged family's members differ by their dropout masks instead
                "an ensemble needs --ensemble-noise > 0",
                hint=f"--model {self.model}'s members differ by that noise alone: give e.g. 0.05",
            )
        if self.ensemble_size > 1 and self.zonal_mean_weight > 0:
            raise ConfigError(
                "--zonal-mean-weight weights a squared error; an ensemble is trained on the CRPS",
                hint="drop --zonal-mean-weight or --ensemble-size",
            )
        _check_forcing_options(self)

    def replace(self, **changes: Any) -> TrainRequest:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def options(self) -> dict[str, Any]:
        """Every field as plain values (for the run's config.yaml and checkpoints)."""
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            elif isinstance(value, Mapping):
                value = dict(value)
            out[item.name] = value
        return out


def _staged(model: str) -> bool:
    """Whether ``--model`` names a staged family (:attr:`Family.staged`; an unknown name: no).

    An unknown name is refused where the model is built.
    """
    from forecast.training.families import FAMILIES  # families builds on this module

    chosen = FAMILIES.get(model)
    return chosen is not None and chosen.staged


def _check_rollout_applies(request: TrainRequest) -> None:
    """A staged family (dyffusion) refuses ``--rollout-steps``/``--rollout-schedule``.

    Checked when the request is made, before a run directory, a lock or a
    store is touched.
    """
    if not _staged(request.model):
        return
    given = []
    if request.rollout_steps > 1:
        given.append(f"--rollout-steps {request.rollout_steps}")
    if request.rollout_schedule:
        given.append(
            "--rollout-schedule " + ",".join(f"{s}:{k}" for s, k in request.rollout_schedule)
        )
    if given:
        raise ConfigError(
            f"{' and '.join(given)} {'do' if len(given) > 1 else 'does'} not apply to --model "
            f"{request.model}: it trains each "
            "stage on windows of its horizon",
            hint=f"drop {' and '.join(g.split()[0] for g in given)}; the horizon is "
            f"--hparams horizon=N",
        )


def _check_chain_applies(request: TrainRequest) -> None:
    """``--chain-steps`` needs a staged family (dyffusion), ``--chain-lr`` needs ``--chain-steps``.

    Checked when the request is made, as :func:`_check_rollout_applies`.
    """
    if request.chain_steps and not _staged(request.model):
        raise ConfigError(
            f"--chain-steps {request.chain_steps} fine-tunes the two networks of a staged model; "
            f"--model {request.model} has one",
            hint="drop --chain-steps, or train --model dyffusion",
        )
    if request.chain_lr is not None and not request.chain_steps:
        raise ConfigError(
            f"--chain-lr {request.chain_lr:g} is the learning rate of the --chain-steps stage, "
            "and this run has none",
            hint="give --chain-steps N, or drop --chain-lr",
        )


def _check_forcing_options(request: TrainRequest) -> None:
    """``--forcing-vars`` needs ``--forcing-store``, and does not go with ``--boost``."""
    if request.forcing_vars and request.forcing_store is None:
        raise ConfigError(
            f"--forcing-vars {','.join(request.forcing_vars)} needs --forcing-store",
            hint="add --forcing-store STORE.zarr holding those variables",
        )
    if request.forcing_vars and request.boost is not None:
        raise ConfigError(
            "--boost takes its prescribed forcings from its checkpoint, not --forcing-vars",
            hint="drop --forcing-vars (keep --forcing-store if the checkpoint takes forcings)",
        )


def _location(value: str | Path) -> str | Path:
    """A local path as :class:`Path` (``file://`` stripped), an object-storage URL as its string."""
    from forecast import storage

    return storage.local_path(value) if storage.is_local(value) else str(value)


_BOUNDS = {
    "ge": (lambda v, b: v >= b, "at least"),
    "gt": (lambda v, b: v > b, "more than"),
    "le": (lambda v, b: v <= b, "at most"),
    "lt": (lambda v, b: v < b, "less than"),
}


def _check_bounds(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for key, (holds, words) in _BOUNDS.items():
        if key in metadata and not holds(value, metadata[key]):
            raise ConfigError(
                f"--{name.replace('_', '-')} must be {words} {metadata[key]}, got {value}"
            )


def _check_schedule(
    schedule: tuple[tuple[int, int], ...], rollout_steps: int, max_steps: int
) -> None:
    """Milestones ascend in step, and each K lies in 1 .. ``rollout_steps``."""
    text = ",".join(f"{step}:{k}" for step, k in schedule)
    steps = [step for step, _ in schedule]
    if steps != sorted(steps) or len(set(steps)) != len(steps) or min(steps) < 0:
        raise ConfigError(
            f"--rollout-schedule {text}: the steps must ascend from 0 or more",
            hint="give step:K pairs in increasing step order, e.g. 0:1,500:2,1000:4",
        )
    above = [f"{step}:{k}" for step, k in schedule if k > rollout_steps or k < 1]
    if above:
        raise ConfigError(
            f"--rollout-schedule {text}: K of {', '.join(above)} is outside 1 .. --rollout-steps {rollout_steps}",
            hint=f"raise --rollout-steps to {max(k for _, k in schedule)} or lower those milestones",
        )


def parse_schedule(text: str | Sequence[Any]) -> tuple[tuple[int, int], ...]:
    """``"0:1,500:2"`` (or a list of such pairs) -> ``((0, 1), (500, 2))``.

    Raises
    ------
    ConfigError
        For text that is not step:K pairs.
    """
    from forecast.training.losses import RolloutCurriculum

    if not isinstance(text, str):
        text = ",".join(
            ":".join(map(str, item)) if isinstance(item, (list, tuple)) else str(item)
            for item in text
        )
    try:
        return tuple(RolloutCurriculum.parse_milestones(text))
    except ValueError as err:
        raise ConfigError(str(err)) from err
