"""Reading published weights and statistics safely, and matching them to our architecture.

What the publishers distribute (NVIDIA's FourCastNet releases, as ECMWF's
ai-models plugins fetch them):

- a ``torch.save`` file (``weights.tar``, ``backbone.ckpt``) holding a dict with
  ``model_state``: the network's ``state_dict`` saved from a
  ``DistributedDataParallel`` wrapper, so every key starts with ``module.``;
- ``global_means.npy`` and ``global_stds.npy``: float arrays of shape
  ``(1, channel, 1, 1)`` in the publisher's channel order (they may hold more
  channels than the network uses; the first ones are the network's).

The weights are read with ``torch.load(weights_only=True)``: tensors and
plain containers only, no pickled code is ever run. The statistics are read
with ``numpy.load(allow_pickle=False)``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import pickle
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from forecast.checkpoint import UNREADABLE_ERRORS
from forecast.errors import CheckpointError
from forecast.grid import Grid
from forecast.normalize import Normalizer
from forecast.steppers.backbone import BackboneStepper

#: Prefix that ``DistributedDataParallel`` puts on every parameter name.
DDP_PREFIX = "module."


@dataclass(frozen=True)
class PublishedWeights:
    """The ``model_state`` of a published checkpoint.

    Attributes
    ----------
    path : Path
        The file.
    state : dict
        Parameter name (without ``module.``) -> tensor, in the file's order.
    prefixed : bool
        Whether the names carried the ``module.`` prefix.
    """

    path: Path
    state: dict[str, torch.Tensor]
    prefixed: bool

    def published_name(self, name: str) -> str:
        """A key as the file spells it (with ``module.`` when the file has it)."""
        return f"{DDP_PREFIX}{name}" if self.prefixed else name

    def shape(self, name: str, ndim: int | None = None) -> tuple[int, ...]:
        """Shape of ``name``; a one-line error naming the key when the file lacks it or it has not ``ndim`` axes."""
        if name not in self.state:
            raise CheckpointError(
                f"no key {self.published_name(name)!r} in the weights",
                path=self.path,
                hint="pass the weights file of this model",
            )
        shape = tuple(self.state[name].shape)
        if ndim is not None and len(shape) != ndim:
            raise CheckpointError(
                f"key {self.published_name(name)!r} has shape {shape}, expected {ndim} axes",
                path=self.path,
                hint="pass the weights file of this model",
            )
        return shape

    def count(self, pattern: str) -> int:
        """Number of distinct integers ``N`` in keys matching ``pattern`` (a regex with one group)."""
        compiled = re.compile(pattern)
        found = {int(m.group(1)) for m in map(compiled.match, self.state) if m}
        return len(found)


def _load(path: Path, mmap: bool):
    return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)


def _unreadable(path: Path, err: Exception) -> CheckpointError:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = next(
        (line for line in lines if "Unsupported" in line), lines[0] if lines else type(err).__name__
    )
    return CheckpointError(
        f"cannot read the weights, not a torch.save file or truncated ({reason[:160]})",
        path=path,
        hint="download the file again",
    )


def read_published_weights(path: str | Path) -> PublishedWeights:
    """Read ``model_state`` from a published ``torch.save`` file without running pickled code.

    Raises
    ------
    CheckpointError
        The file is missing, unreadable, holds pickled objects that could run
        code, or has no ``model_state`` of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("no such weights file", path=path, hint="check the --weights path")
    try:
        try:
            payload = _load(path, mmap=True)  # zip files: tensors stay on disk until used
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            payload = _load(path, mmap=False)  # the legacy (pre-zip) format
    except pickle.UnpicklingError as err:
        text = str(err)
        code = re.search(r"Unsupported (?:global|class)[:\s]+(?:GLOBAL\s+)?([\w.]+)", text)
        if code is not None or "Unsupported operand" not in text:
            needs = f"it needs {code.group(1)}" if code is not None else text.splitlines()[0][:120]
            raise CheckpointError(
                f"refusing to load: the file contains pickled objects that could execute code ({needs})",
                path=path,
                hint="use the weights as the publisher distributes them, from a source you trust",
            ) from err
        raise _unreadable(path, err) from err
    except UNREADABLE_ERRORS as err:
        raise _unreadable(path, err) from err
    if not isinstance(payload, Mapping) or "model_state" not in payload:
        found = (
            ", ".join(map(str, list(payload)[:5]))
            if isinstance(payload, Mapping)
            else type(payload).__name__
        )
        raise CheckpointError(
            f"not a published checkpoint: no 'model_state' (found {found or 'nothing'})",
            path=path,
            hint="pass the weights file as the publisher distributes it (weights.tar, backbone.ckpt)",
        )
    state = payload["model_state"]
    if not isinstance(state, Mapping) or not state:
        raise CheckpointError("'model_state' is not a dict of tensors", path=path)
    bad = next((k for k, v in state.items() if not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"'model_state' entry {bad!r} is not a tensor", path=path)
    prefixed = all(str(k).startswith(DDP_PREFIX) for k in state)
    cut = len(DDP_PREFIX) if prefixed else 0
    return PublishedWeights(path, {str(k)[cut:]: v for k, v in state.items()}, prefixed)


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_statistic(path: Path, label: str, channels: int) -> tuple[np.ndarray, int]:
    """The first ``channels`` values of a ``(1, C, 1, 1)`` .npy file (float32 precision), and ``C``."""
    if not path.is_file():
        raise CheckpointError(f"no such {label} file", path=path, hint=f"check the --{label} path")
    try:
        values = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(
            f"cannot read the {label} as a .npy array ({reason[:160]})",
            path=path,
            hint=f"pass the publisher's global_{label}.npy",
        ) from err
    if values.ndim != 4 or values.shape[0] != 1 or values.shape[2:] != (1, 1):
        raise CheckpointError(
            f"{label} have shape {values.shape}, expected (1, channel, 1, 1)",
            path=path,
            hint=f"pass the publisher's global_{label}.npy",
        )
    if values.shape[1] < channels:
        raise CheckpointError(
            f"{label} cover {values.shape[1]} channels, the network has {channels}",
            path=path,
            hint="pass the statistics that come with these weights",
        )
    if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values[0, :channels]).all():
        raise CheckpointError(f"{label} are not finite floating-point numbers", path=path)
    # float32 as the publishers' own code normalises with them
    return values[0, :channels, 0, 0].astype(np.float32).astype(np.float64), values.shape[1]


def read_normalizer(
    means: str | Path, stds: str | Path, channels: list[str]
) -> tuple[Normalizer, int]:
    """The normaliser of ``channels`` from the publisher's ``global_means.npy``/``global_stds.npy``.

    Values are taken in float32, as the publishers' code uses them. The
    network predicts full states (not tendencies), so ``diff_std`` is unused;
    it is set to ``std``.

    Returns
    -------
    normalizer : Normalizer
        ``mean`` and ``std`` of ``channels`` (the first ``len(channels)`` entries of the files).
    extra : int
        Channels of the files beyond the network's (ignored).

    Raises
    ------
    CheckpointError
        A missing or unreadable file, another shape, too few channels,
        non-finite values, or a standard deviation that is not positive.
    """
    means, stds = Path(means), Path(stds)
    mean, total = _read_statistic(means, "means", len(channels))
    std, _ = _read_statistic(stds, "stds", len(channels))
    if np.any(std <= 0):
        first = channels[int(np.argmax(std <= 0))]
        raise CheckpointError(f"std of channel {first} is not positive", path=stds)
    return Normalizer(tuple(channels), mean, std, std.copy()), total - len(channels)


@dataclass(frozen=True)
class Rule:
    """How one tensor of our model is filled from the published file.

    Attributes
    ----------
    published : str
        Key in the file (without ``module.``).
    shape : tuple of int
        Shape the file must have there.
    convert : callable
        Published tensor -> ours (reshape, permutation, or identity).
    """

    published: str
    shape: tuple[int, ...]
    convert: Callable[[torch.Tensor], torch.Tensor]


def match_weights(
    weights: PublishedWeights,
    rules: Mapping[str, Rule],
    ignored: Mapping[str, tuple[int, ...] | None],
    ignored_prefixes: tuple[str, ...],
    architecture: str,
) -> dict[str, torch.Tensor]:
    """Our state dict from the published one; a one-line error at the first mismatch.

    Parameters
    ----------
    weights : PublishedWeights
        The file's ``model_state``.
    rules : mapping
        Our parameter name -> :class:`Rule`.
    ignored : mapping
        Published keys the reference network holds but does not use in its
        forward pass, with their expected shape (None: any).
    ignored_prefixes : tuple of str
        Published key prefixes to skip (precomputed transform buffers, which
        we recompute).
    architecture : str
        Description of the declared architecture for messages
        (``"fourcastnet-v2-small (embed_dim=256, num_layers=12, ...)"``).

    Raises
    ------
    CheckpointError
        Naming the first key of the file (in its order) that the architecture
        does not have or that has another shape, else the first key the
        architecture needs that the file lacks.
    """
    by_published = {rule.published: (ours, rule) for ours, rule in rules.items()}
    hint = "pass the weights of this model, or override the hyperparameters that differ"
    for name, tensor in weights.state.items():
        key = weights.published_name(name)
        if name in ignored or name.startswith(ignored_prefixes):
            expected = ignored.get(name)
            if expected is not None and tuple(tensor.shape) != expected:
                raise CheckpointError(
                    f"key {key!r} has shape {tuple(tensor.shape)}, expected {expected} for {architecture}",
                    path=weights.path,
                    hint=hint,
                )
            continue
        if name not in by_published:
            raise CheckpointError(
                f"unexpected key {key!r}: not part of {architecture}", path=weights.path, hint=hint
            )
        rule = by_published[name][1]
        if tuple(tensor.shape) != rule.shape:
            raise CheckpointError(
                f"key {key!r} has shape {tuple(tensor.shape)}, expected {rule.shape} for {architecture}",
                path=weights.path,
                hint=hint,
            )
    missing = next((p for p in by_published if p not in weights.state), None)
    if missing is not None:
        raise CheckpointError(
            f"missing key {weights.published_name(missing)!r} that {architecture} needs",
            path=weights.path,
            hint=hint,
        )
    return {
        ours: rule.convert(weights.state[rule.published].to(torch.float32)).contiguous()
        for ours, rule in rules.items()
    }


#: The published models' step.
PUBLISHED_STEP = dt.timedelta(hours=6)


def published_stepper(
    model: str,
    hparams: Mapping[str, object],
    channels: list[str],
    grid: Grid,
    normalizer: Normalizer,
    drop_south_pole: bool = False,
) -> BackboneStepper:
    """A stepper as the publishers run their networks: one state in, the next state out.

    No history, no forcings and no residual connection (the networks predict the
    full next state), a 6 h step.
    """
    return BackboneStepper(
        model,
        dict(hparams),
        channels,
        grid,
        PUBLISHED_STEP,
        normalizer,
        history=1,
        forcings=False,
        residual=False,
        drop_south_pole=drop_south_pole,
    )


def describe_architecture(name: str, hparams: Mapping[str, object], keys: tuple[str, ...]) -> str:
    """``"NAME (k=v, ...)"`` with the hyperparameters named in ``keys``."""
    return f"{name} ({', '.join(f'{k}={hparams[k]}' for k in keys)})"
