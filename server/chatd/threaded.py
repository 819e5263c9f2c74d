"""The threaded engine: the classic thread-per-client design, done correctly.

Kept on purpose as the baseline the benchmarks compare against. Each client has a
thread that blocks in ``recv``; one lock guards the hub; a broadcast calls blocking
``sendall`` on every recipient's socket while holding that lock, so one slow reader
holds up every sender in the server until its send times out (``--send-timeout`` for
the whole message, enforced with ``SO_SNDTIMEO`` and a deadline), after which that
reader is dropped. Each line is fanned out on its own, under the lock, as the classic
design does (the reactor coalesces the lines of one read; see :mod:`chatd.service`).

What it does *not* have, by design: an output buffer of its own (the kernel's socket
buffer is the only queue, so ``--max-sendq`` and the soft limit do not apply; the send
timeout plays their part) and a bounded number of threads beyond ``--max-clients``.
Flood control works by the client's thread sleeping until its bucket refills, which
holds back its reads just as the reactor does.
"""

from __future__ import annotations

import logging
import signal
import socket
import struct
import threading
import time

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

log = logging.getLogger("chatd.threaded")

#: Bytes per ``recv``, as in the reactor.
READ_SIZE = 64 * 1024
#: How often a blocked ``recv`` wakes to check the registration and idle deadlines.
POLL_SECONDS = 1.0
#: How long shutdown waits for client threads to finish.
SHUTDOWN_JOIN_SECONDS = 2.0


def _timeval(seconds: float) -> bytes:
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class ThreadedConnection:
    """One client socket in blocking mode and the thread that reads it."""

    def __init__(self, server: ThreadedServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.member: Member | None = None
        self.dead = False
        self.reason = DisconnectReason.EOF
        self.detail = ""
        self.closing = False
        self.register_deadline = float("inf")
        sock.setblocking(True)
        configure_socket(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(server.config.send_timeout))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(POLL_SECONDS))

    # Called with the hub lock held (from any client's thread).
    def write(self, data: bytes) -> None:
        """Blocking send of all of ``data`` within --send-timeout, or drop the reader.

        ``SO_SNDTIMEO`` alone bounds each ``send`` call only while it makes no progress;
        a reader that drains a trickle would keep every sender waiting indefinitely, so
        the loop also enforces a deadline for the whole message.
        """
        if self.dead:
            return
        sock = self.sock
        try:
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
            self._kill(DisconnectReason.SEND_TIMEOUT)
        except OSError:
            self._kill(DisconnectReason.RESET)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        self.closing = True
        self.reason = reason
        self.detail = detail

    def _kill(self, reason: DisconnectReason) -> None:
        """Mark dead and wake the owner thread; it reports the loss to the service."""
        self.dead = True
        self.reason = reason
        reset_on_close(self.sock)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # Runs in the connection's own thread.
    def run(self) -> None:
        server = self.server
        service = server.service
        cfg = server.config
        decoder = LineDecoder(cfg.max_line)
        bucket = (
            TokenBucket(cfg.flood_rate, cfg.flood_burst, time.monotonic())
            if cfg.flood_rate > 0
            else None
        )
        with server.lock:
            self.member = member = service.open(self)
        last_active = time.monotonic()
        if cfg.register_timeout > 0:
            self.register_deadline = last_active + cfg.register_timeout
        try:
            while not self.closing and not self.dead:
                if self._registration_expired():  # checked on every turn: busy clients too
                    self._time_out(DisconnectReason.REGISTER_TIMEOUT)
                    break
                try:
                    data = self.sock.recv(READ_SIZE)
                except (BlockingIOError, TimeoutError):  # SO_RCVTIMEO: check deadlines
                    now = time.monotonic()
                    if member.nick and 0 < cfg.idle_timeout <= now - last_active:
                        self._time_out(DisconnectReason.IDLE)
                    continue
                except OSError:
                    if not self.dead:
                        self.reason = DisconnectReason.RESET
                    break
                if not data:
                    if self.dead:
                        break
                    if decoder.buffered:
                        decoder.feed(b"\n")
                        self._handle(decoder.items(), bucket)
                    if not self.closing:
                        self.reason = DisconnectReason.EOF
                    break
                last_active = time.monotonic()
                with server.lock:
                    service.stats["bytes_in"] += len(data)
                decoder.feed(data)
                self._handle(decoder.items(), bucket)
        finally:
            self._finish()

    def _handle(self, items: list[Item], bucket: TokenBucket | None) -> None:
        """Hand items to the service, sleeping (not reading) while over the flood budget."""
        server = self.server
        while items and not self.closing and not self.dead:
            if bucket is None:
                batch, items = items, []
            else:
                now = time.monotonic()
                count = bucket.take_up_to(len(items), now)
                if count == 0:
                    with server.lock:
                        server.service.stats["flood_pauses"] += 1
                    time.sleep(bucket.wait(now) + 0.001)
                    if peer_error(self.sock):
                        # Reset while held back: drop it and the lines it left behind.
                        self.dead = True
                        self.reason = DisconnectReason.RESET
                        return
                    if self._registration_expired():
                        return  # run() closes it
                    continue
                batch, items = items[:count], items[count:]
            for item in batch:  # the classic design: lock, fan out one line, unlock
                with server.lock:
                    if not server.service.handle_items(self.member, (item,), coalesce=False):  # type: ignore[arg-type]
                        return

    def _registration_expired(self) -> bool:
        return (
            self.member is not None
            and self.member.nick is None
            and time.monotonic() >= self.register_deadline
        )

    def _time_out(self, reason: DisconnectReason) -> None:
        with self.server.lock:
            self.server.service.time_out(self.member, reason)  # type: ignore[arg-type]

    def _finish(self) -> None:
        server = self.server
        if not self.dead:
            try:  # FIN after our output, then read away what is left so no RST kills it
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.settimeout(0.2)
                self.sock.recv(READ_SIZE)
            except OSError:
                pass
        self.dead = True
        self.sock.close()
        with server.lock:
            server.conns.discard(self)
            if self.member is not None:
                server.service.close(self.member, self.reason, self.detail)


class ThreadedServer:
    """Accepts in the main thread; one daemon thread per client."""

    def __init__(self, config: Config, listener: socket.socket) -> None:
        self.config = config
        self.listener = listener
        self.service = ChatService(config)
        self.lock = threading.Lock()
        self.conns: set[ThreadedConnection] = set()
        self.stopping = False

    def run(self) -> None:
        raise_fd_limit()
        old = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        # The accept loop wakes twice a second to notice a stop request.
        self.listener.settimeout(0.5)
        fd_shortage_logged = False
        try:
            while not self.stopping:
                try:
                    sock, _ = self.listener.accept()
                except TimeoutError:
                    continue
                except OSError as exc:
                    if exc.errno in FD_EXHAUSTED:
                        if not fd_shortage_logged:  # once per episode, not per retry
                            log.warning("accept failed (%s); retrying shortly", exc.strerror)
                            fd_shortage_logged = True
                        with self.lock:
                            self.service.stats["accept_fd_exhausted"] += 1
                        time.sleep(0.2)  # this thread only accepts: sleeping here blocks no client
                    continue
                fd_shortage_logged = False
                self._add(sock)
            self._shutdown()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        self.stopping = True

    def _add(self, sock: socket.socket) -> None:
        with self.lock:
            full = len(self.conns) >= self.config.max_clients
            if full:
                self.service.refuse_full()
        if full:
            try:
                sock.settimeout(0.5)
                sock.send(SERVER_FULL)
            except OSError:
                pass
            sock.close()
            return
        conn = ThreadedConnection(self, sock)
        with self.lock:
            self.conns.add(conn)
        threading.Thread(target=conn.run, name="chatd-client", daemon=True).start()

    def _shutdown(self) -> None:
        self.listener.close()
        with self.lock:
            self.service.shutdown()
            conns = list(self.conns)
            for conn in conns:
                conn.close_soon(DisconnectReason.SHUTDOWN)
        for conn in conns:
            try:  # wake the blocked recv; queued output still goes out before the FIN
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + SHUTDOWN_JOIN_SECONDS
        for thread in threading.enumerate():
            if thread.name == "chatd-client":
                thread.join(max(0.0, deadline - time.monotonic()))
        with self.lock:
            self.service.log_stats()


def serve(config: Config, listener: socket.socket) -> None:
    ThreadedServer(config, listener).run()
