"""A plain connection: its reads, its output queue, its flush, its output limits, its close.

:class:`Connection` is the transport of one session and the selector data of its socket.
The rules it follows (writes are appends, a flush sends until the kernel says no, output
limits measure the kernel, never close during a fan-out) are the loop's, described in
:mod:`chatd.engines.reactor.loop`.
"""

from __future__ import annotations

import logging
import socket
import weakref
from typing import TYPE_CHECKING

from chatd.engines.reactor.handler import EVENT_READ, EVENT_WRITE, READ_SIZE, Handler
from chatd.engines.reactor.lingering import linger
from chatd.net.sockopts import peer_error, reset_on_close
from chatd.net.transport import DisconnectReason, SessionProtocol

if TYPE_CHECKING:
    from chatd.engines.reactor.loop import Reactor

log = logging.getLogger("chatd.reactor")

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


class Connection(Handler):
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

    def start(self) -> None:
        """Just accepted: register for reading and greet (the session queues its greeting)."""
        reactor = self.reactor
        reactor.conns[self.fd] = self
        self.update_mask()
        session = self.session
        assert session is not None
        session.connection_made(self, reactor.now)

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
            out[-1] += data
        else:
            out.append(bytearray(data))
        self.out_bytes += size
        if self.want_write:
            # The kernel refused this connection's output already and has not asked for
            # more: everything queued now is refused output, so the limits apply here.
            if self.out_bytes > self.reactor.write_threshold:
                self.over_limit()
        elif not self.pending:
            self.pending = True
            self.reactor.pending.append(self)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """Stop reading, flush what is queued, then close (see :meth:`finish`)."""
        if self.closing or self.dead:
            return
        self.closing = True
        self.reason = reason
        self.detail = detail
        self.update_mask()
        if not self.out:
            self.reactor.to_close[self] = None

    def call_at(self, when: float) -> None:
        self.reactor.call_at(when, _session_timer, weakref.ref(self))

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
        self.reactor.to_close[self] = None

    # ----------------------------------------------------------------- events

    def on_ready(self, mask: int) -> None:
        """Read, then flush if the kernel asked for output, as ``mask`` says."""
        try:
            if mask & EVENT_READ and not (self.closed or self.dead):
                self.on_readable()
            if mask & EVENT_WRITE and not (self.closed or self.dead):
                self.flush()
        except Exception:
            # A bug must cost one connection, not the server.
            log.exception("error handling a connection; dropping it")
            self.abort(DisconnectReason.RESET)

    def on_ready_at_shutdown(self, mask: int) -> None:
        """Shutdown reads nothing more: flush when the kernel takes output again."""
        if mask & EVENT_WRITE and not self.closed:
            self.flush()

    # ----------------------------------------------------------------- reading

    def on_readable(self) -> None:
        """One ``recv``, then let the session handle what its flood budget allows."""
        try:
            data = self.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort(DisconnectReason.RESET)
            return
        session = self.session
        assert session is not None
        if data:
            session.data_received(data)
        else:
            # EOF (perhaps only a half-close): a last unterminated line still counts,
            # and pending output is still delivered before we close.
            self.eof = True
            session.eof_received()
            self.update_mask()
        self._process()

    def _process(self) -> None:
        session = self.session
        assert session is not None
        reactor = self.reactor
        delay = session.process(reactor.now)
        if delay is not None and not (self.closing or self.dead):
            if not self.paused:
                self.paused = True
                self.update_mask()
            reactor.call_at(reactor.now + delay, _resume, weakref.ref(self))

    # ----------------------------------------------------------------- writing

    def schedule(self) -> None:
        """Flush before the next sleep (unless waiting for EVENT_WRITE)."""
        if not self.pending and not self.want_write:
            self.pending = True
            self.reactor.pending.append(self)

    def flush(self) -> None:
        """Send until the kernel refuses or the turn's budget is spent; then check limits."""
        out = self.out
        sock = self.sock
        budget = WRITE_BUDGET
        refused = False
        while out and budget > 0:
            try:
                # Views of a bytearray tail die with this statement (reference counting),
                # so a later write() may extend it again.
                if len(out) == 1:
                    chunk = out[0]
                    offset = self.out_offset
                    if offset or len(chunk) > budget:
                        attempted = min(len(chunk) - offset, budget)
                        sent = sock.send(memoryview(chunk)[offset : offset + budget])
                    else:
                        attempted = len(chunk)
                        sent = sock.send(chunk)
                else:
                    bufs, attempted = _gather(out, self.out_offset, budget)
                    sent = sock.sendmsg(bufs)
                    del bufs
            except (BlockingIOError, InterruptedError):
                refused = True
                break
            except OSError:
                self._read_before_reset()
                self.abort(DisconnectReason.RESET)
                return
            budget -= sent
            _consume(self, sent)
            if sent < attempted:
                refused = True  # a short send: the socket buffer is full
                break
        self.pending = False
        if out and not refused and not self.dead:
            self.pending = True
            self.reactor.pending.append(self)  # the budget stopped us: go on next turn
        if not self._settle(refused):
            return
        if not out and self.closing:
            self.reactor.to_close[self] = None

    def _read_before_reset(self) -> None:
        """A send failed: the peer has reset. What it sent before its reset is still in
        the kernel's receive queue (Linux hands it out before the error), so it is read
        once: a ``/quit`` sent just before a close that resets (input the client left
        unread) counts as the quit it was, whether the reset showed first on a read or,
        as here, on a write (the room's lines, flushed before the next poll). One
        ``recv``, so the cost is bounded like any read."""
        if self.closing or self.dead or self.paused or self.eof:
            return
        try:
            self.on_readable()
        except Exception:
            log.exception("error handling a connection; dropping it")

    def _settle(self, refused: bool) -> bool:
        """After a flush: the output limits, then write interest. False: dropped."""
        reactor = self.reactor
        if refused:
            if self.out_bytes > reactor.write_threshold:
                self.over_limit()
                if self.dead:
                    return False
        elif self.out_bytes > BACKSTOP_FACTOR * reactor.max_sendq:
            reactor.service.stats["sendq_drops_bytes"] += self.out_bytes
            self.abort(DisconnectReason.SENDQ)
            return False
        if self.soft_since is not None and self.out_bytes <= reactor.soft_limit:
            self.soft_since = None
        if refused != self.want_write:
            self.want_write = refused
            self.update_mask()
        return True

    def over_limit(self) -> None:
        """Output the kernel refused is above the soft or the hard limit."""
        reactor = self.reactor
        size = self.out_bytes
        if size > reactor.max_sendq:
            reactor.service.stats["sendq_drops_bytes"] += size
            self.abort(DisconnectReason.SENDQ)
        elif reactor.soft_limit and self.soft_since is None:
            self.soft_since = since = reactor.now
            seconds = reactor.config.sendq_soft_seconds
            reactor.call_at(since + seconds, _soft_deadline, (weakref.ref(self), since))

    def update_mask(self) -> None:
        """Register exactly the interest the connection's state calls for."""
        if self.closed:
            return
        want = 0
        if not (self.paused or self.closing or self.dead or self.eof):
            want = EVENT_READ
        if self.want_write and not self.dead:
            want |= EVENT_WRITE
        if want == self.mask:
            return
        selector = self.reactor.selector
        if want == 0:
            selector.unregister(self.sock)
        elif self.mask == 0:
            selector.register(self.sock, want, self)
        else:
            selector.modify(self.sock, want, self)
        self.mask = want

    # ----------------------------------------------------------------- closing

    def finish(self) -> None:
        """Unregister, close and report the connection. Runs only from before_sleep.

        A graceful close (quit, EOF, timeouts) has flushed its output to the kernel
        already; we shut down our side and, unless the server is stopping, leave the
        socket lingering (:func:`~chatd.engines.reactor.lingering.linger`): read and
        discarded until the peer's EOF, for at most
        :data:`~chatd.net.sockopts.LINGER_SECONDS` and
        :data:`~chatd.net.sockopts.LINGER_BYTES`. Closing with unread input would make
        the kernel send a reset and drop what it had not sent yet, goodbye included.
        """
        if self.closed:
            return
        if self.closing and not self.dead and self.out:
            return  # still flushing; flush() queues it again once drained
        self.closed = True
        reactor = self.reactor
        if self.mask:
            reactor.selector.unregister(self.sock)
            self.mask = 0
        reactor.conns.pop(self.fd, None)
        # The hub learns before the peer can see the close, as on every engine: a peer
        # that saw it and asks on another connection is answered by a hub that knows.
        # (Nothing else runs in between here; the threaded engine is why it is a rule.)
        session, self.session = self.session, None
        if session is not None:
            try:
                session.connection_lost(self.reason, self.detail)
            except Exception:  # a bug costs this connection only; it is closed below
                log.exception("error reporting a closed connection")
        sock = self.sock
        if self.dead:
            reset_on_close(sock)
            sock.close()
        else:
            linger(reactor, sock)
        self._release()

    def _release(self) -> None:
        """Closed: let go of the buffers (the object may live on in a timer's weakref)."""
        self.out = []


# Timer callbacks. Timers hold weak references (see the loop's docstring), so these are
# functions of a weakref, not bound methods that would keep the connection alive.


def _session_timer(ref: weakref.ref[Connection]) -> None:
    conn = ref()
    if conn is not None and conn.session is not None and not (conn.closed or conn.dead):
        conn.session.on_timer(conn.reactor.now)


def _resume(ref: weakref.ref[Connection]) -> None:
    conn = ref()
    if conn is None or conn.closed or conn.dead or not conn.paused:
        return
    if peer_error(conn.sock):
        # Reset while we were not reading: drop it and the lines it left behind.
        conn.abort(DisconnectReason.RESET)
        return
    conn.paused = False
    conn._process()
    conn.update_mask()


def _soft_deadline(arg: tuple[weakref.ref[Connection], float]) -> None:
    ref, since = arg
    conn = ref()
    if conn is None or conn.closed or conn.dead or conn.soft_since != since:
        return
    if conn.out_bytes <= conn.reactor.soft_limit:
        conn.soft_since = None
        return
    conn.abort(DisconnectReason.SOFT_SENDQ)


# ----------------------------------------------------------------- the output queue


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
