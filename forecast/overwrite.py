"""May ``--overwrite`` replace this target? Only what this software wrote, and never an input.

Every command with ``--overwrite`` asks :func:`check_replaceable` before it
deletes anything::

    from forecast.overwrite import check_replaceable

    check_replaceable(out, inputs=[*sources], kinds=("store",), flag="--overwrite")

It raises a one-line :class:`OverwriteError` when

- the target is one of the command's inputs, holds one (a folder of source
  files) or lies inside one (a path in a source store);
- the target exists and is not something this software wrote, judged by
  the recognisers named in ``kinds`` (a folder of someone's files, a Zarr
  store of another program, a NetCDF file without our attributes).

Recognisers (:data:`RECOGNISERS`, by name; each takes a location and says
whether it is of its kind):

- ``"store"``: a training store (``store_format_version`` and
  ``software_version`` in the root attributes);
- ``"forecast"``: a forecast written by ``forecast run`` (Zarr or NetCDF
  whose ``software_version`` attribute starts with ``forecast``);
- ``"scores"``: a scores NetCDF of ``forecast score`` (its ``title`` or
  ``history`` names it);
- ``"run-directory"``: a training run directory (holds ``config.yaml`` and a
  ``checkpoints`` folder or a ``*.pt``, or a ``config.yaml`` that
  ``forecast train`` wrote: a run stopped before its first checkpoint);
- ``"checkpoint"``: a checkpoint of :func:`forecast.checkpoint.save_checkpoint`.

Commands that add output kinds register a function here rather than
testing paths themselves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from forecast import storage
from forecast.errors import ForecastError

__all__ = ["RECOGNISERS", "OverwriteError", "check_replaceable", "involves", "written_by_us"]


class OverwriteError(ForecastError, ValueError):
    """``--overwrite`` was aimed at something it must not delete."""


def _zarr_attrs(location: str) -> dict | None:
    """Root attributes of a Zarr (v3 or v2) group at ``location``, or None if it is not one."""
    for key in ("zarr.json", ".zattrs"):
        try:
            text = storage.read_bytes(storage.join(location, key))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, storage.StorageError):
            continue
        try:
            document = json.loads(text)
        except ValueError:
            return None
        return document.get("attributes", {}) if key == "zarr.json" else document
    return None


def _netcdf_attrs(location: str) -> dict | None:
    if not storage.is_local(location):
        return None
    path = storage.local_path(location)
    if not path.is_file():
        return None
    try:
        import netCDF4

        with netCDF4.Dataset(path) as ds:
            return {name: ds.getncattr(name) for name in ds.ncattrs()}
    except Exception:  # not a NetCDF file
        return None


def _is_store(location: str) -> bool:
    attrs = _zarr_attrs(location) or {}
    return "store_format_version" in attrs and "software_version" in attrs


def _ours(attrs: dict | None) -> bool:
    return bool(attrs) and str((attrs or {}).get("software_version", "")).startswith("forecast")


def _is_forecast(location: str) -> bool:
    return _ours(_zarr_attrs(location) if storage.is_dir(location) else _netcdf_attrs(location))


def _is_scores(location: str) -> bool:
    attrs = _netcdf_attrs(location) or {}
    return str(attrs.get("title", "")).startswith(
        "forecast skill scores"
    ) or "forecast score" in str(attrs.get("history", ""))


#: Keys of the config.yaml that ``forecast train`` writes into a run directory.
_TRAIN_CONFIG_KEYS = ("data", "model", "out", "max_steps")


def _is_run_directory(location: str) -> bool:
    if not storage.is_local(location):
        return False
    path = storage.local_path(location)
    if not (path / "config.yaml").is_file():
        return False
    if (path / "checkpoints").is_dir() or any(path.glob("*.pt")):
        return True
    import yaml

    try:
        config = yaml.safe_load((path / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and all(key in config for key in _TRAIN_CONFIG_KEYS)


def _is_checkpoint(location: str) -> bool:
    if not storage.is_local(location) or not storage.local_path(location).is_file():
        return False
    from forecast.checkpoint import read_metadata

    try:
        read_metadata(storage.local_path(location))
    except ForecastError:
        return False
    return True


#: Kind of output -> whether a location is one that this software wrote.
RECOGNISERS: dict[str, Callable[[str], bool]] = {
    "store": _is_store,
    "forecast": _is_forecast,
    "scores": _is_scores,
    "run-directory": _is_run_directory,
    "checkpoint": _is_checkpoint,
}


#: How a kind is named in messages, where its key does not say it.
_LABELS = {"scores": "scores file"}


def written_by_us(location: str | Path, kinds: Iterable[str]) -> str | None:
    """The first of ``kinds`` that ``location`` is an output of, or None."""
    for kind in kinds:
        if RECOGNISERS[kind](str(location)):
            return kind
    return None


def _inside(inner: str, outer: str) -> bool:
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def involves(target: str | Path, inputs: Iterable[str | Path]) -> str | None:
    """The first input that ``target`` is, contains or lies inside, or None.

    A glob among the inputs clashes when the target contains its folder
    (``--out vict`` with ``vict/*.nc``) or matches it (or lies inside a
    match); a target beside the matched files, in the same folder, is fine.
    """
    import fnmatch

    where = storage.normalise(target)
    for item in inputs:
        text = str(item)
        magic = next((i for i, char in enumerate(text) if char in "*?["), None)
        if magic is None:
            candidate = storage.normalise(text)
            if _inside(candidate, where) or _inside(where, candidate):
                return text
            continue
        folder = text[:magic].rsplit("/", 1)[0] if "/" in text[:magic] else "."
        pattern = storage.normalise(text)
        if _inside(storage.normalise(folder), where) or any(
            fnmatch.fnmatchcase(prefix, pattern) for prefix in _prefixes(where)
        ):
            return text
    return None


def _prefixes(location: str) -> list[str]:
    parts = location.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _sample(location: str, count: int = 3) -> str:
    names = storage.listdir(location) if storage.is_dir(location) else [storage.basename(location)]
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


def check_replaceable(
    target: str | Path,
    inputs: Sequence[str | Path] = (),
    kinds: Sequence[str] = ("store",),
    flag: str = "--overwrite",
    action: str = "delete",
) -> None:
    """Raise :class:`OverwriteError` unless ``target`` may be deleted and replaced.

    Parameters
    ----------
    target : str or Path
        What the command would replace (local path or URL).
    inputs : sequence of str or Path
        Every input of the command (files, globs, stores, checkpoints).
    kinds : sequence of str
        Names in :data:`RECOGNISERS` that the target may be.
    flag : str
        The option being checked, for the message.
    action : str
        What the command would do to the target, for the message
        (``"delete"``; ``"write into"`` for a run directory).
    """
    clash = involves(target, inputs)
    if clash is not None:
        raise OverwriteError(
            f"{flag} would {action} an input of this command ({clash})",
            path=target,
            hint="write the output somewhere else",
        )
    if not storage.exists(target):
        return
    if written_by_us(target, kinds) is None:
        what = " or ".join(_LABELS.get(k, k.replace("-", " ")) for k in kinds)
        raise OverwriteError(
            f"{flag} refuses to {action} it: it is not a {what} written by forecast (it holds {_sample(str(target))})",
            path=target,
            hint="choose another output path, or remove it yourself if it really should go",
        )
