"""The reactor engine: one thread, one selector, non-blocking sockets.

Theory of operation
-------------------
One loop turn is::

    select(timeout) -> key.data.on_ready(mask) for each ready fd
                    -> run the timers that are due
                    -> before_sleep(): deliver the turn's room batches (one append per
                       member per room), free connections marked to close, then flush
                       every connection with pending output, and repeat until none of
                       them has work

The data of every selector registration is a :class:`~.handler.Handler` that handles its
own socket's events: a connection reads and flushes, a listener's acceptor accepts, a
lingering socket reads and discards, the wake-up socket is drained. The loop tells no
kinds apart; it owns the selector, the timers, the pending and to-close lists, the
limits' settings and shutdown. By job:

* :mod:`~chatd.engines.reactor.loop` (here): :class:`Reactor`, the loop, and the
  :class:`Wakeup` socket that signals and :meth:`Reactor.request_stop` end a select with;
* :mod:`~chatd.engines.reactor.handler`: the :class:`~.handler.Handler` base;
* :mod:`~chatd.engines.reactor.connection`: :class:`~.connection.Connection`, the
  transport of one session: its reads and flood-control pauses, its output queue, its
  flush, its output limits, its close;
* :mod:`~chatd.engines.reactor.tls_connection`: :class:`~.tls_connection.TLSConnection`,
  a connection with a TLS stream under its queue (its docstring tells how);
* :mod:`~chatd.engines.reactor.accepting`: :class:`~.accepting.Acceptor`, one per
  listener;
* :mod:`~chatd.engines.reactor.lingering`: :class:`~.lingering.Lingering`, a closed
  socket waiting for its peer's EOF.

Invariants the code relies on:

* **Nothing blocks.** Every socket is non-blocking; we never call ``sendall``, never
  resolve a name, never sleep. Each ready event does a bounded amount of work: one
  ``recv`` of at most :data:`~.handler.READ_SIZE` bytes, at most
  :data:`~.connection.WRITE_BUDGET` bytes sent per connection per turn, at most
  :data:`~.accepting.ACCEPTS_PER_TURN` accepts per listener, at most
  :data:`FINISHES_PER_TURN` closed connections freed. One busy client cannot starve the
  rest, nor can thousands quitting at once.
* **Writes are appends.** :meth:`Connection.write <.connection.Connection.write>` appends
  the shared ``bytes`` object of a broadcast to the connection's output list and puts the
  connection on the pending list the first time in a turn (Redis'
  ``clients_pending_write``). Small writes are copied into one private ``bytearray`` at
  the tail instead, so the hundred small notices a member gets in a turn (joins, actions,
  nick changes) go out as one buffer.
* **One append per member per room per turn.** Events for one room are not written as
  they are published: the router collects them and ``before_sleep`` delivers each room's
  batch as one ``bytes`` per encoder, shared by every member (see
  :mod:`chatd.core.router`, "Batches"). Ten senders' lines, or a hundred joins, cost a
  member of the room one append in that turn.
* **A flush sends until the kernel says no.** ``before_sleep`` has each pending
  connection send its output with ``send``/``sendmsg`` until ``EAGAIN`` (or a short send,
  which means the socket buffer is full) or until the turn's
  :data:`~.connection.WRITE_BUDGET` is spent. A connection stopped by the budget stays
  pending for the next turn; one stopped by the kernel asks for EVENT_WRITE.
* **Output limits measure the kernel.** ``--max-sendq`` and the soft limit are checked
  after a flush the kernel refused, against what is still queued: a reader that keeps
  up is never dropped, however large the room's burst in one turn. (Redis checks
  ``obuf`` after ``writeToClient`` for the same reason.) As a memory backstop, a queue
  past :data:`~.connection.BACKSTOP_FACTOR` × ``--max-sendq`` is dropped even if the
  kernel was not asked yet.
* **EVENT_WRITE only while the kernel refuses** (as in asyncio's selector transport); the
  mask is derived from state and ``modify`` is called only when it changes.
* **Never close during a fan-out.** A connection that fails or exceeds its output limit
  is marked ``dead`` and queued; writes to it are dropped; it is unregistered, closed
  and reported to its session (which tells the hub) in ``before_sleep``. So the room
  dict being iterated by a broadcast never changes under it.
* **Backpressure, not punishment.** A session over its flood budget returns a delay from
  ``process``; its connection is simply not read from until then.
* **A graceful close lingers.** The socket is shut for writing, then read and
  discarded until the peer's EOF (bounded in time and bytes) before ``close``, so unread
  input never turns our last output into a reset.
* **Shutdown is bounded, and a cluster node drains.** SIGTERM/SIGINT stop the accepting,
  tell every client to reconnect (each dialect in its own terms), then flush for at most
  :data:`SHUTDOWN_FLUSH_SECONDS`. On a cluster node the members quit for the other nodes
  and release their nicknames at once, and the same bound covers waiting for Redis to
  answer that (see :meth:`Reactor._shutdown`).
* **Timers hold weak references**, so a closed connection is freed at once, not when
  its registration or keepalive deadline would have come.
* **A bug costs one connection, never the server.** :meth:`Connection.on_ready
  <.connection.Connection.on_ready>` drops its connection if reading or flushing it
  raises; a timer that raises is logged and skipped, and drops the connection whose weak
  reference it holds. (A bug in accepting, lingering or the wake-up is the loop's own.)
"""

from __future__ import annotations

import heapq
import itertools
import logging
import selectors
import signal
import socket
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from chatd.cluster.resp import client_tls, parse_url
from chatd.config import Config
from chatd.engines.reactor.accepting import Acceptor
from chatd.engines.reactor.cluster_link import ClusterLink, resolve
from chatd.engines.reactor.connection import Connection
from chatd.engines.reactor.handler import EVENT_READ, Handler
from chatd.engines.reactor.lingering import Lingering
from chatd.engines.reactor.tls_connection import HANDSHAKES_PER_TURN
from chatd.net import signals
from chatd.net.accepting import AcceptGuard
from chatd.net.listeners import Listener
from chatd.net.sockopts import raise_fd_limit
from chatd.net.transport import QUIT_TEXT, DisconnectReason
from chatd.service import ChatService

log = logging.getLogger("chatd.reactor")

#: How long shutdown waits for pending output to drain before closing anyway.
SHUTDOWN_FLUSH_SECONDS = 2.0
#: Connections freed (unregistered, closed, reported to the hub) per loop turn at most.
FINISHES_PER_TURN = 256

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_T = TypeVar("_T")


class Wakeup(Handler):
    """Selector data of the signal wake-up socket: drained, so the select ends once."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def on_ready(self, mask: int) -> None:
        try:
            while self.sock.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    on_ready_at_shutdown = on_ready


class Reactor:
    """The event loop: owns the selector, the listeners, every connection and the timers."""

    def __init__(self, service: ChatService, listeners: list[Listener]) -> None:
        self.service = service
        self.config = service.config
        #: Room events go out once per turn, from before_sleep (see chatd.core.router).
        service.router.batching = True
        self.now = time.monotonic()
        self.listeners = listeners
        for listener in listeners:
            listener.sock.setblocking(False)
        self.acceptors = [Acceptor(self, listener) for listener in listeners]
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        #: Connections with output to flush this turn (see :meth:`before_sleep`).
        self.pending: list[Connection] = []
        #: Connections to free before the next sleep.
        #: (A dict as an ordered set: a closing connection may be queued again by each
        #: flush while it waits for its turn to be freed.)
        self.to_close: dict[Connection, None] = {}
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_seq = 0
        self.stopping = False
        #: Sockets closed gracefully, waiting for their peer's EOF (see
        #: :meth:`Connection.finish <.connection.Connection.finish>`).
        self.lingering: set[Lingering] = set()
        #: SIGHUP arrived: reload the settings at the top of the next turn.
        self.reload_requested = False
        #: TLS handshake steps left this turn (HANDSHAKES_PER_TURN).
        self.handshake_budget = HANDSHAKES_PER_TURN
        self._accepting = False
        self.accept_guard = AcceptGuard(service.stats)
        self._reloaded(service.config)  # the output limits, as each reload sets them
        service.reload_hooks.append(self._reloaded)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wakeup = Wakeup(self._wake_r)
        #: The cluster's Redis connections (``--redis``), else None.
        self.cluster_link: ClusterLink | None = None
        node = service.cluster
        if node is not None:
            config = service.config
            host, port, db, user, password, tls = parse_url(config.redis or "")
            self.cluster_link = ClusterLink(
                self,
                node,
                resolve(host, port),
                password=config.redis_password or password,
                user=user,
                db=db,
                tls=client_tls(config.redis_ca, config.redis_cert) if tls else None,
                tls_host=host,
            )

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then say goodbye, flush and return."""
        raise_fd_limit()
        self.selector.register(self._wake_r, EVENT_READ, self._wakeup)
        self._start_accepting()
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        # SIGHUP reloads what can change live (chatd.reload); never a stop.
        old_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        signals.release()
        if self.cluster_link is not None:
            self.cluster_link.start()
        try:
            while not self.stopping:
                self.run_once()
            self._shutdown()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            self.selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def run_once(self) -> None:
        """One loop turn: wait, dispatch, run timers, flush."""
        events = self.selector.select(self._timeout())
        self.now = time.monotonic()
        self.handshake_budget = HANDSHAKES_PER_TURN
        if self.reload_requested:
            self.reload_requested = False
            log.info("received SIGHUP: reloading the settings")
            self.service.reload()
        for key, mask in events:
            # Each handler does its own work. A connection's catches what it raises: a
            # bug must cost one connection, not the server (Connection.on_ready); a bug
            # in accepting, lingering or the wake-up is the loop's own and stops it.
            key.data.on_ready(mask)
        self._run_timers()
        self.before_sleep()
        self.service.measures.loop_turn.observe(time.monotonic() - self.now)

    def _timeout(self) -> float | None:
        if self.pending or self.to_close or self.stopping:
            return 0
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    def request_stop(self) -> None:
        """What SIGINT and SIGTERM do, from any thread: stop after this loop turn."""
        self.stopping = True
        try:
            self._wake_w.send(b"\0")  # end the select, as the signal's wake-up fd does
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed (stopped already)

    def _reloaded(self, config: Config) -> None:
        """The output limits, at start and after a reload (from the next check on)."""
        self.config = config
        self.max_sendq = config.max_sendq
        self.soft_limit = config.soft_limit
        #: Refused output past this needs a look (the soft limit, else the hard one).
        self.write_threshold = self.soft_limit or self.max_sendq

    def _on_reload(self, signum: int, frame: object) -> None:
        # Only a flag: the wake-up fd ends the select, and run_once reloads.
        self.reload_requested = True

    # ----------------------------------------------------------------- timers

    def call_at(self, when: float, callback: Callable[[_T], None], arg: _T) -> None:
        """Run ``callback(arg)`` at monotonic time ``when`` (callbacks check liveness).

        A callback about a connection takes a weak reference to it (``arg``), so the
        timer does not keep it alive; if it raises, that connection is dropped.
        """
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, callback, arg))

    def _run_timers(self) -> None:
        timers = self._timers
        now = self.now
        while timers and timers[0][0] <= now:
            _, _, callback, arg = heapq.heappop(timers)
            try:
                callback(arg)
            except Exception:
                log.exception("error in a timer")
                conn = arg() if isinstance(arg, weakref.ref) else None
                if conn is not None:
                    conn.abort(DisconnectReason.RESET)

    # ----------------------------------------------------------------- accepting

    def _start_accepting(self) -> None:
        if not self._accepting:
            for acceptor in self.acceptors:
                self.selector.register(acceptor.listener.sock, EVENT_READ, acceptor)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            for acceptor in self.acceptors:
                self.selector.unregister(acceptor.listener.sock)
            self._accepting = False

    def _resume_accepting(self, _: object) -> None:
        if not self.stopping:
            self._start_accepting()

    def pause_accepting(self, seconds: float) -> None:
        """Out of descriptors or memory: accept nothing on any listener for a while."""
        self._stop_accepting()
        self.call_at(self.now + seconds, self._resume_accepting, None)

    # ----------------------------------------------------------------- flushing

    def before_sleep(self, finishes: int = 0) -> None:
        """Deliver the turn's room batches, free the connections marked to close (at
        most :data:`FINISHES_PER_TURN`, or ``finishes`` if given), then flush each
        pending one.

        The batches go first: a member closing gracefully (a ``/quit``) still gets what
        the room said before it, and the quits its close publishes are batched again.
        Freeing is bounded because it is the costly part of a quit (the hub, the room's
        notice, the socket's shutdown): 4,000 clients quitting at once are freed over a
        few turns, and everyone else is read and served between them. The rest stay
        on the to-close list (they read nothing more) and the next select does not wait.
        """
        router = self.service.router
        router.flush_pending()
        budget = finishes or FINISHES_PER_TURN
        while True:
            if self.to_close and budget > 0:
                closing = list(itertools.islice(self.to_close, budget))
                for conn in closing:
                    del self.to_close[conn]
                budget -= len(closing)
                for conn in closing:
                    conn.finish()
                router.flush_pending()
            if not self.pending:
                break
            pending, self.pending = self.pending, []
            for conn in pending:
                if conn.pending and not conn.closed and not conn.dead:
                    conn.flush()
            if self.pending and not (self.to_close and budget > 0):
                break  # budget-limited connections go on next turn, after a poll
        if self.cluster_link is not None:
            self.cluster_link.flush()

    # ----------------------------------------------------------------- shutdown

    def _shutdown(self) -> None:
        """Stop accepting, tell everyone, flush for a bounded time, close the rest.

        A node of a cluster also **drains** (:meth:`ClusterLink.drain
        <.cluster_link.ClusterLink.drain>`): once the local clients were told, its members
        quit for the other nodes (``server shutting down``) and their nicknames' leases
        are released, at once rather than when the leases expire; the loop below then
        also waits for Redis to answer all of it, within the same bound, so the quits
        are in Redis before the process exits. Nothing here waits on Redis but the
        select, so a Redis that is gone or silent costs at most that bound.
        """
        self._stop_accepting()
        for listener in self.listeners:
            listener.sock.close()
        for entry in list(self.lingering):  # their input would wake every select below
            entry.end()
        self.service.shutdown()
        link = self.cluster_link
        if link is not None:
            link.drain(QUIT_TEXT[DisconnectReason.SHUTDOWN])
        for conn in list(self.conns.values()):
            conn.close_soon(DisconnectReason.SHUTDOWN)
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        self.before_sleep()
        while (self.conns or (link is not None and not link.settled)) and (
            time.monotonic() < deadline
        ):
            wait = 0.0 if self.pending or self.to_close else max(0.0, deadline - time.monotonic())
            events = self.selector.select(wait)
            self.now = time.monotonic()
            for key, mask in events:
                key.data.on_ready_at_shutdown(mask)
            self.before_sleep()
        for conn in list(self.conns.values()):
            conn.abort(DisconnectReason.SHUTDOWN)
        self.before_sleep(finishes=len(self.to_close) + 1)
        for entry in list(self.lingering):
            entry.end()
        if self.cluster_link is not None:
            self.cluster_link.stop()
        self.service.finish()


def serve(service: ChatService, listeners: list[Listener]) -> None:
    """Entry point used by the command line."""
    Reactor(service, listeners).run()
