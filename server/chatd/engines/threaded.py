"""The threaded engine: the classic thread-per-client design, done correctly.

Kept on purpose as the baseline the benchmarks compare against. Each client has a thread
that blocks in ``recv``; one lock guards the hub; a broadcast calls blocking ``send`` on
every recipient's socket while holding that lock, so one slow reader holds up every
sender in the server until its send times out (``--send-timeout`` for the whole message,
enforced with ``SO_SNDTIMEO`` and a deadline), after which that reader is dropped.

The service policy is the same as in the other engines, because it lives in the session:
the chat lines of one read go out as one batch, flood control decides how much of a read
is handled now (the thread then sleeps instead of reading), and timeouts are the
session's deadlines (the thread wakes at least every :data:`POLL_SECONDS` to check them).

What it does *not* have, by design: an output buffer of its own (the kernel's socket
buffer is the only queue, so ``--max-sendq`` and the soft limit do not apply; the send
timeout plays their part) and a bound on threads beyond ``--max-clients``.

Shutdown is bounded by :data:`SHUTDOWN_SECONDS` even with stuck readers: sockets whose
send buffer is full are shut at once, which fails the send a thread may be blocked in
while holding the hub lock; the goodbye notices are then sent without blocking.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import struct
import threading
import time

from chatd.net.accepting import AcceptGuard, refuse
from chatd.net.listeners import Listener, peer_host
from chatd.net.sockopts import (
    configure_socket,
    full_send_buffers,
    peer_error,
    raise_fd_limit,
    reset_on_close,
)
from chatd.net.transport import DisconnectReason, SessionProtocol
from chatd.service import ChatService

log = logging.getLogger("chatd.threaded")

#: Bytes per ``recv``, as in the reactor.
READ_SIZE = 64 * 1024
#: How often a blocked ``recv`` wakes to check the session's deadlines.
POLL_SECONDS = 1.0
#: Shutdown, from the signal to exit, at most (PROTOCOL.md: "flushes what it can").
SHUTDOWN_SECONDS = 2.0


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class ThreadedConnection:
    """One client socket in blocking mode and the thread that reads it."""

    def __init__(
        self, server: ThreadedServer, sock: socket.socket, session: SessionProtocol
    ) -> None:
        self.server = server
        self.sock = sock
        self.session: SessionProtocol | None = session
        self.dead = False
        self.closing = False
        #: Why it ends; the first reason given wins.
        self.reason: DisconnectReason | None = None
        self.detail = ""
        #: Monotonic time the session wants ``on_timer`` (0: none).
        self.timer_at = 0.0
        #: At shutdown, sends must not block: what does not fit is dropped.
        self.nonblocking_sends = False
        #: A send failed because the peer is gone; its reader thread finds out why.
        self.broken = False
        sock.setblocking(True)
        configure_socket(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(server.config.send_timeout))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(POLL_SECONDS))

    # ----------------------------------------------------------------- transport
    # Called with the hub lock held (from any client's thread).

    def write(self, data: bytes) -> None:
        """Blocking send of all of ``data`` within --send-timeout, or drop the reader.

        ``SO_SNDTIMEO`` alone bounds each ``send`` call only while it makes no progress;
        a reader that drains a trickle would keep every sender waiting indefinitely, so
        the loop also enforces a deadline for the whole message.
        """
        if self.dead or self.broken:
            return
        sock = self.sock
        try:
            if self.nonblocking_sends:
                sock.send(data, socket.MSG_DONTWAIT)
                return
            sent = sock.send(data)
            if sent == len(data):
                return
            timeout = self.server.config.send_timeout
            deadline = time.monotonic() + timeout
            view = memoryview(data)[sent:]
            while view:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(remaining))
                view = view[sock.send(view) :]
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(timeout))
        except (BlockingIOError, TimeoutError):
            self.kill(DisconnectReason.SEND_TIMEOUT)
        except OSError:
            # The peer is gone (EPIPE, ECONNRESET). Stop writing, but let its thread read
            # what it sent before it went: a /quit that arrived before the reset counts.
            self.broken = True

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        if self.reason is None:
            self.reason = reason
            self.detail = detail

    def call_at(self, when: float) -> None:
        if not self.timer_at or when < self.timer_at:
            self.timer_at = when

    def kill(self, reason: DisconnectReason) -> None:
        """Mark dead and wake the owner thread; it reports the loss to the session."""
        if self.reason is None:
            self.reason = reason
        self.dead = True
        reset_on_close(self.sock)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # ----------------------------------------------------------------- the thread

    def run(self) -> None:
        server = self.server
        lock = server.lock
        session = self.session
        assert session is not None
        with lock:
            session.connection_made(self, time.monotonic())
        try:
            while not self.closing and not self.dead:
                now = time.monotonic()
                if self.timer_at and now >= self.timer_at:
                    with lock:
                        self.timer_at = 0.0
                        session.on_timer(now)
                    continue
                try:
                    data = self.sock.recv(READ_SIZE)
                except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO: check deadlines
                    continue
                except OSError:
                    if self.reason is None:
                        self.reason = DisconnectReason.RESET
                    break
                if self.dead:
                    break
                with lock:
                    if data:
                        session.data_received(data)
                    else:
                        session.eof_received()
                    delay = session.process(time.monotonic())
                while delay is not None and not self.closing and not self.dead:
                    # Flood control: this thread sleeps, so its client is not read.
                    time.sleep(delay)
                    if self.broken or peer_error(self.sock):
                        # Reset while held back: drop it and the lines it left behind.
                        self.kill(DisconnectReason.RESET)
                        break
                    now = time.monotonic()
                    with lock:
                        if self.timer_at and now >= self.timer_at:
                            self.timer_at = 0.0
                            session.on_timer(now)
                        delay = session.process(now) if not self.closing else None
                if not data:
                    break
        finally:
            self._finish()

    def _finish(self) -> None:
        server = self.server
        graceful = not self.dead
        if graceful:
            try:  # FIN after our output (every send so far was blocking, so it is out)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        with server.conns_lock:
            server.conns.discard(self)
        session, self.session = self.session, None
        if session is not None:  # the hub learns at once, not after the lingering read
            with server.lock:
                session.connection_lost(self.reason or DisconnectReason.EOF, self.detail)
        if graceful:
            try:  # read away what the peer sent after its last line, so no RST kills ours
                self.sock.settimeout(0.2)
                self.sock.recv(READ_SIZE)
            except OSError:
                pass
        self.dead = True
        self.sock.close()


class ThreadedServer:
    """Accepts in the main thread; one daemon thread per client."""

    def __init__(self, service: ChatService, listeners: list[Listener]) -> None:
        self.service = service
        self.config = service.config
        self.listeners = listeners
        #: Guards the hub, the sessions and the counters.
        self.lock = threading.Lock()
        #: Guards only the set of connections; never held while doing I/O.
        self.conns_lock = threading.Lock()
        self.conns: set[ThreadedConnection] = set()
        self.stopping = False

    def run(self) -> None:
        raise_fd_limit()
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
        guard = AcceptGuard(self.service.stats)
        try:
            while not self.stopping:
                # Wakes twice a second to notice a stop request.
                for key, _ in selector.select(0.5):
                    listener = key.data
                    try:
                        sock, addr = listener.sock.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError as exc:
                        with self.lock:
                            pause = guard.failed(exc)
                        if pause is not None:
                            time.sleep(pause)  # this thread only accepts: it blocks no client
                        continue
                    guard.accepted()
                    self._add(listener, sock, peer_host(addr))
            self._shutdown()
        finally:
            selector.close()
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    def _add(self, listener: Listener, sock: socket.socket, host: str) -> None:
        with self.lock:
            session = self.service.accept(listener.dialect, host, time.monotonic())  # type: ignore[arg-type]
        if isinstance(session, bytes):
            refuse(sock, session)
            return
        conn = ThreadedConnection(self, sock, session)
        with self.conns_lock:
            self.conns.add(conn)
        threading.Thread(target=conn.run, name="chatd-client", daemon=True).start()

    def _shutdown(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_SECONDS
        for listener in self.listeners:
            listener.sock.close()
        with self.conns_lock:
            conns = list(self.conns)
        # A thread blocked sending to a stuck reader holds the hub lock for up to
        # --send-timeout per recipient: shut those sockets first, which fails its send.
        full = set(full_send_buffers([conn.sock for conn in conns]))
        for conn in conns:
            if conn.sock in full:
                conn.kill(DisconnectReason.SHUTDOWN)
        if self.lock.acquire(timeout=max(0.0, deadline - time.monotonic() - 0.5)):
            try:
                for conn in conns:
                    conn.nonblocking_sends = True
                self.service.shutdown()
                for conn in conns:
                    conn.close_soon(DisconnectReason.SHUTDOWN)
            finally:
                self.lock.release()
        else:
            log.warning("shutdown: the hub stayed busy; closing without goodbyes")
            for conn in conns:
                conn.close_soon(DisconnectReason.SHUTDOWN)
        for conn in conns:
            try:  # wake the blocked recv; queued output still goes out before the FIN
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in threading.enumerate():
            if thread.name == "chatd-client":
                thread.join(max(0.0, deadline - time.monotonic()))
        if self.lock.acquire(timeout=max(0.0, deadline - time.monotonic()) + 0.1):
            try:
                self.service.log_stats()
            finally:
                self.lock.release()


def serve(service: ChatService, listeners: list[Listener]) -> None:
    ThreadedServer(service, listeners).run()
