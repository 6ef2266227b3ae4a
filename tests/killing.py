"""Killing our own code: SIGKILL a subprocess at the moment a test chooses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path


def kill_when(process: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120.0) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds (polled every 50 ms), or at ``timeout`` seconds.

    Fails with the process's stderr if it ended by itself first, and always
    leaves it dead with its stderr closed.
    """
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and process.poll() is None and not ready():
            time.sleep(0.05)
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stderr:
            process.stderr.close()


def start_script(path: Path, text: str) -> subprocess.Popen:
    """Write ``text`` (dedented) to ``path`` and start it with this Python, stderr piped for :func:`kill_when`."""
    path.write_text(textwrap.dedent(text))
    return subprocess.Popen(
        [sys.executable, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def run_until_killed(script: str, args: list[str]) -> None:
    """Run ``script`` (which SIGKILLs itself) with ``args`` in a subprocess at the repository root, in
    this process's environment (a test S3 server's credentials, say); fail unless it died so."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=Path(__file__).resolve().parents[1],
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
