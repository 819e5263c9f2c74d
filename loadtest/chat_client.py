"""The load test's chat client: one connection in any dialect, every step a Locust event.

``ChatClient`` is the I/O half of a dialect: it owns the socket and feeds what it reads to
the sans-IO ``chatload.Dialect`` (``chatload.line.LineDialect`` for chatd's line protocol,
``chatload.irc.IrcDialect`` for IRC), which says what to send and what the lines mean. Its two
implementations, ``LineChatClient`` and ``IrcChatClient``, differ only in that dialect, so
every user class works over both. The client reports to the process's ``Collector``:

* ``connect()`` -- TCP connect and registration (IRC: ``NICK``/``USER`` up to the end of
  the MOTD; a taken nick gets another) -- fires ``connect``; ``join()`` fires ``join``;
  a failure fires the failing stage with the reason, closes the socket and raises
  ``HandshakeError``;
* ``say()`` sends a stamped load-test message (or a text) and fires ``say``; it connects
  and joins first if needed, pausing ~1 s after a failure so a dead server gives a trickle
  of failures, not a busy loop;
* ``receive()`` returns the next line and times it if it is a load-test message (firing
  ``broadcast``); or ``start_receiver()`` does that in a background greenlet for the whole
  connection. Either way ``PING``s are answered and sequence gaps, reorders, forged
  senders, error replies and unexpected disconnects become failures.

Locust has gevent-patched ``socket``, so the blocking calls here yield to other users.
Two greenlets may write (the user sends, the receiver answers ``PING``), so writes hold a
lock: gevent refuses two greenlets waiting to write on one socket.

Over WebSocket (``--chat-transport ws``) the socket carries frames instead of lines, and
the sans-IO ``chatload.ws`` sits between it and the dialect: after the TCP (and TLS) connect
the client upgrades (``ws.ClientHandshake``; the ``connect`` event includes it), then
``_write`` frames the dialect's lines (``ws.LineFramer``) and the reader
(``ws.ServerFrames``) takes the place of the line splitter, so the dialects parse the
same lines either way; a counting receiver counts messages (``ws.MessageCounter``)
instead of newlines. WebSocket's own replies (a pong, the answer to the server's Close)
are written as they are (``_write_raw``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import socket
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

# isort: split
import chatload
from chatload import LineKind, ws
from chatload.irc import IrcDialect
from chatload.line import LineDialect

# isort: split
import chat_core as core
from chat_collector import REQUEST_TYPE, STATE, Collector

log = logging.getLogger("chatd.loadtest")

#: Bytes per ``recv``: large enough to drain a backlog of lines in one call when we lag.
RECV_BYTES = 65536
#: Pause after each read of a counting (non-timing) receiver. The server's writes land in
#: the kernel's socket buffer whether or not we read at once, so the server does the same
#: work either way; reading every 100 ms instead of on every line cuts the load generator's
#: reads (and greenlet switches) several-fold. 100 ms of a busy room is a few KiB, far below
#: the socket buffer, so the server never sees back-pressure from this. Must stay below
#: ``chat_collector.DRAIN_QUIET_S``, or the drain could end between two reads.
COUNT_INTERVAL_S = 0.1
#: Nick attempts on one connection when the server says a nick is taken.
NICK_ATTEMPTS = 3
#: Pause before reconnecting after a failed or dropped session (randomised by +-50 %), so
#: a dead server produces a steady trickle of failures rather than a busy loop.
RECONNECT_BACKOFF_S = 1.0

#: What a peer that breaks the wire contract raises, besides socket errors: a dialect's
#: framing or parsing, or WebSocket's.
PEER_ERRORS = (OSError, chatload.ProtocolError, ws.WebSocketError)

#: Refusal reasons already logged by this process (each is logged once).
_warned: set[str] = set()


class HandshakeError(Exception):
    """Connecting, registering or joining failed; ``stage`` says which (already reported)."""

    def __init__(self, stage: str, detail: str) -> None:
        super().__init__(f"{stage}: {detail}")
        self.stage = stage
        self.detail = detail


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class ChatClient:
    """One user's chat connection (reconnectable): connect, join, say, receive.

    ``host`` is one entry of Locust's ``--host`` (``HOST:PORT``; the dialect's default port
    otherwise; ``ChatClientUser`` picks the entry of a list),
    ``room`` the room ``join()`` and ``say()`` use by default, ``timeout`` the handshake
    deadline. ``settle`` is called once per connection attempt with whether it ended
    joined (the start gate counts users). ``timing`` picks whether the receiver times
    messages or only counts lines; ``background`` whether ``say()``'s implicit join starts
    the background receiver (False: read with ``receive()``). ``transport`` is ``tcp`` or
    ``ws`` (WebSocket to an HTTP listener; ``host`` may then be a ``ws://``/``wss://``
    URL with a path, by default the dialect's endpoint ``ws.PATHS``).
    """

    #: The sans-IO dialect; set by the implementations.
    dialect_class: ClassVar[type[chatload.Dialect]]

    def __init__(
        self,
        host: str | None,
        *,
        room: str = "#lobby",
        timeout: float = 30.0,
        collector: Collector = STATE,
        settle: Callable[[bool], None] | None = None,
        timing: bool = True,
        background: bool = True,
        tls: ssl.SSLContext | None = None,
        transport: str = "tcp",
    ) -> None:
        self.host = host
        self.transport = transport
        #: Client context for TLS connections; None: plain TCP.
        self.tls = tls
        self.room = room
        self.timeout = timeout
        self.collector = collector
        self.settle = settle
        self.timing = timing
        self.background = background
        self._write_lock = Semaphore()
        self.sock: socket.socket | None = None
        self._new_connection()

    def _new_connection(self) -> None:
        """Fresh per-connection state: a reconnect starts over in every respect."""
        self.proto: chatload.Dialect = self.dialect_class()
        #: Lines from the socket's bytes: newline framing, or WebSocket frames.
        self.splitter: chatload.LineSplitter | ws.ServerFrames = chatload.LineSplitter()
        #: Over WebSocket once upgraded: the server's frames (the splitter too) and ours.
        self.frames: ws.ServerFrames | None = None
        self.framer: ws.LineFramer | None = None
        #: Lines read but not handled yet, with the wall time of the read that completed them.
        self._pending: deque[tuple[bytes, float]] = deque()
        #: Set when the connection ended (EOF, error, or ``close``).
        self.closed = Event()
        #: Set before we close on purpose, so the receiver does not report it as a failure.
        self.closing = False
        self.connected = False
        self.joined = False
        self.receiver: gevent.Greenlet | None = None
        #: Per connection: after a reconnect the messages missed meanwhile are not "lost".
        self.tracker: chatload.SequenceTracker[str] = chatload.SequenceTracker()
        #: Wall time the join was confirmed: a sender's schedule starts at the later of
        #: this and the gate.
        self.joined_at = 0.0
        #: Next sequence number ``say()`` stamps.
        self.seq = 0
        #: The server's last word before it closed (IRC ``ERROR``), for the logs.
        self.close_reason = b""

    @property
    def default_port(self) -> int:
        """The port a ``--host`` entry without one means (see ``Settings.default_port``)."""
        if self.transport == "ws":
            return 443 if self.tls is not None else 80
        return self.dialect_class.default_port

    @property
    def nick(self) -> str:
        """Our nick as the server knows it ("" before ``connect``)."""
        return self.proto.nick

    # ----------------------------------------------------------------- handshake

    def connect(self, nick: str | None = None, deadline: float | None = None) -> None:
        """Connect and register (``nick``, or a fresh one); fires ``connect``.

        ``deadline`` (``time.monotonic()``) defaults to ``timeout`` from now. Raises
        ``HandshakeError`` after reporting the failure.
        """
        self.close()
        self._new_connection()
        coll = self.collector
        coll.counters["sessions"] += 1
        start = time.perf_counter()
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        stage = "connect"
        try:
            try:
                address = core.parse_host(
                    self.host,
                    self.default_port,
                    transport=self.transport,
                    tls=self.tls is not None,
                )
            except ValueError as exc:
                raise HandshakeError(stage, "invalid --host") from exc
            try:
                remaining = max(deadline - time.monotonic(), 0.001)
                sock = socket.create_connection(address, timeout=remaining)
            except OSError as exc:
                raise HandshakeError(stage, type(exc).__name__) from exc
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.tls is not None:
                try:  # the handshake runs here, within the socket's timeout
                    sock = self.tls.wrap_socket(sock, server_hostname=address[0])
                except (OSError, ssl.SSLError) as exc:
                    sock.close()
                    raise HandshakeError(stage, f"TLS: {type(exc).__name__}") from exc
            self.sock = sock
            if self.transport == "ws":
                self._upgrade(address, stage, deadline)
            self._write(self.proto.register(nick or coll.new_nick()))
            attempts = 1
            while True:
                event = self._next_event(stage, deadline)
                if isinstance(event, chatload.Registered):
                    break
                if isinstance(event, chatload.RegisterRefused):
                    if not event.retry or attempts >= NICK_ATTEMPTS:
                        self._warn_once(f"the server refuses our nicks: {event.reason}")
                        raise HandshakeError(stage, "nickname refused")
                    attempts += 1
                    self._write(self.proto.renick(coll.new_nick()))
                elif isinstance(event, chatload.Closing):
                    self._warn_once(f"the server closed the link: {event.reason}")
                    raise HandshakeError(stage, "server closed the link")
        except HandshakeError as exc:
            self._failed(exc, start)
            raise
        except PEER_ERRORS as exc:
            err = HandshakeError(stage, type(exc).__name__)
            self._failed(err, start)
            raise err from exc
        self.connected = True
        coll.counters["connects"] += 1
        coll.host_connected(core.host_label(*address))
        coll.fire("connect", _ms_since(start))

    def join(self, room: str | None = None, deadline: float | None = None) -> None:
        """Join ``room`` (default: the client's room); fires ``join``. Raises ``HandshakeError``."""
        if not self.connected:
            raise RuntimeError("join() before connect()")
        room = room or self.room
        coll = self.collector
        start = time.perf_counter()
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        stage = "join"
        try:
            self._write(self.proto.join(room))
            while True:
                event = self._next_event(stage, deadline)
                if isinstance(event, chatload.Joined):
                    break
                if isinstance(event, chatload.JoinRefused):
                    self._warn_once(f"the server refuses the join: {event.reason}")
                    raise HandshakeError(stage, "join refused")
                if isinstance(event, chatload.Closing):
                    self._warn_once(f"the server closed the link: {event.reason}")
                    raise HandshakeError(stage, "server closed the link")
        except HandshakeError as exc:
            self._failed(exc, start)
            raise
        except PEER_ERRORS as exc:
            err = HandshakeError(stage, type(exc).__name__)
            self._failed(err, start)
            raise err from exc
        self.room = room
        self.joined = True
        coll.counters["joins"] += 1
        coll.fire("join", _ms_since(start))
        self.joined_at = time.time()
        assert self.sock is not None
        self.sock.settimeout(None)
        if self.settle is not None:
            self.settle(True)

    def _upgrade(self, address: tuple[str, int], stage: str, deadline: float) -> None:
        """The WebSocket opening handshake on the connected socket, within ``deadline``;
        what followed the server's ``101`` is read as frames. Raises ``HandshakeError``
        when the server refuses (a 403 for the Origin, a 404 for the path...)."""
        sock = self.sock
        assert sock is not None
        name = self.proto.name
        handshake = ws.ClientHandshake(
            ws.host_header(address[0], address[1], self.tls is not None),
            core.ws_path(self.host or "", ws.PATHS.get(name, "/")),
            ws.SUBPROTOCOLS.get(name, ()),
        )
        sock.sendall(handshake.request)
        accepted = None
        while accepted is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError(stage, "timed out waiting for the WebSocket upgrade")
            sock.settimeout(remaining)
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError as exc:
                raise HandshakeError(stage, "timed out waiting for the WebSocket upgrade") from exc
            try:
                accepted = handshake.receive_data(data)
            except ws.HandshakeRefused as exc:
                self._warn_once(f"the server refuses the WebSocket upgrade: {exc}")
                raise HandshakeError(stage, "WebSocket upgrade refused") from exc
        self.frames = self.splitter = ws.ServerFrames()
        self.framer = ws.LineFramer(accepted.opcode)
        self._feed(accepted.trailing, time.time())

    def _feed(self, data: bytes, now: float) -> None:
        """Queue the lines ``data`` completed (with their arrival time ``now``), and write
        what WebSocket owes the server at once (a pong, the answer to its Close)."""
        self._pending.extend((line, now) for line in self.splitter.feed(data))
        self._ws_replies()

    def _ws_replies(self) -> None:
        frames = self.frames
        if frames is not None and frames.replies:
            self._write_raw(frames.take_replies())

    def _next_event(self, stage: str, deadline: float) -> chatload.HandshakeEvent:
        """Feed lines to the dialect until it reports something (answering its ``Reply``s)."""
        sock = self.sock
        assert sock is not None
        while True:
            while self._pending:
                line, _arrived = self._pending.popleft()
                event = self.proto.handshake_event(line)
                if isinstance(event, chatload.Reply):
                    self._write(event.data)
                elif event is not None:
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError(stage, "timed out waiting for confirmation")
            sock.settimeout(remaining)
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError as exc:
                raise HandshakeError(stage, "timed out waiting for confirmation") from exc
            if not data:
                raise HandshakeError(stage, "server closed the connection")
            self._feed(data, time.time())

    def _failed(self, exc: HandshakeError, start: float) -> None:
        self.collector.fail(exc.stage, f"{exc.stage} failed: {exc.detail}", _ms_since(start))
        self.close()
        if self.settle is not None:
            self.settle(False)

    @staticmethod
    def _warn_once(text: str) -> None:
        key = text[:60]
        if key not in _warned:
            _warned.add(key)
            log.warning("%s", text)

    def ensure_joined(self) -> bool:
        """Connect and join unless joined; False (after reporting it and a pause) on failure.

        Starts reading as the client was configured to (``background``, ``timing``).
        Nothing new starts once the test drains.
        """
        if self.joined and not self.closed.is_set():
            return True
        if self.collector.draining:
            return False
        deadline = time.monotonic() + self.timeout
        try:
            self.connect(deadline=deadline)
            self.join(deadline=deadline)
        except HandshakeError:
            gevent.sleep(RECONNECT_BACKOFF_S * (0.5 + random.random()))
            return False
        if self.background:
            self.start_receiver(self.timing)
        elif self.timing:
            self._count_receiver(True)
        return True

    # ----------------------------------------------------------------- sending

    def _write(self, data: bytes) -> None:
        """Write the dialect's lines (framed first over WebSocket)."""
        framer = self.framer
        self._write_raw(data if framer is None else framer.frames(data))

    def _write_raw(self, data: bytes) -> None:
        sock = self.sock
        if sock is None:
            raise OSError(errno.ENOTCONN, "not connected")
        with self._write_lock:
            sock.sendall(data)

    def send_stamped(self, seq: int, stamp_us: int) -> None:
        """Write one load-test message (no event: the scheduled senders count themselves)."""
        text = chatload.encode_stamp(self.nick, seq, stamp_us, self.collector.settings.payload)
        self._write(self.proto.chat(text))

    def say(self, text: str | None = None) -> bool:
        """Send a stamped load-test message (or ``text``) to the room; fires ``say``.

        Joins first if needed. The stamp is the send time (a scenario's task has no
        schedule to lag behind). False if nothing was sent: the join failed, the send
        failed (reported as ``send_error``; the next call reconnects), or the test is
        draining, when nothing new goes out so the delivery check stays exact.
        """
        coll = self.collector
        if coll.draining or not self.ensure_joined():
            return False
        now = time.time()
        if text is None:
            payload = chatload.encode_stamp(
                self.nick, self.seq, int(now * 1_000_000), coll.settings.payload
            )
        else:
            payload = text.encode("utf-8")
        start = time.perf_counter()
        try:
            self._write(self.proto.chat(payload))
        except OSError as exc:
            if not self.closing:
                coll.fail("send_error", f"send failed: {type(exc).__name__}", _ms_since(start))
            self.close()
            return False
        if text is None:
            if self.seq == 0:
                coll.counters["senders"] += 1
            self.seq += 1
            coll.sent_by[self.nick] = self.seq
        coll.counters["sent"] += 1
        coll.counters["intended"] += 1
        coll.fire("say", _ms_since(start), len(payload))
        return True

    # ----------------------------------------------------------------- receiving

    def _count_receiver(self, timing: bool) -> None:
        coll = self.collector
        coll.counters["timing_receivers" if timing else "counting_receivers"] += 1
        if timing:
            coll.timing_clients.add(self)

    def start_receiver(self, timing: bool = True) -> None:
        """Read in a background greenlet until the connection ends.

        A timing receiver parses and times every line; a counting one only counts lines
        (and answers ``PING``s), reading every ``COUNT_INTERVAL_S``.
        """
        if self.receiver is not None:
            raise RuntimeError("a receiver is already running")
        self._count_receiver(timing)
        self.receiver = gevent.spawn(self._receive_loop, timing)

    def receive(self, timeout: float | None = None) -> core.Incoming | None:
        """The next line (``PING``s answered, not returned), timed if it is a load-test message.

        Joins first if needed. None on timeout, on a failed join, or when the connection
        ended (reported as ``disconnected``/``recv_error`` unless we closed it). Not while a
        background receiver reads the connection.
        """
        if self.receiver is not None:
            raise RuntimeError("receive() while a background receiver reads this connection")
        if not self.ensure_joined():
            return None
        coll = self.collector
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                while self._pending:
                    line, arrived = self._pending.popleft()
                    kind, msg = self.proto.classify(line)
                    if self.timing:
                        self._on_lines([line], arrived)
                    elif kind is LineKind.PING:
                        self._write(self.proto.pong(line))
                    if kind is not LineKind.PING:
                        return core.Incoming(kind, msg, line, arrived)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                sock = self.sock
                assert sock is not None
                sock.settimeout(remaining)
                try:
                    data = sock.recv(RECV_BYTES)
                except TimeoutError:
                    return None
                finally:
                    sock.settimeout(None)
                if not data:
                    if not self.closing:
                        coll.fail("disconnected", "server closed the connection")
                    self.close()
                    return None
                now = coll.last_arrival = time.time()
                self._feed(data, now)
        except PEER_ERRORS as exc:
            if not self.closing:
                coll.fail("recv_error", f"receive failed: {type(exc).__name__}")
            self.close()
            return None

    def _receive_loop(self, timing: bool) -> None:
        """Receiver greenlet: read until EOF; a timing receiver parses and times each line.

        Errors become Locust failures, never tracebacks: an unexpected EOF is
        ``disconnected``, a socket or framing error ``recv_error``. A close we asked for
        (``closing``) is not a failure.
        """
        sock = self.sock
        assert sock is not None
        coll = self.collector
        counters = coll.counters
        measuring = coll.measuring
        try:
            if timing:
                while self._pending:
                    line, arrived = self._pending.popleft()
                    self._on_lines([line], arrived)
                splitter = self.splitter
                frames = self.frames
                while True:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        break
                    now = coll.last_arrival = time.time()
                    lines = splitter.feed(data)
                    if lines:
                        self._on_lines(lines, now)
                    if frames is not None and frames.replies:
                        self._write_raw(frames.take_replies())
            else:
                counter = self._counter()
                leftover = [line for line, _ in self._pending]
                self._pending.clear()
                if measuring.is_set():
                    counters["counted_lines"] += len(leftover)
                for line in leftover:
                    if self.proto.classify(line)[0] is LineKind.PING:
                        self._write(self.proto.pong(line))
                while True:
                    data = sock.recv(RECV_BYTES)
                    if not data:
                        break
                    count, replies = counter.feed(data)
                    if measuring.is_set():  # before the gate: join notices, not traffic
                        counters["counted_lines"] += count
                    for reply in replies:
                        self._write(reply)
                    self._ws_replies()
                    coll.last_arrival = time.time()
                    gevent.sleep(COUNT_INTERVAL_S)
            if not self.closing:
                coll.fail("disconnected", "server closed the connection")
        except PEER_ERRORS as exc:
            if not self.closing:
                coll.fail("recv_error", f"receive failed: {type(exc).__name__}")
        finally:
            self.closed.set()

    def _counter(self) -> chatload.Counter:
        """A counting receiver's read handler: the dialect's newline counter, or over
        WebSocket a message counter that finds the dialect's keep-alives (IRC ``PING``)."""
        frames = self.frames
        if frames is None:
            return self.proto.counter(self.splitter.tail)  # type: ignore[union-attr]
        proto = self.proto

        def answer(line: bytes) -> bytes | None:
            return proto.pong(line) if proto.classify(line)[0] is LineKind.PING else None

        return ws.MessageCounter(frames, proto.ping_marker, answer)

    def _on_lines(self, lines: list[bytes], now: float) -> None:
        """Time and check a batch of lines that all arrived by ``now`` (epoch seconds).

        Before the process's gate opens nothing is timed, counted or sequence-checked:
        only join notices arrive then, plus (with ``--processes``) the first messages of a
        worker whose gate opened a few milliseconds earlier, which are counted as
        ``early_messages``. The sequence baseline is then the first message after the gate.
        """
        coll = self.collector
        counters = coll.counters
        classify = self.proto.classify
        if not coll.measuring.is_set():
            for raw in lines:
                kind, _msg = classify(raw)
                if kind is LineKind.MESSAGE:
                    counters["early_messages"] += 1
                elif kind is LineKind.PING:
                    self._write(self.proto.pong(raw))
                elif kind is LineKind.ERROR:
                    coll.fail("server_error", "unexpected error reply from the server")
            return
        now_us = int(now * 1_000_000)
        tracker = self.tracker
        fire = coll.environment.events.request.fire if coll.environment else None
        for raw in lines:
            kind, msg = classify(raw)
            if msg is not None:
                latency_us = now_us - msg.intended_us
                coll.record_latency(latency_us)
                counters["timed"] += 1
                if fire is not None:
                    fire(
                        request_type=REQUEST_TYPE,
                        name="broadcast",
                        response_time=latency_us / 1000.0,
                        response_length=len(raw),
                        exception=None,
                        context={},
                    )
                if msg.sender != msg.stamped:
                    coll.fail("forged", "message text names another sender than the stamp")
                verdict, missing = tracker.observe(msg.sender, msg.seq)
                if verdict is chatload.Verdict.LOST:
                    counters["lost_messages"] += missing
                    coll.fail("lost", "gap in a sender's sequence")
                elif verdict is chatload.Verdict.REORDERED:
                    coll.fail("reordered", "sequence number went back or repeated")
            elif kind is LineKind.NOTICE:
                counters["notices"] += 1
            elif kind is LineKind.PING:
                self._write(self.proto.pong(raw))
            elif kind is LineKind.ERROR:
                coll.fail("server_error", "unexpected error reply from the server")
            elif kind is LineKind.CLOSING:
                self.close_reason = raw
            else:
                counters["other_lines"] += 1

    # ----------------------------------------------------------------- leaving

    def quit(self) -> None:
        """Leave politely: the dialect's quit, then wait (bounded) for the server's close."""
        if self.sock is None:
            return
        self.closing = True
        try:
            self._write(self.proto.quit())
            if self.receiver is not None:
                self.closed.wait(self.timeout)
            else:
                deadline = time.monotonic() + self.timeout
                while self.sock is not None and (left := deadline - time.monotonic()) > 0:
                    self.sock.settimeout(left)
                    if not self.sock.recv(RECV_BYTES):
                        break
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        """Stop the receiver and close the socket; safe to call any time, twice."""
        self.closing = True
        self.collector.timing_clients.discard(self)
        receiver, self.receiver = self.receiver, None
        if receiver is not None and receiver is not gevent.getcurrent():
            receiver.kill(block=True, timeout=2.0)
        sock, self.sock = self.sock, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        self.connected = self.joined = False
        self.closed.set()


class LineChatClient(ChatClient):
    """``ChatClient`` over chatd's line protocol (``shared/PROTOCOL.md``)."""

    dialect_class = LineDialect


class IrcChatClient(ChatClient):
    """``ChatClient`` over IRC: chatd's IRC listener, ngircd, InspIRCd, any RFC 2812 server."""

    dialect_class = IrcDialect

    @property
    def isupport(self) -> dict[str, str]:
        """The server's ISUPPORT (``005``) tokens of the current connection."""
        return self.proto.isupport  # type: ignore[attr-defined, no-any-return]


#: ``--chat-dialect`` values and their clients.
CLIENTS: dict[str, type[ChatClient]] = {"line": LineChatClient, "irc": IrcChatClient}
