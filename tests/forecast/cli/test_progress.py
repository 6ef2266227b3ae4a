"""Progress bars are drawn on a terminal only: cron's log files get none."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import struct
import sys
import termios
import threading

import pytest

from forecast.cli.main import main
from forecast.cli.progress import shows_progress


@pytest.fixture
def terminal():
    """A pseudo-terminal of 80 columns: (a file writing to it, a function returning what it got)."""
    master, slave = pty.openpty()
    # a new pty is 0 columns wide, into which tqdm draws nothing
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the slave end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    stream = open(slave, "w", buffering=1, closefd=True)  # closed by read()

    def read() -> str:
        stream.close()
        reader.join(timeout=10)
        os.close(master)
        return b"".join(chunks).decode(errors="replace")

    yield stream, read
    if not stream.closed:
        read()


def test_a_terminal_shows_the_bar_unless_hidden(terminal):
    stream, _ = terminal
    assert stream.isatty()
    assert shows_progress(False, stream)
    assert not shows_progress(True, stream)


def test_a_file_or_pipe_never_shows_it(tmp_path):
    with open(tmp_path / "log", "w") as log:
        assert not shows_progress(False, log)
    assert not shows_progress(False, io.StringIO())
    read, write = os.pipe()
    with open(write, "w") as pipe:
        assert not shows_progress(False, pipe)
    os.close(read)


def _synth(tmp_path, name: str, *extra: str) -> int:
    return main(
        [
            "synth",
            str(tmp_path / name),
            "--grid",
            "8x16",
            "--days",
            "1",
            "--spinup-days",
            "1",
            *extra,
        ]
    )


def test_synth_draws_its_bar_on_a_terminal_and_none_into_a_log(tmp_path, monkeypatch, terminal):
    stream, read = terminal
    monkeypatch.setattr(sys, "stderr", stream)
    assert _synth(tmp_path, "tty") == 0
    drawn = read()
    assert "synth spin-up" in drawn and "\r" in drawn

    log_path = tmp_path / "cron.log"
    with open(log_path, "w") as log:
        monkeypatch.setattr(sys, "stderr", log)
        assert _synth(tmp_path, "cron") == 0
    assert "synth" not in log_path.read_text() and "\r" not in log_path.read_text()


def test_no_progress_hides_it_on_a_terminal(tmp_path, monkeypatch, terminal):
    stream, read = terminal
    monkeypatch.setattr(sys, "stderr", stream)
    assert _synth(tmp_path, "quiet", "--no-progress") == 0
    assert "synth spin-up" not in read()
