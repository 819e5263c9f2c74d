"""The reactor engine: one thread, one selector, non-blocking sockets.

Theory of operation
-------------------
One loop turn is::

    select(timeout) -> on_acceptable / on_readable / on_writable for each ready fd
                    -> run the timers that are due
                    -> before_sleep(): free connections marked to close, then flush
                       every connection with pending output, once, and repeat until
                       neither list has work

Invariants the code relies on:

* **Nothing blocks.** Every socket is non-blocking; we never call ``sendall``, never
  resolve a name, never sleep. Each ready event does a bounded amount of work: one
  ``recv`` of at most :data:`READ_SIZE` bytes, at most :data:`WRITE_CAP` bytes sent,
  at most :data:`ACCEPTS_PER_TURN` accepts. One busy client cannot starve the rest.
* **Writes are appends.** :meth:`Connection.write` appends the shared ``bytes`` object
  of a broadcast to the connection's output list and puts the connection on the pending
  list the first time in a turn (Redis' ``clients_pending_write``). ``before_sleep``
  flushes each pending connection with one ``send`` (or one gather ``sendmsg``), so K
  messages to one member in one turn cost one syscall, not K.
* **EVENT_WRITE only while bytes remain** (as in asyncio's selector transport): a
  connection whose flush was partial asks for write readiness and stays off the pending
  list until the socket can take more; once drained the interest is dropped. The mask
  is derived from state and ``modify`` is called only when it changes.
* **Never close during a fan-out.** A connection that fails or exceeds its output limit
  is marked ``dead`` and queued; writes to it are dropped; it is unregistered, closed
  and reported to the service (which tells its room) in ``before_sleep``. So the room
  dict being iterated by a broadcast never changes under it.
* **Backpressure, not punishment.** A client over its flood budget is simply not read
  from until its bucket refills; its excess waits in its own TCP buffers.
"""

from __future__ import annotations

import heapq
import logging
import selectors
import signal
import socket
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from chatd.config import Config
from chatd.hub import Member
from chatd.limits import TokenBucket
from chatd.protocol import SERVER_FULL, Item, LineDecoder
from chatd.service import ChatService, DisconnectReason
from chatd.sockopts import (
    FD_EXHAUSTED,
    configure_socket,
    peer_error,
    raise_fd_limit,
    reset_on_close,
)

log = logging.getLogger("chatd.reactor")

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

#: Bytes read from one connection per ready event: enough for a burst of ~1000 short
#: lines in one syscall, small enough that one flooder cannot hog a turn.
READ_SIZE = 64 * 1024
#: Bytes sent to one connection per turn; the rest waits for the next turn.
WRITE_CAP = 256 * 1024
#: Buffers handed to one ``sendmsg``; Linux' IOV_MAX is 1024.
IOV_LIMIT = 512
#: New connections taken per turn, so a connect storm cannot starve chatting clients.
ACCEPTS_PER_TURN = 64
#: Pause before accepting again after EMFILE/ENFILE (the listener stays readable and
#: a naive loop would spin on the failing accept).
ACCEPT_BACKOFF = 0.2
#: How long shutdown waits for pending output to drain before closing anyway.
SHUTDOWN_FLUSH_SECONDS = 2.0


_LISTENER = "listener"
_WAKEUP = "wakeup"


class Connection:
    """A client socket, its input decoder and its output queue.

    The service calls :meth:`write` and :meth:`close_soon`; everything else belongs to
    the :class:`Reactor`.
    """

    __slots__ = (
        "reactor",
        "sock",
        "fd",
        "member",
        "decoder",
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
        "held",
        "bucket",
        "last_active",
        "soft_since",
        "limit",
        "accepted_at",
        "eof",
        "__weakref__",
    )

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        self.reactor = reactor
        self.sock = sock
        self.fd = sock.fileno()
        self.member: Member = None  # type: ignore[assignment]  # set right after
        self.decoder = LineDecoder(reactor.config.max_line)
        #: Output queue: shared ``bytes`` objects, oldest first. A list, not a deque:
        #: an empty list is 56 bytes and an empty deque 760, at 10,000 idle clients.
        self.out: list[bytes] = []
        #: Bytes of ``out[0]`` already sent.
        self.out_offset = 0
        self.out_bytes = 0
        #: On the reactor's pending list, or waiting for EVENT_WRITE: either way a
        #: flush is already coming, so ``write`` need not queue it again.
        self.pending = False
        self.want_write = False
        self.mask = 0
        #: Graceful close requested: stop reading, flush, then close.
        self.closing = False
        #: Abortive close requested: output discarded, closed before the next sleep.
        self.dead = False
        self.closed = False
        self.reason = DisconnectReason.EOF
        self.detail = ""
        #: Not reading because the flood bucket is empty.
        self.paused = False
        #: An item read but not yet handled because the bucket was empty.
        self.held: Item | None = None
        cfg = reactor.config
        self.bucket = (
            TokenBucket(cfg.flood_rate, cfg.flood_burst, reactor.now)
            if cfg.flood_rate > 0
            else None
        )
        self.last_active = reactor.now
        #: When output first rose above the soft limit (None while below it).
        self.soft_since: float | None = None
        #: Output size past which :meth:`write` takes its slow path.
        self.limit = reactor.write_threshold
        self.accepted_at = 0.0
        #: The peer closed its side; close once the lines held by flood control are done.
        self.eof = False

    # ----------------------------------------------------------------- service side

    def write(self, data: bytes) -> None:
        """Queue ``data``; the reactor flushes it before it next sleeps."""
        if self.dead:
            return
        self.out.append(data)
        size = self.out_bytes + len(data)
        self.out_bytes = size
        if not self.pending:
            self.pending = True
            self.reactor.pending.append(self)
        if size > self.limit:
            self.reactor.over_limit(self, size)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """Stop reading, flush what is queued, then close (see :meth:`Reactor.finish`)."""
        if self.closing or self.dead:
            return
        self.closing = True
        self.reason = reason
        self.detail = detail
        self.reactor.update_mask(self)
        if not self.pending:
            self.reactor.to_close.append(self)

    def abort(self, reason: DisconnectReason) -> None:
        """Drop the connection before the next sleep, discarding its output."""
        if self.dead:
            return
        self.dead = True
        self.reason = reason
        self.out.clear()
        self.out_bytes = 0
        self.reactor.to_close.append(self)


class Reactor:
    """The event loop: owns the selector, the listener, every connection and the timers."""

    def __init__(self, config: Config, listener: socket.socket) -> None:
        self.config = config
        self.service = ChatService(config)
        self.now = time.monotonic()
        self.listener = listener
        listener.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        #: Connections with output queued this turn (see :meth:`before_sleep`).
        self.pending: list[Connection] = []
        #: Connections to free before the next sleep.
        self.to_close: list[Connection] = []
        self._timers: list[tuple[float, int, Callable[..., None], Any]] = []
        #: Connections waiting for a nickname, in accept (= deadline) order.
        self._registering: deque[weakref.ref[Connection]] = deque()
        self._timer_seq = 0
        self.stopping = False
        self._accepting = False
        self._emfile_logged = False
        self.soft_limit = config.soft_limit
        self.write_threshold = config.write_threshold
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
        for key, mask in events:
            conn = key.data
            if conn.__class__ is Connection:
                try:
                    if mask & EVENT_READ and not (conn.closed or conn.dead):
                        self.on_readable(conn)
                    if mask & EVENT_WRITE and not (conn.closed or conn.dead):
                        self.on_writable(conn)
                except Exception:
                    # A bug must cost one connection, not the server.
                    log.exception("error handling %s; dropping it", conn.member)
                    conn.abort(DisconnectReason.RESET)
            elif conn is _LISTENER:
                self.on_acceptable()
            else:
                self._drain_wakeup()
        self._run_timers()
        self.before_sleep()

    def _timeout(self) -> float | None:
        if self.pending or self.to_close or self.stopping:
            return 0
        deadline = self._timers[0][0] if self._timers else None
        if self._registering:
            head = self._registering[0]()
            expires = head.accepted_at + self.config.register_timeout if head else self.now
            deadline = expires if deadline is None else min(deadline, expires)
        if deadline is None:
            return None
        return max(0.0, deadline - time.monotonic())

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    # ----------------------------------------------------------------- timers

    def call_at(self, when: float, callback: Callable[..., None], arg: Any) -> None:
        """Run ``callback(arg)`` at monotonic time ``when`` (callbacks check liveness)."""
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, callback, arg))

    def _run_timers(self) -> None:
        if self._registering:
            self._expire_registrations()
        timers = self._timers
        now = self.now
        while timers and timers[0][0] <= now:
            _, _, callback, arg = heapq.heappop(timers)
            callback(arg)

    # ----------------------------------------------------------------- accepting

    def _start_accepting(self) -> None:
        if not self._accepting:
            self.selector.register(self.listener, EVENT_READ, _LISTENER)
            self._accepting = True

    def _stop_accepting(self) -> None:
        if self._accepting:
            self.selector.unregister(self.listener)
            self._accepting = False

    def _resume_accepting(self, _: object) -> None:
        if not self.stopping:
            self._start_accepting()

    def on_acceptable(self) -> None:
        """Accept up to :data:`ACCEPTS_PER_TURN` connections."""
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in FD_EXHAUSTED:
                    # Linux keeps reporting the listener ready; step back and retry.
                    if not self._emfile_logged:
                        log.warning("accept failed (%s); pausing new connections", exc.strerror)
                        self._emfile_logged = True
                    self.service.stats["accept_fd_exhausted"] += 1
                    self._stop_accepting()
                    self.call_at(self.now + ACCEPT_BACKOFF, self._resume_accepting, None)
                    return
                log.debug("accept failed: %s", exc)  # e.g. ECONNABORTED: the peer gave up
                continue
            self._emfile_logged = False
            self._add_connection(sock)

    def _add_connection(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if len(self.conns) >= self.config.max_clients:
            try:
                sock.send(SERVER_FULL)
            except OSError:
                pass
            sock.close()
            self.service.refuse_full()
            return
        configure_socket(sock)
        conn = Connection(self, sock)
        self.conns[conn.fd] = conn
        self.update_mask(conn)
        conn.member = self.service.open(conn)
        if self.config.register_timeout > 0:
            # Deadlines are accept time + a constant, so accept order is deadline order:
            # a FIFO replaces a timer per connection (8 bytes each instead of ~250).
            # Weak references, so a connection that closes early is freed at once.
            conn.accepted_at = self.now
            self._registering.append(weakref.ref(conn))
        if self.config.idle_timeout > 0:
            self.call_at(self.now + self.config.idle_timeout, self._idle_deadline, conn)

    def _expire_registrations(self) -> None:
        """Close connections that still have no nickname after --register-timeout."""
        queue = self._registering
        expired_before = self.now - self.config.register_timeout
        while queue:
            conn = queue[0]()
            if conn is not None and conn.accepted_at > expired_before:
                break
            queue.popleft()
            if conn is None or conn.closed or conn.closing or conn.dead:
                continue
            if conn.member.nick is not None:
                continue
            self.service.time_out(conn.member, DisconnectReason.REGISTER_TIMEOUT)

    def _idle_deadline(self, conn: Connection) -> None:
        if conn.closed or conn.closing or conn.dead:
            return
        deadline = conn.last_active + self.config.idle_timeout
        if conn.member.nick is None or deadline > self.now:
            self.call_at(max(deadline, self.now + 1.0), self._idle_deadline, conn)
            return
        self.service.time_out(conn.member, DisconnectReason.IDLE)

    # ----------------------------------------------------------------- reading

    def on_readable(self, conn: Connection) -> None:
        """One ``recv``, then hand the complete lines to the service."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            conn.abort(DisconnectReason.RESET)
            return
        if not data:
            # EOF (perhaps only a half-close): a last unterminated line still counts,
            # and pending output is still delivered before we close.
            conn.eof = True
            if conn.decoder.buffered:
                conn.decoder.feed(b"\n")
                self._process_input(conn)
            if not conn.paused:  # else _resume closes once the held lines are handled
                conn.close_soon(DisconnectReason.EOF)
            return
        self.service.stats["bytes_in"] += len(data)
        conn.last_active = self.now
        conn.decoder.feed(data)
        self._process_input(conn)

    def _process_input(self, conn: Connection) -> None:
        """Pull the decoded items, charging one flood token each, and act on them."""
        items: list[Item] = []
        bucket = conn.bucket
        now = self.now
        decoder = conn.decoder
        item = conn.held
        conn.held = None
        while True:
            if item is None:
                item = decoder.next_item()
                if item is None:
                    break
            if bucket is not None and not bucket.take(now):
                conn.held = item
                self._pause(conn, bucket.wait(now))
                break
            items.append(item)
            item = None
        if items and not self.service.handle_items(conn.member, items):
            conn.held = None  # the client quit: ignore whatever followed

    def _pause(self, conn: Connection, delay: float) -> None:
        if not conn.paused:
            conn.paused = True
            self.service.stats["flood_pauses"] += 1
            self.update_mask(conn)
        self.call_at(self.now + max(delay, 0.001), self._resume, conn)

    def _resume(self, conn: Connection) -> None:
        if conn.closed or conn.dead or not conn.paused:
            return
        if peer_error(conn.sock):
            # Reset while we were not reading: drop it and the lines it left behind.
            conn.abort(DisconnectReason.RESET)
            return
        conn.paused = False
        if not conn.closing:
            self._process_input(conn)
        if conn.eof and not conn.paused:
            conn.close_soon(DisconnectReason.EOF)
        self.update_mask(conn)

    # ----------------------------------------------------------------- writing

    def over_limit(self, conn: Connection, size: int) -> None:
        """Slow path of :meth:`Connection.write`: output above the soft or hard limit."""
        if size > self.config.max_sendq:
            self.service.stats["sendq_drops_bytes"] += size
            conn.abort(DisconnectReason.SENDQ)
        elif self.soft_limit and conn.soft_since is None:
            conn.soft_since = since = self.now
            self.call_at(since + self.config.sendq_soft_seconds, self._soft_deadline, (conn, since))

    def _soft_deadline(self, arg: tuple[Connection, float]) -> None:
        conn, since = arg
        if conn.closed or conn.dead or conn.soft_since != since:
            return
        conn.abort(DisconnectReason.SOFT_SENDQ)

    def on_writable(self, conn: Connection) -> None:
        self.flush(conn)

    def flush(self, conn: Connection) -> None:
        """Send what the socket takes (at most :data:`WRITE_CAP`), keep the rest."""
        out = conn.out
        if not out:
            conn.pending = False
            self._after_flush(conn)
            return
        try:
            if len(out) == 1 and not conn.out_offset:
                data = out[0]
                sent = conn.sock.send(
                    data if len(data) <= WRITE_CAP else memoryview(data)[:WRITE_CAP]
                )
            else:
                sent = conn.sock.sendmsg(_gather(out, conn.out_offset))
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            conn.pending = False
            conn.abort(DisconnectReason.RESET)
            return
        if sent:
            conn.out_bytes -= sent
            if conn.out_bytes == 0:
                out.clear()
                conn.out_offset = 0
            else:
                offset = conn.out_offset + sent
                done = 0
                while offset >= len(out[done]):
                    offset -= len(out[done])
                    done += 1
                del out[:done]  # at most IOV_LIMIT entries were sent
                conn.out_offset = offset
            if conn.soft_since is not None and conn.out_bytes <= self.soft_limit:
                conn.soft_since = None
        conn.pending = bool(out)
        self._after_flush(conn)

    def _after_flush(self, conn: Connection) -> None:
        want = bool(conn.out)
        if want != conn.want_write:
            conn.want_write = want
            self.update_mask(conn)
        if not want and conn.closing:
            self.to_close.append(conn)

    def before_sleep(self) -> None:
        """Free the connections marked to close, then flush each pending one once."""
        while self.to_close or self.pending:
            while self.to_close:
                closing, self.to_close = self.to_close, []
                for conn in closing:
                    self.finish(conn)
            pending, self.pending = self.pending, []
            for conn in pending:
                if not conn.closed and not conn.dead and not conn.want_write:
                    self.flush(conn)

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

        A graceful close (quit, EOF, timeouts) has flushed its output already; we shut
        down our side and read away what the peer sent after its last line, so the
        kernel sends FIN rather than a reset that could destroy that output in flight.
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
        sock = conn.sock
        if conn.dead:
            reset_on_close(sock)
        else:
            try:
                sock.shutdown(socket.SHUT_WR)
                sock.recv(READ_SIZE)  # one bounded read empties a typical buffer
            except OSError:
                pass
        sock.close()
        self.service.close(conn.member, conn.reason, conn.detail)

    def _shutdown(self) -> None:
        """Tell everyone, stop accepting, flush for a bounded time, close the rest."""
        self._stop_accepting()
        self.listener.close()
        self.service.shutdown()
        for conn in list(self.conns.values()):
            conn.close_soon(DisconnectReason.SHUTDOWN)
        deadline = time.monotonic() + SHUTDOWN_FLUSH_SECONDS
        self.before_sleep()
        while self.conns and time.monotonic() < deadline:
            events = self.selector.select(max(0.0, deadline - time.monotonic()))
            self.now = time.monotonic()
            for key, mask in events:
                conn = key.data
                if conn.__class__ is Connection and mask & EVENT_WRITE and not conn.closed:
                    self.flush(conn)
                elif conn is _WAKEUP:
                    self._drain_wakeup()
            self.before_sleep()
        for conn in list(self.conns.values()):
            conn.abort(DisconnectReason.SHUTDOWN)
        self.before_sleep()
        self.service.log_stats()


def _gather(out: list[bytes], offset: int) -> list[bytes | memoryview]:
    """Up to :data:`IOV_LIMIT` buffers and about :data:`WRITE_CAP` bytes from the queue head."""
    bufs: list[bytes | memoryview] = []
    total = 0
    for chunk in out:
        if offset:
            piece: bytes | memoryview = memoryview(chunk)[offset:]
            offset = 0
        else:
            piece = chunk
        bufs.append(piece)
        total += len(piece)
        if total >= WRITE_CAP or len(bufs) >= IOV_LIMIT:
            break
    return bufs


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve(config: Config, listener: socket.socket) -> None:
    """Entry point used by the command line."""
    Reactor(config, listener).run()
