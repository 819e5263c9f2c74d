"""The ``chatd`` command line (click): settle the options, bind, run the chosen engine.

Every option can also come from ``CHATD_<OPTION>`` and from ``--config FILE``; the order
and the file's format are in :mod:`chatd.config_file`. The same parse runs again on
``SIGHUP`` (:func:`load`), so a reload sees exactly what a restart would.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from chatd import __version__, config_file, logs
from chatd import reload as reloading
from chatd.config import ENGINES, Config, ListenerSpec, ReloadError, origin_problem
from chatd.config_file import SourcedOption
from chatd.core.ids import node_problem
from chatd.core.names import normalize_room, room_problem

LOG_LEVELS = ("debug", "info", "warning", "error")

#: Every option of ``chatd`` takes ``CHATD_<NAME>`` and a key of the file too.
option = functools.partial(click.option, cls=SourcedOption)


class ChatdCommand(click.Command):
    """Keeps the arguments it parsed (``ctx.meta["chatd.argv"]``): SIGHUP parses them again."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["chatd.argv"] = list(args)
        return super().parse_args(ctx, args)


def _read_config_file(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--config``: the file's settings become click's defaults (below env and CLI)."""
    if value:
        settings = config_file.read(value, ctx.command.params)
        ctx.meta["chatd.file"] = settings
        ctx.default_map = {**(ctx.default_map or {}), **settings.values}
    return value


@click.command(cls=ChatdCommand, context_settings={"help_option_names": ["-h", "--help"]})
@option(
    "--config",
    "config_path",
    metavar="FILE",
    is_eager=True,
    expose_value=False,
    in_file=False,
    callback=_read_config_file,
    help="Read settings from this TOML file (keys are these options' long names); "
    "the command line and CHATD_* variables override it.",
)
@option(
    "--check-config",
    is_flag=True,
    in_file=False,
    env=False,
    help="Check the settings (file, environment, command line), print them with where "
    "each came from, and exit: 0 if they are usable, 2 if not.",
)
@option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4040,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@option(
    "--irc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also listen for IRC clients on this port (0 picks a free one; off if not given).",
)
@option("--engine", type=click.Choice(ENGINES), default="reactor", show_default=True)
@option(
    "--server-name",
    default="chatd",
    show_default=True,
    help="The server's name (greeting, IRC server name).",
)
@option(
    "--password",
    default=None,
    help="Connection password: IRC clients send PASS, line clients /pass before their nick.",
)
@option(
    "--password-file",
    is_path=True,
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read the connection password from the first line of this file.",
)
@option(
    "--motd",
    "motd_file",
    is_path=True,
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="IRC message of the day, from a UTF-8 text file.",
)
@option(
    "--oper",
    "opers",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="An IRC server operator (OPER NAME PASSWORD); may be given several times. "
    "Shows in ps: prefer --oper-file.",
)
@option(
    "--oper-file",
    is_path=True,
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="IRC server operators from a file: one NAME:PASSWORD per line ('#' starts a comment).",
)
@option(
    "--ping-interval",
    type=click.FloatRange(0),
    default=120.0,
    show_default=True,
    help="IRC: seconds of silence before the server PINGs a client, and waits as long again.",
)
@option(
    "--data-dir",
    is_path=True,
    type=click.Path(),
    default=None,
    help="Where history and room state are kept (SQLite) [default: "
    "$XDG_STATE_HOME/chatd, else ~/.local/state/chatd].",
)
@option(
    "--ephemeral",
    is_flag=True,
    default=False,
    help="Keep history in memory only (a ring per room) and nothing on disk.",
)
@option(
    "--history-max-per-room",
    type=click.IntRange(1),
    default=10000,
    show_default=True,
    help="Lines of history kept per room (older ones are deleted).",
)
@option(
    "--history-days",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Days a line of history is kept (0: no age limit).",
)
@option("--room", default="#lobby", show_default=True, help="Room a new client starts in.")
@option(
    "--max-line",
    type=click.IntRange(16, 1 << 20),
    default=4096,
    show_default=True,
    help="Longest accepted line in bytes, terminator excluded.",
)
@option(
    "--max-sendq",
    type=click.IntRange(1024),
    default=1 << 20,
    show_default=True,
    help="Output buffer per connection; past it the client is dropped.",
)
@option(
    "--max-clients",
    type=click.IntRange(1),
    default=10000,
    show_default=True,
    help="Connections accepted at once.",
)
@option(
    "--max-per-address",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="Connections held at once from one IP address (0: no limit).",
)
@option(
    "--connect-rate",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="New connections per second from one address; more wait to be read (0: no limit).",
)
@option(
    "--connect-burst",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="New connections one address may open at once before --connect-rate applies.",
)
@option(
    "--exempt-loopback/--no-exempt-loopback",
    default=True,
    show_default=True,
    help="Exempt 127.0.0.0/8 and ::1 from the per-address limits.",
)
@option(
    "--private-rate",
    type=click.IntRange(0),
    default=64 * 1024,
    show_default=True,
    help="Bytes per second one member may be sent privately by all others (0: no limit).",
)
@option(
    "--private-burst",
    type=click.IntRange(1),
    default=256 * 1024,
    show_default=True,
    help="Bytes of private messages one member may be sent at once.",
)
@option(
    "--max-rooms",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="Rooms one member may be in at once (IRC CHANLIMIT; 0: no limit).",
)
@option(
    "--max-rooms-per-address",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="Rooms the members from one IP address may be in, together (0: no limit; "
    "loopback is exempt with --exempt-loopback).",
)
@option(
    "--sendq-soft",
    type=click.IntRange(0),
    default=256 * 1024,
    show_default=True,
    help="Soft output limit in bytes (0: off).",
)
@option(
    "--sendq-soft-seconds",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds above --sendq-soft before the client is dropped.",
)
@option(
    "--flood-rate",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Lines per second per client (0: no flood control).",
)
@option(
    "--flood-burst",
    type=click.IntRange(1),
    default=40,
    show_default=True,
    help="Lines a client may send at once before --flood-rate applies.",
)
@option(
    "--register-timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds to choose a nickname (0: forever).",
)
@option(
    "--idle-timeout",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Seconds a registered client may stay silent (0: forever).",
)
@option(
    "--send-timeout",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="threaded engine: longest blocking send before the client is dropped.",
)
@option("--uvloop", is_flag=True, help="asyncio engine: run on uvloop.")
@option(
    "--tls-cert",
    metavar="FILE",
    is_path=True,
    help="PEM certificate chain for TLS (SIGHUP reloads).",
)
@option("--tls-key", metavar="FILE", is_path=True, help="PEM private key (default: in --tls-cert).")
@option("--tls-port", type=click.IntRange(0, 65535), help="TLS listener, line dialect.")
@option("--irc-tls-port", type=click.IntRange(0, 65535), help="TLS listener, IRC dialect.")
@option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help="HTTP listener: the chat page at /, WebSocket chat (IRC at / and /irc, the line "
    "dialect at /line), /health and /metrics.",
)
@option(
    "--https-port",
    type=click.IntRange(0, 65535),
    help="The same over TLS (wss://), with --tls-cert.",
)
@option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A web origin (https://chat.example.org) whose pages may open WebSocket chats; "
    "repeatable; '*' for any. Default: only the page's own. Others get 403.",
)
@option(
    "--tls-handshake-timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a TLS handshake may take (it holds a --max-clients slot).",
)
@option(
    "--redis",
    metavar="URL",
    help="Be one node of the cluster behind this Redis: redis://HOST:PORT[/DB] (reactor).",
)
@option(
    "--redis-password-file",
    is_path=True,
    metavar="FILE",
    help="The Redis password, the file's first line (rather than in the URL).",
)
@option(
    "--redis-lease",
    type=click.FloatRange(1.0, 3600.0),
    default=15.0,
    show_default=True,
    help="Seconds a nick lease and a node's heartbeat last: a dead node's members quit "
    "on the others after about this long.",
)
@option(
    "--redis-prefix",
    default="chatd",
    show_default=True,
    help="Prefix of the cluster's Redis keys and channels.",
)
@option(
    "--redis-ca",
    is_path=True,
    metavar="FILE",
    help="rediss://: CA certificates (PEM) to check Redis' certificate (default: the system's).",
)
@option(
    "--redis-cert",
    is_path=True,
    metavar="FILE",
    help="rediss://: this node's client certificate and key (PEM), if Redis asks for one.",
)
@option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="With --redis: this many reactor processes on the same ports (SO_REUSEPORT), "
    "each a node of the cluster: every core works.",
)
@option(
    "--node-id",
    metavar="ID",
    help="This node's id in message and member ids (5 characters of 0-9 a-v; "
    "default: random per start).",
)
@option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@option(
    "--log-format",
    type=click.Choice(logs.LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for log shippers.",
)
@click.version_option(__version__, prog_name="chatd")
def main(check_config: bool, **params: Any) -> None:
    """Run the chat daemon in the foreground until SIGINT or SIGTERM (SIGHUP reloads)."""
    ctx = click.get_current_context()
    config, workers = settle(params, sources=_sources(ctx))
    if check_config:
        _check_only(ctx, config, params)
        return
    logs.setup(config.log_level, config.log_format)
    argv = ctx.meta.get("chatd.argv", [])
    reload_source = functools.partial(load, argv)
    from chatd.history import HistoryError
    from chatd.memory import return_large_buffers_to_the_os
    from chatd.net.tls import TLSConfigError
    from chatd.service import ChatService

    return_large_buffers_to_the_os()
    if workers > 1:
        from chatd import workers as supervisor

        serve_one = functools.partial(_serve_worker, reload_source=reload_source)
        sys.exit(supervisor.run(config, workers, serve_one))

    from chatd.net import sdnotify, signals

    # Held from here until the engine's handlers are in: before any thread starts (the
    # history's threads inherit the mask, so a stop signal can only reach the main
    # thread), and across the announcement (a supervisor may stop us once it reads it).
    signals.hold()
    try:
        service = ChatService(config)
    except HistoryError as exc:
        click.echo(f"chatd: history: {exc}", err=True)
        sys.exit(2)
    service.reload_source = reload_source
    try:
        bound = service.bind_listeners()
    except TLSConfigError as exc:
        raise click.ClickException(f"TLS: {exc}") from None
    except OSError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    for listener in bound:
        print(listener.announcement(config.engine), flush=True)
    # systemd (Type=notify): listening now. The stop signals are still held, so a stop
    # sent the moment this arrives waits for the engine's handlers.
    sdnotify.ready(f"{config.engine}: {len(bound)} listener(s)")
    if config.engine == "reactor":
        from chatd.engines.reactor import serve
    elif config.engine == "threaded":
        from chatd.engines.threaded import serve
    else:
        from chatd.engines.aio import serve
    serve(service, bound)


#: Options that go into the Config unchanged (the others are checked together above).
_AS_GIVEN = frozenset(
    {f.name for f in dataclasses.fields(Config)}
    - {
        "host",
        "engine",
        "listeners",
        "server_name",
        "password",
        "opers",
        "motd",
        "room",
        "data_dir",
        "redis",
        "redis_password",
        "node_id",
        "history_window",
    }
)


#: Where a setting came from, highest first (see chatd.config_file).
_RANK = {
    ParameterSource.COMMANDLINE: 3,
    ParameterSource.ENVIRONMENT: 2,
    ParameterSource.DEFAULT_MAP: 1,
}
#: Options that exclude each other: given both from different layers, the higher layer's
#: wins (a unit's file sets ``password-file``; ``--password`` on the command line
#: replaces it). From one layer, both is an error.
_EITHER = (("password", "password_file"), ("data_dir", "ephemeral"))


def settle(
    params: Mapping[str, Any],
    *,
    resolve: bool = True,
    sources: Mapping[str, ParameterSource | None] | None = None,
) -> tuple[Config, int]:
    """Check the parsed options together and build the :class:`Config` (and the
    ``--workers`` count); raises click's usage errors, naming the option at fault.

    ``resolve``: look the Redis host up (at start; a reload never blocks on DNS).
    ``sources``: where each option came from (see :data:`_EITHER`).
    """
    p = dict(params)
    rank = {name: _RANK.get(source, 0) if source else 0 for name, source in (sources or {}).items()}
    for first, second in _EITHER:
        if p[first] not in (None, False) and p[second] not in (None, False):
            if rank.get(first, 0) > rank.get(second, 0):
                p[second] = None if second != "ephemeral" else False
            elif rank.get(second, 0) > rank.get(first, 0):
                p[first] = None
    for name, value in p.items():
        if isinstance(value, float) and not math.isfinite(value):  # TOML has nan and inf
            raise click.BadParameter(
                f"{value} is not a number of seconds or a rate",
                param_hint="--" + name.replace("_", "-"),
            )
    engine: str = p["engine"]
    room: str = p["room"]
    default_room = normalize_room(room)
    problem = room_problem(default_room)
    if problem:
        raise click.BadParameter(f"invalid room name {room!r}: {problem}", param_hint="--room")
    if p["uvloop"]:
        if engine != "asyncio":
            raise click.BadParameter("--uvloop needs --engine asyncio", param_hint="--uvloop")
        try:
            import uvloop as _uvloop  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
    password: str | None = p["password"]
    password_file: str | None = p["password_file"]
    if password is not None and password_file is not None:
        raise click.UsageError("give --password or --password-file, not both")
    if password_file is not None:
        password = _first_line(password_file, "--password-file")
        if not password:
            raise click.BadParameter("the file is empty", param_hint="--password-file")
    if password is not None and not _one_word(password):
        raise click.BadParameter("a password is one word", param_hint="--password")
    operators: dict[str, str] = {}
    for entry in p["opers"]:
        name, secret = _oper_entry(entry, "--oper", "")
        operators[name] = secret
    if p["oper_file"] is not None:
        operators.update(_oper_file(p["oper_file"]))
    motd: tuple[str, ...] = ()
    if p["motd_file"] is not None:
        try:
            with open(p["motd_file"], encoding="utf-8") as f:
                motd = tuple(line.rstrip("\r\n") for line in f)
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--motd") from None
    server_name: str = p["server_name"]
    if not _one_word(server_name):
        raise click.BadParameter("a server name is one word", param_hint="--server-name")
    host: str = p["host"]
    extra: tuple[ListenerSpec, ...] = ()
    if p["irc_port"] is not None:
        extra = (ListenerSpec(host, p["irc_port"], "irc"),)
    _check_tls(p["tls_cert"], p["tls_key"], p["tls_port"], p["irc_tls_port"], p["https_port"])
    for origin in p["allowed_origins"]:
        if problem := origin_problem(origin):
            raise click.BadParameter(problem, param_hint="--allowed-origin")
    redis: str | None = p["redis"]
    redis_password = _check_redis(
        redis, p["redis_password_file"], p["redis_prefix"], engine, p["data_dir"], resolve
    )
    _check_redis_tls(redis, p["redis_ca"], p["redis_cert"])
    node_id: str | None = p["node_id"]
    if node_id is not None and (problem := node_problem(node_id)):
        raise click.BadParameter(problem, param_hint="--node-id")
    workers: int = p["workers"]
    if workers > 1:
        if redis is None:
            raise click.UsageError("--workers needs --redis (the workers are one chat through it)")
        if node_id is not None:
            raise click.UsageError(
                "--workers: each worker is a node with its own id; drop --node-id"
            )
    # The options that are Config fields as they were given (checked by click alone).
    same = {name: p[name] for name in _AS_GIVEN}
    config = Config(
        host=host,
        engine=engine,
        listeners=extra,
        server_name=server_name,
        password=password,
        opers=operators,
        motd=motd,
        room=default_room,
        data_dir=_data_dir(p["data_dir"], p["ephemeral"]),
        redis=redis,
        redis_password=redis_password,
        node_id=node_id,
        **same,
    )
    return config, workers


def _sources(ctx: click.Context) -> dict[str, ParameterSource | None]:
    return {
        param.name: ctx.get_parameter_source(param.name)
        for param in ctx.command.params
        if param.name is not None
    }


def load(argv: list[str]) -> Config:
    """The settings as a restart with ``argv`` would find them now: the file and the
    environment read again (SIGHUP). Raises :class:`ReloadError` saying what is wrong."""
    try:
        with main.make_context("chatd", list(argv)) as ctx:
            config, _ = settle(ctx.params, resolve=False, sources=_sources(ctx))
            return config
    except click.ClickException as exc:
        raise ReloadError(exc.format_message()) from None
    except click.exceptions.Exit as exc:  # --help or --version: nothing to reload
        raise ReloadError(f"the command line exits ({exc.exit_code})") from None


def _check_only(ctx: click.Context, config: Config, params: Mapping[str, Any]) -> None:
    """``--check-config``: what a start would check without binding or opening anything
    (the TLS files are loaded), then every setting and where it came from."""
    if config.tls_cert and any(spec.tls for spec in config.all_listeners):
        from chatd.net.tls import ServerTLS, TLSConfigError

        try:
            ServerTLS(config.tls_cert, config.tls_key)
        except TLSConfigError as exc:
            raise config_file.ConfigError(f"TLS: {exc}") from None
    if config.data_dir is not None and os.path.exists(config.data_dir):
        if not os.path.isdir(config.data_dir):
            raise config_file.ConfigError(f"--data-dir: {config.data_dir} is not a directory")
    lines = [f"# chatd {__version__}: the settings are usable"]
    for param in ctx.command.params:
        if not isinstance(param, SourcedOption) or not param.in_file or param.name is None:
            continue
        key = config_file.long_name(param)
        value = params.get(param.name)
        where = param.source(ctx)
        if param.name == "data_dir" and value is None and config.data_dir is not None:
            value, where = config.data_dir, "default"  # $STATE_DIRECTORY or XDG's
        if value is None or value == ():
            lines.append(f"# {key}: not set ({where})")
            continue
        if param.name in reloading.SECRET:
            shown = "(hidden)"
        elif param.name == "redis":
            from chatd.cluster.resp import redact_url

            shown = config_file.toml_value(redact_url(str(value)))
        else:
            shown = config_file.toml_value(value)
        lines.append(f"{key} = {shown}  # {where}")
    click.echo("\n".join(lines))


def _serve_worker(
    config: Config, ready: Callable[[], None], *, reload_source: Callable[[], Config]
) -> None:
    """One worker of ``--workers``: its own service and node, on the shared ports."""
    from chatd.engines.reactor import serve
    from chatd.service import ChatService

    service = ChatService(config)
    bound_ports = [spec.port for spec in config.all_listeners]

    def worker_source() -> Config:
        # The supervisor chose the ports the file or command line leave at 0: a reload
        # reads 0 again, which is the same listener, not a change to report.
        from chatd.workers import with_ports

        new = reload_source()
        wanted = [spec.port for spec in new.all_listeners]
        if len(wanted) != len(bound_ports):
            return new  # listeners added or removed: reported as needing a restart
        return with_ports(
            new, [b if w == 0 else w for w, b in zip(wanted, bound_ports, strict=True)]
        )

    service.reload_source = worker_source
    bound = service.bind_listeners(reuse_port=True)
    ready()
    serve(service, bound)


def default_data_dir() -> str:
    """``$STATE_DIRECTORY`` (what systemd's ``StateDirectory=`` made for the unit), else
    ``$XDG_STATE_HOME/chatd``, else ``~/.local/state/chatd`` (the XDG base directory
    specification's place for state that outlives a run)."""
    systemd = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if os.path.isabs(systemd):
        return systemd
    base = os.environ.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):  # the specification: a relative path is to be ignored
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "chatd")


def _data_dir(data_dir: str | None, ephemeral: bool) -> str | None:
    if ephemeral:
        if data_dir is not None:
            raise click.UsageError("give --data-dir or --ephemeral, not both")
        return None
    if data_dir is not None and not data_dir.strip():
        raise click.BadParameter("an empty path", param_hint="'--data-dir'")
    return data_dir if data_dir is not None else default_data_dir()


def _check_redis(
    url: str | None,
    password_file: str | None,
    prefix: str,
    engine: str,
    data_dir: str | None,
    resolve_host: bool = True,
) -> str | None:
    """Validate the cluster options; return the password from the file, if one is given."""
    if url is None:
        if password_file is not None:
            raise click.UsageError("--redis-password-file needs --redis")
        return None
    from chatd.cluster.resp import RedisURLError, parse_url

    if engine != "reactor":
        raise click.UsageError(
            "--redis needs --engine reactor (the threaded and asyncio baselines are one "
            "process each)"
        )
    if data_dir is not None:
        raise click.UsageError(
            "--redis: a cluster keeps its rooms' history in Redis; drop --data-dir"
        )
    try:
        host, port, _, _, url_password, _ = parse_url(url)
    except RedisURLError as exc:
        raise click.BadParameter(str(exc), param_hint="--redis") from None
    if not prefix or any(c in prefix for c in " {}"):
        raise click.BadParameter("a prefix is one word without braces", param_hint="--redis-prefix")
    password = None
    if password_file is not None:
        if url_password is not None:
            raise click.UsageError("give the Redis password in the URL or in a file, not both")
        password = _first_line(password_file, "--redis-password-file")
    if not resolve_host:
        return password
    from chatd.engines.reactor.cluster_link import resolve

    try:
        resolve(host, port)
    except OSError as exc:
        raise click.BadParameter(f"cannot resolve {host}: {exc}", param_hint="--redis") from None
    return password


def _check_redis_tls(url: str | None, ca: str | None, cert: str | None) -> None:
    """The rediss:// options go with a rediss:// URL, and their files load."""
    if ca is None and cert is None:
        return
    if url is None or not url.startswith("rediss://"):
        raise click.UsageError("--redis-ca and --redis-cert need a rediss:// URL")
    from chatd.cluster.resp import client_tls

    try:
        client_tls(ca, cert)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise click.BadParameter(str(exc), param_hint="--redis-ca/--redis-cert") from None


def _oper_entry(entry: str, option: str, where: str) -> tuple[str, str]:
    """``NAME:PASSWORD`` → ``(name, password)``; the password itself is never echoed."""
    name, sep, secret = entry.partition(":")
    if not sep or not name or not secret or " " in entry:
        shown = f"{name or '(no name)'}:..." if sep else "a line without ':'"
        raise click.BadParameter(f"{where}{shown} is not NAME:PASSWORD", param_hint=option)
    return name, secret


def _oper_file(path: str) -> dict[str, str]:
    """Operators from ``--oper-file``: ``NAME:PASSWORD`` lines, blank lines and ``#``
    comments skipped. Kept out of the command line so ``ps`` cannot show them."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--oper-file") from None
    operators: dict[str, str] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, secret = _oper_entry(line, "--oper-file", f"line {number}: ")
        operators[name] = secret
    if not operators:
        raise click.BadParameter("the file names no operator", param_hint="--oper-file")
    return operators


def _one_word(text: str) -> bool:
    """Not empty, no space or control character (a password, a server name: a newline
    in one would end an IRC line)."""
    return bool(text) and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text)


def _first_line(path: str, option: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


def _check_tls(
    cert: str | None,
    key: str | None,
    port: int | None,
    irc_port: int | None,
    https_port: int | None = None,
) -> None:
    """TLS options that only make sense together (the files are checked at bind)."""
    if port is None and irc_port is None and https_port is None:
        if cert or key:
            raise click.UsageError(
                "--tls-cert/--tls-key need --tls-port, --irc-tls-port or --https-port"
            )
        return
    if not cert:
        hint = (
            "--tls-port"
            if port is not None
            else "--irc-tls-port"
            if irc_port is not None
            else "--https-port"
        )
        raise click.UsageError(f"{hint} needs --tls-cert (and --tls-key unless it holds the key)")
    if irc_port is not None:
        from chatd.dialects import DIALECTS

        if "irc" not in DIALECTS:
            raise click.UsageError("--irc-tls-port: this build has no IRC dialect yet")
