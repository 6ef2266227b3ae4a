"""Self-describing checkpoints, loaded without executing pickled code.

A checkpoint is one ``torch.save`` file holding only plain types and tensors::

    {
      "format": "forecast-checkpoint",
      "format_version": 1,
      "metadata": {model, hparams, channels, grid, step_seconds, step, history,
                   forcings, residual, normalizer, provenance},   # JSON-able
      "state_dict": {name: tensor},                                # backbone weights
      "diurnal_table": tensor,   # only with metadata["diurnal_hours"]: (hour, channel, lat, lon),
    }                            # normalised hour-of-day anomalies of the diurnal baseline

It is written atomically (temporary file in the same folder, then
``os.replace``) and read with ``torch.load(..., weights_only=True)``, which
refuses any pickled object other than tensors and plain containers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from forecast.errors import CheckpointError, ForecastError
from forecast.files import atomic_write
from forecast.grid import Grid
from forecast.stepper import Stepper, grid_to_dict
from forecast.time import format_step

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 1
#: Versions :func:`load_checkpoint` can read.
SUPPORTED_VERSIONS = (1,)
_FORMAT = "forecast-checkpoint"


def save_checkpoint(
    path: str | Path, stepper: Stepper, provenance: dict[str, Any] | None = None
) -> None:
    """Write ``stepper`` (configuration, normaliser and weights) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Destination file; its folder must exist.
    stepper : Stepper
        The model step to save; weights are stored on the CPU.
    provenance : dict, optional
        JSON-able training record (data store, steps, loss, git commit, ...).

    Raises
    ------
    CheckpointError
        If ``provenance`` is not JSON-able or the folder is missing.
    """
    path = Path(path)
    provenance = dict(provenance or {})
    try:
        json.dumps(provenance)
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"provenance is not JSON-able ({err})",
            path=path,
            hint="pass only str, numbers, lists and dicts",
        ) from None
    if not path.parent.is_dir():
        raise CheckpointError("folder does not exist", path=path.parent, hint="create it first")
    metadata = stepper.config()
    metadata["step"] = format_step(stepper.step_size)
    metadata["provenance"] = provenance
    metadata["format_version"] = CHECKPOINT_FORMAT_VERSION
    state_dict = {
        name: tensor.detach().to("cpu").clone()
        for name, tensor in stepper.model.state_dict().items()
    }
    payload = {
        "format": _FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "metadata": metadata,
        "state_dict": state_dict,
    }
    if stepper.diurnal_hours is not None:
        payload["diurnal_table"] = stepper.diurnal_table.detach().to("cpu").clone()
    atomic_write(path, lambda temporary: torch.save(payload, temporary), fsync=True)


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            "no such checkpoint file", path=path, hint="check the --checkpoint path"
        )
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"refusing to load: the file contains pickled objects that could execute code ({reason[:160]})",
            path=path,
            hint="only load checkpoints written by save_checkpoint from a source you trust",
        ) from None
    except (
        RuntimeError,
        EOFError,
        zipfile.BadZipFile,
        OSError,
        ValueError,
        IndexError,
        KeyError,
    ) as err:
        # (the weights-only unpickler fails on arbitrary bytes with index and key errors too)
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read the checkpoint, the file is truncated or corrupt ({reason[:160]})",
            path=path,
            hint="copy it again or re-save it; compare checkpoint_digest with the original",
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise CheckpointError(
            "not a forecast checkpoint (no 'format' marker)",
            path=path,
            hint="write checkpoints with forecast.checkpoint.save_checkpoint",
        )
    version = payload.get("format_version")
    if version not in SUPPORTED_VERSIONS:
        raise CheckpointError(
            f"checkpoint format version {version!r} is not supported (this software reads {', '.join(map(str, SUPPORTED_VERSIONS))})",
            path=path,
            hint="upgrade the forecast package, or re-save the checkpoint with this version",
        )
    if not isinstance(payload.get("metadata"), dict) or not isinstance(
        payload.get("state_dict"), dict
    ):
        raise CheckpointError(
            "checkpoint lacks its metadata or weights",
            path=path,
            hint="re-save it with save_checkpoint",
        )
    return payload


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint without building the model (still loads the file safely)."""
    return _read(Path(path), "cpu")["metadata"]


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Stepper, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or Path
        Checkpoint file.
    map_location : str or torch.device
        Device for the weights and the stepper.

    Returns
    -------
    stepper : Stepper
        In eval mode, on ``map_location``.
    metadata : dict
        ``format_version, model, hparams, channels, grid (kind, nlat, nlon), step,
        step_seconds, history, forcings, residual, normalizer, provenance``.

    Raises
    ------
    CheckpointError
        Missing, truncated or corrupt file; unknown format version; unsafe
        pickle; weights that do not fit the described model.
    """
    path = Path(path)
    payload = _read(path, map_location)
    metadata = payload["metadata"]
    try:
        stepper = Stepper.from_config(metadata)
    except (KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint metadata is incomplete ({err})",
            path=path,
            hint="re-save it with save_checkpoint",
        ) from None
    except ForecastError as err:
        raise CheckpointError(
            f"checkpoint describes a model that cannot be built ({err})", path=path
        ) from None
    try:
        stepper.model.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(
            f"weights do not fit the model the checkpoint describes ({first})",
            path=path,
            hint="the file was edited or is from another model",
        ) from None
    if stepper.diurnal_hours is not None:
        table = payload.get("diurnal_table")
        if not isinstance(table, torch.Tensor) or tuple(table.shape) != tuple(
            stepper.diurnal_table.shape
        ):
            raise CheckpointError(
                "the checkpoint describes a diurnal baseline but its table is missing or misshapen",
                path=path,
                hint="the file was edited or truncated; re-save it with save_checkpoint",
            )
        stepper.diurnal_table.copy_(table)
    stepper.to(map_location)
    stepper.eval()
    return stepper, metadata


def checkpoint_digest(path: str | Path) -> str:
    """SHA-256 of the checkpoint file, hex (recorded in forecast outputs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_compatible(
    metadata: dict[str, Any],
    channels: list[str] | tuple[str, ...],
    grid: Grid | dict[str, Any],
    step: dt.timedelta,
) -> None:
    """Raise before any compute if data cannot feed the checkpoint's model.

    Parameters
    ----------
    metadata : dict
        From :func:`load_checkpoint` or :func:`read_metadata`.
    channels : sequence of str
        Channels the data holds (order free; extra channels are fine).
    grid : Grid or dict
        Grid of the data (a dict as ``{"kind", "nlat", "nlon"}``).
    step : datetime.timedelta
        Time step of the data.

    Raises
    ------
    CheckpointError
        Listing every mismatch: missing channels, another grid, another step.
    """
    problems = []
    missing = [c for c in metadata["channels"] if c not in set(channels)]
    if missing:
        problems.append(f"data lacks channel(s) {', '.join(missing)}")
    ours = metadata["grid"]
    theirs = grid_to_dict(grid) if isinstance(grid, Grid) else dict(grid)
    if (ours["kind"], int(ours["nlat"]), int(ours["nlon"])) != (
        theirs.get("kind"),
        int(theirs.get("nlat", -1)),
        int(theirs.get("nlon", -1)),
    ):
        problems.append(
            f"model grid is {ours['kind']} {ours['nlat']}x{ours['nlon']}, data grid is {theirs.get('kind')} {theirs.get('nlat')}x{theirs.get('nlon')}"
        )
    elif ours["kind"] == "regional" and isinstance(grid, Grid):
        import numpy as np

        if not (
            np.allclose(ours["latitude"], grid.latitude, atol=1e-4)
            and np.allclose(ours["longitude"], grid.longitude, atol=1e-4)
        ):
            problems.append(
                "model and data regional grids have the same shape but other coordinates"
            )
    step_seconds = int(metadata.get("step_seconds", 0))
    if int(step.total_seconds()) != step_seconds:
        problems.append(
            f"model step is {format_step(dt.timedelta(seconds=step_seconds))}, data step is {format_step(step)}"
        )
    if problems:
        raise CheckpointError(
            f"checkpoint ({metadata.get('model')}) does not match the data: {'; '.join(problems)}",
            hint="use a store ingested with the model's channels, grid and step",
        )
