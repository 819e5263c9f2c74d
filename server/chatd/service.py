"""The composition root: one server's hub, router, counters, admission and dialects.

Engines build one :class:`ChatService`, bind its listeners, and for each accepted socket
call :meth:`ChatService.accept` with the listener's dialect: they get a session to drive
through :class:`~chatd.net.transport.SessionProtocol`, or the bytes of a refusal to send
before closing. That is all an engine knows of chat. A TLS listener also carries the
service's one :class:`~chatd.net.tls.ServerTLS`; sessions never see it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from chatd.config import Config
from chatd.core import events as ev
from chatd.core.hub import Hub
from chatd.core.router import Router
from chatd.core.targets import ToEveryone
from chatd.dialects import DIALECTS
from chatd.dialects.base import Dialect, Session
from chatd.net.admission import Admission, Refused
from chatd.net.listeners import Listener, bind
from chatd.net.tls import ServerTLS, TLSConfigError

log = logging.getLogger("chatd")


class ChatService:
    """Everything the connections of one server share."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall time for the hub (topics, WHOWAS, server-time); tests pass a fake."""
        self.config = config
        #: Event counters shown by /stats and logged at shutdown.
        self.stats: Counter[str] = Counter()
        self.router = Router(self.stats)
        reserved: set[str] = set()
        policies = []
        for dialect in DIALECTS.values():
            reserved |= dialect.reserved_nicks
            if dialect.action_forgeable is not None:
                policies.append(dialect.action_forgeable)

        def forgeable(nick: str, text: str) -> bool:
            return any(policy(nick, text) for policy in policies)

        self.hub = Hub(
            self.router.deliver,
            config.room,
            reserved_nicks=reserved,
            action_forgeable=forgeable,
            private_rate=config.private_rate,
            private_burst=config.private_burst,
            max_rooms_per_member=config.max_rooms,
            clock=clock,
        )
        self.router.attach(self.hub)
        self.admission = Admission(
            config.max_clients,
            config.max_per_address,
            config.connect_rate,
            config.connect_burst,
            config.exempt_loopback,
        )
        #: The TLS context of the TLS listeners (loaded by bind_listeners), else None.
        self.tls: ServerTLS | None = None

    def bind_listeners(self) -> list[Listener]:
        """Bind every listener of the configuration (raises OSError for a busy port).

        The TLS certificate is loaded first, so a bad one fails before any port is
        taken (raises :class:`~chatd.net.tls.TLSConfigError`).
        """
        specs = self.config.all_listeners
        if self.tls is None and any(spec.tls for spec in specs):
            if not self.config.tls_cert:
                raise TLSConfigError("a TLS listener needs a certificate (--tls-cert)")
            self.tls = ServerTLS(self.config.tls_cert, self.config.tls_key)
        listeners: list[Listener] = []
        for spec in specs:
            try:
                sock = bind(spec.host, spec.port)
            except OSError as exc:
                for listener in listeners:
                    listener.sock.close()
                raise OSError(
                    exc.errno, f"cannot listen on {spec.host}:{spec.port}: {exc.strerror or exc}"
                ) from None
            tls = self.tls if spec.tls else None
            listeners.append(Listener(spec, sock, DIALECTS[spec.dialect], tls))
        return listeners

    def accept(self, dialect: Dialect, host: str, now: float) -> Session | bytes:
        """A new connection from ``host`` on a listener of ``dialect``.

        Returns the session to drive, or the refusal to send before closing (the server
        is full, or the address is over its limits); the refusal is counted.
        """
        verdict = self.admission.admit(host, now)
        if isinstance(verdict, Refused):
            self.stats["disconnect_" + verdict.reason] += 1
            return dialect.refusal(verdict.text)
        self.stats["connections"] += 1
        return dialect.session(self, host, now, verdict)

    def shutdown(self) -> None:
        """Tell every connected client that the server is going away."""
        self.router.deliver(ev.ServerShutdown(), ToEveryone())

    def snapshot(self) -> dict[str, int]:
        """Counters plus current gauges, for /stats and the shutdown log."""
        out = dict(self.stats)
        out["clients"] = len(self.hub.members)
        out["registered"] = len(self.hub.nicks)
        out["rooms"] = len(self.hub.rooms)
        return out

    def log_stats(self) -> None:
        """Log every counter on one line (at shutdown)."""
        log.info("stats: %s", " ".join(f"{k}={v}" for k, v in sorted(self.snapshot().items())))
