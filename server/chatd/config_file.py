"""chatd's configuration file (``--config FILE``, TOML) and where each setting came from.

Precedence
==========
A setting is taken from the first of these that gives it:

1. the command line (``--max-clients 500``);
2. the environment (``CHATD_MAX_CLIENTS=500``);
3. the configuration file (``max-clients = 500``);
4. the default (``chatd --help`` shows it).

click implements that order itself (command line, ``envvar``, the context's
``default_map``, the default); this module fills the ``default_map`` from the file, and
:class:`SourcedOption` gives every option its ``CHATD_*`` variable and names the source
of a bad value in the error (``CHATD_PORT`` or ``chatd.toml, line 3``), which click
alone does not.

The file
========
A flat TOML table whose keys are the long options without their dashes, spelled as on
the command line (``irc-port = 6667``, ``allowed-origin = ["https://a.example"]``,
``exempt-loopback = false``). Values are checked for their TOML type before click
converts them, so ``port = "4040"`` is an error rather than a string that happens to
parse: a configuration that is wrong should say so, not half work. An unknown key is
an error with the closest known key suggested. Relative paths in the file are taken from
the file's own directory, so the file means the same whatever directory a service
manager starts chatd in (systemd starts it in ``/``).

tomllib reports no positions for keys, so the line a key sits on is found by a scan of
the file's top level (the file is flat: a ``[table]`` header is itself an error).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
from click.core import ParameterSource

ENV_PREFIX = "CHATD_"

#: ``key =`` at the start of a line, bare or quoted (group 2 is the key).
_KEY_LINE = re.compile(r"""^\s*(["']?)([A-Za-z0-9_-]+)\1\s*=""")
_TABLE_LINE = re.compile(r"^\s*\[")


class ConfigError(click.ClickException):
    """A configuration that cannot be used: exit status 2, like any usage error."""

    exit_code = 2


@dataclass
class FileSettings:
    """What one configuration file sets, in click's terms."""

    path: str
    #: Parameter name (``max_clients``) → value, as click's ``default_map`` wants it.
    values: dict[str, Any] = field(default_factory=dict)
    #: Parameter name → the line of the file that sets it (for error messages).
    lines: dict[str, int] = field(default_factory=dict)

    def where(self, name: str) -> str:
        line = self.lines.get(name)
        return f"{self.path}, line {line}" if line else self.path


def env_name(option: str) -> str:
    """``--max-clients`` → ``CHATD_MAX_CLIENTS``."""
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def long_name(param: click.Parameter) -> str:
    """The option's long spelling without dashes (its key in the file)."""
    longs = [opt for opt in param.opts if opt.startswith("--")]
    return (longs[0] if longs else param.opts[0]).lstrip("-")


class SourcedOption(click.Option):
    """An option that can also come from ``CHATD_<NAME>`` and from the file, and whose
    errors say which of those gave the bad value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        #: A path option: relative paths in the file are from the file's directory.
        self.is_path: bool = kwargs.pop("is_path", False)
        #: Settable from the file (not ``--config`` itself, nor ``--check-config``).
        self.in_file: bool = kwargs.pop("in_file", True)
        env: bool = kwargs.pop("env", True)
        super().__init__(*args, **kwargs)
        if env and self.envvar is None and self.name:
            self.envvar = env_name(long_name(self))
            self.show_envvar = True

    def handle_parse_result(
        self, ctx: click.Context, opts: Mapping[str, Any], args: list[str]
    ) -> Any:
        try:
            return super().handle_parse_result(ctx, opts, args)
        except click.BadParameter as exc:
            where = self.source(ctx)
            if where in ("command line", "default"):
                raise  # click's own message names the option
            raise ConfigError(f"{where}: {long_name(self)}: {exc.message}") from None

    def source(self, ctx: click.Context) -> str:
        """Where this option's value came from, as messages name it: ``command line``,
        ``$CHATD_PORT``, ``chatd.toml, line 3`` or ``default``."""
        source = ctx.get_parameter_source(self.name) if self.name else None
        if source is ParameterSource.COMMANDLINE:
            return "command line"
        if source is ParameterSource.ENVIRONMENT:
            return f"${self.envvar}"
        settings = ctx.meta.get("chatd.file")
        if source is ParameterSource.DEFAULT_MAP and isinstance(settings, FileSettings):
            return settings.where(self.name or "")
        return "default"


def read(path: str, params: Iterable[click.Parameter]) -> FileSettings:
    """Read and check ``path`` against the command's options (raises :class:`ConfigError`)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
        table = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(f"{path}: not usable TOML: nested too deeply") from None
    lines = _key_lines(text)
    by_key = {
        long_name(p): p
        for p in params
        if isinstance(p, SourcedOption) and p.in_file and p.name is not None
    }
    settings = FileSettings(path)
    base = os.path.dirname(os.path.abspath(path))
    for key, value in table.items():
        where = f"{path}, line {lines[key]}" if key in lines else path
        param = by_key.get(key)
        if param is None:
            if isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}]: the file has no tables, only keys")
            raise ConfigError(f"{where}: unknown key {key!r}{_suggest(key, by_key)}")
        assert param.name is not None
        problem = _type_problem(param, value)
        if problem:
            raise ConfigError(f"{where}: {key}: {problem}")
        if param.is_path and isinstance(value, str) and value:
            value = os.path.expanduser(value)
            if not os.path.isabs(value):
                value = os.path.join(base, value)
        settings.values[param.name] = value
        if key in lines:
            settings.lines[param.name] = lines[key]
    return settings


def toml_value(value: object) -> str:
    """``value`` as it would be written in the file (for ``--check-config``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a TOML one


def _key_lines(text: str) -> dict[str, int]:
    """Top-level key → its line (1-based); a table header ends the top level."""
    found: dict[str, int] = {}
    in_multiline = False
    for number, line in enumerate(text.splitlines(), 1):
        if line.count('"""') % 2 or line.count("'''") % 2:
            was = in_multiline
            in_multiline = not in_multiline
            if was:
                continue
        elif in_multiline:
            continue
        if _TABLE_LINE.match(line) and "=" not in line.split("]")[0]:
            name = line.strip().strip("[]").strip().strip("\"'")
            found.setdefault(name.split(".")[0], number)
            break
        match = _KEY_LINE.match(line)
        if match:
            found.setdefault(match.group(2), number)
    return found


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key.replace("_", "-"), list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else " (see chatd --help for the options)"


#: TOML's value types as errors name them (bool before int: a bool is an int).
_KINDS = (
    (bool, "a boolean"),
    (int, "an integer"),
    (float, "a float"),
    (str, "a string"),
    (list, "an array"),
    (dict, "a table"),
)


def _kind(value: object) -> str:
    kind = next((name for type_, name in _KINDS if isinstance(value, type_)), None)
    return kind or f"a {type(value).__name__}"  # dates and times


def _type_problem(param: SourcedOption, value: object) -> str | None:
    """Why ``value`` (from TOML) is the wrong type for ``param``, or None."""
    if param.multiple:
        if not isinstance(value, list):
            return f"expected an array, got {_kind(value)}"
        for item in value:
            problem = _scalar_problem(param, item)
            if problem:
                return f"in the array: {problem}"
        return None
    return _scalar_problem(param, value)


def _scalar_problem(param: SourcedOption, value: object) -> str | None:
    if param.is_flag:
        wanted: tuple[type, ...] = (bool,)
        name = "a boolean (true or false)"
    elif isinstance(param.type, click.types.IntParamType):  # IntRange is one too
        wanted, name = (int,), "an integer"
    elif isinstance(param.type, click.types.FloatParamType):
        wanted, name = (int, float), "a number"
    else:
        wanted, name = (str,), "a string"
    if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
        return f"expected {name}, got {_kind(value)}"
    return None
