"""Subcommand options as pydantic models: one model per subcommand, the one source of its flags.

Each subcommand module defines ``Config``, a :class:`CommandConfig` whose
fields are its options (type, default, help, and how the flag is spelled,
given with :func:`option`). :func:`add_arguments` generates the argparse
flags from the model; :func:`resolve` reads the YAML of ``--config``,
overlays the flags given on the command line, and validates the result into
the model: YAML -> model -> flag overrides. Defaults live only in the model
(and flags that were not given do not appear in the namespace at all).

A YAML key is a field name or a flag name, with ``-`` or ``_``
(``max-steps``, ``max_steps``; ``no-progress: true`` is ``progress: false``).
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from forecast.errors import ConfigError


def option(
    default: Any = PydanticUndefined,
    help: str = "",
    *,
    flags: tuple[str, ...] | None = None,
    metavar: str | None = None,
    positional: bool = False,
    group: str | None = None,
    nargs: str | None = None,
    repeat: bool = False,
    **constraints: Any,
) -> Any:
    """A field of a :class:`CommandConfig` with what its flag needs.

    Parameters
    ----------
    default
        The default (omit for a required option).
    help : str
        One line for ``--help``; ``(default X)`` is appended.
    flags : tuple of str, optional
        Spellings of the flag (default ``--field-name``; for a bool that
        defaults to True, ``--no-field-name``, which sets it False).
    metavar : str, optional
        Placeholder in ``--help``.
    positional : bool
        A positional argument (lists take any number).
    group : str, optional
        Argument group in ``--help``.
    nargs : str, optional
        ``"+"`` for a list flag that takes several words (its items may hold
        commas); text is then one item, not split at commas.
    repeat : bool
        A list flag that may be given several times (``--checkpoint a --checkpoint b``),
        one item each; text is one item, not split at commas.
    **constraints
        Pydantic constraints (``ge``, ``gt``, ...).
    """
    cli: dict[str, Any] = {
        "flags": list(flags) if flags else None,
        "metavar": metavar,
        "positional": positional,
        "group": group,
        "nargs": nargs,
        "repeat": repeat,
    }
    extra: dict[str, Any] = {"cli": cli}
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class CommandConfig(BaseModel):
    """Base of the subcommand models: frozen, unknown keys rejected, text coerced.

    A list field given as text takes comma-separated items (``z500,t850``);
    a mapping field given as text takes ``key=value`` pairs with YAML-typed
    values (``embed_dim=64,pos_embed=learned``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def merge(cls, from_file: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
        """The options of the config file overlaid with those given as flags (flags win)."""
        return {**from_file, **given}

    @field_validator("*", mode="before")
    @classmethod
    def _from_text(cls, value: Any, info: Any) -> Any:
        if not isinstance(value, str) or info.field_name is None:
            return value
        info_field = cls.model_fields[info.field_name]
        kind = _container(info_field.annotation)
        if kind is list and (_cli(info_field).get("nargs") or _cli(info_field).get("repeat")):
            return [value]
        if kind is list:
            return [item.strip() for item in value.split(",") if item.strip()]
        if kind is dict:
            return parse_pairs(value, info.field_name)
        return value


def parse_pairs(text: str, name: str) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML).

    Raises
    ------
    ConfigError
        For a part without ``=``.
    """
    import yaml

    flag = "--" + name.replace("_", "-")
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"cannot parse {flag} {text!r}",
                hint=f"write key=value pairs separated by commas, e.g. {flag} a=1,b=2",
            )
        out[key.strip()] = yaml.safe_load(value.strip())
    return out


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _container(annotation: Any) -> type | None:
    """``list`` for list/tuple annotations, ``dict`` for mappings, else None."""
    origin = typing.get_origin(_strip_optional(annotation)) or _strip_optional(annotation)
    if origin in (list, tuple):
        return list
    if origin in (dict, Mapping) or (isinstance(origin, type) and issubclass(origin, Mapping)):
        return dict
    return None


def _cli(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    cli = extra.get("cli") if isinstance(extra, dict) else None
    return dict(cli) if isinstance(cli, dict) else {}


def _flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_bool(info: FieldInfo) -> bool:
    return _strip_optional(info.annotation) is bool


def flags_of(name: str, info: FieldInfo) -> list[str]:
    """The flag spellings of field ``name``."""
    cli = _cli(info)
    if cli.get("flags"):
        return list(cli["flags"])
    if _is_bool(info) and info.default is True:
        return ["--no-" + name.replace("_", "-")]
    return [_flag_name(name)]


def _help(info: FieldInfo) -> str:
    text = (info.description or "").replace("%", "%%")
    default = info.default
    shown = not (default is PydanticUndefined or default is None or _is_bool(info) or default == {})
    if shown and "(default" not in text:
        value = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        text += f" (default {value})"
    return text


#: Placeholders in ``--help`` for options of these types without their own.
_METAVARS: dict[Any, str] = {int: "N", float: "X", Path: "PATH"}


def _choices(info: FieldInfo) -> list[str] | None:
    annotation = _strip_optional(info.annotation)
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def add_arguments(parser: argparse.ArgumentParser, model: type[CommandConfig]) -> None:
    """Add one argument per field of ``model`` to ``parser``.

    Every argument defaults to ``argparse.SUPPRESS``: only what the command
    line gives reaches the namespace, so a YAML value is overridden only by a
    flag that was actually typed.
    """
    groups: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        cli = _cli(info)
        target: Any = parser
        if cli.get("group"):
            target = groups.setdefault(cli["group"], parser.add_argument_group(cli["group"]))
        kwargs: dict[str, Any] = {"help": _help(info), "default": argparse.SUPPRESS}
        if cli.get("positional"):
            kwargs["nargs"] = "*" if _container(info.annotation) is list else "?"
            target.add_argument(name, metavar=cli.get("metavar") or name.upper(), **kwargs)
            continue
        if _is_bool(info):
            action = "store_false" if info.default is True else "store_true"
            if action == "store_false":
                kwargs["help"] = f"turn off: {kwargs['help']}"
            target.add_argument(*flags_of(name, info), dest=name, action=action, **kwargs)
            continue
        kwargs["metavar"] = cli.get("metavar") or _METAVARS.get(_strip_optional(info.annotation))
        if cli.get("nargs"):
            kwargs["nargs"] = cli["nargs"]
        if cli.get("repeat"):
            kwargs["action"] = "append"
        if _choices(info):
            kwargs["choices"] = _choices(info)
            kwargs.pop("metavar")
        target.add_argument(*flags_of(name, info), dest=name, **kwargs)


def _yaml_keys(model: type[CommandConfig]) -> dict[str, tuple[str, bool]]:
    """YAML key (with ``_``) -> (field, whether the value is inverted)."""
    keys: dict[str, tuple[str, bool]] = {}
    for name, info in model.model_fields.items():
        keys[name] = (name, False)
        for flag in flags_of(name, info):
            key = flag.lstrip("-").replace("-", "_")
            inverted = _is_bool(info) and info.default is True
            keys.setdefault(key, (name, inverted))
    return keys


def read_config_file(path: str | Path, model: type[CommandConfig], command: str) -> dict[str, Any]:
    """The options of a YAML config file, keyed by field name.

    Raises
    ------
    ConfigError
        Unreadable file, invalid YAML, not a mapping, or an unknown key.
    """
    import yaml

    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config ({err.strerror})", path=path) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML ({str(err).splitlines()[0]})", path=path) from err
    if not isinstance(loaded, dict):
        raise ConfigError("a config file must be a mapping of option names to values", path=path)
    keys = _yaml_keys(model)
    values: dict[str, Any] = {}
    for key, value in loaded.items():
        found = keys.get(str(key).replace("-", "_"))
        if found is None:
            allowed = ", ".join(sorted(n.replace("_", "-") for n in model.model_fields))
            raise ConfigError(
                f"unknown key {key!r} for 'forecast {command}'",
                path=path,
                hint=f"allowed keys: {allowed}",
            )
        name, inverted = found
        values[name] = (not value) if inverted and isinstance(value, bool) else value
    return values


def resolve(
    model: type[CommandConfig],
    namespace: argparse.Namespace,
    config: str | Path | None = None,
    command: str = "",
) -> CommandConfig:
    """YAML (``config``) -> flags given in ``namespace`` -> a validated ``model``.

    Raises
    ------
    ConfigError
        One line naming the first missing or invalid option (and the file it came from).
    """
    from_file = read_config_file(config, model, command) if config else {}
    given = {k: v for k, v in vars(namespace).items() if k in model.model_fields}
    try:
        return model(**model.merge(from_file, given))
    except ValidationError as err:
        item = err.errors()[0]
        name = str(item["loc"][0]) if item["loc"] else ""
        info = model.model_fields.get(name)
        label = name
        if info is not None:
            cli = _cli(info)
            label = (
                (cli.get("metavar") or name.upper())
                if cli.get("positional")
                else flags_of(name, info)[0]
            )
        if len(item["loc"]) > 1:  # inside a mapping: name the key path
            label = ".".join(str(part) for part in item["loc"])
        where = config if name in from_file and name not in given else None
        if item["type"] == "missing":
            raise ConfigError(
                f"missing {label}",
                path=where,
                hint=f"give {label} on the command line or as {name.replace('_', '-')!r} in --config",
            ) from err
        message = str(item["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {label} {item.get('input')!r}: {message}", path=where) from err
