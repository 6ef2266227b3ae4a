"""Self-describing checkpoints, loaded without executing pickled code.

A checkpoint is one ``torch.save`` file holding only plain types and tensors::

    {
      "format": "forecast-checkpoint",
      "format_version": 2,
      "metadata": {stepper, model, hparams, channels, grid, step_seconds, step,
                   history, forcings, residual, normalizer, diurnal_hours,
                   provenance, format_version},                  # JSON-able
      "state_dict": {name: tensor},    # stepper.state_dict(), saved as it is
    }

``metadata`` is the stepper's ``config()`` (its ``"stepper"`` kind picks the
class in :data:`forecast.steppers.STEPPERS`) plus the provenance; the tensors
are the stepper's ``state_dict()``, whatever the family. Version 1 files
(backbone weights without their ``model.`` prefix, and the diurnal table
beside them) are read too.

It is written atomically (temporary file in the same folder, then
``os.replace``) and read with ``torch.load(..., weights_only=True)``, which
refuses any pickled object other than tensors and plain containers. Before
that, every record of the file's zip archive is checked against the CRC-32
that ``torch.save`` stored with it (``torch.load`` itself does not check
them), so a file whose bytes changed fails to load, naming the record.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forecast.errors import CheckpointError, ForecastError
from forecast.files import atomic_write
from forecast.grid import Grid
from forecast.stepper import Stepper, TrainableStepper
from forecast.steppers import stepper_from_config
from forecast.time import format_step

#: Version of the checkpoint layout written by :func:`save_checkpoint`.
CHECKPOINT_FORMAT_VERSION = 2
#: Versions :func:`load_checkpoint` can read.
SUPPORTED_VERSIONS = (1, 2)
_FORMAT = "forecast-checkpoint"

#: What ``torch.load(weights_only=True)`` raises on a file that is not a readable
#: checkpoint (the weights-only unpickler fails on arbitrary bytes with index and
#: key errors too).
UNREADABLE_ERRORS = (
    RuntimeError,
    EOFError,
    zipfile.BadZipFile,
    OSError,
    ValueError,
    IndexError,
    KeyError,
)


def save_checkpoint(
    path: str | Path, stepper: Stepper, provenance: dict[str, Any] | None = None
) -> None:
    """Write ``stepper`` (its ``config()`` and ``state_dict()``) to ``path`` atomically.

    Parameters
    ----------
    path : str or Path
        Destination file; its folder must exist.
    stepper : Stepper
        The model step to save; tensors are stored on the CPU.
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
        ) from err
    if not path.parent.is_dir():
        raise CheckpointError("folder does not exist", path=path.parent, hint="create it first")
    metadata = stepper.config()
    metadata["step"] = format_step(stepper.step)
    metadata["provenance"] = provenance
    metadata["format_version"] = CHECKPOINT_FORMAT_VERSION
    state_dict = {
        name: tensor.detach().to("cpu").clone() for name, tensor in stepper.state_dict().items()
    }
    payload = {
        "format": _FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "metadata": metadata,
        "state_dict": state_dict,
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary), fsync=True)


def _read(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            "no such checkpoint file", path=path, hint="check the --checkpoint path"
        )
    _verify_checksums(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"refusing to load: the file contains pickled objects that could execute code ({reason[:160]})",
            path=path,
            hint="only load checkpoints written by save_checkpoint from a source you trust",
        ) from err
    except UNREADABLE_ERRORS as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read the checkpoint, the file is truncated or corrupt ({reason[:160]})",
            path=path,
            hint="copy it again or re-save it; compare checkpoint_digest with the original",
        ) from err
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


def _verify_checksums(path: Path) -> None:
    """Check every record of the checkpoint's zip archive against its CRC-32 (torch.load does not).

    Raises
    ------
    CheckpointError
        Naming the file and the first record whose bytes changed since it was saved.
    """
    if not zipfile.is_zipfile(path):
        return  # not an archive: torch.load names the problem
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise CheckpointError(
            f"cannot read the checkpoint, the file is truncated or corrupt ({err})",
            path=path,
            hint="copy it again or re-save it; compare checkpoint_digest with the original",
        ) from err
    if bad is not None:
        record = bad.split("/", 1)[-1]
        raise CheckpointError(
            f"the checkpoint is corrupt: its record {record} fails the CRC-32 check (its bytes changed after it was saved)",
            path=path,
            hint="copy it again from the original or re-save it; do not use this file",
        )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """Metadata of a checkpoint without building the model (still loads the file safely)."""
    return _read(Path(path), "cpu")["metadata"]


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[TrainableStepper, dict[str, Any]]:
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
        stepper = stepper_from_config(metadata)
    except (KeyError, TypeError) as err:
        raise CheckpointError(
            f"checkpoint metadata is incomplete ({err})",
            path=path,
            hint="re-save it with save_checkpoint",
        ) from err
    except ForecastError as err:
        raise CheckpointError(
            f"checkpoint describes a model that cannot be built ({err})", path=path
        ) from err
    tensors = payload["state_dict"]
    if payload["format_version"] == 1:
        tensors = _state_dict_of_version_1(payload)
    try:
        stepper.load_state_dict(tensors)
    except RuntimeError as err:
        reason = " ".join(str(err).split())
        reason = reason if len(reason) <= 300 else reason[:297] + "..."
        raise CheckpointError(
            f"weights do not fit the model the checkpoint describes ({reason})",
            path=path,
            hint="the file was edited, truncated or is from another model; re-save it with save_checkpoint",
        ) from err
    stepper.to(map_location)
    stepper.eval()
    return stepper, metadata


def _state_dict_of_version_1(payload: dict[str, Any]) -> dict[str, Any]:
    """A version-1 payload's tensors as the backbone stepper's ``state_dict()`` names them."""
    tensors = {f"model.{name}": tensor for name, tensor in payload["state_dict"].items()}
    if "diurnal_table" in payload:
        tensors["diurnal.table"] = payload["diurnal_table"]
    return tensors


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
    theirs = grid.to_dict() if isinstance(grid, Grid) else dict(grid)
    if (ours["kind"], int(ours["nlat"]), int(ours["nlon"])) != (
        theirs.get("kind"),
        int(theirs.get("nlat", -1)),
        int(theirs.get("nlon", -1)),
    ):
        problems.append(
            f"model grid is {ours['kind']} {ours['nlat']}x{ours['nlon']}, data grid is {theirs.get('kind')} {theirs.get('nlat')}x{theirs.get('nlon')}"
        )
    elif ours["kind"] == "regional" and isinstance(grid, Grid):
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
