"""The ``chatd`` command line (click): parse options, bind, run the chosen engine."""

from __future__ import annotations

import logging
import socket
import sys

import click

from chatd import __version__
from chatd.config import ENGINES, Config
from chatd.hub import normalize_room

LOG_LEVELS = ("debug", "info", "warning", "error")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by the address given)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address, family=family, backlog=1024)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=4040,
    show_default=True,
    help="TCP port; 0 picks a free one.",
)
@click.option("--engine", type=click.Choice(ENGINES), default="reactor", show_default=True)
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
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
@click.version_option(__version__, prog_name="chatd")
def main(
    host: str,
    port: int,
    engine: str,
    room: str,
    max_line: int,
    max_sendq: int,
    max_clients: int,
    sendq_soft: int,
    sendq_soft_seconds: float,
    flood_rate: float,
    flood_burst: int,
    register_timeout: float,
    idle_timeout: float,
    send_timeout: float,
    uvloop: bool,
    log_level: str,
) -> None:
    """Run the chat daemon in the foreground until SIGINT or SIGTERM."""
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    default_room = normalize_room(room)
    if default_room is None:
        raise click.BadParameter(f"invalid room name {room!r}", param_hint="--room")
    if uvloop:
        if engine != "asyncio":
            raise click.BadParameter("--uvloop needs --engine asyncio", param_hint="--uvloop")
        try:
            import uvloop as _uvloop  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--uvloop: uvloop is not installed (pip install uvloop)"
            ) from None
    config = Config(
        host=host,
        port=port,
        engine=engine,
        room=default_room,
        max_line=max_line,
        max_sendq=max_sendq,
        max_clients=max_clients,
        sendq_soft=sendq_soft,
        sendq_soft_seconds=sendq_soft_seconds,
        flood_rate=flood_rate,
        flood_burst=flood_burst,
        register_timeout=register_timeout,
        idle_timeout=idle_timeout,
        send_timeout=send_timeout,
        uvloop=uvloop,
    )
    try:
        listener = bind(host, port)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    real_host, real_port = listener.getsockname()[:2]
    shown = f"[{real_host}]" if ":" in real_host else real_host
    print(f"chatd {engine}: listening on {shown}:{real_port}", flush=True)
    if engine == "reactor":
        from chatd.reactor import serve
    elif engine == "threaded":
        from chatd.threaded import serve
    else:
        from chatd.aio import serve
    serve(config, listener)
