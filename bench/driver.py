"""The lean load driver: one process, one epoll, plain non-blocking sockets.

Why it exists: Locust (gevent, one event per delivery) tops out at some tens of
thousands of deliveries per second and cannot hold 10,000 sockets cheaply, so flood
throughput, idle connections and the Redis anchor are driven from here instead.

Theory of operation
-------------------
* A ``Fleet`` is N client sockets that all sit in one room: chatd clients that sent a
  nickname, or Redis connections that sent SUBSCRIBE. Setup goes in batches and waits
  for every client's confirmation, so no server's accept backlog overflows and no
  measurement starts while join notices are still in flight.
* Hot path: a readable socket gets one ``recv_into`` of up to 256 KiB into a shared
  buffer and ``bytearray.count(b"\\n")``; nothing is parsed. A delivery is a newline (one
  per chat line; ``wire.resp_push_newlines()`` per Redis push). So the driver's cost per
  delivery is a fraction of a C-level count, and it stays ahead of the server for as long
  as the server sends in chunks.
* Timing receivers: a sample of the members (about 100) also split lines, parse the
  stamp (``wire.parse_stamp``), check each sender's sequence (lost / reordered) and record
  arrival minus *intended* send time in nanoseconds (``time.perf_counter_ns``; senders and
  receivers are in this process, so one clock serves both).
* Senders are members too (chatd) or separate publisher connections (Redis). Flood mode
  keeps at most ``inflight`` messages beyond the slowest member: as fast as the server
  delivers, without letting output queues grow until a server drops someone.
* The driver measures its own CPU (getrusage) over each window; at >= 90 % of a core it
  is the bottleneck and the run is marked saturated.

Every loop is bounded by a deadline; nothing here waits forever.
"""

from __future__ import annotations

import gc
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import procstat, wire

#: Bytes one recv may take. Large, so a server that batches is read in one call.
RECV_BYTES = 256 * 1024

#: Clients connected per setup batch (below every server's listen backlog).
SETUP_BATCH = 100

#: Ends setup's drain: no byte arrived on any socket for this long.
QUIET_S = 0.25


#: Seconds of the server's recent delivery rate the flood keeps in flight per member.
FLOOD_INFLIGHT_S = 0.25


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
    splitter: wire.LineSplitter | None = None
    checker: wire.SeqChecker | None = None


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


class Fleet:
    """N connected, registered clients of one server, all in one room, on one epoll."""

    def __init__(self, host: str, port: int, *, redis: bool, prefix: str = "b") -> None:
        self.host, self.port, self.redis = host, port, redis
        self.prefix = prefix
        self.ep = select.epoll()
        self._ep_fd = self.ep.fileno()
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
        m = Member(s, nick, splitter=wire.LineSplitter())
        if self.redis:
            if subscribe:
                s.send(wire.resp_subscribe())
            else:
                m.registered = True  # a publisher has nothing to confirm
        else:
            s.send(wire.chat_register(nick, room))
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

        room_of(i) names a room to /join after registering (chatd only), so the idle
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
                (self.senders if is_sender else self.members).append(m)
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
                    m.splitter = None

    def _confirms(self, m: Member, data: bytes) -> bool:
        """Does data complete m's registration? '! ' lines are refusals."""
        assert m.splitter is not None
        for line in m.splitter.feed(data):
            if self.redis:
                if b"subscribe" in line:
                    return True
                continue
            if line.startswith(b"!"):
                self.errors += 1
                self.error_lines.append(line.decode(errors="replace")[:200])
                raise DriverError(f"{m.nick} refused: {line[:200]!r}")
            if line.startswith(b"* ") and m.nick.encode() in line:
                return True
        return False

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
        m.lines += self._buf.count(b"\n", 0, n)
        return bytes(self._buf[:n])

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

    def _wait(self, wait_ns: int) -> list[tuple[int, int]]:
        """epoll with a microsecond timeout.

        epoll_wait takes whole milliseconds (Python rounds up), which would make a paced
        sender up to 1 ms late -- more than Redis's whole fan-out at N=100. select() on
        the epoll fd itself takes microseconds, so wait there, then collect with poll(0).
        """
        if wait_ns <= 0:
            return self.ep.poll(0)
        if self._ep_fd < 1024:
            select.select([self._ep_fd], [], [], wait_ns / 1e9)
            return self.ep.poll(0)
        return self.ep.poll(wait_ns / 1e9)

    def reset_counts(self) -> None:
        for m in self.members:
            m.lines = m.rx_bytes = 0

    def close(self) -> None:
        """Close every socket (unregister first, as the selector docs advise)."""
        for m in self.members + self.senders + self.stalled:
            if m.sock.fileno() in self.by_fd:
                self.ep.unregister(m.sock.fileno())
            m.sock.close()
        self.ep.close()
        self.members.clear()
        self.senders.clear()
        self.stalled.clear()
        self.by_fd.clear()

    @property
    def lines_per_message(self) -> int:
        return wire.resp_push_newlines() if self.redis else 1

    # ------------------------------------------------------------------ flood

    def flood(
        self,
        *,
        warmup_s: float,
        window_s: float,
        payload: int,
        inflight_bytes: int = 128 * 1024,
        checkers: int = 10,
        coalesce_s: float = 0.0005,
        on_window: Callable[[str], None] | None = None,
    ) -> FloodResult:
        """One sender, as fast as the server delivers to the slowest member.

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
        hook = on_window or (lambda _edge: None)
        sender = self.senders[0]
        body = wire.filler(payload)
        line = wire.resp_publish(body) if self.redis else wire.chat_line(body)
        frame = wire.resp_push(body) if self.redis else sender.nick.encode() + b": " + line
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
        members = self.members
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
                if coalesce_s:
                    # Let bytes pile up in the members' socket buffers: MSG_TRUNC costs
                    # per call, not per byte, so fewer, fuller reads keep the driver
                    # ahead of the server (512 KiB in flight is >100 ms of buffering).
                    time.sleep(coalesce_s)
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
            self._drain_counting(time.monotonic() + 30.0, checking, total_sent * flen)
            errors += self._check_flood(total_sent, flen, lpm, checking)
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

    def _drain_counting(self, deadline: float, checking: set[int], want: int) -> None:
        """Read (MSG_TRUNC except checkers) until every member holds want bytes and
        then nothing more arrives for QUIET_S, or until the deadline.

        Waiting for the exact amount, not just for quiet, matters: a server that pauses
        for longer than QUIET_S with messages still queued is slow, not lossy.
        """
        buf, count, trunc = self._buf, self._buf.count, socket.MSG_TRUNC
        last = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - last >= QUIET_S and all(m.rx_bytes >= want for m in self.members):
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

    def _check_flood(self, sent: int, flen: int, lpm: int, checking: set[int]) -> int:
        """Count members that did not get exactly ``sent`` frames, and say so."""
        bad = 0
        want = sent * flen
        for m in self.members:
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
        on_window: Callable[[str], None] | None = None,
    ) -> PacedResult:
        """Senders send ``rate`` messages/s in total on a fixed schedule; measure latency.

        Each sender's k-th message is due at t0 + phase + k/rate_per_sender and carries
        that intended time. Latency is recorded at up to ``sample`` members, spread
        evenly over the room, for messages intended inside the window; after the window
        we wait up to drain_s for the ones still in flight, and any that never come are
        counted as missing. on_window is called at the window's start and end.
        """
        hook = on_window or (lambda _edge: None)
        senders = self.senders
        members = self.members
        step = max(1, len(members) // max(1, sample))
        timed = members[::step][:sample]
        for m in timed:
            m.splitter = wire.LineSplitter()
            if m.checker is None:
                m.checker = wire.SeqChecker()
        timed_ids = {id(m) for m in timed}
        per_sender = rate / len(senders)
        period_ns = int(1e9 / per_sender)
        lpm = self.lines_per_message
        by_fd = self.by_fd
        buf = self._buf
        count = buf.count
        sender_fds = {s.sock.fileno(): s for s in senders}
        now_ns = time.perf_counter_ns
        t0 = now_ns() + 20_000_000
        phase = [int(i * period_ns / len(senders)) for i in range(len(senders))]
        seq0 = self._seq if self._seq and len(self._seq) == len(senders) else [0] * len(senders)
        sent_k = [0] * len(senders)
        out: list[bytearray] = [bytearray() for _ in senders]
        win_start = t0 + int(warmup_s * 1e9)
        win_end = win_start + int(window_s * 1e9)
        latencies: list[int] = []
        in_window = 0
        line_len = len(wire.resp_publish(b"x" * payload)) if self.redis else payload + 1
        self.reset_counts()
        base_lines = 0
        cpu0 = 0.0
        errors = 0
        started = closed = False
        lines_at_end, cpu1 = 0, 0.0
        lost0 = sum(m.checker.lost for m in timed if m.checker)
        reo0 = sum(m.checker.reordered for m in timed if m.checker)
        pending_at_end = 0
        gc.disable()
        try:
            drain_deadline = win_end + int(drain_s * 1e9)
            while True:
                now = now_ns()
                if not started and now >= win_start:
                    base_lines = sum(m.lines for m in members)
                    cpu0 = procstat.self_cpu_seconds()
                    hook("start")
                    started = True
                if now >= win_end and started and not closed:
                    lines_at_end = sum(m.lines for m in members)
                    cpu1 = procstat.self_cpu_seconds()
                    pending_at_end = sum(len(b) for b in out) // line_len
                    hook("end")
                    closed = True
                if now >= win_end and (
                    len(latencies) >= in_window * len(timed) or now >= drain_deadline
                ):
                    break
                # Wake at the window's end at the latest, then every 20 ms while draining,
                # so the loop notices as soon as every timed delivery has arrived.
                next_due = win_end if now < win_end else min(drain_deadline, now + 20_000_000)
                for i, s in enumerate(senders):
                    while True:
                        due = t0 + phase[i] + sent_k[i] * period_ns
                        if due > now or due >= win_end:
                            break
                        seq = seq0[i] + sent_k[i]
                        msg = wire.make_stamp(i, seq, due, payload)
                        out[i] += wire.resp_publish(msg) if self.redis else msg + b"\n"
                        if win_start <= due:
                            in_window += 1
                        sent_k[i] += 1
                    if due < win_end:
                        next_due = min(next_due, due)
                    if out[i]:
                        try:
                            n = s.sock.send(out[i])
                            del out[i][:n]
                        except BlockingIOError:
                            pass
                wait_ns = max(0, next_due - now_ns())
                if any(out):
                    wait_ns = min(wait_ns, 1_000_000)
                for fd, _ in self._wait(wait_ns):
                    s = sender_fds.get(fd)
                    m = s if s is not None else by_fd[fd]
                    try:
                        n = m.sock.recv_into(buf)
                    except BlockingIOError:
                        continue
                    except OSError:
                        n = 0
                    arrived = now_ns()
                    if n == 0:
                        errors += 1
                        continue
                    if s is not None:
                        continue
                    m.lines += count(b"\n", 0, n)
                    if id(m) in timed_ids:
                        for ln in m.splitter.feed(bytes(buf[:n])):  # type: ignore[union-attr]
                            st = wire.parse_stamp(ln)
                            if st is None:
                                continue
                            m.checker.see(st.sender, st.seq)  # type: ignore[union-attr]
                            if win_start <= st.intended_ns < win_end:
                                latencies.append(arrived - st.intended_ns)
                if errors:
                    break
        finally:
            gc.enable()
        if not errors:
            # Members that are not timed may still be receiving the last messages; let
            # them arrive so they are not counted by the next measurement on this fleet.
            self.drain_quiet(time.monotonic() + 10.0)
        if not closed:  # an error ended the loop before the window closed
            lines_at_end = sum(m.lines for m in members) if started else base_lines
            cpu1 = procstat.self_cpu_seconds() if started else cpu0
        self._seq = [seq0[i] + sent_k[i] for i in range(len(senders))]
        window = window_s
        sent_in_window = in_window - pending_at_end
        lost = sum(m.checker.lost for m in timed if m.checker) - lost0
        reordered = sum(m.checker.reordered for m in timed if m.checker) - reo0
        return PacedResult(
            offered_rate=rate,
            achieved_send_rate=sent_in_window / window,
            window_s=window,
            deliveries_per_s=(lines_at_end - base_lines) / lpm / window,
            latencies_ns=latencies,
            expected_samples=in_window * len(timed),
            lost=lost,
            reordered=reordered,
            missing=max(0, in_window * len(timed) - len(latencies)),
            driver_cpu_s=cpu1 - cpu0,
            errors=errors + self.errors,
            extra={"timed_members": float(len(timed))},
        )
