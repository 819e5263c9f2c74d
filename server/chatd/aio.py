"""The asyncio engine: what a Python developer would write with streams.

One coroutine per client reading with ``reader.read`` from a stream pair, as
``asyncio.start_server`` would set up (the accept loop is written out to survive
descriptor exhaustion; see :meth:`AsyncServer._accept_loop`). Each line is fanned out
on its own, as soon as it is parsed. A broadcast calls ``writer.write`` on every
recipient and never awaits ``drain()``: awaiting one slow peer inside the loop would
stall the room. Since a stream's write buffer grows without limit when nobody drains
it, this engine enforces the output limits itself by looking at
``transport.get_write_buffer_size()`` after each write: past ``--max-sendq`` the
transport is aborted (asyncio reports the loss on a later loop turn, so the fan-out in
progress is never disturbed).

Unlike the reactor, a transport's ``write`` sends at once when its buffer is empty,
so each delivery to a keeping-up client costs a syscall; that is the honest cost of
the idiomatic design and what the benchmarks measure.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket

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

log = logging.getLogger("chatd.asyncio")

READ_SIZE = 64 * 1024
#: Pause before accepting again after EMFILE/ENFILE.
ACCEPT_BACKOFF = 0.2
SHUTDOWN_FLUSH_SECONDS = 2.0
#: The soft output limit is sampled this many times per --sendq-soft-seconds.
SOFT_SAMPLES = 5


class StreamConnection:
    """One client: its stream writer plus the state the limits need."""

    def __init__(self, server: AsyncServer, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.writer = writer
        self.transport = writer.transport
        self.dead = False
        self.closing = False
        self.reason = DisconnectReason.EOF
        self.detail = ""
        self.soft_watch = False
        self.member: Member = None  # type: ignore[assignment]  # set by the handler
        self.sock: socket.socket | None = writer.get_extra_info("socket")
        self.register_deadline = float("inf")

    def write(self, data: bytes) -> None:
        transport = self.transport
        if self.dead:
            return
        if transport.is_closing():
            self.dead = True  # lost under us; the read loop reports it
            self.reason = DisconnectReason.RESET
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
        self.closing = True
        self.reason = reason
        self.detail = detail

    def abort(self, reason: DisconnectReason) -> None:
        self.dead = True
        self.reason = reason
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            reset_on_close(sock)
        self.transport.abort()


class AsyncServer:
    def __init__(self, config: Config, listener: socket.socket) -> None:
        self.config = config
        self.listener = listener
        self.service = ChatService(config)
        self.conns: set[StreamConnection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.soft_limit = config.soft_limit
        self.soft_step = config.sendq_soft_seconds / SOFT_SAMPLES
        self.write_threshold = config.write_threshold
        self.loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]

    async def main(self) -> None:
        self.loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal_handler(sig, stop.set)
        self.listener.setblocking(False)
        acceptor = asyncio.create_task(self._accept_loop())
        await stop.wait()
        log.info("shutting down")
        acceptor.cancel()
        self.listener.close()
        await self._shutdown()

    async def _accept_loop(self) -> None:
        """Accept clients and serve each through streams, backing off when out of fds.

        This is ``asyncio.start_server`` written out: accept, then
        ``asyncio.open_connection(sock=...)`` for a reader/writer pair, as
        ``start_server`` does for each client. It is written out because on
        EMFILE/ENFILE Python 3.11's own accept loop keeps retrying up to its backlog
        within one callback, logging a traceback per attempt and burning CPU while
        the descriptors stay exhausted; here we log once and retry after a pause.
        """
        loop = self.loop
        logged = False
        while True:
            try:
                sock, _ = await loop.sock_accept(self.listener)
            except OSError as exc:
                if exc.errno not in FD_EXHAUSTED:
                    log.debug("accept failed: %s", exc)
                    continue
                if not logged:
                    log.warning("accept failed (%s); pausing new connections", exc.strerror)
                    logged = True
                self.service.stats["accept_fd_exhausted"] += 1
                await asyncio.sleep(ACCEPT_BACKOFF)
                continue
            logged = False
            task = loop.create_task(self._serve_socket(sock))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _serve_socket(self, sock: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
        except OSError:
            sock.close()
            return
        await self.handle_client(reader, writer)

    async def handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        service = self.service
        cfg = self.config
        if len(self.conns) >= cfg.max_clients:
            service.refuse_full()
            writer.write(SERVER_FULL)
            writer.close()
            return
        conn = StreamConnection(self, writer)
        if conn.sock is not None:
            try:
                configure_socket(conn.sock)
            except OSError:
                pass
        self.conns.add(conn)
        conn.member = member = service.open(conn)
        loop = self.loop
        decoder = LineDecoder(cfg.max_line)
        bucket = (
            TokenBucket(cfg.flood_rate, cfg.flood_burst, loop.time())
            if cfg.flood_rate > 0
            else None
        )
        last_active = loop.time()
        if cfg.register_timeout > 0:
            conn.register_deadline = last_active + cfg.register_timeout
        try:
            while not conn.closing and not conn.dead:
                if member.nick is None and cfg.register_timeout > 0:
                    deadline: float | None = conn.register_deadline
                elif cfg.idle_timeout > 0:
                    deadline = last_active + cfg.idle_timeout
                else:
                    deadline = None
                try:
                    if deadline is None:
                        data = await reader.read(READ_SIZE)
                    elif loop.time() >= deadline:  # a busy client never waits in read
                        raise TimeoutError
                    else:
                        async with asyncio.timeout_at(deadline):
                            data = await reader.read(READ_SIZE)
                except TimeoutError:
                    service.time_out(
                        member,
                        DisconnectReason.REGISTER_TIMEOUT
                        if member.nick is None
                        else DisconnectReason.IDLE,
                    )
                    break
                if not data:
                    if decoder.buffered:
                        decoder.feed(b"\n")
                        await self._handle(conn, decoder.items(), bucket)
                    if not conn.closing and not conn.dead:
                        conn.reason = DisconnectReason.EOF
                    break
                service.stats["bytes_in"] += len(data)
                last_active = loop.time()
                decoder.feed(data)
                await self._handle(conn, decoder.items(), bucket)
        except (ConnectionError, OSError):
            if not conn.dead and not conn.closing:
                conn.reason = DisconnectReason.RESET
        finally:
            self.conns.discard(conn)
            try:
                if not conn.dead and not writer.transport.is_closing():
                    if writer.can_write_eof():
                        writer.write_eof()
                    async with asyncio.timeout(SHUTDOWN_FLUSH_SECONDS):
                        await writer.drain()
            except (ConnectionError, OSError, RuntimeError, TimeoutError):
                pass  # the peer is gone or stuck: nothing more to flush
            finally:
                writer.close()
                service.close(member, conn.reason, conn.detail)

    async def _handle(
        self, conn: StreamConnection, items: list[Item], bucket: TokenBucket | None
    ) -> None:
        """Hand items to the service; over the flood budget, sleep instead of reading."""
        service = self.service
        while items and not conn.closing and not conn.dead:
            if bucket is None:
                batch, items = items, []
            else:
                now = self.loop.time()
                count = bucket.take_up_to(len(items), now)
                if count == 0:
                    service.stats["flood_pauses"] += 1
                    await asyncio.sleep(bucket.wait(now) + 0.001)
                    if conn.transport.is_closing() or (conn.sock and peer_error(conn.sock)):
                        # Gone while held back: drop the lines it left behind.
                        conn.abort(DisconnectReason.RESET)
                        return
                    if conn.member.nick is None and self.loop.time() >= conn.register_deadline:
                        return  # the read loop closes it for the registration timeout
                    continue
                batch, items = items[:count], items[count:]
            service.handle_items(conn.member, batch, coalesce=False)

    async def _shutdown(self) -> None:
        self.service.shutdown()
        for conn in list(self.conns):
            conn.close_soon(DisconnectReason.SHUTDOWN)
            conn.transport.close()  # flushes its buffer, then wakes the reader with EOF
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=SHUTDOWN_FLUSH_SECONDS)
        for conn in list(self.conns):
            conn.abort(DisconnectReason.SHUTDOWN)
        self.service.log_stats()


def serve(config: Config, listener: socket.socket) -> None:
    raise_fd_limit()
    if config.uvloop:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    else:
        runner = asyncio.Runner()
    with runner:
        runner.run(AsyncServer(config, listener).main())
