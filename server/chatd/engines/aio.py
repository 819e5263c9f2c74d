"""The asyncio engine: what a Python developer would write with streams.

One coroutine per client reading with ``reader.read`` from a stream pair, as
``asyncio.start_server`` would set up (the accept loop is written out to survive
descriptor exhaustion; see :meth:`AsyncServer._accept_loop`). A broadcast calls
``writer.write`` on every recipient and never awaits ``drain()``: awaiting one slow peer
inside the loop would stall the room. Since a stream's write buffer grows without limit
when nobody drains it, this engine enforces the output limits itself from
``transport.get_write_buffer_size()`` after each write. That size is what the kernel
refused: asyncio's transport sends at once while its buffer is empty and keeps only what
``send`` did not take. Past ``--max-sendq`` the transport is aborted (asyncio reports
the loss on a later loop turn, so the fan-out in progress is never disturbed).

The service policy (batching the chat lines of one read, flood control, timeouts) is the
session's, as in every engine; flood control makes the client's task sleep instead of
reading. A room's events are delivered once per loop iteration, as the reactor does once
per turn (:mod:`chatd.core.router`, "Batches"): the first event of an iteration schedules
the router's flush with ``call_soon``, so every reader task woken in the same iteration
adds to the same batch, and each member gets one ``write`` for them.

Unlike the reactor, a transport's ``write`` sends at once when its buffer is empty, so
each write to a keeping-up client costs a syscall. With a room's events gathered per loop
iteration, that is one syscall per member per iteration rather than per event.

TLS is asyncio's own: ``loop.connect_accepted_socket(..., ssl=context)`` with
``ssl_handshake_timeout`` (what ``start_server(ssl=...)`` does per client), and the
stream pair is built on the resulting transport. The session is created at accept (it
holds its slot) and made after the handshake; a handshake that fails, times out or is
cancelled at shutdown ends in one ``connection_lost``. ``writer.close()`` sends
close_notify and waits at most :data:`~chatd.net.tls.SHUTDOWN_SECONDS` for the peer's.
Write-buffer sizes include what the SSL layer holds, so the limits keep working. Each
connection's ``SSLProtocol`` preallocates a 256 KiB read buffer (CPython 3.11); that is
the idiomatic design's cost and what the idle-memory figure shows.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Iterable
from typing import Any, SupportsIndex

from chatd.config import Config
from chatd.net import signals
from chatd.net.accepting import AcceptGuard, refuse
from chatd.net.listeners import Listener, peer_host
from chatd.net.sockopts import (
    LINGER_BYTES,
    LINGER_SECONDS,
    configure_socket,
    lingers,
    peer_error,
    raise_fd_limit,
    reset_on_close,
)
from chatd.net.tls import SHUTDOWN_SECONDS as TLS_SHUTDOWN_SECONDS
from chatd.net.transport import DisconnectReason, SessionProtocol
from chatd.service import ChatService

log = logging.getLogger("chatd.asyncio")

READ_SIZE = 64 * 1024
SHUTDOWN_FLUSH_SECONDS = 2.0
#: How long a closed stream may take to finish: a TLS close_notify exchange (which
#: asyncio bounds by ssl_shutdown_timeout) or a plain socket's last bytes.
CLOSE_SECONDS = TLS_SHUTDOWN_SECONDS + 0.5
#: The soft output limit is sampled this many times per --sendq-soft-seconds.
SOFT_SAMPLES = 5


class ResetAfterDataReader(asyncio.StreamReader):
    """A stream reader that reports a reset *after* the bytes that arrived before it, and
    drops the bytes that arrive after its EOF.

    asyncio's reader raises a connection error from ``read()`` at once, dropping what it
    had buffered; a client that sends ``/quit`` and closes with unread input (which makes
    its kernel send a reset) would be reported as reset instead of quitting. Here the
    error ends the stream like EOF, after the buffered bytes, and is kept in ``reset``.
    (This is what ``asyncio.open_connection`` builds, with this reader class.)

    :meth:`StreamConnection.close_soon` feeds EOF itself, to wake a read loop waiting in
    ``read()`` when the close was asked for elsewhere (an operator's KILL runs in the
    operator's task), while the transport still reads. Bytes the client sent meanwhile
    may be delivered before that loop runs, and asyncio's own reader asserts that nothing
    follows EOF: raised in ``data_received``, that is a "Fatal error" which force-closes
    the transport, skips the goodbye and comes back out of ``wait_closed``, ending the
    read loop's task before it has left ``conns``. A closing session handles no more
    input, so such bytes are dropped here, as the lingering close drops what comes later.
    """

    reset: BaseException | None = None
    #: EOF was fed (by the peer's FIN, a reset, or close_soon): later bytes are dropped.
    ended = False

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:  # bytes (typeshed's type)
        if not self.ended:
            super().feed_data(data)

    def feed_eof(self) -> None:
        self.ended = True
        super().feed_eof()

    def set_exception(self, exc: BaseException) -> None:
        self.reset = exc
        self.feed_eof()


class StreamConnection:
    """One client: its stream writer plus the state the limits need."""

    def __init__(
        self,
        server: AsyncServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: SessionProtocol,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.transport = writer.transport
        self.session: SessionProtocol | None = session
        self.dead = False
        self.closing = False
        #: Why it ends; the first reason given wins.
        self.reason: DisconnectReason | None = None
        self.detail = ""
        self.soft_watch = False
        self.sock: socket.socket | None = writer.get_extra_info("socket")
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.dead or transport.is_closing():
            # Lost under us: the read loop reports it, after the lines the peer sent
            # before it went (a /quit among them still counts).
            return
        self.writer.write(data)
        size = transport.get_write_buffer_size()
        server = self.server
        if size > server.write_threshold:
            if size > server.config.max_sendq:
                self.abort(DisconnectReason.SENDQ)
            elif not self.soft_watch:
                self.soft_watch = True
                server.loop.call_later(server.soft_step, self._check_soft, SOFT_SAMPLES)

    def _check_soft(self, samples_left: int) -> None:
        """Drop the client if every sample over --sendq-soft-seconds was above the limit."""
        if self.dead or self.transport.is_closing():
            return
        if self.transport.get_write_buffer_size() <= self.server.soft_limit:
            self.soft_watch = False
        elif samples_left <= 1:
            self.abort(DisconnectReason.SOFT_SENDQ)
        else:
            self.server.loop.call_later(self.server.soft_step, self._check_soft, samples_left - 1)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.closing:
            return
        self.closing = True
        if self.reason is None:
            self.reason = reason
            self.detail = detail
        # Wake the read loop if it waits in read() (a timer or another client closed us);
        # the reader drops what the transport still delivers (see ResetAfterDataReader).
        self.reader.feed_eof()

    def call_at(self, when: float) -> None:
        if self.timer is not None:
            if self.timer_at <= when:
                return
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.server.loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        session = self.session
        if session is not None and not self.dead:
            try:
                session.on_timer(self.server.loop.time())
            except Exception:
                log.exception("error in a timer; dropping the connection")
                self.abort(DisconnectReason.RESET)

    def abort(self, reason: DisconnectReason) -> None:
        if self.reason is None:
            self.reason = reason
        self.dead = True
        if self.sock is not None:
            reset_on_close(self.sock)
        self.transport.abort()


class _Discard(asyncio.Protocol):
    """The protocol of a lingering transport: counts and drops input until EOF."""

    def __init__(self, transport: asyncio.BaseTransport, done: asyncio.Future[None]) -> None:
        self.transport = transport
        self.done = done
        self.left = LINGER_BYTES

    def data_received(self, data: bytes) -> None:
        self.left -= len(data)
        if self.left <= 0:
            self.transport.close()

    def eof_received(self) -> None:
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class AsyncServer:
    def __init__(self, service: ChatService, listeners: list[Listener]) -> None:
        self.service = service
        self.config = service.config
        self.listeners = listeners
        self.conns: set[StreamConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        #: Tasks in a TLS handshake: cancelled at shutdown (nobody to say goodbye to).
        self.handshakes: set[asyncio.Task[None]] = set()
        #: Tasks of closed connections waiting for their peer's EOF (see ``_linger``).
        self.lingering: set[asyncio.Task[None]] = set()
        self.stopping = False
        self._reloaded(service.config)  # the output limits, as each reload sets them
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        """What SIGINT and SIGTERM do: shut down (call it in the loop's thread)."""
        self._stop.set()

    def _on_reload(self) -> None:
        log.info("received SIGHUP: reloading the settings")
        self.service.reload()

    def _reloaded(self, config: Config) -> None:
        """The output limits, at start and after a reload (from each connection's next
        write on)."""
        self.config = config
        self.soft_limit = config.soft_limit
        self.soft_step = config.sendq_soft_seconds / SOFT_SAMPLES
        self.write_threshold = self.soft_limit or config.max_sendq

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        # Room events go out once per loop iteration: the first one of an iteration
        # schedules the flush, which runs after every callback already ready.
        router = self.service.router
        router.batching = True

        def schedule_flush() -> None:
            self.loop.call_soon(router.flush_pending)

        router.on_pending = schedule_flush
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, self.request_stop)
        self.service.reload_hooks.append(self._reloaded)
        self.loop.add_signal_handler(signal.SIGHUP, self._on_reload)
        signals.release()
        acceptors = []
        for listener in self.listeners:
            listener.sock.setblocking(False)
            acceptors.append(asyncio.create_task(self._accept_loop(listener)))
        await self._stop.wait()
        log.info("shutting down")
        for acceptor in acceptors:
            acceptor.cancel()
        for listener in self.listeners:
            listener.sock.close()
        await self._shutdown()

    async def _accept_loop(self, listener: Listener) -> None:
        """Accept clients and serve each through streams, backing off when out of fds.

        This is ``asyncio.start_server`` written out: accept, then
        ``asyncio.open_connection(sock=...)`` for a reader/writer pair, as
        ``start_server`` does for each client. It is written out because on
        EMFILE/ENFILE Python 3.11's own accept loop keeps retrying up to its backlog
        within one callback, logging a traceback per attempt and burning CPU while
        the descriptors stay exhausted; here we log once and retry after a pause.
        """
        loop = self.loop
        guard = AcceptGuard(self.service.stats)
        while True:
            try:
                sock, addr = await loop.sock_accept(listener.sock)
            except OSError as exc:
                pause = guard.failed(exc)
                if pause is not None:
                    await asyncio.sleep(pause)
                continue
            guard.accepted()
            task = loop.create_task(self._serve_socket(listener, sock, peer_host(addr)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve_socket(self, listener: Listener, sock: socket.socket, host: str) -> None:
        session = self.service.accept(listener.dialect, host, self.loop.time())  # type: ignore[arg-type]
        if isinstance(session, bytes):
            # A TLS client could not read a plain refusal before its handshake.
            refuse(sock, session if listener.tls is None else b"")
            return
        context = listener.tls.context if listener.tls is not None else None
        streams = await self._open_streams(sock, context, session)
        if streams is not None:
            await self.handle_client(*streams, session)

    async def _open_streams(
        self, sock: socket.socket, context: ssl.SSLContext | None, session: SessionProtocol
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The stream pair ``start_server`` builds per client (over TLS with ``context``),
        with the reader class above; or None after telling the session it was lost."""
        loop = self.loop
        tls: dict[str, Any] = {}
        task = asyncio.current_task()
        if context is not None:
            tls = {
                "ssl": context,
                "ssl_handshake_timeout": self.config.tls_handshake_timeout,
                "ssl_shutdown_timeout": TLS_SHUTDOWN_SECONDS,
            }
            self.handshakes.add(task)  # type: ignore[arg-type]
        try:
            configure_socket(sock)
            reader = ResetAfterDataReader(limit=READ_SIZE, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            transport, _ = await loop.connect_accepted_socket(lambda: protocol, sock, **tls)
        except asyncio.CancelledError:
            sock.close()
            session.connection_lost(DisconnectReason.SHUTDOWN)
            raise
        except ConnectionAbortedError:  # how asyncio and uvloop report the TLS deadline
            sock.close()
            session.connection_lost(
                DisconnectReason.HANDSHAKE_TIMEOUT if tls else DisconnectReason.RESET
            )
            return None
        except OSError:  # ssl.SSLError included: not TLS, refused, reset, EOF
            sock.close()
            session.connection_lost(
                DisconnectReason.HANDSHAKE_FAILED if tls else DisconnectReason.RESET
            )
            return None
        finally:
            self.handshakes.discard(task)
        if tls:
            self.service.stats["tls_handshakes"] += 1
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def handle_client(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        session: SessionProtocol,
    ) -> None:
        loop = self.loop
        conn = StreamConnection(self, reader, writer, session)
        self.conns.add(conn)
        session.connection_made(conn, loop.time())
        try:
            while not conn.closing and not conn.dead:
                data = await reader.read(READ_SIZE)
                if conn.closing or conn.dead:
                    break  # woken by close_soon/abort, not by the peer
                if data:
                    session.data_received(data)
                else:
                    session.eof_received()
                delay = session.process(loop.time())
                reset = getattr(reader, "reset", None)
                if not data and reset is not None and conn.reason is DisconnectReason.EOF:
                    conn.reason = DisconnectReason.RESET  # its last lines did not /quit
                while delay is not None and not conn.closing and not conn.dead:
                    # Flood control: this task sleeps, so its client is not read.
                    await asyncio.sleep(delay)
                    if conn.transport.is_closing() or (conn.sock and peer_error(conn.sock)):
                        # Gone while held back: drop the lines it left behind.
                        conn.abort(DisconnectReason.RESET)
                        break
                    delay = session.process(loop.time())
                if not data:
                    break
        except (ConnectionError, OSError):
            if conn.reason is None:
                conn.reason = DisconnectReason.RESET
        except Exception:
            log.exception("error handling a connection; dropping it")
            conn.abort(DisconnectReason.RESET)
        finally:
            if conn.timer is not None:
                conn.timer.cancel()
            # The hub learns before the peer sees our EOF, so what it asks next is
            # answered by a hub that knows this connection is gone.
            conn.session = None
            session.connection_lost(conn.reason or DisconnectReason.EOF, conn.detail)
            # Still in ``conns`` while saying goodbye: a shutdown aborts it at its bound.
            try:
                linger = await self._goodbye(conn)
            finally:
                self.conns.discard(conn)  # whatever the goodbye met, it is gone
            if linger:
                await self._linger(writer)

    async def _goodbye(self, conn: StreamConnection) -> bool:
        """Flush what is left for the peer and close, as ``start_server`` code does with
        ``writer.close()`` and ``await writer.wait_closed()``; True instead of closing
        when the connection should linger (we closed first, see :meth:`_linger`).

        Awaiting the close is not only politeness. When a fan-out's write meets a reset,
        asyncio stores the error in the stream protocol's close future; its traceback
        holds the frames of that fan-out, which hold this connection, its writer and the
        protocol: a reference cycle. The protocol's ``__del__`` would read the error, but
        the garbage collector finalises a cycle in no set order, and when the future
        goes first asyncio logs "Future exception was never retrieved" with a traceback
        (seen once in CI, in the hostile-crowd test). ``wait_closed`` reads it here.

        A peer that does not take its last bytes within the bound is aborted, rather
        than left holding its socket while the transport waits to flush.
        """
        writer = conn.writer
        transport = writer.transport
        try:
            async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                if not conn.dead and not transport.is_closing():
                    # A TLS transport cannot half-close: its peer would wait for our
                    # close as we waited for its EOF, so only plain sockets linger.
                    if writer.can_write_eof():
                        writer.write_eof()
                        await writer.drain()
                        # Only when we closed first: a peer that sent its EOF is done.
                        if not self.stopping and lingers(conn.reason):
                            return True
                    else:
                        await writer.drain()
                writer.close()
            # The TLS layer bounds its close_notify exchange itself (ssl_shutdown_timeout).
            async with asyncio.timeout(CLOSE_SECONDS):
                await writer.wait_closed()
        except (ConnectionError, OSError, RuntimeError, TimeoutError):
            transport.abort()  # the peer is gone or stuck: nothing more to flush
        except asyncio.CancelledError:  # the loop is closing
            transport.abort()
            raise
        return False

    async def _linger(self, writer: asyncio.StreamWriter) -> None:
        """Read away what the peer sends until its EOF, then close.

        Closing with unread input would make the kernel reset the connection and drop
        output it had not sent yet (see :data:`~chatd.net.sockopts.LINGER_SECONDS`). The
        stream reader has been told EOF already (``close_soon`` wakes the read loop that
        way), so a discarding protocol takes the transport over.
        """
        task = asyncio.current_task()
        assert task is not None
        self.lingering.add(task)
        transport = writer.transport
        done = self.loop.create_future()
        try:
            transport.set_protocol(_Discard(transport, done))
            if not transport.is_reading():  # type: ignore[attr-defined]
                transport.resume_reading()  # type: ignore[attr-defined]
            async with asyncio.timeout(LINGER_SECONDS):
                await done
        except (ConnectionError, OSError, RuntimeError, TimeoutError):
            pass
        finally:
            self.lingering.discard(task)
            transport.close()

    async def _shutdown(self) -> None:
        self.stopping = True
        for task in list(self.handshakes) + list(self.lingering):
            task.cancel()
        self.service.shutdown()
        for conn in list(self.conns):
            conn.close_soon(DisconnectReason.SHUTDOWN)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_FLUSH_SECONDS)
        for conn in list(self.conns):
            conn.abort(DisconnectReason.SHUTDOWN)
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=0.5)
        self.service.finish()


def make_runner(use_uvloop: bool) -> asyncio.Runner:
    """The runner of this engine's loop: asyncio's own, or uvloop's (``--uvloop``)."""
    if use_uvloop:
        import uvloop

        return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def serve(service: ChatService, listeners: list[Listener]) -> None:
    raise_fd_limit()
    with make_runner(service.config.uvloop) as runner:
        runner.run(AsyncServer(service, listeners).main())
