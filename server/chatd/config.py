"""Server settings shared by every engine (the command line fills one in)."""

from __future__ import annotations

from dataclasses import dataclass, field

ENGINES = ("reactor", "threaded", "asyncio")


@dataclass(frozen=True, slots=True)
class ListenerSpec:
    """One listening socket: where, and which dialect its connections speak."""

    host: str
    port: int
    dialect: str = "line"
    tls: bool = False


@dataclass(frozen=True)
class Config:
    """Every limit the server enforces; the defaults are PROTOCOL.md's and README's."""

    host: str = "127.0.0.1"
    port: int = 4040
    engine: str = "reactor"
    #: Extra listeners (the IRC port); the line listener on host:port comes first.
    listeners: tuple[ListenerSpec, ...] = ()
    #: Room a newly registered line client starts in.
    room: str = "#lobby"
    #: Longest accepted line in bytes, not counting the terminator.
    max_line: int = 4096
    #: Hard output limit per connection: output the kernel refused past it drops the client.
    max_sendq: int = 1 << 20
    #: Connections held at once; one more gets "! server full".
    max_clients: int = 10000
    #: Connections held at once from one address (0: no limit).
    max_per_address: int = 10
    #: New connections per second from one address, and how many at once (0: no limit).
    connect_rate: float = 2.0
    connect_burst: int = 10
    #: Loopback addresses are exempt from the per-address limits.
    exempt_loopback: bool = True
    #: Soft output limit: a client above it for ``sendq_soft_seconds`` is dropped.
    #: 0 disables it.
    sendq_soft: int = 256 * 1024
    sendq_soft_seconds: float = 10.0
    #: Lines per second a client may send on average (token bucket); 0 disables.
    flood_rate: float = 10.0
    #: Lines a client may send at once before the rate applies.
    flood_burst: int = 40
    #: Bytes per second one member may be sent in private messages by all others
    #: together, and at once; 0 disables.
    private_rate: int = 64 * 1024
    private_burst: int = 256 * 1024
    #: Seconds a connection may stay without a nickname.
    register_timeout: float = 30.0
    #: Seconds a registered client may stay silent; 0 disables.
    idle_timeout: float = 0.0
    #: IRC: seconds of silence before the server sends PING; as long again for the PONG.
    ping_interval: float = 120.0
    #: threaded engine: seconds one blocking send may take before the client is dropped.
    send_timeout: float = 5.0
    #: asyncio engine: use uvloop's event loop.
    uvloop: bool = False
    #: Name shown in the greeting and as the IRC server name.
    server_name: str = "chatd"
    #: Connection password (None: none needed).
    password: str | None = None
    #: IRC server operators: name → password.
    opers: dict[str, str] = field(default_factory=dict)
    #: Lines of the message of the day (IRC MOTD).
    motd: tuple[str, ...] = ()
    #: Rooms one member may be in at once (IRC CHANLIMIT); 0: no limit.
    max_rooms: int = 50
    #: Rooms the members from one address may be in together; 0: no limit (loopback is
    #: exempt when ``exempt_loopback``).
    max_rooms_per_address: int = 500
    #: TLS: PEM certificate chain and private key (None: the key is in ``tls_cert``).
    tls_cert: str | None = None
    tls_key: str | None = None
    #: TLS listeners on ``host`` for the line and IRC dialects (None: none).
    tls_port: int | None = None
    irc_tls_port: int | None = None
    #: The HTTP listener (the page, WebSocket, /health, /metrics), and over TLS.
    http_port: int | None = None
    https_port: int | None = None
    #: Web origins whose pages may open a WebSocket chat (``*``: any); empty: only the
    #: page's own origin (the request's Host).
    allowed_origins: tuple[str, ...] = ()
    #: Seconds a TLS handshake may take; meanwhile it holds a --max-clients slot.
    tls_handshake_timeout: float = 10.0
    #: This node's id in message and member ids (None: random per process).
    node_id: str | None = None
    #: Where history and room state are kept (SQLite); None: memory only (--ephemeral).
    data_dir: str | None = None
    #: Lines kept per room, and days a line is kept (0: no age limit).
    history_max_per_room: int = 10000
    history_days: float = 30.0
    #: Seconds a batch of history writes gathers: what SIGKILL can lose at most.
    history_window: float = 0.1
    #: A cluster's Redis (``redis://host:port/db``): this process is one of its nodes.
    redis: str | None = None
    #: The Redis password (from ``--redis-password-file`` or the URL).
    redis_password: str | None = field(default=None, repr=False)
    #: Seconds a nickname lease and a node's alive key last unrenewed: how long a dead
    #: node's members stay listed on the others.
    redis_lease: float = 15.0
    #: Prefix of every Redis key and channel (several clusters can share one Redis).
    redis_prefix: str = "chatd"
    #: ``rediss://``: CA certificates to check Redis' certificate with (None: the
    #: system's), and a client certificate with its key (PEM) if Redis asks for one.
    redis_ca: str | None = None
    redis_cert: str | None = None
    #: Reactor processes on the same ports (``--workers``, with ``redis``).
    workers: int = 1
    #: Logging: the least level written, and ``text`` or ``json`` (see chatd.logs).
    log_level: str = "info"
    log_format: str = "text"

    @property
    def soft_limit(self) -> int:
        """The soft output limit in force: 0 when off or not below the hard limit."""
        return self.sendq_soft if 0 < self.sendq_soft < self.max_sendq else 0

    @property
    def all_listeners(self) -> tuple[ListenerSpec, ...]:
        """The line listener first (PROTOCOL.md's "listening on" line), then the others,
        then the TLS ones."""
        http: tuple[ListenerSpec, ...] = ()
        if self.http_port is not None:
            http = (ListenerSpec(self.host, self.http_port, "http"),)
        tls = tuple(
            ListenerSpec(self.host, port, dialect, tls=True)
            for port, dialect in (
                (self.tls_port, "line"),
                (self.irc_tls_port, "irc"),
                (self.https_port, "http"),
            )
            if port is not None
        )
        return (ListenerSpec(self.host, self.port, "line"), *self.listeners, *http, *tls)


class ReloadError(Exception):
    """The settings could not be read again (SIGHUP): the message says why; the
    settings in force stay."""


def origin_problem(origin: str) -> str | None:
    """Why ``origin`` is not a web origin (``scheme://host[:port]``), or None."""
    if origin == "*":
        return None
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest:
        return f"{origin!r}: an origin is http(s)://HOST[:PORT], or '*'"
    if "/" in rest.rstrip("/") or "?" in rest or "#" in rest:
        return f"{origin!r}: an origin has no path"
    return None
