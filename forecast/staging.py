"""Outputs on object storage: built in a local staging folder, published by upload; remote inputs read through a local copy.

Object stores have no rename, so a file or folder cannot be written in
place and then made visible in one step. ``forecast train`` and
``forecast run`` therefore write an output for an ``s3://``/``gs://`` URL
exactly as they write a local one, in a staging folder on the local disk
(:func:`stage`, with its locks, manifest and resume), and :func:`publish` it:

- **a file** is one object (a single PUT, or a multipart upload that only
  appears when it completes): readers see the old object or the new one;
- **a forecast** (a Zarr store, a NetCDF file, a cdo directory) first gets
  the manifest ``OUT.manifest.json`` with status ``publishing`` (the
  completion marker taken away) and loses its root ``zarr.json``, so it
  stops looking complete; then the objects of an older version that the
  new one lacks are deleted, its data objects are uploaded, then every
  array's metadata, then the root ``zarr.json``, and the manifest with
  status ``finished`` is written last (:func:`inference.remote.publish_run`).
  A publish killed at any point leaves an output that readers refuse
  (:func:`require_published`); rerunning the command publishes it again
  from the stage (the ``publishing`` manifest names the same request).

The staging folder is ``$FORECAST_STAGING`` (default
``~/.cache/forecast/staging``), one subfolder per remote folder, so that a
rerun after a kill resumes from what was written. Inputs on object storage
that are read whole (a checkpoint, a NetCDF forecast) are downloaded by
:func:`local_copy`; Zarr stores are read in place (:func:`forecast.storage.zarr_store`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from forecast import storage
from forecast.errors import DataError

__all__ = [
    "MANIFEST_SUFFIX",
    "local_copy",
    "open_remote_dataset",
    "output_path",
    "publish",
    "read_remote_manifest",
    "require_published",
    "stage",
    "staging_root",
    "withdraw",
]

#: The manifest beside a forecast: ``OUT.manifest.json`` (see :mod:`inference.schedule`).
MANIFEST_SUFFIX = ".manifest.json"

#: Names of Zarr metadata documents (v3 and v2): uploaded after the data, the root one last.
_METADATA = ("zarr.json", ".zmetadata", ".zgroup", ".zarray", ".zattrs")


def staging_root() -> Path:
    """The local folder holding every staging folder (``$FORECAST_STAGING``, default ``~/.cache/forecast/staging``)."""
    configured = os.environ.get("FORECAST_STAGING")
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "forecast" / "staging"


def stage(url: str) -> Path:
    """The local path where an output for ``url`` is built: same name, in a folder for ``url``'s parent.

    The same URL always maps to the same path (a killed run resumes from it);
    ``{init}`` in the name is kept, to be filled in like a local ``--out``.
    """
    parent = storage.normalise(storage.parent(url))
    digest = hashlib.sha256(parent.encode()).hexdigest()[:16]
    scheme = storage.scheme(url) or "file"
    folder = staging_root() / f"{scheme}-{digest}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / storage.basename(url)


def remote_for(url: str, staged: str | Path) -> str:
    """The URL of a staged output: ``url``'s parent and the staged output's name (``{init}`` filled in)."""
    return storage.join(storage.parent(url), Path(staged).name)


def local_copy(url: str | Path) -> Path:
    """A local path holding the content of ``url``: the path itself when local, else a download.

    Downloads go to ``staging_root()/downloads``, named by the URL and the
    object's ETag or size and modification time, so an unchanged object is
    downloaded once; the download is written to a temporary name and
    renamed, so a kill leaves no partial copy under the final name.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``url``.
    StorageError
        The bucket cannot be reached or read (the URL and the fix named).
    """
    if storage.is_local(url):
        return storage.local_path(url)
    fs, inner = storage.filesystem(url)
    with storage.storage_errors(url, "read"):
        fs.invalidate_cache(inner)
        info = fs.info(inner)
        version = f"{info.get('size')}|{storage.object_version(info)}"
        key = hashlib.sha256(f"{storage.normalise(url)}\n{version}".encode()).hexdigest()[:24]
        target = staging_root() / "downloads" / key / storage.basename(url)
        if target.exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            if info.get("type") == "directory":
                fs.get(inner.rstrip("/") + "/", str(temporary), recursive=True)
            else:
                fs.get_file(inner, str(temporary))
            os.replace(temporary, target)
        finally:
            if temporary.is_dir():
                shutil.rmtree(temporary, ignore_errors=True)
            else:
                temporary.unlink(missing_ok=True)
    return target


def manifest_url(url: str) -> str:
    """``URL.manifest.json``: the completion marker of a forecast on object storage."""
    return url.rstrip("/") + MANIFEST_SUFFIX


def read_remote_manifest(url: str) -> dict | None:
    """The manifest beside the output at ``url`` (local or remote), or None if there is none."""
    location = manifest_url(url)
    try:
        return json.loads(storage.read_bytes(location))
    except FileNotFoundError:
        return None
    except storage.StorageError as err:
        if "not found" in str(err):
            return None
        raise


def require_published(url: str, what: str = "forecast", writer: str = "forecast run") -> None:
    """Refuse an output whose manifest says it is not finished (being written, published, or failed).

    Outputs without a manifest (not written by this software) are accepted.

    Raises
    ------
    DataError
        Naming the URL, the manifest's status and the fix.
    """
    manifest = read_remote_manifest(url)
    if manifest is None or manifest.get("status") == "finished":
        return
    status = manifest.get("status", "unknown")
    raise DataError(
        f"the {what} is incomplete (its manifest says {status!r}): '{writer}' is writing or publishing it, or was interrupted",
        path=url,
        hint=f"wait for it to finish, or rerun the same '{writer}' command to complete it",
    )


def withdraw(url: str, marker: bytes) -> None:
    """Make the output at ``url`` stop looking complete: ``marker`` (an unfinished manifest) replaces its manifest, then its root metadata goes."""
    storage.write_bytes(manifest_url(url), marker)
    for name in _METADATA:
        storage.remove(storage.join(url, name))


def _upload_order(local: Path) -> list[Path]:
    """Files of a staged folder: data first, then metadata deepest first, the root's last."""
    files = sorted(p for p in local.rglob("*") if p.is_file() and not p.name.endswith(".partial"))
    data = [p for p in files if p.name not in _METADATA]
    metadata = sorted(
        (p for p in files if p.name in _METADATA),
        key=lambda p: (-len(p.relative_to(local).parts), str(p)),
    )
    return data + metadata


def publish(local: str | Path, url: str, marker: bytes | None = None) -> None:
    """Upload a staged file or folder to ``url`` so that no reader sees part of it as complete.

    A file is one object. A folder's files are uploaded in
    :func:`_upload_order`. With ``marker`` (a forecast: its manifest with
    an unfinished status), the output is first withdrawn (:func:`withdraw`),
    the objects under it that the staged folder lacks are deleted, and the
    caller writes the finished manifest afterwards
    (:func:`inference.remote.publish_run`) as the completion marker. Without
    it (checkpoints, scores, plots), other objects are left alone.
    """
    local = Path(local)
    fs, inner = storage.filesystem(url)
    with storage.storage_errors(url, "write"):
        if marker is not None:
            withdraw(url, marker)
        if local.is_file():
            fs.put_file(str(local), inner)
            return
        order = _upload_order(local)
        wanted = {inner.rstrip("/") + "/" + p.relative_to(local).as_posix() for p in order}
        fs.invalidate_cache(inner)
        try:
            existing = fs.find(inner)
        except FileNotFoundError:
            existing = []
        stale = [key for key in existing if key not in wanted] if marker is not None else []
        if stale:
            fs.rm(stale)
        data = [p for p in order if p.name not in _METADATA]
        if data:  # one call: the filesystem uploads them concurrently
            fs.put(
                [str(p) for p in data],
                [inner.rstrip("/") + "/" + p.relative_to(local).as_posix() for p in data],
            )
        for path in order[len(data) :]:  # metadata one by one, in order, the root's last
            fs.put_file(str(path), inner.rstrip("/") + "/" + path.relative_to(local).as_posix())


@contextlib.contextmanager
def output_path(url: str | Path) -> Iterator[Path]:
    """A local path to write an output file or folder for ``url``; published when the block succeeds.

    Locally it is ``url``'s own path (the writer is atomic itself). For a
    URL, a temporary path with the same name; after the block a file is
    uploaded as one object, a folder file by file (each one object; for
    folders of independent files such as plots). A failed block uploads
    nothing. The temporary copy is deleted either way.
    """
    if storage.is_local(url):
        yield storage.local_path(url)
        return
    with tempfile.TemporaryDirectory(prefix="forecast-out-") as folder:
        local = Path(folder) / storage.basename(url)
        yield local
        if local.exists():
            publish(local, str(url))


def open_remote_dataset(url: str):
    """An xarray dataset of a forecast-like file or Zarr store at a URL (published: :func:`require_published`).

    Zarr is read in place through :func:`forecast.storage.zarr_store`; any
    other file (NetCDF) is downloaded once (:func:`local_copy`) and opened.
    Returns the dataset, or the local copy's path for a folder that is not
    Zarr (a cdo directory), which the caller opens.
    """
    import xarray as xr

    require_published(url)
    if storage.exists(storage.join(url, "zarr.json")) or storage.exists(
        storage.join(url, ".zgroup")
    ):
        with storage.storage_errors(url, "read"):
            return xr.open_zarr(
                storage.zarr_store(url, read_only=True), consolidated=None, decode_timedelta=True
            )
    return local_copy(url)
