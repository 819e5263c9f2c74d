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

TLS (:class:`TLSThreadedConnection`): the client's thread runs the handshake right after
accept, within ``--tls-handshake-timeout`` in all (a total deadline, so a peer that
trickles bytes cannot stretch it), and only then makes the session. It does not use
``SSLContext.wrap_socket``: a wrapped socket would be read by the client's thread while
other threads write to it, and an OpenSSL ``SSL`` object must never be used by two
threads at once. Instead the raw socket is read and written exactly as for a plain
client, and the bytes pass through a :class:`~chatd.net.tls.TLSStream` that is only
touched with the hub lock held (writes already run under it). A graceful close sends
close_notify, within the send deadline.
"""

from __future__ import annotations

import logging
import selectors
import signal
import socket
import ssl
import struct
import threading
import time

from chatd.config import Config
from chatd.net import signals
from chatd.net.accepting import AcceptGuard, refuse
from chatd.net.listeners import Listener, peer_host
from chatd.net.sockopts import (
    LINGER_BYTES,
    LINGER_SECONDS,
    configure_socket,
    full_send_buffers,
    lingers,
    peer_error,
    raise_fd_limit,
    reset_on_close,
)
from chatd.net.tls import READ_SIZE as TLS_READ_SIZE
from chatd.net.tls import TLSStream
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
        #: Input waits in a layer above the socket: hand it over before the next recv.
        self.buffered_input = False
        sock.setblocking(True)
        configure_socket(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(server.config.send_timeout))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(POLL_SECONDS))

    # ----------------------------------------------------------------- transport
    # Called with the hub lock held (from any client's thread).

    def write_raw(self, data: bytes) -> None:
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

    #: A plain connection sends what the session writes as it is.
    write = write_raw

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

    def start(self) -> bool:
        """Get the connection ready for chat before the session is made (TLS: handshake)."""
        return True

    def received(self, data: bytes | None, session: SessionProtocol) -> bool:
        """Hand what ``recv`` returned to the session (hub lock held); True at its end."""
        if data is None:
            return False
        if data:
            session.data_received(data)
            return False
        session.eof_received()
        return True

    def closing_bytes(self) -> bytes:
        """What to send after the last output of a graceful close (TLS: close_notify)."""
        return b""

    def say_goodbye(self) -> None:
        """At shutdown, hub lock held, before the socket is shut: send closing_bytes."""

    def run(self) -> None:
        server = self.server
        lock = server.lock
        session = self.session
        assert session is not None
        try:
            if not self.start():
                return
            with lock:
                session.connection_made(self, time.monotonic())
            while not self.closing and not self.dead:
                now = time.monotonic()
                if self.timer_at and now >= self.timer_at:
                    with lock:
                        self.timer_at = 0.0
                        session.on_timer(now)
                    continue
                if self.buffered_input:
                    # TLS: input arrived with the handshake; it is in the stream, where
                    # recv cannot see it.
                    self.buffered_input = False
                    data = None
                else:
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
                    ended = self.received(data, session)
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
                if ended:
                    break
        finally:
            self._finish()

    def _finish(self) -> None:
        server = self.server
        with server.conns_lock:
            server.conns.discard(self)
        # The hub learns first, before the peer can see us close (close_notify, FIN), as
        # on the other engines: a client that saw this connection end and asks on another
        # one (WHOWAS, a member count) is answered by a hub that knows it has gone.
        session, self.session = self.session, None
        if session is not None:
            with server.lock:
                try:
                    session.connection_lost(self.reason or DisconnectReason.EOF, self.detail)
                except Exception:  # a bug costs this connection only; it is closed below
                    log.exception("error reporting a closed connection")
        if not self.dead:
            last = self.closing_bytes()
            if last:
                self.write_raw(last)
        graceful = not self.dead
        if graceful:
            try:  # FIN after our output (every send so far was blocking, so it is out)
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if graceful and not server.stopping and lingers(self.reason):
            self._linger()
        self.dead = True
        self.sock.close()

    def _linger(self) -> None:  # only when we closed first: the peer may still be typing
        """Read away what the peer sends until its EOF, so no reset kills our output.

        Bounded by :data:`~chatd.net.sockopts.LINGER_SECONDS` and
        :data:`~chatd.net.sockopts.LINGER_BYTES`; this thread has nothing else to do.
        """
        deadline = time.monotonic() + LINGER_SECONDS
        left = LINGER_BYTES
        try:
            while left > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.sock.settimeout(remaining)
                data = self.sock.recv(READ_SIZE)
                if not data:
                    return
                left -= len(data)
        except OSError:
            pass


class TLSThreadedConnection(ThreadedConnection):
    """A client on a TLS listener: a TLS stream between the session and the socket."""

    def __init__(
        self,
        server: ThreadedServer,
        sock: socket.socket,
        session: SessionProtocol,
        tls: TLSStream,
    ) -> None:
        super().__init__(server, sock, session)
        self.tls = tls
        #: The handshake is done.
        self.established = False
        #: close_notify is queued: later writes are dropped (the session is closing).
        self.notified = False

    def write(self, data: bytes) -> None:
        """Encrypt (hub lock held, like every write), then the plain blocking send."""
        if self.dead or self.notified:
            return
        tls = self.tls
        try:
            tls.encrypt(data)
        except ssl.SSLError:
            self.kill(DisconnectReason.RESET)
            return
        if tls.held > self.server.config.max_sendq:
            self.kill(DisconnectReason.SENDQ)
            return
        out = tls.take()
        if out:
            self.write_raw(out)

    def start(self) -> bool:
        """The handshake, in this client's thread, within --tls-handshake-timeout.

        No other thread knows this connection yet (the session is not made, so the hub
        cannot write to it), so the stream is used without the hub lock here.
        """
        tls = self.tls
        sock = self.sock
        deadline = time.monotonic() + self.server.config.tls_handshake_timeout
        try:
            while not tls.handshake():
                out = tls.take()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                if out:
                    sock.sendall(out)
                data = sock.recv(TLS_READ_SIZE)
                if self.closing or self.dead:
                    self._fail(DisconnectReason.SHUTDOWN)  # shut down under us
                    return False
                if data:
                    tls.feed(data)
                else:
                    tls.feed_eof()  # the next step raises SSLEOFError
            out = tls.take()
            if out:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(out)
        except TimeoutError:
            self._fail(DisconnectReason.HANDSHAKE_TIMEOUT)
            return False
        except OSError:  # ssl.SSLError included: not TLS, refused, reset, EOF
            self._fail(DisconnectReason.HANDSHAKE_FAILED)
            return False
        finally:
            if not self.dead:
                sock.settimeout(None)  # blocking again; SO_RCVTIMEO/SO_SNDTIMEO still apply
        self.established = True
        self.buffered_input = True  # records may have come with the client's Finished
        with self.server.lock:
            self.server.service.stats["tls_handshakes"] += 1
        return True

    def _fail(self, reason: DisconnectReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.dead = True  # abortive close: nothing to flush, no close_notify
        reset_on_close(self.sock)

    def received(self, data: bytes | None, session: SessionProtocol) -> bool:
        """Decrypt (hub lock held), send what the stream answers, pass plaintext on.

        ``None``: nothing new from the socket; read what the handshake's last read
        brought beside the client's Finished (a client may send its first line at once).
        """
        tls = self.tls
        if data:
            tls.feed(data)
        elif data is not None:
            tls.feed_eof()
        try:
            plain, closed = tls.read()
        except ssl.SSLError:
            self.kill(DisconnectReason.RESET)
            return True
        out = tls.take()
        if out:
            self.write_raw(out)
        if plain:
            session.data_received(plain)
        if closed:
            session.eof_received()
        return closed

    def closing_bytes(self) -> bytes:
        with self.server.lock:
            return self._close_notify()

    def say_goodbye(self) -> None:
        # Shutdown shuts every socket next (the FIN would come before a later notify).
        data = self._close_notify()
        if data:
            self.write_raw(data)

    def _close_notify(self) -> bytes:
        """close_notify's bytes, once, after the handshake (hub lock held)."""
        if self.notified or not self.established:
            return b""
        self.notified = True
        self.tls.close_notify()
        return self.tls.take()


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
        #: SIGHUP arrived: the accept loop reloads the settings, with the hub lock held.
        self.reload_requested = False
        service.reload_hooks.append(self._reloaded)

    def _reloaded(self, config: Config) -> None:
        self.config = config

    def _on_reload(self, signum: int, frame: object) -> None:
        # Only a flag: the handler runs in the main thread, which may hold the hub lock.
        self.reload_requested = True

    def run(self) -> None:
        raise_fd_limit()
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_reload)
        signals.release()
        selector = selectors.DefaultSelector()
        for listener in self.listeners:
            listener.sock.setblocking(False)
            selector.register(listener.sock, selectors.EVENT_READ, listener)
        guard = AcceptGuard(self.service.stats)
        try:
            while not self.stopping:
                if self.reload_requested:
                    self.reload_requested = False
                    log.info("received SIGHUP: reloading the settings")
                    with self.lock:
                        self.service.reload()
                # Wakes twice a second to notice a stop request (and a reload).
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
        self.request_stop()

    def request_stop(self) -> None:
        """What SIGINT and SIGTERM do, from any thread (the accept loop wakes to see it)."""
        self.stopping = True

    def _add(self, listener: Listener, sock: socket.socket, host: str) -> None:
        with self.lock:
            session = self.service.accept(listener.dialect, host, time.monotonic())  # type: ignore[arg-type]
        if isinstance(session, bytes):
            # A TLS client could not read a plain refusal before its handshake.
            refuse(sock, session if listener.tls is None else b"")
            return
        if listener.tls is None:
            conn = ThreadedConnection(self, sock, session)
        else:
            conn = TLSThreadedConnection(self, sock, session, listener.tls.stream())
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
                    conn.say_goodbye()
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
                self.service.finish()
            finally:
                self.lock.release()


def serve(service: ChatService, listeners: list[Listener]) -> None:
    ThreadedServer(service, listeners).run()
