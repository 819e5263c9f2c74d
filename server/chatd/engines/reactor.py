"""The reactor engine: one thread, one selector, non-blocking sockets.

Theory of operation
-------------------
One loop turn is::

    select(timeout) -> on_acceptable / on_readable / on_writable for each ready fd
                    -> run the timers that are due
                    -> before_sleep(): free connections marked to close, then flush
                       every connection with pending output, and repeat until neither
                       list has work

Invariants the code relies on:

* **Nothing blocks.** Every socket is non-blocking; we never call ``sendall``, never
  resolve a name, never sleep. Each ready event does a bounded amount of work: one
  ``recv`` of at most :data:`READ_SIZE` bytes, at most :data:`WRITE_BUDGET` bytes sent
  per connection per turn, at most :data:`ACCEPTS_PER_TURN` accepts per listener. One
  busy client cannot starve the rest.
* **Writes are appends.** :meth:`Connection.write` appends the shared ``bytes`` object of
  a broadcast to the connection's output list and puts the connection on the pending
  list the first time in a turn (Redis' ``clients_pending_write``). Small writes are
  copied into one private ``bytearray`` at the tail instead, so the hundred small notices
  a member gets in a turn (joins, actions, nick changes) go out as one buffer.
* **A flush sends until the kernel says no.** ``before_sleep`` sends each pending
  connection's output with ``send``/``sendmsg`` until ``EAGAIN`` (or a short send, which
  means the socket buffer is full) or until the turn's :data:`WRITE_BUDGET` is spent. A
  connection stopped by the budget stays pending for the next turn; one stopped by the
  kernel asks for EVENT_WRITE.
* **Output limits measure the kernel.** ``--max-sendq`` and the soft limit are checked
  after a flush the kernel refused, against what is still queued: a reader that keeps
  up is never dropped, however large the room's burst in one turn. (Redis checks
  ``obuf`` after ``writeToClient`` for the same reason.) As a memory backstop, a queue
  past :data:`BACKSTOP_FACTOR` × ``--max-sendq`` is dropped even if the kernel was not
  asked yet.
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
* **Timers hold weak references**, so a closed connection is freed at once, not when
  its registration or keepalive deadline would have come.

TLS
---
A TLS listener's connections are :class:`TLSConnection`: the same plaintext queue and
the same rules, with a :class:`~chatd.net.tls.TLSStream` (an ``SSLObject`` over two
``MemoryBIO``) between that queue and the socket, as asyncio's ``sslproto`` does. The
session never knows; plain connections never pay for it (the loop tells the two apart
by class, once per event).

* **Handshake first, session after.** The session is created at accept, so the
  connection holds its ``--max-clients`` slot from the start, but ``connection_made`` is
  called only once the handshake is done. A handshake that fails (garbage, an EOF or a
  reset half-way) or misses ``--tls-handshake-timeout`` costs an abort and one
  ``connection_lost``; no one else is involved. At most :data:`HANDSHAKES_PER_TURN`
  handshake steps run per turn (each may cost a key exchange and a signature), so a
  storm of handshakes delays chat by a bounded amount per turn.
* **Reads drain.** Each ready event is one ``recv`` of at most
  :data:`~chatd.net.tls.READ_SIZE`, fed to the stream, and then *all* plaintext of the
  complete records is read out, so nothing sits decrypted where ``select`` cannot see
  it. What the stream wants to send after any call (a handshake flight, an answer to a
  key update, an alert) is appended to the connection's ciphertext buffer at once.
* **Writes encrypt at flush time.** ``write`` queues plaintext exactly as for a plain
  connection (limits measure that queue); the flush joins up to
  :data:`~chatd.net.tls.WRITE_BATCH` bytes of it into one ``SSLObject.write`` (one
  record, as Redis joins small iovecs into one ``SSL_write``) only when the ciphertext
  buffer is empty, so at most one record per connection waits encrypted. A write
  OpenSSL refuses until it reads is held by the stream and retried unchanged.
* **A graceful close says close_notify.** Once the queue is flushed, the stream's
  close_notify goes out through the same buffer, then the socket is shut and closed as
  for a plain connection (at shutdown, within the same flush deadline); aborts skip it.
"""

from __future__ import annotations

import heapq
import logging
import selectors
import signal
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

from chatd.net.accepting import AcceptGuard, refuse
from chatd.net.listeners import Listener, peer_host
from chatd.net.sockopts import (
    LINGER_BYTES,
    LINGER_SECONDS,
    configure_socket,
    peer_error,
    raise_fd_limit,
    reset_on_close,
)
from chatd.net.tls import READ_SIZE as TLS_READ_SIZE
from chatd.net.tls import WRITE_BATCH as TLS_WRITE_BATCH
from chatd.net.tls import TLSStream
from chatd.net.transport import DisconnectReason, SessionProtocol
from chatd.service import ChatService

log = logging.getLogger("chatd.reactor")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

#: Bytes read from one connection per ready event: enough for a burst of ~1000 short
#: lines in one syscall, small enough that one flooder cannot hog a turn.
READ_SIZE = 64 * 1024
#: Bytes sent to one connection per turn at most (fairness between connections).
WRITE_BUDGET = 1 << 20
#: Buffers handed to one ``sendmsg``; Linux' IOV_MAX is 1024.
IOV_LIMIT = 512
#: Writes up to this size are copied into the tail buffer rather than queued by reference.
SMALL_WRITE = 512
#: Size the tail buffer may grow to before a new one starts.
TAIL_LIMIT = 64 * 1024
#: A queue this many times --max-sendq is dropped even before the kernel refused it.
BACKSTOP_FACTOR = 8
#: New connections taken per listener per turn, so a connect storm cannot starve chat.
ACCEPTS_PER_TURN = 64
#: How long shutdown waits for pending output to drain before closing anyway.
SHUTDOWN_FLUSH_SECONDS = 2.0
#: TLS handshake steps run per turn at most (a step may cost a key exchange and a
#: signature, about a millisecond): a storm of handshakes waits its turn behind chat.
HANDSHAKES_PER_TURN = 16


#: Closed connections lingering at most; past this a graceful close closes at once.
MAX_LINGERING = 4096


class _Wakeup:
    """Selector data of the signal wake-up socket."""


class Lingering:
    """Selector data of a socket shut for writing, read and discarded until EOF.

    It belongs to no session and no ``--max-clients`` slot: the hub has already been told
    the connection is gone. See :data:`~chatd.net.sockopts.LINGER_SECONDS` for why.
    """

    __slots__ = ("sock", "left", "done")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        #: Bytes we are still willing to read away.
        self.left = LINGER_BYTES
        self.done = False


_WAKEUP = _Wakeup()


class Connection:
    """A client socket and its output queue; the transport of one session."""

    __slots__ = (
        "reactor",
        "sock",
        "fd",
        "session",
        "out",
        "out_offset",
        "out_bytes",
        "pending",
        "want_write",
        "mask",
        "closing",
        "dead",
        "closed",
        "reason",
        "detail",
        "paused",
        "eof",
        "soft_since",
        "__weakref__",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket, session: SessionProtocol) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.session: SessionProtocol | None = session
        #: Output queue, oldest first: shared ``bytes`` of broadcasts, and private
        #: ``bytearray`` tails that small writes are merged into. A list, not a deque:
        #: an empty list is 56 bytes and an empty deque 760, at 10,000 idle clients.
        self.out: list[bytes | bytearray] = []
        #: Bytes of ``out[0]`` already sent.
        self.out_offset = 0
        self.out_bytes = 0
        #: On the reactor's pending list: a flush is coming this turn.
        self.pending = False
        #: The kernel refused output: waiting for EVENT_WRITE.
        self.want_write = False
        self.mask = 0
        #: Graceful close requested: stop reading, flush, then close.
        self.closing = False
        #: Abortive close requested: output discarded, closed before the next sleep.
        self.dead = False
        self.closed = False
        self.reason = DisconnectReason.EOF
        self.detail = ""
        #: Not reading because the session asked to wait (flood control).
        self.paused = False
        #: The peer closed its side; read no more.
        self.eof = False
        #: When output first stayed above the soft limit (None while below it).
        self.soft_since: float | None = None

    # ----------------------------------------------------------------- transport

    def write(self, data: bytes) -> None:
        """Queue ``data``; the reactor flushes it before it next sleeps."""
        if self.dead:
            return
        out = self.out
        size = len(data)
        if size > SMALL_WRITE:
            out.append(data)
        elif out and out[-1].__class__ is bytearray and len(out[-1]) + size <= TAIL_LIMIT:
            out[-1] += data  # type: ignore[operator]
        else:
            out.append(bytearray(data))
        self.out_bytes += size
        if self.want_write:
            # The kernel refused this connection's output already and has not asked for
            # more: everything queued now is refused output, so the limits apply here.
            if self.out_bytes > self.reactor.write_threshold:
                self.reactor.over_limit(self)
        elif not self.pending:
            self.pending = True
            self.reactor.pending.append(self)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """Stop reading, flush what is queued, then close (see :meth:`Reactor.finish`)."""
        if self.closing or self.dead:
            return
        self.closing = True
        self.reason = reason
        self.detail = detail
        self.reactor.update_mask(self)
        if not self.out:
            self.reactor.to_close.append(self)

    def call_at(self, when: float) -> None:
        self.reactor.call_at(when, self.reactor.session_timer, weakref.ref(self))

    def abort(self, reason: DisconnectReason) -> None:
        """Drop the connection before the next sleep, discarding its output.

        A connection already closing keeps the reason it was closed for: a client that
        sent /quit and reset before its goodbye was flushed still quit.
        """
        if self.dead or self.closed:
            return
        self.dead = True
        if not self.closing:
            self.reason = reason
        self.out.clear()
        self.out_bytes = 0
        self.reactor.to_close.append(self)


class TLSConnection(Connection):
    """A connection with a TLS stream between its plaintext queue and its socket."""

    __slots__ = ("tls", "wire", "handshaking", "notified")

    def __init__(
        self, reactor: Reactor, sock: socket.socket, session: SessionProtocol, tls: TLSStream
    ) -> None:
        super().__init__(reactor, sock, session)
        self.tls: TLSStream | None = tls
        #: Ciphertext not yet taken by the kernel: handshake flights, records, alerts.
        self.wire = bytearray()
        #: The session has not been made yet (connection_made comes after the handshake).
        self.handshaking = True
        #: close_notify has been queued.
        self.notified = False

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """As for a plain connection, then close_notify after the queue (see flush_tls)."""
        if self.closing or self.dead:
            return
        if self.handshaking:
            self.abort(reason)  # nobody was greeted: there is nothing to flush
            return
        self.closing = True
        self.reason = reason
        self.detail = detail
        self.reactor.update_mask(self)
        self.reactor.schedule(self)

    def queue_wire(self) -> None:
        """Move what the stream wants sent into the ciphertext buffer; flush soon."""
        data = self.tls.take()  # type: ignore[union-attr]
        if data:
            self.wire += data
            self.reactor.schedule(self)


class Reactor:
    """The event loop: owns the selector, the listeners, every connection and the timers."""

    def __init__(self, service: ChatService, listeners: list[Listener]) -> None:
        self.service = service
        self.config = service.config
        self.now = time.monotonic()
        self.listeners = listeners
        for listener in listeners:
            listener.sock.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        #: Connections with output to flush this turn (see :meth:`before_sleep`).
        self.pending: list[Connection] = []
        #: Connections to free before the next sleep.
        self.to_close: list[Connection] = []
        self._timers: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self._timer_seq = 0
        self.stopping = False
        #: Sockets closed gracefully, waiting for their peer's EOF (see :meth:`finish`).
        self.lingering: set[Lingering] = set()
        #: SIGHUP arrived: reload the TLS certificate at the top of the next turn.
        self.reload_requested = False
        #: TLS handshake steps left this turn (HANDSHAKES_PER_TURN).
        self.handshake_budget = HANDSHAKES_PER_TURN
        self._accepting = False
        self.accept_guard = AcceptGuard(service.stats)
        self.max_sendq = service.config.max_sendq
        self.soft_limit = service.config.soft_limit
        #: Refused output past this needs a look (the soft limit, else the hard one).
        self.write_threshold = self.soft_limit or self.max_sendq
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    # ----------------------------------------------------------------- running

    def run(self) -> None:
        """Serve until SIGINT/SIGTERM, then say goodbye, flush and return."""
        raise_fd_limit()
        self.selector.register(self._wake_r, EVENT_READ, _WAKEUP)
        self._start_accepting()
        old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in _STOP_SIGNALS}
        if self.service.tls is not None:
            old_handlers[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
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
            self.service.tls.reload()  # type: ignore[union-attr]
        for key, mask in events:
            conn = key.data
            cls = conn.__class__
            if cls is Connection or cls is TLSConnection:
                try:
                    if mask & EVENT_READ and not (conn.closed or conn.dead):
                        if cls is Connection:
                            self.on_readable(conn)
                        else:
                            self.on_readable_tls(conn)
                    if mask & EVENT_WRITE and not (conn.closed or conn.dead):
                        if cls is Connection:
                            self.flush(conn)
                        else:
                            self.flush_tls(conn)
                except Exception:
                    # A bug must cost one connection, not the server.
                    log.exception("error handling a connection; dropping it")
                    conn.abort(DisconnectReason.RESET)
            elif cls is Listener:
                self.on_acceptable(conn)
            elif cls is Lingering:
                self._on_lingering(conn)
            else:
                self._drain_wakeup()
        self._run_timers()
        self.before_sleep()

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

    def _on_reload(self, signum: int, frame: object) -> None:
        # Only a flag: the wake-up fd ends the select, and run_once reloads.
        self.reload_requested = True

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ----------------------------------------------------------------- timers

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any) -> None:
        """Run ``callback(arg)`` at monotonic time ``when`` (callbacks check liveness)."""
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

    def session_timer(self, ref: weakref.ref[Connection]) -> None:
        conn = ref()
        if conn is not None and conn.session is not None and not (conn.closed or conn.dead):
            conn.session.on_timer(self.now)

    # ----------------------------------------------------------------- accepting

    def _start_accepting(self) -> None:
        if not self._accepting:
            for listener in self.listeners:
                self.selector.register(listener.sock, EVENT_READ, listener)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            for listener in self.listeners:
                self.selector.unregister(listener.sock)
            self._accepting = False

    def _resume_accepting(self, _: object) -> None:
        if not self.stopping:
            self._start_accepting()

    def on_acceptable(self, listener: Listener) -> None:
        """Accept up to :data:`ACCEPTS_PER_TURN` connections from one listener."""
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                pause = self.accept_guard.failed(exc)
                if pause is not None:
                    self._stop_accepting()
                    self.call_at(self.now + pause, self._resume_accepting, None)
                    return
                continue
            self.accept_guard.accepted()
            self._add_connection(listener, sock, peer_host(addr))

    def _add_connection(self, listener: Listener, sock: socket.socket, host: str) -> None:
        sock.setblocking(False)
        session = self.service.accept(listener.dialect, host, self.now)  # type: ignore[arg-type]
        if isinstance(session, bytes):
            # A TLS client could not read a plain refusal before its handshake.
            refuse(sock, session if listener.tls is None else b"")
            return
        configure_socket(sock)
        if listener.tls is not None:
            conn: Connection = TLSConnection(self, sock, session, listener.tls.stream())
            self.conns[conn.fd] = conn
            self.update_mask(conn)
            deadline = self.now + self.config.tls_handshake_timeout
            self.call_at(deadline, self._handshake_deadline, weakref.ref(conn))
            return
        conn = Connection(self, sock, session)
        self.conns[conn.fd] = conn
        self.update_mask(conn)
        session.connection_made(conn, self.now)

    def _handshake_deadline(self, ref: weakref.ref[TLSConnection]) -> None:
        conn = ref()
        if conn is not None and conn.handshaking and not (conn.closed or conn.dead):
            conn.abort(DisconnectReason.HANDSHAKE_TIMEOUT)

    # ----------------------------------------------------------------- reading

    def on_readable(self, conn: Connection) -> None:
        """One ``recv``, then let the session handle what its flood budget allows."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            conn.abort(DisconnectReason.RESET)
            return
        session = conn.session
        assert session is not None
        if data:
            session.data_received(data)
        else:
            # EOF (perhaps only a half-close): a last unterminated line still counts,
            # and pending output is still delivered before we close.
            conn.eof = True
            session.eof_received()
            self.update_mask(conn)
        self._process(conn)

    def on_readable_tls(self, conn: TLSConnection) -> None:
        """One ``recv`` through the TLS stream: a handshake step, or plaintext for the
        session (all of it that the records fed so far hold)."""
        handshaking = conn.handshaking
        if handshaking:
            if self.handshake_budget <= 0:
                return  # still readable: the next turn takes it
            self.handshake_budget -= 1
        failed = DisconnectReason.HANDSHAKE_FAILED if handshaking else DisconnectReason.RESET
        try:
            data = conn.sock.recv(TLS_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            conn.abort(failed)
            return
        tls = conn.tls
        assert tls is not None
        if data:
            tls.feed(data)
        else:
            tls.feed_eof()
        try:
            if handshaking:
                if not tls.handshake():
                    conn.queue_wire()
                    return
                conn.handshaking = False
                self.service.stats["tls_handshakes"] += 1
                conn.queue_wire()
                conn.session.connection_made(conn, self.now)  # type: ignore[union-attr]
                if conn.closing or conn.dead:
                    return
            plain, closed = tls.read()
        except ssl.SSLError:
            conn.abort(failed)
            return
        conn.queue_wire()
        session = conn.session
        assert session is not None
        if plain:
            session.data_received(plain)
        if closed:
            conn.eof = True
            session.eof_received()
            self.update_mask(conn)
        self._process(conn)

    def _process(self, conn: Connection) -> None:
        delay = conn.session.process(self.now)  # type: ignore[union-attr]
        if delay is not None and not (conn.closing or conn.dead):
            if not conn.paused:
                conn.paused = True
                self.update_mask(conn)
            self.call_at(self.now + delay, self._resume, weakref.ref(conn))

    def _resume(self, ref: weakref.ref[Connection]) -> None:
        conn = ref()
        if conn is None or conn.closed or conn.dead or not conn.paused:
            return
        if peer_error(conn.sock):
            # Reset while we were not reading: drop it and the lines it left behind.
            conn.abort(DisconnectReason.RESET)
            return
        conn.paused = False
        self._process(conn)
        self.update_mask(conn)

    # ----------------------------------------------------------------- writing

    def schedule(self, conn: Connection) -> None:
        """Flush ``conn`` before the next sleep (unless it waits for EVENT_WRITE)."""
        if not conn.pending and not conn.want_write:
            conn.pending = True
            self.pending.append(conn)

    def flush(self, conn: Connection) -> None:
        """Send until the kernel refuses or the turn's budget is spent; then check limits."""
        out = conn.out
        sock = conn.sock
        budget = WRITE_BUDGET
        refused = False
        while out and budget > 0:
            try:
                # Views of a bytearray tail die with this statement (reference counting),
                # so a later write() may extend it again.
                if len(out) == 1:
                    chunk = out[0]
                    offset = conn.out_offset
                    if offset or len(chunk) > budget:
                        attempted = min(len(chunk) - offset, budget)
                        sent = sock.send(memoryview(chunk)[offset : offset + budget])
                    else:
                        attempted = len(chunk)
                        sent = sock.send(chunk)
                else:
                    bufs, attempted = _gather(out, conn.out_offset, budget)
                    sent = sock.sendmsg(bufs)
                    bufs = None
            except (BlockingIOError, InterruptedError):
                refused = True
                break
            except OSError:
                conn.abort(DisconnectReason.RESET)
                return
            budget -= sent
            _consume(conn, sent)
            if sent < attempted:
                refused = True  # a short send: the socket buffer is full
                break
        conn.pending = False
        if out and not refused and not conn.dead:
            conn.pending = True
            self.pending.append(conn)  # the budget stopped us: go on next turn
        if not self._settle(conn, refused):
            return
        if not out and conn.closing:
            self.to_close.append(conn)

    def flush_tls(self, conn: TLSConnection) -> None:
        """:meth:`flush` through the TLS stream: encrypt one batch of the plaintext queue
        whenever the ciphertext buffer is empty, send, repeat; then close_notify."""
        tls = conn.tls
        assert tls is not None
        wire = conn.wire
        out = conn.out
        sock = conn.sock
        failed = DisconnectReason.HANDSHAKE_FAILED if conn.handshaking else DisconnectReason.RESET
        budget = WRITE_BUDGET
        refused = False
        while budget > 0:
            if not wire:
                if tls.held:
                    if conn.closing:  # what is held waits for a read closing stops
                        conn.abort(DisconnectReason.RESET)
                        return
                elif out:
                    if len(out) == 1 and not conn.out_offset and len(out[0]) <= TLS_WRITE_BATCH:
                        chunk: bytes | bytearray = out[0]
                    else:
                        bufs, _ = _gather(out, conn.out_offset, TLS_WRITE_BATCH)
                        chunk = b"".join(bufs)
                        bufs = None  # release the views before the queue changes
                    size = len(chunk)
                    try:
                        tls.encrypt(chunk)
                    except ssl.SSLError:
                        conn.abort(DisconnectReason.RESET)
                        return
                    chunk = b""
                    _consume(conn, size)
                elif conn.closing and not conn.notified:
                    conn.notified = True
                    tls.close_notify()
                data = tls.take()
                if not data:
                    break
                wire += data
            try:
                sent = sock.send(wire)
            except (BlockingIOError, InterruptedError):
                refused = True
                break
            except OSError:
                conn.abort(failed)
                return
            del wire[:sent]
            budget -= sent
            if wire:
                refused = True  # a short send: the socket buffer is full
                break
        conn.pending = False
        more = wire or (not tls.held and (out or (conn.closing and not conn.notified)))
        if more and not refused and not conn.dead:
            conn.pending = True
            self.pending.append(conn)  # the budget stopped us: go on next turn
        if not self._settle(conn, refused):
            return
        if conn.closing and conn.notified and not wire:
            self.to_close.append(conn)

    def _settle(self, conn: Connection, refused: bool) -> bool:
        """After a flush: the output limits, then write interest. False: dropped."""
        if refused:
            if conn.out_bytes > self.write_threshold:
                self.over_limit(conn)
                if conn.dead:
                    return False
        elif conn.out_bytes > BACKSTOP_FACTOR * self.max_sendq:
            self.service.stats["sendq_drops_bytes"] += conn.out_bytes
            conn.abort(DisconnectReason.SENDQ)
            return False
        if conn.soft_since is not None and conn.out_bytes <= self.soft_limit:
            conn.soft_since = None
        if refused != conn.want_write:
            conn.want_write = refused
            self.update_mask(conn)
        return True

    def over_limit(self, conn: Connection) -> None:
        """Output the kernel refused is above the soft or the hard limit."""
        size = conn.out_bytes
        if size > self.max_sendq:
            self.service.stats["sendq_drops_bytes"] += size
            conn.abort(DisconnectReason.SENDQ)
        elif self.soft_limit and conn.soft_since is None:
            conn.soft_since = since = self.now
            seconds = self.config.sendq_soft_seconds
            self.call_at(since + seconds, self._soft_deadline, (weakref.ref(conn), since))

    def _soft_deadline(self, arg: tuple[weakref.ref[Connection], float]) -> None:
        ref, since = arg
        conn = ref()
        if conn is None or conn.closed or conn.dead or conn.soft_since != since:
            return
        if conn.out_bytes <= self.soft_limit:
            conn.soft_since = None
            return
        conn.abort(DisconnectReason.SOFT_SENDQ)

    def before_sleep(self) -> None:
        """Free the connections marked to close, then flush each pending one."""
        while self.to_close or self.pending:
            while self.to_close:
                closing, self.to_close = self.to_close, []
                for conn in closing:
                    self.finish(conn)
            pending, self.pending = self.pending, []
            for conn in pending:
                if conn.pending and not conn.closed and not conn.dead:
                    if conn.__class__ is Connection:
                        self.flush(conn)
                    else:
                        self.flush_tls(conn)  # type: ignore[arg-type]
            if self.pending and not self.to_close:
                break  # budget-limited connections go on next turn, after a poll

    def update_mask(self, conn: Connection) -> None:
        """Register exactly the interest the connection's state calls for."""
        if conn.closed:
            return
        want = 0
        if not (conn.paused or conn.closing or conn.dead or conn.eof):
            want = EVENT_READ
        if conn.want_write and not conn.dead:
            want |= EVENT_WRITE
        if want == conn.mask:
            return
        if want == 0:
            self.selector.unregister(conn.sock)
        elif conn.mask == 0:
            self.selector.register(conn.sock, want, conn)
        else:
            self.selector.modify(conn.sock, want, conn)
        conn.mask = want

    # ----------------------------------------------------------------- closing

    def finish(self, conn: Connection) -> None:
        """Unregister, close and report one connection. Runs only from before_sleep.

        A graceful close (quit, EOF, timeouts) has flushed its output to the kernel
        already; we shut down our side and, unless the server is stopping, leave the
        socket lingering: read and discarded until the peer's EOF, for at most
        :data:`~chatd.net.sockopts.LINGER_SECONDS` and
        :data:`~chatd.net.sockopts.LINGER_BYTES`. Closing with unread input would make
        the kernel send a reset and drop what it had not sent yet, goodbye included.
        """
        if conn.closed:
            return
        if conn.closing and not conn.dead and conn.out:
            return  # still flushing; flush() queues it again once drained
        conn.closed = True
        if conn.mask:
            self.selector.unregister(conn.sock)
            conn.mask = 0
        self.conns.pop(conn.fd, None)
        # The hub learns before the peer can see the close, as on every engine: a peer
        # that saw it and asks on another connection is answered by a hub that knows.
        # (Nothing else runs in between here; the threaded engine is why it is a rule.)
        session, conn.session = conn.session, None
        if session is not None:
            try:
                session.connection_lost(conn.reason, conn.detail)
            except Exception:  # a bug costs this connection only; it is closed below
                log.exception("error reporting a closed connection")
        sock = conn.sock
        if conn.dead:
            reset_on_close(sock)
            sock.close()
        else:
            self._linger(sock)
        conn.out = []
        if conn.__class__ is TLSConnection:
            conn.tls = None  # type: ignore[attr-defined]
            conn.wire = bytearray()  # type: ignore[attr-defined]

    def _linger(self, sock: socket.socket) -> None:
        """Shut our side of a gracefully closed socket and wait for the peer's EOF."""
        try:
            sock.shutdown(socket.SHUT_WR)
            data = sock.recv(READ_SIZE)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""  # reset or not connected: nothing to wait for
        if data == b"" or self.stopping or len(self.lingering) >= MAX_LINGERING:
            sock.close()
            return
        entry = Lingering(sock)
        if data:
            entry.left -= len(data)
        self.lingering.add(entry)
        self.selector.register(sock, EVENT_READ, entry)
        self.call_at(self.now + LINGER_SECONDS, self._end_lingering, entry)

    def _on_lingering(self, entry: Lingering) -> None:
        try:
            data = entry.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        entry.left -= len(data)
        if not data or entry.left <= 0:
            self._end_lingering(entry)

    def _end_lingering(self, entry: Lingering) -> None:
        if entry.done:
            return
        entry.done = True
        self.lingering.discard(entry)
        self.selector.unregister(entry.sock)
        entry.sock.close()

    def _shutdown(self) -> None:
        """Tell everyone, stop accepting, flush for a bounded time, close the rest."""
        self._stop_accepting()
        for listener in self.listeners:
            listener.sock.close()
        for entry in list(self.lingering):  # their input would wake every select below
            self._end_lingering(entry)
        self.service.shutdown()
        for conn in list(self.conns.values()):
            conn.close_soon(DisconnectReason.SHUTDOWN)
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        self.before_sleep()
        while self.conns and time.monotonic() < deadline:
            wait = 0.0 if self.pending else max(0.0, deadline - time.monotonic())
            events = self.selector.select(wait)
            self.now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn.__class__ is Connection and mask & EVENT_WRITE and not conn.closed:
                    self.flush(conn)
                elif conn.__class__ is TLSConnection and mask & EVENT_WRITE and not conn.closed:
                    self.flush_tls(conn)
                elif conn is _WAKEUP:
                    self._drain_wakeup()
            self.before_sleep()
        for conn in list(self.conns.values()):
            conn.abort(DisconnectReason.SHUTDOWN)
        self.before_sleep()
        for entry in list(self.lingering):
            self._end_lingering(entry)
        self.service.log_stats()


def _gather(
    out: list[bytes | bytearray], offset: int, budget: int
) -> tuple[list[bytes | bytearray | memoryview], int]:
    """Up to :data:`IOV_LIMIT` buffers and about ``budget`` bytes from the queue head."""
    bufs: list[bytes | bytearray | memoryview] = []
    total = 0
    for chunk in out:
        piece: bytes | bytearray | memoryview = chunk
        if offset:
            piece = memoryview(chunk)[offset:]
            offset = 0
        if total + len(piece) > budget:
            piece = memoryview(piece)[: budget - total]
        bufs.append(piece)
        total += len(piece)
        if total >= budget or len(bufs) >= IOV_LIMIT:
            break
    return bufs, total


def _consume(conn: Connection, sent: int) -> None:
    """Drop ``sent`` bytes from the head of the connection's queue."""
    out = conn.out
    conn.out_bytes -= sent
    if conn.out_bytes == 0:
        out.clear()
        conn.out_offset = 0
        return
    offset = conn.out_offset + sent
    done = 0
    while offset >= len(out[done]):
        offset -= len(out[done])
        done += 1
    if done:
        del out[:done]
    conn.out_offset = offset


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(service: ChatService, listeners: list[Listener]) -> None:
    """Entry point used by the command line."""
    Reactor(service, listeners).run()
