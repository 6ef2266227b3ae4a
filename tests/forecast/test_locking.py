"""Locks on local disk: one holder at a time, a dead holder's lock taken over, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forecast.locking import LockedError, Owner, is_held, lock

HOLDER = """
import sys, time
from forecast.locking import lock
held = lock(sys.argv[1], "forecast train")
held.acquire()
print("held", flush=True)
time.sleep(120)
"""


def _hold(target: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_live_holder_is_named_and_a_dead_ones_lock_is_taken_over(tmp_path: Path) -> None:
    target = tmp_path / "run"
    holder = _hold(target)
    try:
        with pytest.raises(LockedError) as caught:
            lock(target, "forecast train").acquire()
        message = str(caught.value)
        assert message.startswith(
            f"{target}: another process is writing this output (forecast train pid {holder.pid} on "
        )
        assert message.endswith(
            "wait for it to finish; the lock frees itself when that process ends"
        )
        owner = is_held(target)
        assert owner is not None and owner.pid == holder.pid and owner.alive()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run.lock").exists()  # SIGKILL: the file stays, the kernel dropped the flock
    assert is_held(target) is None
    with lock(target, "forecast train") as taken:
        assert taken.owner.pid == os.getpid()
        assert Owner.parse((tmp_path / "run.lock").read_text()).token == taken.owner.token
    assert not (tmp_path / "run.lock").exists()  # released: deleted, no empty lock file


def test_owner_alive_tells_a_reused_pid_from_its_holder() -> None:
    me = Owner.current("forecast ingest")
    assert me.alive() is True
    assert (
        Owner(**{**me.__dict__, "process_start": "0"}).alive() is False
    )  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    time.sleep(0.05)
    assert Owner(**{**me.__dict__, "pid": child.pid, "process_start": None}).alive() is False
    assert (
        Owner(**{**me.__dict__, "host": "elsewhere"}).alive() is None
    )  # cannot tell for another host


def test_a_lock_file_of_an_older_writer_is_described_as_it_is(tmp_path: Path) -> None:
    """inference's RunLock writes plain text into the same OUT.lock and flocks it: the two exclude each other."""
    import fcntl

    target = tmp_path / "fc.zarr"
    with open(tmp_path / "fc.zarr.lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 4242 on host since 2020-01-01T00:00:00Z")
        handle.flush()
        with pytest.raises(
            LockedError, match=r"another process is writing this output \(pid 4242 on host since"
        ):
            lock(target, "forecast run").acquire()
