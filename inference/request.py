"""What a forecast run is asked to do: :class:`RunRequest`, the one source of its identity.

An output's manifest records the request it was written for; a rerun into the
same output skips it (finished), resumes it (interrupted) or refuses (another
request), by comparing :meth:`RunRequest.identity` with the manifest. Every
field of the request is part of that identity unless it is declared
``runtime`` (how to run, not what to compute), so an option added here is
compared from the start.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from forecast.errors import ConfigError
from forecast.grid import Grid
from forecast.periods import PERIOD_KINDS
from forecast.stepper import Stepper
from inference.perturbations.base import PerturbationSpec

#: Field metadata of options that change how a run goes, not what it writes.
RUNTIME = {"runtime": True}

#: What ``on_blowup`` accepts.
ON_BLOWUP = ("continue", "stop")


@dataclass(frozen=True)
class RunRequest:
    """A forecast run: what to compute and write, and how to run it.

    Attributes
    ----------
    init_times : tuple of str
        Initialisation times, ISO text to the minute (``format_time``).
    steps : int
        Model steps per forecast; the output has ``steps + 1`` lead times.
    channels : tuple of str
        Channels written, a subset of the model's in any order.
    output_grid : Grid
        Grid written (the model's, or another one to regrid to).
    layout : str
        Output layout, a key of :data:`inference.writers.LAYOUTS`.
    compression : str
        The codec the writer uses (its ``compression``: ``zstd``, ``deflate`` or ``none``).
    members : int
        Ensemble size per init time.
    perturbation : PerturbationSpec
        Initial-condition perturbation, with its amplitudes, options and seed.
    checkpoint_digest : str
        SHA-256 of the checkpoint (provenance; part of the identity).
    store : str
        The store the initial conditions come from.
    forcing_store : str or None
        The store the prescribed forcings come from (None when the model takes
        none, so that outputs written before forcing stores existed resume).
    reduce : tuple of str
        Period means computed on the fly (keys of
        :data:`forecast.periods.PERIOD_KINDS`: ``monthly``, ``seasonal``,
        ``annual``, ``time-mean``); a climate run (:mod:`inference.climate`).
    histogram_bins : int
        Bins of the per-channel histograms of a climate run (0: none).
    output_every : int
        Steps between written states: 1 writes every lead; more writes
        snapshots (lead 0, ``output_every``, ...); 0 writes none (only the
        climate products).
    model_name : str
        Backbone or family name, for the output attributes (runtime).
    batch_size : int or None
        Members per model call; None chooses it from ``max_memory`` (runtime).
    max_memory : str, int or None
        Memory budget of a batch, e.g. ``"8GB"`` (runtime).
    on_blowup : {"continue", "stop"}
        What a blow-up does (runtime).
    blowup_sigmas : float
        A value further than this many std from the channel mean is a blow-up (runtime).
    overwrite : bool
        Replace an output that holds another or a finished forecast (runtime).
    restart_every : int
        Steps between restart files of a climate run (0: none; runtime).

    Raises
    ------
    ConfigError
        On construction, for out-of-range values.
    """

    init_times: tuple[str, ...]
    steps: int
    channels: tuple[str, ...]
    output_grid: Grid
    members: int = 1
    perturbation: PerturbationSpec = field(default_factory=PerturbationSpec)
    layout: str = "default"
    compression: str = "none"
    checkpoint_digest: str = ""
    store: str = ""
    forcing_store: str | None = None
    reduce: tuple[str, ...] = ()
    histogram_bins: int = 0
    output_every: int = 1
    model_name: str = field(default="", metadata=RUNTIME)
    batch_size: int | None = field(default=None, metadata=RUNTIME)
    max_memory: str | int | None = field(default=None, metadata=RUNTIME)
    on_blowup: Literal["continue", "stop"] = field(default="continue", metadata=RUNTIME)
    blowup_sigmas: float = field(default=50.0, metadata=RUNTIME)
    overwrite: bool = field(default=False, metadata=RUNTIME)
    restart_every: int = field(default=0, metadata=RUNTIME)

    def __post_init__(self) -> None:
        if not self.init_times:
            raise ConfigError("no initial times to forecast from")
        if self.steps < 1:
            raise ConfigError(f"--steps must be at least 1, not {self.steps}")
        if self.members < 1:
            raise ConfigError(f"--members must be at least 1, not {self.members}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, not {self.batch_size}")
        if self.on_blowup not in ON_BLOWUP:
            raise ConfigError(
                f"--on-blowup {self.on_blowup!r} is not one of {', '.join(ON_BLOWUP)}"
            )
        if not self.channels:
            raise ConfigError("a run must write at least one channel")
        unknown = [kind for kind in self.reduce if kind not in PERIOD_KINDS]
        if unknown:
            raise ConfigError(
                f"--reduce {','.join(unknown)} is not one of {', '.join(PERIOD_KINDS)}",
                hint="e.g. --reduce monthly,annual",
            )
        if self.histogram_bins < 0 or self.output_every < 0 or self.restart_every < 0:
            raise ConfigError("--histograms, --output-every and --restart-every cannot be negative")
        if self.output_every == 0 and not self.climate:
            raise ConfigError(
                "this run would write nothing", hint="give --output-every, --reduce or --histograms"
            )
        if self.climate and len(self.init_times) != 1:
            raise ConfigError(
                f"a climate run (--reduce, --histograms, --output-every) starts from one init time, "
                f"not {len(self.init_times)}",
                hint="give --init a single time; --members may be many",
            )

    @property
    def climate(self) -> bool:
        """Whether the run reduces on the fly or writes snapshots (not every lead)."""
        return bool(self.reduce) or self.histogram_bins > 0 or self.output_every != 1

    @classmethod
    def for_stepper(
        cls,
        stepper: Stepper,
        init_times: Sequence[str],
        steps: int,
        *,
        channels: Sequence[str] | None = None,
        output_grid: Grid | None = None,
        **options: Any,
    ) -> RunRequest:
        """A request with the model's channels and grid unless others are given.

        Raises
        ------
        ConfigError
            Channels the model does not forecast, or an invalid option.
        """
        model_channels = tuple(stepper.channels)
        written = tuple(channels) if channels else model_channels
        unknown = [c for c in written if c not in model_channels]
        if unknown:
            raise ConfigError(
                f"--channels names channel(s) {', '.join(unknown)} the model does not forecast",
                hint=f"it forecasts {', '.join(model_channels)}",
            )
        grid = output_grid if output_grid is not None else stepper.grid
        return cls(tuple(init_times), int(steps), written, grid, **options)

    def identity(self) -> dict[str, Any]:
        """JSON values of every non-runtime field, as the manifest holds them.

        The perturbation contributes ``perturbation`` (its name),
        ``perturbation_options``, ``amplitude`` and ``seed``; the output grid
        its description.
        """
        out: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.metadata.get("runtime"):
                continue
            value = getattr(self, item.name)
            if isinstance(value, PerturbationSpec):
                out.update(value.manifest())
            elif isinstance(value, Grid):
                out[item.name] = value.describe()
            else:
                out[item.name] = _plain(value)
        return out

    def differences(self, manifest: dict[str, Any]) -> list[str]:
        """Keys of :meth:`identity` on which ``manifest`` records something else."""
        return [key for key, value in self.identity().items() if _plain(manifest.get(key)) != value]

    def manifest(self) -> dict[str, Any]:
        """The identity and the runtime options, for the manifest."""
        runtime = {
            item.name: _plain(getattr(self, item.name))
            for item in dataclasses.fields(self)
            if item.metadata.get("runtime")
        }
        runtime.pop("overwrite")
        runtime["requested_batch_size"] = runtime.pop("batch_size")
        return {**self.identity(), **runtime}


def request_default(name: str) -> Any:
    """The default of :class:`RunRequest` field ``name`` (so that the command line shares it)."""
    (item,) = [f for f in dataclasses.fields(RunRequest) if f.name == name]
    return item.default


def _plain(value: Any) -> Any:
    """``value`` as JSON would give it back (tuples become lists)."""
    return json.loads(json.dumps(value, default=str))
