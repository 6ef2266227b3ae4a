"""Where data live: local paths and fsspec URLs behind one small API.

Every path a command takes may be a local path or an fsspec URL: ``s3://``,
``gs://`` and ``file://`` for reading and writing, ``https://`` for reading.
Credentials come from each filesystem's own environment and config files
(``AWS_*`` and ``~/.aws`` for s3fs, ``GOOGLE_APPLICATION_CREDENTIALS`` and
gcloud's for gcsfs), never from ours. This module is the only place that
talks to fsspec; the rest of the code passes strings.

API (for every command; ingest uses it today, train/run/score are to be
wired to it):

- :func:`is_local`, :func:`local_path`, :func:`normalise`: what kind of
  location a string is;
- :func:`filesystem`: the fsspec filesystem and the path inside it, with
  clean errors for a scheme without an installed filesystem;
- :func:`exists`, :func:`glob`, :func:`listdir`, :func:`remove`,
  :func:`read_bytes`, :func:`write_bytes` (atomic, optionally exclusive),
  :func:`join`, :func:`sibling`, :func:`basename`;
- :func:`zarr_store`: a Zarr store object for a location (local writes are
  atomic per key, like an object store's PUT);
- :func:`storage_errors`: a context manager that turns the many exceptions of
  the filesystems (missing bucket, access denied, refused connection) into a
  one-line :class:`StorageError` naming the URL and the fix.

Object stores have no rename: a writer there publishes by writing a
completion marker last (see :mod:`forecast.publish`); a local writer may
stage under :func:`staging_path` and rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from forecast.errors import ForecastError

__all__ = [
    "StorageError",
    "basename",
    "exists",
    "filesystem",
    "glob",
    "is_local",
    "join",
    "listdir",
    "local_path",
    "normalise",
    "read_bytes",
    "remove",
    "sibling",
    "staging_path",
    "storage_errors",
    "write_bytes",
    "zarr_store",
]

#: URL scheme -> the package that provides its fsspec filesystem.
FILESYSTEM_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
}

#: Schemes that cannot be written to.
READ_ONLY_SCHEMES = ("http", "https")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


class StorageError(ForecastError, OSError):
    """A location cannot be reached, read or written (missing bucket, no access, no filesystem)."""


def scheme(path: str | Path) -> str | None:
    """The URL scheme of ``path`` (``"s3"``), or None for a plain local path."""
    match = _SCHEME.match(str(path))
    return match.group(1).lower() if match else None


def is_local(path: str | Path) -> bool:
    """Whether ``path`` is on the local file system (a plain path or ``file://``)."""
    return scheme(path) in (None, "file", "local")


def local_path(path: str | Path) -> Path:
    """The local :class:`Path` of a plain path or ``file://`` URL."""
    if not is_local(path):
        raise ValueError(f"{path} is not a local path")
    text = str(path)
    return Path(re.sub(r"^(file|local)://", "", text)) if scheme(text) else Path(text)


def normalise(path: str | Path) -> str:
    """A canonical string for a location: an absolute local path, or the URL without a trailing slash."""
    if is_local(path):
        return str(local_path(path).expanduser().absolute())
    return str(path).rstrip("/")


def join(base: str | Path, *names: str) -> str:
    """``base/name/...`` for a local path or a URL."""
    if is_local(base) and not scheme(base):
        return str(Path(base).joinpath(*names))
    return "/".join([str(base).rstrip("/"), *names])


def basename(path: str | Path) -> str:
    """The last component of a path or URL."""
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def parent(path: str | Path) -> str:
    """The folder (prefix) holding ``path``."""
    if is_local(path) and not scheme(path):
        return str(Path(path).parent)
    head = str(path).rstrip("/").rsplit("/", 1)[0]
    return head


def sibling(path: str | Path, name: str) -> str:
    """A location named ``name`` beside ``path`` (same folder or prefix)."""
    return join(parent(path), name)


def staging_path(target: str | Path, pid: int | None = None) -> str:
    """The hidden sibling ``.NAME.tmp-PID`` where a local writer builds ``target`` before renaming it."""
    return sibling(target, f".{basename(target)}.tmp-{os.getpid() if pid is None else pid}")


def filesystem(path: str | Path) -> tuple[Any, str]:
    """The fsspec filesystem of ``path`` and the path inside it.

    Raises
    ------
    StorageError
        If no filesystem for the scheme is installed (naming the package to
        install) or the scheme is unknown.
    """
    import fsspec

    protocol = scheme(path) or "file"
    try:
        fs, inner = fsspec.core.url_to_fs(str(path))
    except ImportError as err:
        package = FILESYSTEM_PACKAGES.get(protocol, "the fsspec filesystem for it")
        raise StorageError(
            f"no filesystem for {protocol}:// is installed ({err})",
            path=path,
            hint=f"pip install {package}",
        ) from err
    except ValueError as err:
        if "not known" in str(err) or "Protocol" in str(err):
            raise StorageError(
                f"unknown URL scheme {protocol}://",
                path=path,
                hint="use a local path or an s3://, gs://, file:// or https:// URL",
            ) from err
        raise
    return fs, inner


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:200]


@contextlib.contextmanager
def storage_errors(path: str | Path, action: str = "access") -> Iterator[None]:
    """Turn a filesystem's exceptions inside the block into one-line :class:`StorageError` s.

    Local paths keep their ``FileNotFoundError``/``PermissionError`` (the
    command line already words those); on object storage, a missing bucket,
    denied access and a refused connection each get the URL and the fix.
    ``ForecastError`` s pass through unchanged.
    """
    try:
        yield
    except (ForecastError, FileExistsError):
        raise
    except Exception as err:
        if is_local(path) and isinstance(err, OSError):
            raise
        name = type(err).__name__
        text = _reason(err)
        if (
            isinstance(err, PermissionError)
            or "AccessDenied" in text
            or "Forbidden" in text
            or "403" in text
            or "credentials" in text.lower()
        ):
            raise StorageError(
                f"access denied while trying to {action} it ({text})",
                path=path,
                hint="check the credentials in the filesystem's own environment or config "
                "(AWS_ACCESS_KEY_ID/AWS_PROFILE for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://) and the bucket's permissions",
            ) from err
        if isinstance(err, FileNotFoundError) or "NoSuchBucket" in text:
            raise StorageError(
                f"not found while trying to {action} it ({text})",
                path=path,
                hint="check the bucket and path (does the bucket exist?)",
            ) from err
        if (
            isinstance(err, (ConnectionError, TimeoutError))
            or "connect" in text.lower()
            or name in ("ClientConnectorError", "EndpointConnectionError", "ServerTimeoutError")
        ):
            raise StorageError(
                f"cannot reach the storage service while trying to {action} it ({text})",
                path=path,
                hint="check the network and the endpoint (AWS_ENDPOINT_URL for S3-compatible services)",
            ) from err
        if isinstance(err, OSError):
            raise StorageError(
                f"cannot {action} it ({name}: {text})",
                path=path,
                hint="check the URL and the storage service",
            ) from err
        raise


def exists(path: str | Path) -> bool:
    """Whether a file, folder or object prefix exists at ``path``."""
    if is_local(path):
        return local_path(path).exists()
    fs, inner = filesystem(path)
    with storage_errors(path, "look up"):
        fs.invalidate_cache(inner)  # another process may have written it since this one listed
        return bool(fs.exists(inner))


#: What an fsspec ``info`` calls an object's content tag (S3, HTTP: ETag; GCS: etag, md5Hash)
#: and its modification time (local: mtime; S3: LastModified; HTTP: Last-Modified; GCS: updated).
_CONTENT_TAGS = ("ETag", "etag", "md5Hash", "Content-MD5", "Digest")
_MODIFIED = ("mtime", "LastModified", "Last-Modified", "updated", "last_modified")


def object_version(info: dict[str, Any]) -> str | None:
    """What changes when an object's content does, from its fsspec ``info``.

    Its content tag when the filesystem reports one, else its modification
    time; None when it reports neither (its size is then all there is).
    """
    for keys in (_CONTENT_TAGS, _MODIFIED):
        found = next((info[k] for k in keys if info.get(k) not in (None, "")), None)
        if found is not None:
            return str(found)
    return None


def _with_scheme(path: str | Path, inner: str) -> str:
    protocol = scheme(path)
    if protocol is None:
        return inner
    if protocol in ("file", "local"):
        return f"{protocol}://{inner}"
    if protocol in ("http", "https"):
        return inner
    return f"{protocol}://{inner}"


def glob(pattern: str | Path) -> list[str]:
    """Sorted matches of a glob on any filesystem; a pattern without magic is returned if it exists.

    Raises
    ------
    FileNotFoundError
        If nothing matches (the pattern is named).
    """
    text = str(pattern)
    magic = any(c in text for c in "*?[")
    if is_local(text):
        import glob as local_glob

        base = str(local_path(text))
        matches = (
            sorted(local_glob.glob(base)) if magic else ([base] if os.path.exists(base) else [])
        )
        matches = [_with_scheme(text, m) if scheme(text) else m for m in matches]
    else:
        fs, inner = filesystem(text)
        with storage_errors(text, "list"):
            fs.invalidate_cache()
            if magic:
                if scheme(text) in ("http", "https"):
                    raise StorageError(
                        "globs need a filesystem that can list folders; https:// cannot",
                        path=text,
                        hint="list the files one by one",
                    )
                matches = sorted(_with_scheme(text, m) for m in fs.glob(inner))
            else:
                matches = [text] if fs.exists(inner) else []
    if not matches:
        raise FileNotFoundError(2, "No such file or directory", text)
    return matches


def listdir(path: str | Path) -> list[str]:
    """Names (not paths) of the entries directly under ``path``; empty if it does not exist."""
    if is_local(path):
        folder = local_path(path)
        return sorted(os.listdir(folder)) if folder.is_dir() else []
    fs, inner = filesystem(path)
    with storage_errors(path, "list"):
        fs.invalidate_cache(inner)
        try:
            return sorted(
                basename(p)
                for p in fs.ls(inner, detail=False)
                if p.rstrip("/") != inner.rstrip("/")
            )
        except FileNotFoundError:
            return []


def is_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder (locally) or a prefix with objects under it."""
    if is_local(path):
        return local_path(path).is_dir()
    fs, inner = filesystem(path)
    with storage_errors(path, "look up"):
        fs.invalidate_cache(inner)
        return bool(fs.isdir(inner))


def remove(path: str | Path) -> None:
    """Delete a file, a folder with its contents, or every object under a prefix (missing: no-op)."""
    if is_local(path):
        import shutil

        target = local_path(path)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)
        return
    fs, inner = filesystem(path)
    with storage_errors(path, "delete"):
        try:
            fs.rm(inner, recursive=True)
        except FileNotFoundError:
            pass


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file or object."""
    if is_local(path):
        return local_path(path).read_bytes()
    fs, inner = filesystem(path)
    with storage_errors(path, "read"):
        return fs.cat_file(inner)


def read_head(path: str | Path, size: int) -> bytes:
    """The first ``size`` bytes of a file or object."""
    if is_local(path):
        with open(local_path(path), "rb") as handle:
            return handle.read(size)
    fs, inner = filesystem(path)
    with storage_errors(path, "read"):
        return fs.cat_file(inner, start=0, end=size)


def open_file(path: str | Path):
    """A read-only binary file object for ``path`` (fsspec's, buffered; it pickles, so Dask workers reopen it)."""
    fs, inner = filesystem(path)
    with storage_errors(path, "open"):
        return fs.open(inner, "rb")


def write_bytes(path: str | Path, data: bytes, exclusive: bool = False) -> None:
    """Write a whole file or object atomically: readers see the old content or the new, never part.

    Locally through a hidden temporary file and a rename (``exclusive``: a
    hard link, which fails if the file exists); on object storage one PUT
    (``exclusive``: a conditional PUT that fails if the object exists).

    Raises
    ------
    FileExistsError
        With ``exclusive``, if ``path`` already exists.
    """
    if is_local(path):
        target = local_path(path)
        temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            temporary.write_bytes(data)
            if exclusive:
                os.link(temporary, target)
            else:
                os.replace(temporary, target)
        finally:
            temporary.unlink(missing_ok=True)
        return
    if scheme(path) in READ_ONLY_SCHEMES:
        raise StorageError(
            "https:// locations are read-only",
            path=path,
            hint="write to a local path, s3:// or gs://",
        )
    fs, inner = filesystem(path)
    with storage_errors(path, "write"):
        if exclusive:
            try:
                with fs.open(inner, "xb") as handle:
                    handle.write(data)
            except FileExistsError:
                raise
            except OSError as err:
                if "pre-condition" in str(err) or "PreconditionFailed" in str(err):
                    raise FileExistsError(17, "File exists", str(path)) from err
                raise
        else:
            fs.pipe_file(inner, data)


def zarr_store(path: str | Path, read_only: bool = False):
    """A Zarr (v3) store object for ``path``: local directory or fsspec URL.

    Local stores write each key through a temporary file and a rename
    (Zarr's ``LocalStore``), object stores with one PUT per key: either way a
    key is its old value or its new one, never part of one. The object
    pickles, so Dask workers write through the same store.
    """
    import zarr

    if is_local(path):
        return zarr.storage.LocalStore(str(local_path(path)), read_only=read_only)
    if scheme(path) in READ_ONLY_SCHEMES and not read_only:
        raise StorageError(
            "https:// locations are read-only",
            path=path,
            hint="write to a local path, s3:// or gs://",
        )
    filesystem(path)  # a clean error for a scheme without a filesystem
    with storage_errors(path, "open"):
        return zarr.storage.FsspecStore.from_url(str(path), read_only=read_only)
