"""Exception hierarchy of the forecasting system.

Every error a user can cause derives from :class:`ForecastError` and carries a
one-line message that names the file (when there is one), the problem and the
fix. The command line prints ``str(error)`` and exits non-zero; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class ForecastError(Exception):
    """Base class for errors caused by input the user can fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.problem = message
        self.hint = hint
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts = []
        if self.path:
            parts.append(f"{self.path}:")
        parts.append(self.problem.rstrip("."))
        text = " ".join(parts)
        if self.hint:
            text += f"; {self.hint.rstrip('.')}"
        return text


class DataError(ForecastError, ValueError):
    """Input data is malformed: missing channel, irregular times, NaNs, ..."""


class GridError(DataError):
    """A grid is not what was expected (wrong shape, orientation, region)."""


class CalendarError(DataError):
    """Times or calendars are unknown, inconsistent or unparsable."""


class CheckpointError(ForecastError, ValueError):
    """A checkpoint is corrupt, of an unknown version, or mismatched."""


class ConfigError(ForecastError, ValueError):
    """A configuration file or option is invalid."""


def describe_problems(
    errors: Iterable[Mapping[str, Any]],
    unknown: str = "unknown key {key!r}",
    invalid: str = "{key}={value!r}: {message}",
) -> str:
    """One line from the items of a pydantic ``ValidationError.errors()``.

    Parameters
    ----------
    errors : iterable of mapping
        ``{"loc", "type", "msg", "input"}`` items.
    unknown, invalid : str
        Templates for a key that is not allowed and for a bad value; they
        receive ``key`` (the dotted location), ``value`` and ``message``.
    """
    problems = []
    for item in errors:
        key = ".".join(str(part) for part in item["loc"])
        template = unknown if item["type"] == "extra_forbidden" else invalid
        problems.append(template.format(key=key, value=item.get("input"), message=item["msg"]))
    return "; ".join(problems)
