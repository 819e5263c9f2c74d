"""The load test's ``--chat-*`` options: their parser entries and the validated ``Settings``.

Sans-IO (no Locust import), so the tests can check the parsing directly. Two details exist
for the web UI, which shows an option's help text verbatim and converts a submitted value
with the type of the value the option had at start-up:

* help texts state their defaults literally (``%(default)s`` would appear as is), and use no
  ``%`` (argparse would try to format it);
* time options are strings until ``Settings.from_options`` parses them, so ``30s``,
  ``250ms`` or ``1m30s`` work in the UI's form as well as on the command line (a float-typed
  option would reject ``30s`` there).
"""

from __future__ import annotations

import argparse
import functools
import ssl
from dataclasses import asdict, dataclass, fields
from typing import Any

import chatload
from chatload.irc import IrcDialect
from chatload.line import LineDialect

# isort: split
import chat_core as core

#: ``--chat-dialect`` values and their sans-IO dialects.
DIALECTS: dict[str, type[chatload.Dialect]] = {"line": LineDialect, "irc": IrcDialect}

#: ``--chat-transport`` values: plain TCP (or TLS) to a dialect's own port, or WebSocket
#: to an HTTP listener (chatd's ``--http-port``; ``chatload.ws``).
TRANSPORTS = ("tcp", "ws")

#: Fields given as durations (``30``, ``30s``, ``250ms``, ``2m``, ``1m30s``).
DURATIONS = frozenset({"handshake_timeout", "drain_timeout", "warmup", "measure_time"})


@dataclass(frozen=True)
class Settings:
    """The load test's options, read from ``environment.parsed_options`` at test start.

    Read at test start, not import, because the web UI can change them per run and workers
    receive the master's values with the spawn message.
    """

    room_size: int = 100
    rate: float = 1.0
    send_share: float = 0.1
    payload: int = 64
    timing_sample: float = 0.1
    #: Written only when asked: a load test never drops files into the current directory.
    hist_file: str = ""
    arrivals: str = core.Arrivals.PERIODIC.value
    churn_messages: int = 5
    handshake_timeout: float = 30.0
    drain_timeout: float = 2.0
    start_when_full: bool = True
    warmup: float = 1.0
    measure_time: float = 0.0
    dialect: str = "line"
    transport: str = "tcp"
    label: str = ""
    max_p99_ms: float = 0.0
    tls: bool = False
    tls_ca: str = ""
    tls_insecure: bool = False

    @classmethod
    def from_options(cls, options: Any) -> Settings:
        """Pick our options out of Locust's namespace (defaults for missing ones), validated.

        Raises ``ValueError`` naming the option for a value that makes no sense.
        """
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(options, f"chat_{f.name}", None)
            if value is None:
                value = f.default
            flag = "--chat-" + f.name.replace("_", "-")
            try:
                if f.name in DURATIONS:
                    value = core.parse_duration(value)
                elif f.type in ("int", "float"):
                    value = {"int": int, "float": float}[f.type](value)
                elif f.type == "bool" and isinstance(value, str):
                    value = value.strip().lower() in ("1", "true", "yes", "on")
            except ValueError as exc:
                raise ValueError(f"{flag}: {exc}") from None
            values[f.name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def dialect_class(self) -> type[chatload.Dialect]:
        return DIALECTS[self.dialect]

    @property
    def default_port(self) -> int:
        """The port a ``--host`` entry without one means: the dialect's over TCP (4040,
        6667), HTTP's over WebSocket (80, or 443 with ``--chat-tls``)."""
        if self.transport == "ws":
            return 443 if self.tls else 80
        return self.dialect_class.default_port

    def tls_context(self) -> ssl.SSLContext | None:
        """The one client context of this process for ``--chat-tls`` (None without it)."""
        if not self.tls:
            return None
        return client_context(self.tls_ca, self.tls_insecure)

    def validate(self) -> None:
        """Reject options that would make the run meaningless, before any user starts."""
        if self.dialect not in DIALECTS:
            raise ValueError(f"--chat-dialect must be one of {', '.join(DIALECTS)}")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"--chat-transport must be one of {', '.join(TRANSPORTS)}")
        if self.room_size < 1:
            raise ValueError("--chat-room-size must be at least 1")
        if self.rate <= 0:
            raise ValueError("--chat-rate must be positive")
        for name in ("send_share", "timing_sample"):
            try:
                core.to_fraction(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"--chat-{name.replace('_', '-')}: {exc}") from None
        core.Arrivals(self.arrivals)
        if self.handshake_timeout <= 0:
            raise ValueError("--chat-handshake-timeout must be positive")
        if self.max_p99_ms < 0:
            raise ValueError("--chat-max-p99-ms must not be negative")
        if (self.tls_ca or self.tls_insecure) and not self.tls:
            raise ValueError("--chat-tls-ca and --chat-tls-insecure need --chat-tls")
        if self.tls_ca and self.tls_insecure:
            raise ValueError("--chat-tls-ca and --chat-tls-insecure exclude each other")
        if self.tls:
            try:
                self.tls_context()
            except (OSError, ssl.SSLError) as exc:
                raise ValueError(f"--chat-tls-ca {self.tls_ca}: {exc}") from None
        limit = self.dialect_class.max_payload
        if self.payload > limit:
            raise ValueError(
                f"--chat-payload {self.payload} is more than the {self.dialect} dialect "
                f"carries in one line ({limit} bytes)"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=4)
def client_context(ca: str, insecure: bool) -> ssl.SSLContext:
    """A TLS client context: the system's CAs (or ``ca``), or no verification at all."""
    context = ssl.create_default_context(cafile=ca or None)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def add_options(parser: Any) -> None:
    """Register the ``--chat-*`` options; each has a ``LOCUST_CHAT_*`` environment variable.

    ``parser`` is Locust's (a ``configargparse`` parser, which knows ``env_var``).
    """
    d = Settings()

    def add(flag: str, help_text: str, **kw: Any) -> None:
        env = "LOCUST_" + flag.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag, env_var=env, help=help_text, **kw)

    add(
        "--chat-dialect",
        f"Wire dialect: 'line' (chatd's line protocol) or 'irc' (RFC 1459/2812: chatd's "
        f"IRC listener, ngircd, InspIRCd...). Default {d.dialect}",
        type=str,
        default=d.dialect,
        choices=list(DIALECTS),
    )
    add(
        "--chat-transport",
        f"How users reach the server: 'tcp' (the dialect's own port, TLS with --chat-tls) "
        f"or 'ws' (WebSocket to an HTTP listener such as chatd's --http-port; --host is "
        f"HOST:PORT, ws://HOST:PORT or wss://HOST:PORT with --chat-tls, optionally with a "
        f"path; the default path is /line for the line dialect and / for IRC). "
        f"Default {d.transport}",
        type=str,
        default=d.transport,
        choices=list(TRANSPORTS),
    )
    add(
        "--chat-label",
        "Name of the target (its engine or server) recorded in the report and printed "
        "with the verdict, e.g. reactor or ngircd. Default: none",
        type=str,
        default=d.label,
    )
    add(
        "--chat-room-size",
        f"Users per room; 1000 users with 100 make ten rooms of 100. Default {d.room_size}",
        type=int,
        default=d.room_size,
    )
    add(
        "--chat-rate",
        f"Messages per second per sending user. Default {d.rate:g}",
        type=float,
        default=d.rate,
    )
    add(
        "--chat-send-share",
        f"Share of ChatUsers that send, 0 to 1; the rest only read. Default {d.send_share:g}",
        type=float,
        default=d.send_share,
    )
    add(
        "--chat-payload",
        f"Bytes of chat text per message, header included (at most 400 over IRC). "
        f"Default {d.payload}",
        type=int,
        default=d.payload,
    )
    add(
        "--chat-timing-sample",
        f"Share of receivers that parse and time messages, 0 to 1; the rest only count "
        f"lines. Default {d.timing_sample:g}",
        type=float,
        default=d.timing_sample,
    )
    add(
        "--chat-hist-file",
        "Where to write the latency report (JSON) at test stop, e.g. out/latency.json "
        "(its folder is made). Default: not written; the verdict is printed either way.",
        type=str,
        default=d.hist_file,
    )
    add(
        "--chat-arrivals",
        f"Send times: 'periodic' (random phase, fixed interval) or 'poisson'. Default {d.arrivals}",
        type=str,
        default=d.arrivals,
        choices=[a.value for a in core.Arrivals],
    )
    add(
        "--chat-churn-messages",
        f"Messages a ChurnUser sends per session before it quits. Default {d.churn_messages}",
        type=int,
        default=d.churn_messages,
    )
    add(
        "--chat-handshake-timeout",
        "Time to connect, register and join before it counts as a failure, e.g. 30s or "
        "1m. Default 30s",
        type=str,
        default="30s",
    )
    add(
        "--chat-drain-timeout",
        "At test stop, stop sending and wait up to this long for messages in flight before "
        "counting the undelivered ones; 0 skips the drain. Default 2s",
        type=str,
        default="2s",
    )
    add(
        "--chat-start-when-full",
        "Start sending and measuring only once all users are spawned and have joined their "
        "rooms (then wait --chat-warmup); --no-chat-start-when-full measures from test start, "
        "join storm included. Default on",
        action=argparse.BooleanOptionalAction,
        default=d.start_when_full,
    )
    add(
        "--chat-warmup",
        "Time between the rooms being full (or test start with --no-chat-start-when-full) "
        "and measuring, e.g. 1s or 500ms. Default 1s",
        type=str,
        default="1s",
    )
    add(
        "--chat-measure-time",
        "Stop the test this long after measuring started (e.g. 30s or 2m), so every run "
        "measures the same window however long the rooms took to fill; --run-time stays an "
        "upper bound. 0: run until --run-time or a manual stop. Default 0",
        type=str,
        default="0",
    )
    add(
        "--chat-max-p99-ms",
        "Fail the run (non-zero exit code) when the broadcast p99 exceeds this many "
        "milliseconds: a CI gate. 0: no limit. Default 0",
        type=float,
        default=d.max_p99_ms,
    )
    add(
        "--chat-tls",
        "Connect over TLS (chatd's --tls-port or --irc-tls-port, an IRC server's 6697); "
        "the certificate is verified against the system's CAs unless --chat-tls-ca or "
        "--chat-tls-insecure says otherwise. Default off",
        action=argparse.BooleanOptionalAction,
        default=d.tls,
    )
    add(
        "--chat-tls-ca",
        "PEM file of the CA that signed the server's certificate (with --chat-tls). "
        "Default: the system's CAs",
        type=str,
        default=d.tls_ca,
    )
    add(
        "--chat-tls-insecure",
        "With --chat-tls: do not verify the server's certificate (self-signed test "
        "servers only). Default off",
        action=argparse.BooleanOptionalAction,
        default=d.tls_insecure,
    )
