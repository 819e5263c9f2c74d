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

import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from chatd import logs, web
from chatd import reload as reloading
from chatd.cluster.history import RedisHistory
from chatd.cluster.node import ClusterNode
from chatd.config import Config, ReloadError
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
from chatd.net import sdnotify
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
        #: Reads the settings again for a reload (the command line sets it: see
        #: :func:`chatd.cli.load`); None: a reload only loads the TLS files again.
        self.reload_source: Callable[[], Config] | None = None
        #: Called with the new config after a reload: engines keep copies of a few
        #: limits on their hot paths (the output limits).
        self.reload_hooks: list[Callable[[Config], None]] = []

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
            log.debug(
                "refused a connection from %s: %s",
                host,
                verdict.reason,
                extra={"event": "disconnect", "host": host, "reason": verdict.reason},
            )
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
        if log.isEnabledFor(logging.DEBUG):
            member = self.hub.members.get(session.uid)
            nick = member.nick if member is not None else None
            log.debug(
                "disconnect %s %s from %s: %s%s",
                session.uid,
                nick or "(unregistered)",
                session.host,
                reason.value,
                f" ({detail})" if detail else "",
                extra={
                    "event": "disconnect",
                    "uid": session.uid,
                    "nick": nick,
                    "host": session.host,
                    "reason": reason.value,
                    "detail": detail,
                },
            )
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

    def reload(self) -> list[reloading.Change]:
        """SIGHUP: read the settings again, apply what can change live and log every
        change; a change that needs a restart is logged as such and not applied (see
        :mod:`chatd.reload`). The TLS files are loaded again even if their names did not
        change. Settings that do not load (a bad file) change nothing; the error is logged.
        Returns the changes applied.
        """
        sdnotify.reloading()
        try:
            return self._reload()
        except Exception:  # a bug in a reload must not cost the server its clients
            log.exception(
                "reload failed, the settings in force are kept", extra={logs.UNLIMITED: True}
            )
            return []
        finally:
            sdnotify.ready()  # failed or not, systemd must not wait in "reloading"

    def _reload(self) -> list[reloading.Change]:
        new = self.config
        if self.reload_source is not None:
            try:
                new = self.reload_source()
            except ReloadError as exc:
                log.error(
                    "reload failed, the settings in force are kept: %s",
                    exc,
                    extra={logs.UNLIMITED: True},
                )
                return []
        found = reloading.changes(self.config, new)
        if self.tls is None or not new.tls_cert:
            # No TLS listener to load them for, or none to be left without: a restart.
            found = [
                dataclasses.replace(c, needs_restart=True)
                if c.field in ("tls_cert", "tls_key")
                else c
                for c in found
            ]
        if self.tls is not None and not self._reload_tls(new):
            # The new files do not load: keep the old names with the old context.
            found = [c for c in found if c.field not in ("tls_cert", "tls_key")]
        unlimited = {logs.UNLIMITED: True}  # one record per SIGHUP: never held back
        for change in found:
            if change.live:
                log.info("reload: %s", change.describe())
        restart = [c.describe() for c in found if not c.live]
        if restart:
            log.warning(
                "reload: needs a restart, the running value is kept: %s",
                "; ".join(restart),
                extra=unlimited,
            )
        applied = [c for c in found if c.live]
        if applied:
            self._apply(reloading.merged(self.config, applied), applied)
        log.info(
            "reload done: %d change(s) applied, %d need a restart",
            len(applied),
            len(found) - len(applied),
        )
        return applied

    def _reload_tls(self, new: Config) -> bool:
        tls = self.tls
        assert tls is not None
        old_names = tls.cert, tls.key
        if new.tls_cert:
            tls.cert, tls.key = new.tls_cert, new.tls_key
        if tls.reload():
            return True
        tls.cert, tls.key = old_names
        return False

    def _apply(self, config: Config, applied: list[reloading.Change]) -> None:
        self.config = config
        self.context.config = config
        now = time.monotonic()
        self.admission.retune(
            config.max_clients,
            config.max_per_address,
            config.connect_rate,
            config.connect_burst,
            config.exempt_loopback,
            now,
        )
        hub = self.hub
        hub.private_rate = config.private_rate
        hub.private_burst = config.private_burst
        if config.private_rate:
            for bucket in hub.budgets.values():
                bucket.retune(config.private_rate, max(config.private_burst, 1))
        else:
            hub.budgets.clear()
        hub.max_rooms = config.max_rooms
        hub.max_rooms_per_address = config.max_rooms_per_address
        fields = {c.field for c in applied}
        if fields & {"register_timeout", "idle_timeout", "ping_interval"}:
            for session in self._sessions():
                session.reconfigured(now)
        if "log_format" in fields:
            logs.setup(config.log_level, config.log_format)
        elif "log_level" in fields:
            logs.set_level(config.log_level)
        for hook in self.reload_hooks:
            hook(config)

    def _release(self, host: str) -> None:
        self.admission.release(host)

    def _exempt_address(self, host: str) -> bool:
        return self.config.exempt_loopback and is_loopback(host)

    def _sessions(self) -> list[Session]:
        """This process's chat sessions (a copy: closing one changes the router's map)."""
        return [h for h in self.router.local.values() if isinstance(h, Session)]

    def _connection(self, uid: str) -> Session | None:
        handle = self.router.local.get(uid)
        return handle if isinstance(handle, Session) else None

    def shutdown(self) -> None:
        """Tell every connected client that the server is going away and to reconnect;
        deliver no more.

        Each session is then closed through its own layers (``Session.close``), so a
        layer says goodbye in its terms after the notice: a WebSocket sends its Close
        (1012, Service Restart; see :data:`chatd.web.http.CLOSE_CODES`) before the
        socket closes. The engine's own ``close_soon`` that follows is then a no-op for
        them. (Every engine calls this with its sessions quiet: the threaded one holds
        the hub lock.)
        """
        sdnotify.stopping()
        self.router.deliver(ev.ServerShutdown(at=self.hub.clock()), ToEveryone())
        self.router.muted = True
        self.history.stopping = True  # rooms emptied by the shutdown come back at the restart
        for session in self._sessions():
            session.close(DisconnectReason.SHUTDOWN)

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
        logs.summary()  # the repeated warnings still held back


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
