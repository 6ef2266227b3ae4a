"""Entry point of the ``forecast`` console script.

Each subcommand lives in its own module of this package with a ``Config``
(a :class:`forecast.cli.config.CommandConfig`, the one source of its flags,
YAML keys and defaults) and ``run(config) -> int``; :data:`COMMANDS` lists
them by name. Heavy imports happen inside ``run`` so that ``forecast --help``
is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from forecast import __version__
from forecast.cli.config import add_arguments, resolve
from forecast.errors import ForecastError

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


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser, one subparser per available command.

    Parameters
    ----------
    only : str, optional
        Import and fill in this command's subparser alone; the others keep
        their one-line help (what ``forecast COMMAND ...`` needs: a command
        that does not train starts without importing the models and torch).
        None: every command.
    """
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
        if only is not None and name != only:
            sub.add_parser(name, help=help_text)
            continue
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a command whose module is not part of this installation
        doc = (module.__doc__ or help_text).strip()
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        cmd.add_argument(
            "--config",
            metavar="FILE.yaml",
            help="YAML file whose keys mirror the flags; flags given on the command line win",
        )
        cmd.add_argument("--debug", action="store_true", help="show the full traceback on errors")
        add_arguments(cmd, module.Config)
        cmd.set_defaults(_module=module_name)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``forecast`` command; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    debug = bool(args.debug)
    try:
        module = importlib.import_module(args._module)
        config = resolve(module.Config, args, args.config, args.command)
        return int(module.run(config) or 0)
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
        print(
            f"forecast {args.command}: error: {where}{err.strerror or err}{hint}", file=sys.stderr
        )
        return 1


def _one_line(err: BaseException) -> str:
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"{err.filename}: no such file or directory; check the path"
    if isinstance(err, PermissionError) and err.filename:
        return f"{err.filename}: permission denied; check the file's permissions"
    return " ".join(str(err).split())


if __name__ == "__main__":
    sys.exit(main())
