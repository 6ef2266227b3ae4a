"""One writer at a time: a lock beside every output, on local disk and on object storage.

A writer of ``TARGET`` (a store, a run directory, a forecast, a scores file)
holds ``TARGET.lock`` for as long as it writes::

    from forecast.locking import lock

    with lock("s3://bucket/era5.zarr", "forecast ingest"):
        ...  # write era5.zarr

The lock records its :class:`Owner` (host, pid, the process's start time,
the command, a random token). A second writer gets a one-line
:class:`LockedError` that names the holder and how long its lease runs.

- **Local disk** (:class:`FileLock`): ``fcntl.flock`` on ``TARGET.lock``,
  which the kernel releases when the process ends however it ends, so a
  dead holder's lock is taken over at once. The file holds the owner as
  JSON and is deleted on release (a takeover checks that the file it locked
  is still the one at the path, so deleting it is safe).
- **Object storage** (:class:`ObjectLock`): the object ``TARGET.lock``,
  created with a conditional PUT (fails if it exists), holding the owner and
  a lease expiry; a thread renews the lease every third of its length. A
  lock whose lease has expired, or whose owner ran on this host and is no
  longer alive, is stale: it is deleted and taken over (the holder read just
  before the delete must still be the stale one). Release deletes it if it
  is still ours.

Other commands use it the same way: ``lock(out, "forecast train")`` around
the writing of a run directory, ``lock(out, "forecast run")``,
``lock(out, "forecast score")``; the lease (:data:`DEFAULT_LEASE_SECONDS`)
only matters on object storage.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from forecast import storage
from forecast.errors import ForecastError

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "FileLock",
    "LockedError",
    "ObjectLock",
    "Owner",
    "lock",
    "lock_path",
]

#: Seconds a lock on object storage stays valid without renewal.
DEFAULT_LEASE_SECONDS = 120.0


class LockedError(ForecastError, RuntimeError):
    """Another live process holds the lock of this output."""


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Owner:
    """Who holds a lock.

    Attributes
    ----------
    host : str
        Host name of the holding process.
    pid : int
        Its process id.
    started : str
        When it took the lock (UTC, ISO 8601).
    process_start : str or None
        The process's start time (ticks since boot): tells a live holder from
        a new process that reuses a dead one's pid.
    command : str
        What it runs (``forecast ingest``).
    token : str
        Random id of this acquisition.
    expires : float or None
        Lease expiry (seconds since the epoch) on object storage.
    """

    host: str
    pid: int
    started: str
    process_start: str | None
    command: str
    token: str
    expires: float | None = None

    @classmethod
    def current(cls, command: str, lease: float | None = None) -> Owner:
        """The owner record of this process."""
        return cls(
            host=socket.gethostname(),
            pid=os.getpid(),
            started=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            process_start=_process_start(os.getpid()),
            command=command,
            token=uuid.uuid4().hex,
            expires=None if lease is None else time.time() + lease,
        )

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """An owner from a lock's content, or None if it is not one of ours."""
        try:
            fields = json.loads(text)
            return cls(**{k: fields.get(k) for k in cls.__dataclass_fields__})
        except (ValueError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def alive(self) -> bool | None:
        """Whether the holder still runs: True/False on this host, None for another host."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(int(self.pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return self.process_start is None or _process_start(int(self.pid)) == self.process_start

    def describe(self) -> str:
        text = f"{self.command} pid {self.pid} on {self.host} since {self.started}"
        if self.expires is not None:
            text += f", lease until {dt.datetime.fromtimestamp(self.expires, dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        return text


def lock_path(target: str | Path) -> str:
    """``TARGET.lock``: the lock of an output, beside it."""
    return str(target).rstrip("/") + ".lock"


def _locked(target: str, holder: str, object_storage: bool) -> LockedError:
    hint = "wait for it to finish"
    hint += (
        "; if it died, the lock is taken over when its lease expires"
        if object_storage
        else "; the lock frees itself when that process ends"
    )
    return LockedError(f"another process is writing this output ({holder})", path=target, hint=hint)


class FileLock:
    """An exclusive ``flock`` on ``TARGET.lock`` on a local file system (see the module docstring)."""

    def __init__(self, target: str | Path, command: str):
        self.target = str(target)
        self.path = Path(storage.local_path(lock_path(target)))
        self.command = command
        self.owner: Owner | None = None
        self._handle: IO[str] | None = None

    def acquire(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                handle.close()
                owner = Owner.parse(text)
                raise _locked(
                    self.target, owner.describe() if owner else (text or "another process"), False
                ) from None
            try:  # the holder before us may have deleted the file after we opened it: lock the one at the path
                same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        self.owner = Owner.current(self.command)
        handle.seek(0)
        handle.truncate()
        handle.write(self.owner.to_json())
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # while still locked: a waiting process then re-opens a fresh file
        fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
        self._handle.close()
        self._handle = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class ObjectLock:
    """A lease-based lock object ``TARGET.lock`` on object storage (see the module docstring)."""

    def __init__(self, target: str, command: str, lease: float = DEFAULT_LEASE_SECONDS):
        self.target = str(target)
        self.path = lock_path(target)
        self.command = command
        self.lease = float(lease)
        self.owner: Owner | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> tuple[Owner | None, str]:
        try:
            text = storage.read_bytes(self.path).decode(errors="replace")
        except (FileNotFoundError, storage.StorageError) as err:
            if isinstance(err, FileNotFoundError) or "not found" in str(err):
                return None, ""
            raise
        return Owner.parse(text), text

    def _stale(self, owner: Owner | None) -> bool:
        if owner is None:
            return False
        if owner.expires is not None and owner.expires < time.time():
            return True
        return owner.alive() is False

    def acquire(self) -> ObjectLock:
        for _ in range(3):
            owner = Owner.current(self.command, self.lease)
            try:
                storage.write_bytes(self.path, owner.to_json().encode(), exclusive=True)
            except FileExistsError:
                holder, text = self._read()
                if holder is None and not text:
                    continue  # released meanwhile: try again
                if not self._stale(holder):
                    raise _locked(
                        self.target, holder.describe() if holder else text[:120], True
                    ) from None
                again, _ = self._read()  # delete only the stale holder we saw
                if again is not None and holder is not None and again.token == holder.token:
                    storage.remove(self.path)
                continue
            self.owner = owner
            self._thread = threading.Thread(
                target=self._renew, name=f"lease {self.path}", daemon=True
            )
            self._thread.start()
            return self
        raise _locked(self.target, "another process that keeps taking it", True)

    def _renew(self) -> None:
        while not self._stop.wait(self.lease / 3):
            holder, _ = self._read()
            if holder is None or self.owner is None or holder.token != self.owner.token:
                return  # taken over (our lease had expired): the writer's commit checks ownership
            renewed = Owner(**{**asdict(self.owner), "expires": time.time() + self.lease})
            storage.write_bytes(self.path, renewed.to_json().encode())
            self.owner = renewed

    def held(self) -> bool:
        """Whether the lock object still names this holder (check before publishing)."""
        holder, _ = self._read()
        return holder is not None and self.owner is not None and holder.token == self.owner.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self.owner is not None and self.held():
            storage.remove(self.path)
        self.owner = None

    def __enter__(self) -> ObjectLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock(
    target: str | Path, command: str, lease: float = DEFAULT_LEASE_SECONDS
) -> FileLock | ObjectLock:
    """The lock of ``target`` for ``command``: a :class:`FileLock` locally, an :class:`ObjectLock` on object storage.

    Use it as a context manager; entering it raises :class:`LockedError`
    (naming the holder) if a live process holds it.
    """
    if storage.is_local(target):
        return FileLock(target, command)
    return ObjectLock(str(target), command, lease)


def is_held(target: str | Path) -> Owner | None:
    """The live owner of ``target``'s lock, or None when nobody holds it (probe, without taking it)."""
    if storage.is_local(target):
        path = Path(storage.local_path(lock_path(target)))
        if not path.exists():
            return None
        try:
            with open(path, "a+") as handle:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as err:
                    if err.errno in (errno.EAGAIN, errno.EACCES):
                        handle.seek(0)
                        return Owner.parse(handle.read()) or Owner(
                            "?", 0, "?", None, "another process", ""
                        )
                    raise
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
                return None
        except FileNotFoundError:
            return None
    probe = ObjectLock(str(target), "probe")
    holder, _ = probe._read()
    return None if holder is None or probe._stale(holder) else holder
