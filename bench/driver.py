"""The lean load driver: one process, one epoll, plain non-blocking sockets.

Why it exists: Locust (gevent, one event per delivery) tops out at some tens of
thousands of deliveries per second and cannot hold 10,000 sockets cheaply, so flood
throughput, the saturation sweep, idle connections and the Redis anchor are driven from
here instead.

Theory of operation
-------------------
* A ``Fleet`` is N client sockets that all sit in one room, speaking one *dialect*:
  ``line`` (chatd's line protocol: a nickname, then chat lines), ``irc`` (NICK/USER,
  wait for 001, JOIN, wait for 366; PRIVMSG to the channel; PINGs answered) or ``resp``
  (Redis: SUBSCRIBE, and PUBLISH from separate publisher connections). Setup goes in
  batches and waits for every client's confirmation, so no server's accept backlog
  overflows and no measurement starts while join notices are still in flight.
* Hot path: a readable socket gets one ``recv_into`` of up to 256 KiB into a shared
  buffer and ``bytearray.count(b"\n")``; nothing is parsed. A delivery is a newline (one
  per chat or IRC line; ``chatload.resp.PUSH_NEWLINES`` per Redis push). So the driver's
  cost per delivery is a fraction of a C-level count, and it stays ahead of the server
  for as long as the server sends in chunks.
* Paced runs read the timing receivers (below) as soon as data arrives and every other
  socket lazily, every 10-100 ms: at low rates a server sends each delivery on its own,
  and reading 1,000 sockets promptly cost the driver a syscall per delivery (it
  saturated far below the servers' knees); read lazily, each read takes several messages while
  the socket's kernel buffer holds them (32 KiB at most, inside loopback's window).
* Timing receivers: a sample of the members also split lines, parse the stamp
  (``chatload.find_stamp``), check each sender's sequence (lost / reordered) and record
  arrival minus *intended* send time in nanoseconds (``time.perf_counter_ns``; senders and
  receivers are in this process, so one clock serves both). Parsing costs the driver
  per line, so at high message rates fewer members are timed (``parse_budget``): enough
  for thousands of samples per window, few enough that the driver stays ahead.
* Senders are members too (chatd, IRC: each sender also receives the other senders'
  messages) or separate publisher connections (Redis). Paced mode follows one global
  schedule: message k is due at t0 + k / rate and goes to sender k mod S, so the cost per
  loop turn is per message due, not per sender. Flood mode keeps at most ``inflight``
  messages beyond the slowest member: as fast as the server delivers, without letting
  output queues grow until a server drops someone.
* The driver measures its own CPU (getrusage) over each window; at >= 90 % of a core it
  is the bottleneck and the run is marked saturated.
* Over WebSocket (``transport="ws"``: chatd's ``--http-port``, the line dialect at /line,
  IRC at / with ``text.ircv3.net``) each client upgrades first (``chatload.ws``:
  wsproto's handshake), then registers; senders write masked frames, one line each. The
  hot path still counts one byte per delivery with ``bytearray.count``: the first byte of
  a whole text frame (``0x81``, :data:`WS_MARK`) instead of a newline. That is exact for
  the bench's traffic -- ASCII payloads (no byte above 0x7f) and server frames shorter
  than 126 bytes, whose length byte is below 0x7e -- and checked, not assumed: timing
  receivers parse every frame (``chatload.ws.ServerFrames``), and a step whose parsed count
  differs from the counted bytes at any of them is an error (invalid). The flood is not
  offered over WebSocket.

What the bytes mean -- the stamp, line splitting, sequence checks, each dialect's
handshake and keep-alive, WebSocket framing -- is the sans-IO library ``chatload``, the
one the Locust user speaks with; this module only moves bytes and reads clocks. A stamp's
sender is the sender's index in decimal and its time ``time.perf_counter_ns()``.

Every loop is bounded by a deadline; nothing here waits forever.
"""

from __future__ import annotations

import bisect
import gc
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import chatload
import chatload.irc
import chatload.line
import chatload.resp
import chatload.ws
from bench import procstat
from chatload.irc import IrcDialect
from chatload.line import LineDialect

#: Bytes one recv may take. Large, so a server that batches is read in one call.
RECV_BYTES = 256 * 1024

#: Clients connected per setup batch (below every server's listen backlog).
SETUP_BATCH = 100

#: Ends setup's drain: no byte arrived on any socket for this long.
QUIET_S = 0.25


#: Seconds of the server's recent delivery rate the flood keeps in flight per member.
FLOOD_INFLIGHT_S = 0.25

#: Lazily read sockets (see Fleet.paced) are read every LAZY_BYTES / (bytes per second
#: per socket), within these bounds: 32 KiB is half of loopback's initial receive window.
LAZY_BYTES = 32 * 1024
LAZY_MIN_S = 0.01
LAZY_MAX_S = 0.1

#: The dialects a Fleet speaks (see the module docstring).
DIALECTS: tuple[str, ...] = ("line", "irc", "resp")
#: How a Fleet reaches them: the dialect's own TCP port, or WebSocket (chatd's dialects).
TRANSPORTS: tuple[str, ...] = ("tcp", "ws")
#: What the hot path counts per delivery over WebSocket: FIN + text (see the docstring).
WS_MARK = bytes((0x80 | chatload.ws.TEXT,))

#: The IRC channel the fleet's clients join (one "room") unless told another.
IRC_CHANNEL = "#bench"


class DriverError(RuntimeError):
    """The server refused or dropped clients during setup."""


@dataclass
class Member:
    """One client socket and what arrived on it."""

    sock: socket.socket
    nick: str
    #: newlines received since the last reset
    lines: int = 0
    #: bytes received since the last reset
    rx_bytes: int = 0
    registered: bool = False
    splitter: chatload.LineSplitter | chatload.ws.ServerFrames | None = None
    checker: chatload.SequenceTracker[bytes] | None = None
    #: setup (line, IRC): the dialect's handshake, until registered (and joined)
    dialect: LineDialect | IrcDialect | None = None
    #: IRC: the channel to JOIN once registered (None: nothing to join)
    room: str | None = None
    #: index among the fleet's senders, or -1 for a member that only receives
    sender_index: int = -1
    #: WebSocket: the opening handshake until the server's 101, and the registration
    #: lines sent once it came
    upgrade: chatload.ws.ClientHandshake | None = None
    hello: bytes = b""


@dataclass
class FloodResult:
    """What a flood window measured."""

    window_s: float
    deliveries: float
    deliveries_per_s: float
    messages_sent: int
    send_rate: float
    driver_cpu_s: float
    errors: int


@dataclass
class PacedResult:
    """What one paced rate step measured."""

    offered_rate: float
    achieved_send_rate: float
    window_s: float
    deliveries_per_s: float
    latencies_ns: list[int]
    expected_samples: int
    lost: int
    reordered: int
    missing: int
    driver_cpu_s: float
    errors: int
    extra: dict[str, float] = field(default_factory=dict)
    #: wall seconds between the two CPU readings (the window, as the loop saw its edges)
    cpu_wall_s: float = 0.0


class Fleet:
    """N connected, registered clients of one server, all in one room, on one epoll."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        dialect: str = "line",
        prefix: str = "b",
        transport: str = "tcp",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        if transport not in TRANSPORTS or (transport == "ws" and dialect == "resp"):
            raise ValueError(f"no {dialect} dialect over transport {transport!r}")
        self.host, self.port, self.dialect = host, port, dialect
        self.redis = dialect == "resp"
        self.irc = dialect == "irc"
        self.ws = transport == "ws"
        #: the byte counted once per delivery (see the module docstring)
        self.mark = WS_MARK if self.ws else b"\n"
        #: WebSocket: our frames (text, as the offered subprotocols ask)
        self._framer = chatload.ws.LineFramer(chatload.ws.TEXT)
        self.prefix = prefix
        self.ep = select.epoll()
        self._ep_fd = self.ep.fileno()
        # Created now, while fd numbers are small (select() below takes fds < 1024): the
        # paced loop's prompt set (timed receivers) and its lazy set (everyone else).
        self._fast_ep = select.epoll()
        self._lazy_ep = select.epoll()
        self.members: list[Member] = []
        self.by_fd: dict[int, Member] = {}
        self.senders: list[Member] = []
        #: members that stopped reading (add_stalled); never polled
        self.stalled: list[Member] = []
        self.errors = 0
        self.error_lines: list[str] = []
        self._buf = bytearray(RECV_BYTES)
        self._nicks = 0
        #: next sequence number per sender, carried across paced steps
        self._seq: list[int] | None = None

    # ------------------------------------------------------------------ setup

    def _new_nick(self) -> str:
        """Fixed-width nicks, so one never contains another as a substring."""
        self._nicks += 1
        return f"{self.prefix}{self._nicks:06d}"

    def _connect(
        self, nick: str, room: str | None, subscribe: bool, rcvbuf: int = 0, mss: int = 0
    ) -> Member:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Both before connect: the window and the MSS are fixed by the handshake.
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        s.settimeout(10.0)
        s.connect((self.host, self.port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setblocking(False)
        m = Member(s, nick, splitter=self._reader())
        if self.redis:
            if subscribe:
                s.send(chatload.resp.subscribe())
            else:
                m.registered = True  # a publisher has nothing to confirm
        else:
            if self.irc:
                m.dialect = IrcDialect()
                m.room = room or IRC_CHANNEL  # JOINed once registered (_handshake)
                hello = m.dialect.register(nick)
            else:
                # The nick and the join in one write: framing is independent of
                # segmentation (PROTOCOL.md), so the server handles both lines in order.
                m.dialect = LineDialect()
                hello = m.dialect.register(nick) + (m.dialect.join(room) if room else b"")
            if self.ws:
                # The handshake first; registration once the 101 is in (_confirms).
                m.hello = hello
                m.upgrade = chatload.ws.ClientHandshake(
                    chatload.ws.host_header(self.host, self.port),
                    chatload.ws.PATHS[self.dialect],
                    chatload.ws.SUBPROTOCOLS[self.dialect],
                )
                s.send(m.upgrade.request)
            else:
                s.send(hello)
        self.ep.register(s.fileno(), select.EPOLLIN)
        self.by_fd[s.fileno()] = m
        return m

    def add(
        self,
        n: int,
        *,
        room_of: Callable[[int], str | None] | None = None,
        senders: int = 0,
        timeout_s: float = 120.0,
    ) -> None:
        """Connect and register n more members (the last ``senders`` of them send).

        room_of(i) names a room to join after registering (chatd's line dialect, or a
        channel to JOIN over IRC), so the idle
        scenario can spread 10,000 clients over small rooms instead of paying for
        n^2/2 join notices in one. Raises DriverError when a client is refused.
        """
        deadline = time.monotonic() + timeout_s
        start = len(self.members)
        i = 0
        while i < n:
            batch: list[Member] = []
            for _ in range(min(SETUP_BATCH, n - i)):
                is_sender = i >= n - senders
                room = room_of(start + i) if room_of else None
                # A Redis publisher is its own connection: it cannot be subscribed.
                m = self._connect(self._new_nick(), room, subscribe=not is_sender)
                batch.append(m)
                if is_sender:
                    m.sender_index = len(self.senders)
                    self.senders.append(m)
                else:
                    self.members.append(m)
                i += 1
            self._wait_registered(batch, deadline)
        self.drain_quiet(deadline)

    def add_stalled(self, rcvbuf: int = 4096, mss: int = 1460, timeout_s: float = 30.0) -> Member:
        """Add one member that registers and then never reads again (a slow consumer).

        Why the socket options: on loopback the MSS is 64 KiB, so the server's send
        buffer autotunes to 4 MiB and, with a default receive buffer, about 3-4 MiB
        vanish into kernel buffers before any server feels back-pressure -- minutes of
        chat traffic. An Ethernet-sized MSS (1460) and a 4 KiB receive buffer make the
        kernel hold about 90 KiB, as it would for a stalled client across a real network.
        After registration it leaves the epoll set (a level-triggered fd we never read
        would wake every poll) and nothing it receives is counted.
        """
        m = self._connect(self._new_nick(), None, subscribe=True, rcvbuf=rcvbuf, mss=mss)
        deadline = time.monotonic() + timeout_s
        self._wait_registered([m], deadline)
        self.ep.unregister(m.sock.fileno())
        del self.by_fd[m.sock.fileno()]
        self.stalled.append(m)
        self.drain_quiet(deadline)
        return m

    def _wait_registered(self, batch: list[Member], deadline: float) -> None:
        pending = {m.sock.fileno() for m in batch if not m.registered}
        while pending:
            if time.monotonic() > deadline:
                raise DriverError(f"{len(pending)} clients not confirmed before the deadline")
            for fd, _ in self.ep.poll(0.5):
                m = self.by_fd[fd]
                data = self._recv(m)
                if data is None:
                    raise DriverError(f"server closed {m.nick} during setup: {self.error_lines}")
                if not m.registered and self._confirms(m, data):
                    m.registered = True
                    pending.discard(fd)
                    m.splitter = m.dialect = None

    def _confirms(self, m: Member, data: bytes) -> bool:
        """Does data complete m's registration? '! ' lines are refusals."""
        assert m.splitter is not None
        if m.upgrade is not None:
            try:
                accepted = m.upgrade.receive_data(data)
            except chatload.ws.WebSocketError as exc:
                self.errors += 1
                self.error_lines.append(f"{m.nick}: {exc}"[:200])
                raise DriverError(f"{m.nick}: WebSocket upgrade failed: {exc}") from None
            if accepted is None:
                return False
            if accepted.opcode != chatload.ws.TEXT:
                raise DriverError(f"{m.nick}: the server chose {accepted.subprotocol}")
            m.upgrade = None
            self._send(m, m.hello)
            data = accepted.trailing  # frames already (counted by _recv with the rest)
        try:
            lines = m.splitter.feed(data)
        except chatload.ProtocolError as exc:
            raise DriverError(f"{m.nick}: {exc}") from None
        if self.redis:
            return any(chatload.resp.confirms_subscribe(line) for line in lines)
        return self._handshake(m, lines)

    def _handshake(self, m: Member, lines: list[bytes]) -> bool:
        """Feed setup lines to m's dialect (``chatload``): answer PINGs, JOIN once
        registered (IRC; the line dialect sent its ``/join`` with the nick), and say whether
        m is done -- registered and, with a room, joined. A refusal (nick taken, room full
        or closed, the server's ERROR) makes the run invalid: DriverError, not a retry."""
        d = m.dialect
        assert d is not None
        for line in lines:
            try:
                event = d.handshake_event(line)
            except chatload.ProtocolError as exc:
                event = chatload.Closing(str(exc))
            if event is None:
                continue
            if isinstance(event, chatload.Reply):
                self._send(m, event.data)
            elif isinstance(event, chatload.Registered):
                if not m.room:
                    return True
                self._send(m, d.join(m.room))
            elif isinstance(event, chatload.Joined):
                return True
            else:  # RegisterRefused, JoinRefused, Closing
                self.errors += 1
                self.error_lines.append(f"{m.nick}: {line.decode(errors='replace')}"[:200])
                raise DriverError(f"{m.nick} refused: {line[:200]!r}")
        return False

    def _reader(self) -> chatload.LineSplitter | chatload.ws.ServerFrames:
        """What splits a timing receiver's (or a registering client's) reads into lines."""
        return chatload.ws.ServerFrames() if self.ws else chatload.LineSplitter()

    def _send(self, m: Member, data: bytes) -> None:
        """Setup and keep-alive writes: the dialect's lines, framed over WebSocket."""
        m.sock.send(self._framer.frames(data) if self.ws else data)

    def _answer_pings(self, m: Member, data: bytes | bytearray) -> None:
        """Answer every PING in data (IRC): an unanswered PING ends the connection.

        Only called on chunks that contain b"PING", so the hot path pays one find().
        A PING split across two reads is missed; the bench's IRC servers are configured
        to ping rarely (an hour), so this matters only for a server we do not configure.
        Over WebSocket a PING is a frame whose payload starts with it (chatd sends
        ``PING chatd``); the frames of an unparsed chunk are found by their header.
        """
        if self.ws:
            lines = chatload.ws.frames_starting(bytes(data), b"PING", self.mark[0])
        else:
            lines = bytes(data).split(b"\n")
        self._answer_ping_lines(m, lines)

    def _answer_ping_lines(self, m: Member, lines: list[bytes]) -> None:
        for pong in chatload.irc.pongs(lines):
            try:
                self._send(m, pong)
            except OSError:
                pass

    def _recv(self, m: Member) -> bytes | None:
        """One recv on a readable socket (setup only: returns a copy), None at EOF."""
        try:
            n = m.sock.recv_into(self._buf)
        except BlockingIOError:
            return b""
        except OSError:
            return None
        if n == 0:
            return None
        m.rx_bytes += n
        m.lines += self._buf.count(self.mark, 0, n)
        data = bytes(self._buf[:n])
        if self.irc and m.registered and b"PING" in data:
            self._answer_pings(m, data)
        return data

    def drain_quiet(self, deadline: float) -> None:
        """Read until nothing arrives for QUIET_S (join notices settle), bounded."""
        last = time.monotonic()
        while time.monotonic() - last < QUIET_S and time.monotonic() < deadline:
            events = self.ep.poll(QUIET_S / 2)
            for fd, _ in events:
                m = self.by_fd[fd]
                if self._recv(m) is None:
                    raise DriverError(f"server closed {m.nick} while idle")
            if events:
                last = time.monotonic()

    def _wait(self, wait_ns: int, ep: select.epoll | None = None) -> list[tuple[int, int]]:
        """epoll with a microsecond timeout.

        epoll_wait takes whole milliseconds (Python rounds up), which would make a paced
        sender up to 1 ms late -- more than Redis's whole fan-out at N=100. select() on
        the epoll fd itself takes microseconds, so wait there, then collect with poll(0).
        """
        ep = ep or self.ep
        if wait_ns <= 0:
            return ep.poll(0)
        if ep.fileno() < 1024:
            select.select([ep.fileno()], [], [], wait_ns / 1e9)
            return ep.poll(0)
        return ep.poll(wait_ns / 1e9)

    def _read_lazy(self, lazy: select.epoll) -> int:
        """One pass over the lazily read sockets that have data: count lines; returns the
        number of connections the server closed.

        PINGs are not looked for here: every IRC server the bench runs pings once an hour
        (chatd with ``--ping-interval 3600``, see :func:`bench.servers.chatd_argv`), far
        longer than a job, and a paced step is where the load generator's CPU is the
        ceiling: the search cost as much as the count (issue 20). A server that pinged
        anyway would close the member, which the step reports as an error.
        """
        buf, count, by_fd = self._buf, self._buf.count, self.by_fd
        mark = self.mark
        closed = 0
        for fd, _ in lazy.poll(0):
            m = by_fd[fd]
            try:
                n = m.sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                closed += 1
                lazy.unregister(fd)
                if len(self.error_lines) < 5:
                    self.error_lines.append(f"server closed {m.nick} during a paced run")
                continue
            m.lines += count(mark, 0, n)
        return closed

    def _check_ws_counts(self, timed: list[Member]) -> int:
        """WebSocket: does every timed receiver's count of frame-marker bytes agree with
        the frames its reader parsed (plus the one it holds half-received)? The number of
        members where it did not; each says so in ``error_lines``. This is what makes
        counting one byte per delivery (the module docstring) safe to rely on."""
        bad = 0
        for m in timed:
            frames = m.splitter
            assert isinstance(frames, chatload.ws.ServerFrames)
            parsed = frames.messages + (1 if frames.pending else 0)
            if m.lines != parsed:
                bad += 1
                if len(self.error_lines) < 5:
                    self.error_lines.append(
                        f"{m.nick}: {m.lines} frame markers counted, {parsed} frames parsed"
                    )
        return bad

    def receivers(self) -> list[Member]:
        """Every client that receives room traffic: the members, and with chatd and IRC
        also the senders (each gets the other senders' messages, not its own)."""
        return self.members if self.redis else self.members + self.senders

    def reset_counts(self) -> None:
        for m in self.receivers():
            m.lines = m.rx_bytes = 0

    def delivered_lines(self) -> int:
        """Newlines counted at every receiver since the last reset_counts()."""
        return sum(m.lines for m in self.receivers())

    def close(self) -> None:
        """Close every socket (unregister first, as the selector docs advise)."""
        for m in self.members + self.senders + self.stalled:
            if m.sock.fileno() in self.by_fd:
                self.ep.unregister(m.sock.fileno())
            m.sock.close()
        self.ep.close()
        self._fast_ep.close()
        self._lazy_ep.close()
        self.members.clear()
        self.senders.clear()
        self.stalled.clear()
        self.by_fd.clear()

    @property
    def lines_per_message(self) -> int:
        return chatload.resp.PUSH_NEWLINES if self.redis else 1

    def encode_message(self, payload: bytes) -> bytes:
        """What a sender writes for one room message in this fleet's dialect (over
        WebSocket: that line as one masked frame)."""
        if self.redis:
            return chatload.resp.publish(payload)
        if self.irc:
            line = chatload.irc.privmsg(IRC_CHANNEL.encode(), payload)
        else:
            line = chatload.line.chat_line(payload)
        return self._framer.frames(line) if self.ws else line

    # ------------------------------------------------------------------ flood

    def flood(
        self,
        *,
        warmup_s: float,
        window_s: float,
        payload: int,
        inflight_bytes: int = 128 * 1024,
        checkers: int = 10,
        read_pause_s: float = 0.0005,
        on_window: Callable[[str], None] | None = None,
    ) -> FloodResult:
        """One sender, as fast as the server delivers to the slowest member (line, resp).

        Every flood message has the same length, so a member's deliveries are its bytes
        divided by the frame length. Most members read with MSG_TRUNC: the kernel
        discards the bytes without copying them out, so the driver costs a syscall per
        chunk rather than a copy per byte -- without it the driver, not the server, was
        the bottleneck. ``checkers`` members spread over the room read normally and count
        newlines, and after the drain every member must hold exactly sent x frame bytes;
        any difference is reported as errors (lost, extra or malformed deliveries).

        At most inflight_bytes of frames per member are pending at any time, so no
        output queue grows without bound and nobody gets dropped. on_window("start")
        and on_window("end") let the caller sample the server at the window's edges.
        """
        if self.ws:
            raise ValueError("the flood counts bytes per frame: not offered over WebSocket")
        hook = on_window or (lambda _edge: None)
        sender = self.senders[0]
        body = chatload.filler(payload)
        line = chatload.resp.publish(body) if self.redis else chatload.line.chat_line(body)
        frame = chatload.resp.push(body) if self.redis else sender.nick.encode() + b": " + line
        flen = len(frame)
        # In flight per member: at most inflight_bytes, and at most what the server
        # delivered in the last FLOOD_INFLIGHT_S (re-estimated every 0.1 s, starting
        # small). A fixed 512 KiB is minutes of backlog for a server that fans out line
        # by line at ~200k deliveries/s, which then could not drain for the exact check.
        inflight_cap = max(64, inflight_bytes // flen)
        inflight = 64
        tick_at, slowest_at_tick = time.monotonic() + 0.1, 0
        per_block = max(1, 65536 // len(line))
        block = memoryview(line * per_block)
        lpm = self.lines_per_message
        buf, count, trunc = self._buf, self._buf.count, socket.MSG_TRUNC
        # Everyone in the room but the sender receives the flood (other senders too).
        members = [m for m in self.receivers() if m is not sender]
        by_fd = self.by_fd
        checking = {id(m) for m in members[:: max(1, len(members) // max(1, checkers))]}
        for m in members:
            m.lines = m.rx_bytes = 0
        sender_fd = sender.sock.fileno()
        ssend = sender.sock.send
        sent_bytes = offset = errors = 0
        want_out = started = False
        base_rx = base_sent = 0
        cpu0 = cpu1 = 0.0
        t_start = time.monotonic() + warmup_s
        t_end = t_start + window_s
        t_stop = t_start
        gc.disable()
        try:
            while True:
                now = time.monotonic()
                if not started and now >= t_start:
                    base_rx = sum(m.rx_bytes for m in members)
                    base_sent = sent_bytes // len(line)
                    cpu0 = procstat.self_cpu_seconds()
                    hook("start")
                    started = True
                if now >= t_end:
                    hook("end")
                    break
                slowest = min(m.rx_bytes for m in members) // flen
                if now >= tick_at:
                    rate = (slowest - slowest_at_tick) / (now - tick_at + 0.1)
                    inflight = min(inflight_cap, max(64, int(rate * FLOOD_INFLIGHT_S)))
                    tick_at, slowest_at_tick = now + 0.1, slowest
                can_send = sent_bytes // len(line) - slowest < inflight
                if can_send and not want_out:
                    try:
                        n = ssend(block[offset:])
                        sent_bytes += n
                        offset = (offset + n) % len(block)
                    except BlockingIOError:
                        want_out = True
                        self.ep.modify(sender_fd, select.EPOLLIN | select.EPOLLOUT)
                if read_pause_s:
                    # Let bytes pile up in the members' socket buffers: MSG_TRUNC costs
                    # per call, not per byte, so fewer, fuller reads keep the driver
                    # ahead of the server (512 KiB in flight is >100 ms of buffering).
                    time.sleep(read_pause_s)
                for fd, ev in self.ep.poll(0.05 if not can_send or want_out else 0):
                    if fd == sender_fd:
                        if ev & select.EPOLLOUT:
                            want_out = False
                            self.ep.modify(sender_fd, select.EPOLLIN)
                        if ev & select.EPOLLIN:
                            try:
                                if sender.sock.recv_into(buf, RECV_BYTES, trunc) == 0:
                                    errors += 1
                            except BlockingIOError:
                                pass
                        continue
                    m = by_fd[fd]
                    check = id(m) in checking
                    try:
                        n = m.sock.recv_into(buf, RECV_BYTES, 0 if check else trunc)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    if n == 0:
                        errors += 1
                        break
                    m.rx_bytes += n
                    if check:
                        m.lines += count(b"\n", 0, n)
                if errors:
                    break
            cpu1 = procstat.self_cpu_seconds()
            t_stop = time.monotonic()
            rx_at_end = sum(m.rx_bytes for m in members)
        finally:
            gc.enable()
        # Finish the partial block so every member is owed whole frames, then let what
        # is in flight arrive: it must not leak into the next measurement, and the
        # exact-count check below needs it.
        total_sent = sent_bytes // len(line)
        if not errors:
            rest = sent_bytes % len(line)
            if rest:
                sender.sock.setblocking(True)
                sender.sock.sendall(line[rest:])
                sender.sock.setblocking(False)
                total_sent += 1
            self._drain_counting(time.monotonic() + 30.0, checking, total_sent * flen, members)
            errors += self._check_flood(total_sent, flen, lpm, checking, members)
        elapsed = max(1e-9, t_stop - t_start) if started else 1e-9
        deliveries = (rx_at_end - base_rx) / flen if started else 0.0
        sent = total_sent - base_sent if started else 0
        return FloodResult(
            window_s=elapsed,
            deliveries=deliveries,
            deliveries_per_s=deliveries / elapsed,
            messages_sent=sent,
            send_rate=sent / elapsed,
            driver_cpu_s=cpu1 - cpu0 if started else 0.0,
            errors=errors + self.errors,
        )

    def _drain_counting(
        self, deadline: float, checking: set[int], want: int, members: list[Member]
    ) -> None:
        """Read (MSG_TRUNC except checkers) until every member holds want bytes and
        then nothing more arrives for QUIET_S, or until the deadline.

        Waiting for the exact amount, not just for quiet, matters: a server that pauses
        for longer than QUIET_S with messages still queued is slow, not lossy.
        """
        buf, count, trunc = self._buf, self._buf.count, socket.MSG_TRUNC
        last = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - last >= QUIET_S and all(m.rx_bytes >= want for m in members):
                break
            events = self.ep.poll(QUIET_S / 2)
            for fd, _ in events:
                m = self.by_fd[fd]
                check = id(m) in checking
                try:
                    n = m.sock.recv_into(buf, RECV_BYTES, 0 if check else trunc)
                except BlockingIOError:
                    continue
                if n == 0:
                    raise DriverError(f"server closed {m.nick} after a flood")
                m.rx_bytes += n
                if check:
                    m.lines += count(b"\n", 0, n)
            if events:
                last = time.monotonic()

    def _check_flood(
        self, sent: int, flen: int, lpm: int, checking: set[int], members: list[Member]
    ) -> int:
        """Count members that did not get exactly ``sent`` frames, and say so."""
        bad = 0
        want = sent * flen
        for m in members:
            wrong_bytes = m.rx_bytes != want
            wrong_lines = id(m) in checking and m.lines != sent * lpm
            if wrong_bytes or wrong_lines:
                bad += 1
                if len(self.error_lines) < 5:
                    self.error_lines.append(
                        f"{m.nick}: {m.rx_bytes} bytes / {m.lines} lines after a flood "
                        f"of {sent} frames of {flen} bytes"
                    )
        return bad

    # ------------------------------------------------------------------ paced

    def paced(
        self,
        *,
        rate: float,
        warmup_s: float,
        window_s: float,
        payload: int,
        sample: int = 100,
        drain_s: float = 2.0,
        parse_budget: float = 0.0,
        min_timed: int = 5,
        active_senders: int = 0,
        on_window: Callable[[str], None] | None = None,
    ) -> PacedResult:
        """Senders send ``rate`` messages/s in total on a fixed schedule; measure latency.

        Open loop: message k is due at t0 + k / rate, goes to sender k mod S (so each
        sender sends rate / S per second, the senders evenly out of phase) and carries
        that intended time; a sender whose socket is full keeps its messages queued here
        and they go out late, with their intended stamps. Latency is recorded at up to
        ``sample`` receivers spread evenly over the room, for messages intended inside
        the window; with ``parse_budget`` (stamped lines per second the driver may parse)
        fewer receivers are timed at high rates, never fewer than ``min_timed``. After
        the window we wait up to drain_s for timed deliveries still in flight; any that
        never come are counted as missing. on_window is called at the window's edges.

        ``active_senders`` (0: all) sends from the first that many senders only; the
        others stay in the room as receivers, so one fleet serves sweeps with 1, 10 and
        100 senders without a new join storm. Sequence numbers continue per sender
        across calls, and each call checks them with fresh checkers (the timed set
        changes with the rate), so a gap inside a step is a loss.
        """
        hook = on_window or (lambda _edge: None)
        n_send = active_senders or len(self.senders)
        if not 1 <= n_send <= len(self.senders):
            raise ValueError(f"{n_send} active senders of {len(self.senders)}")
        senders = self.senders[:n_send]
        receivers = self.receivers()
        want = sample
        if parse_budget > 0:
            want = max(min_timed, min(sample, int(parse_budget / max(rate, 1e-9))))
        step = max(1, len(receivers) // max(1, want))
        timed = receivers[::step][:want]
        for m in receivers:
            m.splitter = None
        ws = self.ws
        for m in timed:
            m.splitter = self._reader()
            m.checker = chatload.SequenceTracker()
        timed_ids = {id(m) for m in timed}
        # Timed receivers are read as soon as data arrives (their arrival times are the
        # measurement); every other socket only every lazy_ns, so it holds several
        # messages per read. At low rates a server sends every delivery on its own, and
        # reading 1,000 sockets promptly would cost the driver a syscall per delivery
        # (it saturated far below the servers' knees); read lazily, the sockets' kernel buffers
        # hold the difference (LAZY_BYTES per socket, well inside loopback's window).
        fast, lazy = self._fast_ep, self._lazy_ep
        lazy_fds = [m.sock.fileno() for m in self.members + self.senders if id(m) not in timed_ids]
        for m in timed:
            fast.register(m.sock.fileno(), select.EPOLLIN)
        for fd in lazy_fds:
            lazy.register(fd, select.EPOLLIN)
        frame_bytes = len(self.encode_message(b"x" * payload)) + 40
        lazy_ns = int(
            min(LAZY_MAX_S, max(LAZY_MIN_S, LAZY_BYTES / max(1.0, rate * frame_bytes))) * 1e9
        )
        period_ns = 1e9 / rate
        by_fd = self.by_fd
        buf = self._buf
        view = memoryview(buf)
        count = buf.count
        mark = self.mark
        irc = self.irc
        encode = self.encode_message
        stamp, find_stamp = chatload.encode_stamp, chatload.find_stamp
        #: a stamp's sender: the sender's index (see the module docstring)
        tokens = [b"%d" % i for i in range(n_send)]
        frame_lines = encode(b"x").count(b"\n")
        now_ns = time.perf_counter_ns
        t0 = now_ns() + 20_000_000
        if self._seq is None or len(self._seq) < len(self.senders):
            self._seq = (self._seq or []) + [0] * (len(self.senders) - len(self._seq or []))
        seq0 = self._seq[:n_send]
        win_start = t0 + int(warmup_s * 1e9)
        win_end = win_start + int(window_s * 1e9)
        # messages with an intended time before the window's end: k < k_end
        k_end = max(0, int((win_end - t0 - 1) // period_ns) + 1)
        k = 0
        out: list[bytearray] = [bytearray() for _ in senders]
        # WebSocket: frames are masked, so a newline cannot count what is still queued;
        # each sender's cumulative frame ends and bytes written do (pending_at_end).
        ends: list[list[int]] = [[] for _ in senders]
        queued_total = [0] * n_send
        written = [0] * n_send
        dirty: set[int] = set()
        in_window = 0
        in_window_by = [0] * n_send
        latencies: list[int] = []
        self.reset_counts()
        base_lines = 0
        cpu0 = 0.0
        errors = 0
        started = closed = False
        lines_at_end, cpu1 = 0, 0.0
        wall0 = wall1 = 0.0
        pending_at_end = 0
        blocked_sends = 0

        def expected() -> int:
            # every timed receiver gets every in-window message except its own
            return sum(
                in_window - (in_window_by[m.sender_index] if 0 <= m.sender_index < n_send else 0)
                for m in timed
            )

        next_lazy = t0
        gc.disable()
        try:
            drain_deadline = win_end + int(drain_s * 1e9)
            while True:
                now = now_ns()
                if now >= next_lazy:
                    errors += self._read_lazy(lazy)
                    next_lazy = now + lazy_ns
                if not started and now >= win_start:
                    errors += self._read_lazy(lazy)
                    base_lines = self.delivered_lines()
                    cpu0 = procstat.self_cpu_seconds()
                    wall0 = time.monotonic()
                    hook("start")
                    started = True
                if now >= win_end and started and not closed:
                    errors += self._read_lazy(lazy)
                    lines_at_end = self.delivered_lines()
                    cpu1 = procstat.self_cpu_seconds()
                    wall1 = time.monotonic()
                    if ws:
                        pending_at_end = sum(
                            len(ends[i]) - bisect.bisect_left(ends[i], written[i] + 1)
                            for i in dirty
                        )
                    else:
                        pending_at_end = sum(out[i].count(b"\n") for i in dirty) // frame_lines
                    hook("end")
                    closed = True
                if now >= win_end and (len(latencies) >= expected() or now >= drain_deadline):
                    break
                while k < k_end:
                    due = t0 + int(k * period_ns)
                    if due > now:
                        break
                    i = k % n_send
                    msg = stamp(tokens[i], seq0[i] + k // n_send, due, payload)
                    frame = encode(msg)
                    out[i] += frame
                    if ws:
                        queued_total[i] += len(frame)
                        ends[i].append(queued_total[i])
                    dirty.add(i)
                    if due >= win_start:
                        in_window += 1
                        in_window_by[i] += 1
                    k += 1
                for i in list(dirty):
                    try:
                        n = senders[i].sock.send(out[i])
                        del out[i][:n]
                        written[i] += n
                    except BlockingIOError:
                        blocked_sends += 1
                    if not out[i]:
                        dirty.discard(i)
                # Wake at the next due message or the window's end at the latest, then
                # every 20 ms while draining, so the loop notices as soon as every timed
                # delivery has arrived; every 1 ms while a sender has bytes queued.
                if k < k_end:
                    next_due = t0 + int(k * period_ns)
                elif now < win_end:
                    next_due = win_end
                else:
                    next_due = min(drain_deadline, now + 20_000_000)
                next_due = min(next_due, next_lazy)
                wait_ns = max(0, next_due - now_ns())
                if dirty:
                    wait_ns = min(wait_ns, 1_000_000)
                for fd, _ in self._wait(wait_ns, fast):
                    m = by_fd[fd]
                    try:
                        n = m.sock.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    arrived = now_ns()
                    if n == 0:
                        errors += 1
                        if len(self.error_lines) < 5:
                            self.error_lines.append(f"server closed {m.nick} during a paced run")
                        continue
                    m.lines += count(mark, 0, n)
                    if id(m) in timed_ids:
                        observe = m.checker.observe  # type: ignore[union-attr]
                        # One copy of the read (a bytearray slice would be two).
                        for ln in m.splitter.feed(view[:n].tobytes()):  # type: ignore[union-attr]
                            st = find_stamp(ln)
                            if st is None:
                                if irc and ln.startswith(b"PING"):
                                    self._answer_ping_lines(m, [ln])
                                continue
                            sender, seq, intended = st
                            observe(sender, seq)
                            if win_start <= intended < win_end:
                                latencies.append(arrived - intended)
                    elif irc and buf.find(b"PING", 0, n) >= 0:
                        self._answer_pings(m, buf[:n])
                if errors:
                    break
            if ws and not errors:
                errors += self._check_ws_counts(timed)
        finally:
            gc.enable()
            for ep, fds in ((fast, [m.sock.fileno() for m in timed]), (lazy, lazy_fds)):
                for fd in fds:
                    try:
                        ep.unregister(fd)
                    except OSError:
                        pass  # closed by the server and taken out already
        if not errors:
            # Receivers that are not timed may still be receiving the last messages; let
            # them arrive so they are not counted by the next measurement on this fleet,
            # and so delivered_lines() covers the whole step.
            self.drain_quiet(time.monotonic() + 10.0)
        if not closed:  # an error ended the loop before the window closed
            lines_at_end = self.delivered_lines() if started else base_lines
            cpu1 = procstat.self_cpu_seconds() if started else cpu0
            wall1 = time.monotonic() if started else wall0
        for i in range(n_send):
            self._seq[i] = seq0[i] + (k - i + n_send - 1) // n_send
        window = window_s
        sent_in_window = in_window - pending_at_end
        lost = sum(m.checker.lost for m in timed if m.checker)
        reordered = sum(m.checker.reordered for m in timed if m.checker)
        exp = expected()
        return PacedResult(
            offered_rate=rate,
            achieved_send_rate=sent_in_window / window,
            window_s=window,
            deliveries_per_s=(lines_at_end - base_lines) / self.lines_per_message / window,
            latencies_ns=latencies,
            expected_samples=exp,
            lost=lost,
            reordered=reordered,
            missing=max(0, exp - len(latencies)),
            driver_cpu_s=cpu1 - cpu0,
            cpu_wall_s=max(1e-9, wall1 - wall0) if started else window,
            errors=errors + self.errors,
            extra={
                "timed_members": float(len(timed)),
                "messages_sent": float(k),
                "deliveries_total": self.delivered_lines() / self.lines_per_message,
                "blocked_sends": float(blocked_sends),
            },
        )
