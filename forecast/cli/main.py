"""Entry point of the ``forecast`` console script.

Each subcommand lives in its own module of this package with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; :data:`COMMANDS` lists them
by name. Heavy imports happen inside ``run`` so that ``forecast --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from forecast import __version__
from forecast.errors import ConfigError, ForecastError

#: Subcommand name -> (module, one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("forecast.cli.synth", "write built-in ERA5-style synthetic NetCDF data"),
    "ingest": ("forecast.cli.ingest", "turn ERA5-style sources into a training store (Zarr)"),
    "train": ("forecast.cli.train", "train an SFNO/AFNO/FNO model on a store"),
    "run": ("forecast.cli.run", "run deterministic or ensemble forecasts from a checkpoint"),
    "score": ("forecast.cli.score", "score forecasts against the store the WeatherBench2 way"),
    "import": ("forecast.cli.import_", "turn published FourCastNet weights into a checkpoint"),
    "demo": ("forecast.cli.demo", "run the whole chain on built-in synthetic data"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, one subparser per available command."""
    parser = argparse.ArgumentParser(
        prog="forecast",
        description=(
            "AI weather and climate forecasting end to end: ingest ERA5-style data, train "
            "SFNO/AFNO models, run ensemble forecasts, score them the WeatherBench2 way."
        ),
    )
    parser.add_argument("--version", action="version", version=f"forecast {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a command whose module is not part of this installation
        doc = (module.__doc__ or help_text).strip()
        cmd = sub.add_parser(name, help=help_text, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--config", metavar="FILE.yaml", help="YAML file whose keys mirror the flags; flags given on the command line win")
        cmd.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        module.add_arguments(cmd)
        cmd.set_defaults(_module=module_name)
    return parser


def _peek(argv: list[str]) -> tuple[str | None, str | None]:
    """The subcommand and the ``--config`` value in ``argv``, before full parsing."""
    command = next((a for a in argv if a in COMMANDS), None)
    config = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    return command, config


def _apply_config(parser: argparse.ArgumentParser, command: str, config: str) -> None:
    """Make the YAML config's values the subcommand's defaults (flags given on the command line win)."""
    import yaml

    path = Path(config)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config ({err.strerror})", path=path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", path=path) from None
    if not isinstance(loaded, dict):
        raise ConfigError("a config file must be a mapping of option names to values", path=path)
    subparser = _subparser(parser, command)
    known = {a.dest: a for a in subparser._actions if a.dest not in ("help", "config") and not a.dest.startswith("_")}
    defaults = {}
    for key, value in loaded.items():
        dest = str(key).replace("-", "_")
        if dest not in known:
            allowed = ", ".join(sorted(d.replace("_", "-") for d in known))
            raise ConfigError(f"unknown key {key!r} for 'forecast {command}'", path=path, hint=f"allowed keys: {allowed}")
        action = known[dest]
        if isinstance(value, list) and action.nargs not in ("+", "*"):
            value = ",".join(str(v) for v in value)
        elif not isinstance(value, list) and action.nargs in ("+", "*"):
            value = [value]
        if action.type is not None and isinstance(value, str):
            try:
                value = action.type(value)
            except (TypeError, ValueError) as err:
                raise ConfigError(f"bad value {value!r} for key {key!r} ({err})", path=path) from None
        defaults[dest] = value
        action.required = False
        if not action.option_strings:
            action.nargs = "*" if action.nargs in ("+", "*") else "?"
    subparser.set_defaults(**defaults)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``forecast`` command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    command, config = _peek(argv)
    if command is not None and config is not None:
        try:
            _apply_config(parser, command, config)
        except ForecastError as err:
            if "--debug" in argv:
                traceback.print_exc()
            print(f"forecast {command}: error: {_one_line(err)}", file=sys.stderr)
            return 1
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = getattr(args, "debug", False)
    try:
        module = importlib.import_module(args._module)
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("forecast: interrupted", file=sys.stderr)
        return 130
    except (ForecastError, FileNotFoundError, PermissionError, IsADirectoryError) as err:
        if debug:
            traceback.print_exc()
        print(f"forecast {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except OSError as err:
        if debug:
            traceback.print_exc()
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        hint = "; free some disk space and rerun" if getattr(err, "errno", None) == 28 else ""
        print(f"forecast {args.command}: error: {where}{err.strerror or err}{hint}", file=sys.stderr)
        return 1


def _one_line(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"{err.filename}: no such file or directory; check the path"
    if isinstance(err, PermissionError) and err.filename:
        return f"{err.filename}: permission denied; check the file's permissions"
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
