"""The composition root: one server's hub, router, counters, admission and dialects.

Engines build one :class:`ChatService`, bind its listeners, and for each accepted socket
call :meth:`ChatService.accept` with the listener's dialect: they get a session to drive
through :class:`~chatd.net.transport.SessionProtocol`, or the bytes of a refusal to send
before closing. That is all an engine knows of chat. A TLS listener also carries the
service's one :class:`~chatd.net.tls.ServerTLS`; sessions never see it.

The service owns each connection's life cycle: it admits it (an address slot), gives its
session a narrow :class:`~chatd.dialects.base.Context` (never the service), registers it
with the router when it is made (:meth:`ChatService.opened`) and, when it ends
(:meth:`ChatService.ended`), tells the hub, forgets it in the router and releases the
slot. A dialect session never touches the admission or the router itself.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from chatd import web
from chatd.cluster.history import RedisHistory
from chatd.cluster.node import ClusterNode
from chatd.config import Config
from chatd.core import events as ev
from chatd.core.hub import Hub
from chatd.core.ids import Mint
from chatd.core.measures import Measures
from chatd.core.router import Router
from chatd.core.targets import Target, ToEveryone, ToNobody
from chatd.dialects import DIALECTS
from chatd.dialects.base import Context, Dialect, Session
from chatd.history import History
from chatd.history.memory import MemoryHistory
from chatd.history.sqlite import SQLiteHistory
from chatd.net.admission import Admission, Refused, is_loopback
from chatd.net.listeners import Listener, bind
from chatd.net.tls import ServerTLS, TLSConfigError
from chatd.net.transport import QUIT_TEXT, DisconnectReason

log = logging.getLogger("chatd")

#: What a listener can be bound to: a chat dialect, or HTTP (the page and WebSocket).
LISTENER_KINDS: dict[str, Dialect] = {**DIALECTS, web.DIALECT.name: web.DIALECT}


class ChatService:
    """Everything the connections of one server share."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        """``clock``: wall time for the hub (topics, WHOWAS, server-time); tests pass a fake."""
        self.config = config
        #: Event counters shown by /stats and logged at shutdown.
        self.stats: Counter[str] = Counter()
        #: Histograms for /metrics (delivery latency, loop turns).
        self.measures = Measures()
        self.router = Router(self.stats, self.measures)
        reserved: set[str] = set()
        policies = []
        budgets = []
        for dialect in DIALECTS.values():
            reserved |= dialect.reserved_nicks
            if dialect.action_forgeable is not None:
                policies.append(dialect.action_forgeable)
            if dialect.piece_budget is not None:
                budgets.append(dialect.piece_budget)

        def forgeable(nick: str, text: str) -> bool:
            return any(policy(nick, text) for policy in policies)

        def piece_budget(source: ev.Source, target: str, kind: ev.ChatKind) -> int | None:
            limits = [b for b in (budget(source, target, kind) for budget in budgets) if b]
            return min(limits) if limits else None

        self.mint = Mint(config.node_id)
        #: Raises HistoryError for a data dir that cannot be used (the CLI says why).
        self.history = open_history(config, clock)
        #: This process as a node of a cluster (``--redis``), else None.
        self.cluster: ClusterNode | None = None
        self.hub = Hub(
            self._publish,
            config.room,
            reserved_nicks=reserved,
            action_forgeable=forgeable,
            piece_budget=piece_budget,
            private_rate=config.private_rate,
            private_burst=config.private_burst,
            max_rooms_per_member=config.max_rooms,
            max_rooms_per_address=config.max_rooms_per_address,
            address_exempt=self._exempt_address,
            mint=self.mint,
            clock=clock,
        )
        self.router.attach(self.hub)
        self.history.attach(self.hub)
        if config.redis:
            self.cluster = ClusterNode(
                self.hub,
                self.router,
                self._deliver,
                self.stats,
                node=self.mint.node,
                lease=config.redis_lease,
                room_stream_len=config.history_max_per_room,
                room_days=config.history_days,
                prefix=config.redis_prefix,
            )
            # A cluster's history is the rooms' streams in Redis: every node reads them.
            self.history = RedisHistory(
                self.cluster.call,
                self.cluster.stream_of,
                self.cluster.rooms_key,
                days=config.history_days,
                clock=clock,
            )
            self.history.attach(self.hub)
        else:  # a cluster's rooms are the cluster's: a node restores none on its own
            for event in self.history.restore():
                self.hub.receive(event, ToNobody())
        self.context = Context(
            hub=self.hub,
            config=config,
            stats=self.stats,
            new_uid=self.mint.uid,
            snapshot=self.snapshot,
            connection=self._connection,
            connections=lambda: len(self.router.local),
            opened=self.opened,
            ended=self.ended,
            history=self.history,
            claim=self.cluster.claim if self.cluster is not None else None,
            release=self._release,
            catch_up=self.router.catch_up,
            measures=self.measures,
        )
        self.admission = Admission(
            config.max_clients,
            config.max_per_address,
            config.connect_rate,
            config.connect_burst,
            config.exempt_loopback,
        )
        #: The TLS context of the TLS listeners (loaded by bind_listeners), else None.
        self.tls: ServerTLS | None = None

    def bind_listeners(self, *, reuse_port: bool = False) -> list[Listener]:
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
                sock = bind(spec.host, spec.port, reuse_port=reuse_port)
            except OSError as exc:
                for listener in listeners:
                    listener.sock.close()
                raise OSError(
                    exc.errno, f"cannot listen on {spec.host}:{spec.port}: {exc.strerror or exc}"
                ) from None
            tls = self.tls if spec.tls else None
            listeners.append(Listener(spec, sock, LISTENER_KINDS[spec.dialect], tls))
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
        return dialect.session(self.context, host, now, verdict)

    def _publish(self, event: ev.Event, target: Target) -> None:
        """Where the hub's events go: the local connections, history, the other nodes."""
        self.router.deliver(event, target)
        self.history.observe(event, target)
        if self.cluster is not None:
            self.cluster.publish(event, target)

    def _deliver(self, event: ev.Event, target: Target) -> None:
        """Where another node's events go: the local connections, then history."""
        self.router.deliver(event, target)
        history = self.history
        if isinstance(history, RedisHistory):
            history.remote = not (self.cluster is not None and self.cluster.acting)
            try:
                history.observe(event, target)
            finally:
                history.remote = False
        else:
            history.observe(event, target)

    def opened(self, session: Session) -> None:
        """``session``'s connection is ready: the router can reach it from now on."""
        self.router.connect(session)

    def ended(self, session: Session, reason: DisconnectReason, detail: str) -> None:
        """``session``'s connection is gone: tell the hub, forget it, free its slot.

        Also called for a session never made (a TLS handshake that failed), which only
        had its slot.
        """
        self.stats["disconnect_" + reason.value] += 1
        hub = self.hub
        if reason is DisconnectReason.SHUTDOWN:
            # Everyone was told already; N quit notices to N closing members is N².
            hub.disconnect(session.uid, quiet=True)
        elif reason is DisconnectReason.QUIT:
            hub.disconnect(session.uid, detail, by_user=True)
        else:
            hub.disconnect(session.uid, detail or QUIT_TEXT.get(reason, reason.value))
        self.router.disconnect(session.uid)
        self.admission.release(session.host)

    def _release(self, host: str) -> None:
        self.admission.release(host)

    def _exempt_address(self, host: str) -> bool:
        return self.config.exempt_loopback and is_loopback(host)

    def _connection(self, uid: str) -> Session | None:
        handle = self.router.local.get(uid)
        return handle if isinstance(handle, Session) else None

    def shutdown(self) -> None:
        """Tell every connected client that the server is going away; deliver no more."""
        self.router.deliver(ev.ServerShutdown(at=self.hub.clock()), ToEveryone())
        self.router.muted = True
        self.history.stopping = True  # rooms emptied by the shutdown come back at the restart

    def snapshot(self) -> dict[str, int]:
        """Counters plus current gauges, for /stats and the shutdown log."""
        out = dict(self.stats)
        out["clients"] = len(self.router.local)
        out["registered"] = len(self.hub.nicks)
        out["rooms"] = len(self.hub.rooms)
        out.update(self.history.counters())
        if self.cluster is not None:
            out.update(self.cluster.counters())
        return out

    def finish(self) -> None:
        """The last step of every engine's shutdown: write what history has queued (SIGTERM
        loses nothing), then log every counter on one line."""
        self.history.close()
        log.info("stats: %s", " ".join(f"{k}={v}" for k, v in sorted(self.snapshot().items())))


def open_history(config: Config, clock: Callable[[], float]) -> History:
    """The history ``config`` asks for: SQLite in ``data_dir``, or memory only (a cluster
    node replaces it with the rooms' streams in Redis)."""
    if config.data_dir is None or config.redis:
        return MemoryHistory(config.history_max_per_room, days=config.history_days, clock=clock)
    return SQLiteHistory(
        Path(config.data_dir),
        per_room=config.history_max_per_room,
        days=config.history_days,
        window=config.history_window,
        clock=clock,
    )
