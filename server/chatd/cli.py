"""The ``chatd`` command line (click): parse options, bind, run the chosen engine."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import click

from chatd import __version__
from chatd.config import ENGINES, Config, ListenerSpec, origin_problem
from chatd.core.ids import node_problem
from chatd.core.names import normalize_room, room_problem

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4040,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.option(
    "--irc-port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Also listen for IRC clients on this port (0 picks a free one; off if not given).",
)
@click.option("--engine", type=click.Choice(ENGINES), default="reactor", show_default=True)
@click.option(
    "--server-name",
    default="chatd",
    show_default=True,
    help="The server's name (greeting, IRC server name).",
)
@click.option(
    "--password",
    default=None,
    help="Connection password: IRC clients send PASS, line clients /pass before their nick.",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Read the connection password from the first line of this file.",
)
@click.option(
    "--motd",
    "motd_file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="IRC message of the day, from a UTF-8 text file.",
)
@click.option(
    "--oper",
    "opers",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="An IRC server operator (OPER NAME PASSWORD); may be given several times. "
    "Shows in ps: prefer --oper-file.",
)
@click.option(
    "--oper-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="IRC server operators from a file: one NAME:PASSWORD per line ('#' starts a comment).",
)
@click.option(
    "--ping-interval",
    type=click.FloatRange(0),
    default=120.0,
    show_default=True,
    help="IRC: seconds of silence before the server PINGs a client, and waits as long again.",
)
@click.option(
    "--data-dir",
    type=click.Path(),
    default=None,
    help="Where history and room state are kept (SQLite) [default: "
    "$XDG_STATE_HOME/chatd, else ~/.local/state/chatd].",
)
@click.option(
    "--ephemeral",
    is_flag=True,
    default=False,
    help="Keep history in memory only (a ring per room) and nothing on disk.",
)
@click.option(
    "--history-max-per-room",
    type=click.IntRange(1),
    default=10000,
    show_default=True,
    help="Lines of history kept per room (older ones are deleted).",
)
@click.option(
    "--history-days",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Days a line of history is kept (0: no age limit).",
)
@click.option("--room", default="#lobby", show_default=True, help="Room a new client starts in.")
@click.option(
    "--max-line",
    type=click.IntRange(16, 1 << 20),
    default=4096,
    show_default=True,
    help="Longest accepted line in bytes, terminator excluded.",
)
@click.option(
    "--max-sendq",
    type=click.IntRange(1024),
    default=1 << 20,
    show_default=True,
    help="Output buffer per connection; past it the client is dropped.",
)
@click.option(
    "--max-clients",
    type=click.IntRange(1),
    default=10000,
    show_default=True,
    help="Connections accepted at once.",
)
@click.option(
    "--max-per-address",
    type=click.IntRange(0),
    default=10,
    show_default=True,
    help="Connections held at once from one IP address (0: no limit).",
)
@click.option(
    "--connect-rate",
    type=click.FloatRange(0),
    default=2.0,
    show_default=True,
    help="New connections per second from one address; more wait to be read (0: no limit).",
)
@click.option(
    "--connect-burst",
    type=click.IntRange(1),
    default=10,
    show_default=True,
    help="New connections one address may open at once before --connect-rate applies.",
)
@click.option(
    "--exempt-loopback/--no-exempt-loopback",
    default=True,
    show_default=True,
    help="Exempt 127.0.0.0/8 and ::1 from the per-address limits.",
)
@click.option(
    "--private-rate",
    type=click.IntRange(0),
    default=64 * 1024,
    show_default=True,
    help="Bytes per second one member may be sent privately by all others (0: no limit).",
)
@click.option(
    "--private-burst",
    type=click.IntRange(1),
    default=256 * 1024,
    show_default=True,
    help="Bytes of private messages one member may be sent at once.",
)
@click.option(
    "--max-rooms",
    type=click.IntRange(0),
    default=50,
    show_default=True,
    help="Rooms one member may be in at once (IRC CHANLIMIT; 0: no limit).",
)
@click.option(
    "--max-rooms-per-address",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="Rooms the members from one IP address may be in, together (0: no limit; "
    "loopback is exempt with --exempt-loopback).",
)
@click.option(
    "--sendq-soft",
    type=click.IntRange(0),
    default=256 * 1024,
    show_default=True,
    help="Soft output limit in bytes (0: off).",
)
@click.option(
    "--sendq-soft-seconds",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds above --sendq-soft before the client is dropped.",
)
@click.option(
    "--flood-rate",
    type=click.FloatRange(0),
    default=10.0,
    show_default=True,
    help="Lines per second per client (0: no flood control).",
)
@click.option(
    "--flood-burst",
    type=click.IntRange(1),
    default=40,
    show_default=True,
    help="Lines a client may send at once before --flood-rate applies.",
)
@click.option(
    "--register-timeout",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="Seconds to choose a nickname (0: forever).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(0),
    default=0.0,
    show_default=True,
    help="Seconds a registered client may stay silent (0: forever).",
)
@click.option(
    "--send-timeout",
    type=click.FloatRange(0.01),
    default=5.0,
    show_default=True,
    help="threaded engine: longest blocking send before the client is dropped.",
)
@click.option("--uvloop", is_flag=True, help="asyncio engine: run on uvloop.")
@click.option("--tls-cert", metavar="FILE", help="PEM certificate chain for TLS (SIGHUP reloads).")
@click.option("--tls-key", metavar="FILE", help="PEM private key (default: in --tls-cert).")
@click.option("--tls-port", type=click.IntRange(0, 65535), help="TLS listener, line dialect.")
@click.option("--irc-tls-port", type=click.IntRange(0, 65535), help="TLS listener, IRC dialect.")
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    help="HTTP listener: the chat page at /, WebSocket chat (IRC at / and /irc, the line "
    "dialect at /line), /health and /metrics.",
)
@click.option(
    "--https-port",
    type=click.IntRange(0, 65535),
    help="The same over TLS (wss://), with --tls-cert.",
)
@click.option(
    "--allowed-origin",
    "allowed_origins",
    multiple=True,
    metavar="ORIGIN",
    help="A web origin (https://chat.example.org) whose pages may open WebSocket chats; "
    "repeatable; '*' for any. Default: only the page's own. Others get 403.",
)
@click.option(
    "--tls-handshake-timeout",
    type=click.FloatRange(0.1),
    default=10.0,
    show_default=True,
    help="Seconds a TLS handshake may take (it holds a --max-clients slot).",
)
@click.option(
    "--redis",
    metavar="URL",
    help="Be one node of the cluster behind this Redis: redis://HOST:PORT[/DB] (reactor).",
)
@click.option(
    "--redis-password-file",
    metavar="FILE",
    help="The Redis password, the file's first line (rather than in the URL).",
)
@click.option(
    "--redis-lease",
    type=click.FloatRange(1.0, 3600.0),
    default=15.0,
    show_default=True,
    help="Seconds a nick lease and a node's heartbeat last: a dead node's members quit "
    "on the others after about this long.",
)
@click.option(
    "--redis-prefix",
    default="chatd",
    show_default=True,
    help="Prefix of the cluster's Redis keys and channels.",
)
@click.option(
    "--redis-ca",
    metavar="FILE",
    help="rediss://: CA certificates (PEM) to check Redis' certificate (default: the system's).",
)
@click.option(
    "--redis-cert",
    metavar="FILE",
    help="rediss://: this node's client certificate and key (PEM), if Redis asks for one.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="With --redis: this many reactor processes on the same ports (SO_REUSEPORT), "
    "each a node of the cluster: every core works.",
)
@click.option(
    "--node-id",
    metavar="ID",
    help="This node's id in message and member ids (5 characters of 0-9 a-v; "
    "default: random per start).",
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.version_option(__version__, prog_name="chatd")
def main(
    host: str,
    port: int,
    irc_port: int | None,
    engine: str,
    server_name: str,
    password: str | None,
    password_file: str | None,
    motd_file: str | None,
    opers: tuple[str, ...],
    oper_file: str | None,
    data_dir: str | None,
    ephemeral: bool,
    history_max_per_room: int,
    history_days: float,
    ping_interval: float,
    room: str,
    max_line: int,
    max_sendq: int,
    max_clients: int,
    max_per_address: int,
    connect_rate: float,
    connect_burst: int,
    exempt_loopback: bool,
    private_rate: int,
    private_burst: int,
    max_rooms: int,
    max_rooms_per_address: int,
    sendq_soft: int,
    sendq_soft_seconds: float,
    flood_rate: float,
    flood_burst: int,
    register_timeout: float,
    idle_timeout: float,
    send_timeout: float,
    uvloop: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_port: int | None,
    irc_tls_port: int | None,
    http_port: int | None,
    https_port: int | None,
    allowed_origins: tuple[str, ...],
    tls_handshake_timeout: float,
    redis: str | None,
    redis_password_file: str | None,
    redis_lease: float,
    redis_prefix: str,
    redis_ca: str | None,
    redis_cert: str | None,
    workers: int,
    node_id: str | None,
    log_level: str,
) -> None:
    """Run the chat daemon in the foreground until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    default_room = normalize_room(room)
    problem = room_problem(default_room)
    if problem:
        raise click.BadParameter(f"invalid room name {room!r}: {problem}", param_hint="--room")
    if uvloop:
        if engine != "asyncio":
            raise click.BadParameter("--uvloop needs --engine asyncio", param_hint="--uvloop")
        try:
            import uvloop as _uvloop  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
    if password is not None and password_file is not None:
        raise click.UsageError("give --password or --password-file, not both")
    if password_file is not None:
        password = _first_line(password_file, "--password-file")
        if not password:
            raise click.BadParameter("the file is empty", param_hint="--password-file")
    if password is not None and (not password or " " in password):
        raise click.BadParameter("a password is one word", param_hint="--password")
    operators: dict[str, str] = {}
    for entry in opers:
        name, secret = _oper_entry(entry, "--oper", "")
        operators[name] = secret
    if oper_file is not None:
        operators.update(_oper_file(oper_file))
    motd: tuple[str, ...] = ()
    if motd_file is not None:
        try:
            with open(motd_file, encoding="utf-8") as f:
                motd = tuple(line.rstrip("\r\n") for line in f)
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(str(exc), param_hint="--motd") from None
    if " " in server_name or not server_name:
        raise click.BadParameter("a server name is one word", param_hint="--server-name")
    extra: tuple[ListenerSpec, ...] = ()
    if irc_port is not None:
        extra = (ListenerSpec(host, irc_port, "irc"),)
    _check_tls(tls_cert, tls_key, tls_port, irc_tls_port, https_port)
    for origin in allowed_origins:
        if problem := origin_problem(origin):
            raise click.BadParameter(problem, param_hint="--allowed-origin")
    redis_password = _check_redis(redis, redis_password_file, redis_prefix, engine, data_dir)
    _check_redis_tls(redis, redis_ca, redis_cert)
    if node_id is not None and (problem := node_problem(node_id)):
        raise click.BadParameter(problem, param_hint="--node-id")
    if workers > 1:
        if redis is None:
            raise click.UsageError("--workers needs --redis (the workers are one chat through it)")
        if node_id is not None:
            raise click.UsageError(
                "--workers: each worker is a node with its own id; drop --node-id"
            )
    config = Config(
        host=host,
        port=port,
        engine=engine,
        listeners=extra,
        server_name=server_name,
        password=password,
        opers=operators,
        motd=motd,
        ping_interval=ping_interval,
        room=default_room,
        max_line=max_line,
        max_sendq=max_sendq,
        max_clients=max_clients,
        max_per_address=max_per_address,
        connect_rate=connect_rate,
        connect_burst=connect_burst,
        exempt_loopback=exempt_loopback,
        private_rate=private_rate,
        private_burst=private_burst,
        max_rooms=max_rooms,
        max_rooms_per_address=max_rooms_per_address,
        sendq_soft=sendq_soft,
        sendq_soft_seconds=sendq_soft_seconds,
        flood_rate=flood_rate,
        flood_burst=flood_burst,
        register_timeout=register_timeout,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        uvloop=uvloop,
        tls_cert=tls_cert,
        tls_key=tls_key,
        tls_port=tls_port,
        irc_tls_port=irc_tls_port,
        http_port=http_port,
        https_port=https_port,
        allowed_origins=allowed_origins,
        tls_handshake_timeout=tls_handshake_timeout,
        data_dir=_data_dir(data_dir, ephemeral),
        history_max_per_room=history_max_per_room,
        history_days=history_days,
        redis=redis,
        redis_password=redis_password,
        redis_lease=redis_lease,
        redis_prefix=redis_prefix,
        redis_ca=redis_ca,
        redis_cert=redis_cert,
        node_id=node_id,
    )
    from chatd.history import HistoryError
    from chatd.memory import return_large_buffers_to_the_os
    from chatd.net.tls import TLSConfigError
    from chatd.service import ChatService

    return_large_buffers_to_the_os()
    if workers > 1:
        from chatd import workers as supervisor

        sys.exit(supervisor.run(config, workers, _serve_worker))

    from chatd.net import signals

    # Held from here until the engine's handlers are in: before any thread starts (the
    # history's threads inherit the mask, so a stop signal can only reach the main
    # thread), and across the announcement (a supervisor may stop us once it reads it).
    signals.hold()
    try:
        service = ChatService(config)
    except HistoryError as exc:
        click.echo(f"chatd: history: {exc}", err=True)
        sys.exit(2)
    try:
        bound = service.bind_listeners()
    except TLSConfigError as exc:
        raise click.ClickException(f"TLS: {exc}") from None
    except OSError as exc:
        raise click.ClickException(exc.strerror or str(exc)) from None
    for listener in bound:
        print(listener.announcement(engine), flush=True)
    if engine == "reactor":
        from chatd.engines.reactor import serve
    elif engine == "threaded":
        from chatd.engines.threaded import serve
    else:
        from chatd.engines.aio import serve
    serve(service, bound)


def _serve_worker(config: Config, ready: Callable[[], None]) -> None:
    """One worker of ``--workers``: its own service and node, on the shared ports."""
    from chatd.engines.reactor import serve
    from chatd.service import ChatService

    service = ChatService(config)
    bound = service.bind_listeners(reuse_port=True)
    ready()
    serve(service, bound)


def default_data_dir() -> str:
    """``$XDG_STATE_HOME/chatd``, else ``~/.local/state/chatd`` (the XDG base directory
    specification's place for state that outlives a run)."""
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
