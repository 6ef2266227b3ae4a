"""Whether a command draws its progress bar: unless hidden, only on a terminal.

A bar redraws its line with carriage returns many times a second. On a
terminal that is one live line; in a log file written by cron or a batch
scheduler it is thousands of fragments. So the commands draw their bars only
when stderr is a terminal, and ``--no-progress`` hides them there as well.
The library functions take an explicit ``progress`` argument and do not look.
"""

from __future__ import annotations

import sys
from typing import TextIO

#: The ``--help`` line of each command's ``--no-progress``.
HIDE_HELP = "hide the progress bar (drawn only where stderr is a terminal)"


def shows_progress(hidden: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw a progress bar on ``stream``.

    Parameters
    ----------
    hidden : bool
        The command's ``--no-progress``.
    stream : text stream, optional
        Where the bar would go (default ``sys.stderr``, looked up at call time).

    Returns
    -------
    bool
        True when not hidden and the stream is a terminal.
    """
    stream = sys.stderr if stream is None else stream
    if hidden:
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())
