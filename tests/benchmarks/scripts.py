"""What the tests of the benchmark scripts share: loading a script, resolving a command line."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from forecast.cli.config import resolve
from forecast.cli.main import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[2]


def loaded(name: str) -> Iterator[ModuleType]:
    """``benchmarks/NAME.py`` as the module ``NAME`` while the caller runs (a fixture body).

    It is in ``sys.modules`` meanwhile (dataclasses look their module up there);
    afterwards it and the ``dyffusion_evidence`` that the scripts import are removed.
    """
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    for loaded_name in (name, "dyffusion_evidence"):
        sys.modules.pop(loaded_name, None)


def resolved(argv: list[str]):
    """The validated config of a ``forecast`` command line, as the CLI builds it."""
    namespace = build_parser().parse_args(argv)
    model = __import__(COMMANDS[argv[0]][0], fromlist=["Config"]).Config
    return resolve(model, namespace, namespace.config, argv[0])
