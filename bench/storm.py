"""The join and quit storm (issue 20): what a room's members feel while thousands of
connections register at once, and then quit at once.

Theory of operation
-------------------

chatd runs with its **default options** (``--host 127.0.0.1 --port 0 --engine E``, plus
``--data-dir`` in the run's logs so history, on by default, stays out of the home
directory): no limit the defaults do not have. Loopback is exempt from the per-address
limits by default, so one load generator may open thousands of connections.

1. **Probes.** ``probes`` line-protocol members register and so sit in the default room
   ``#lobby``. A thread of their own sends ``/ping pN`` from one probe every
   ``probe_interval_s``, in turn (each probe 5 lines/s at the defaults, well inside the
   default flood budget of 10), and times each ``* pong pN``. A pong queues behind
   everything the server owes that member -- the join and quit notices of the storm --
   so a round trip is what a member of the room waits for the server. An unanswered ping
   counts as at least as long as it has waited. The thread also notes how late it sent
   each ping (``probe_lag_max_ms``): the load generator's own share of a round trip.
2. **Idle.** ``idle_s`` of pings before anything else: the idle round trip.
3. **Join storm.** ``connections`` non-blocking sockets are opened at once and each
   sends its nick line as soon as it is connected; then the driver reads everything
   they receive (``MSG_TRUNC`` after the greeting: the kernel discards the bytes without
   copying them) so no output queue backs up. The storm is over when every connection
   was greeted (``* you are ...``) or refused, every probe saw every ``joined``, and the
   storm connections have received nothing for ``QUIET_S`` (the server has delivered all
   it owed them) -- or, at the latest, after ``wait_s``.
4. **Quit storm.** Every registered connection sends ``/quit`` at once; the storm is
   over when the server has closed them all (it closes after flushing) and every probe
   saw every ``quit`` -- or after ``wait_s``.
5. chatd's ``/stats`` (``bench/counters.py``) before and after each storm: the deltas
   of ``writes_out`` and, when chatd has them, ``fanout_batches`` (room batches flushed)
   and ``fanout_events`` (events delivered through them); events per batch is how many
   joins (quits) one batch to a member carried.

The worst round trip of each storm is over the pings *sent* during it. Everything is on
loopback, bounded in count and in time (each storm ``wait_s`` at most), and stops by
itself. The server and this driver share the machine's CPUs: the bench pins the server
to one and the driver to the other.

``run`` does the I/O and returns a :class:`StormRaw`; :func:`summarize` (no I/O) turns it
into the run record's metrics and the reasons it is invalid, if any. :func:`goals` judges
issue 20's goals on a whole bench run.
"""

from __future__ import annotations

import errno
import select
import selectors
import socket
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import aggregate, counters, procstat, servers, stats
from bench.matrix import Matrix
from bench.textfmt import fmt

#: Issue 20's goal: members' worst round trip during either storm, milliseconds.
GOAL_MS = 500.0
#: The storm connections have received nothing for this long: the server is done.
QUIET_S = 0.3
#: The probe thread sent a ping this late at worst (its CPU was busy, or the storm's
#: thread held the interpreter): the load generator's own delay, which can only make a
#: round trip look longer. Past this much, and past LAG_SHARE of the worst round trip,
#: that delay could be what the worst round trip measured, and the run does not count.
MAX_PROBE_LAG_S = 0.1
LAG_SHARE = 0.25
#: Nick prefix of the storm's connections (the probes are ``probeN``).
NICK_PREFIX = "storm"
#: Bytes one discarding read takes at most (the kernel copies none of them).
DISCARD_BYTES = 1 << 18


@dataclass(frozen=True)
class StormPlan:
    """One storm: its size, its probes, and its bounds."""

    connections: int
    probes: int = 10
    probe_interval_s: float = 0.02
    idle_s: float = 1.0
    #: the longest each storm (join, then quit) may take before the run goes on
    wait_s: float = 120.0
    #: after the quit storm: time for the last pings to come back
    settle_s: float = 0.5


# ----------------------------------------------------------------------------- probes


class Probes(threading.Thread):
    """Line-protocol members of ``#lobby`` that time ``/ping`` round trips, in turn.

    Runs in a thread of its own so the storm's reads never delay a pong's arrival by
    more than the interpreter's switch interval; ``lag_max_s`` says how late it got.
    Counts the storm's ``joined`` and ``quit``/``left`` notices each probe received.
    """

    def __init__(self, socks: list[socket.socket], interval_s: float) -> None:
        super().__init__(name="storm-probes", daemon=True)
        self.socks = socks
        self.interval_s = interval_s
        self.pending: dict[bytes, float] = {}
        #: (sent, round trip) of every answered ping, monotonic seconds
        self.answered: list[tuple[float, float]] = []
        self.joins = [0] * len(socks)
        self.quits = [0] * len(socks)
        self.lag_max_s = 0.0
        self.lag_max_at = 0.0
        self.errors: list[str] = []
        self._bufs = [b""] * len(socks)
        self._halt = threading.Event()
        self._seq = 0

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, i)
        next_at = time.monotonic()
        try:
            while not self._halt.is_set():
                timeout = max(0.0, min(next_at - time.monotonic(), 0.05))
                for key, _ in sel.select(timeout):
                    self._read(key.data)
                now = time.monotonic()
                if now >= next_at:
                    if now - next_at > self.lag_max_s:
                        self.lag_max_s, self.lag_max_at = now - next_at, now
                    self._ping(now)
                    next_at += self.interval_s
                    if next_at < now:  # never burst to catch up
                        next_at = now + self.interval_s
        finally:
            sel.close()

    def _ping(self, now: float) -> None:
        self._seq += 1
        token = b"p%d" % self._seq
        s = self.socks[self._seq % len(self.socks)]
        try:
            s.send(b"/ping " + token + b"\n")
        except OSError as exc:  # ten bytes into an empty send buffer: not a back-up
            self.errors.append(f"probe send: {exc}")
            return
        self.pending[token] = now

    def _read(self, i: int) -> None:
        s = self.socks[i]
        try:
            data = s.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            self.errors.append(f"probe {i}: {exc}")
        now = time.monotonic()
        if not data:
            self.errors.append(f"probe {i} closed by the server")
            self._halt.set()
            return
        *lines, self._bufs[i] = (self._bufs[i] + data).split(b"\n")
        storm = b"* " + NICK_PREFIX.encode()
        for line in lines:
            if line.startswith(b"* pong "):
                sent = self.pending.pop(line[7:].strip(), None)
                if sent is not None:
                    self.answered.append((sent, now - sent))
            elif line.startswith(storm):
                if b" joined" in line:
                    self.joins[i] += 1
                elif b" quit" in line or b" left" in line:
                    self.quits[i] += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5.0)

    def pings(self) -> list[tuple[float, float | None]]:
        """Every ping sent: (sent, round trip), None for one never answered."""
        out: list[tuple[float, float | None]] = list(self.answered)
        out += [(t, None) for t in self.pending.values()]
        return sorted(out)


def register_probes(host: str, port: int, n: int, timeout_s: float = 10.0) -> list[socket.socket]:
    """n line-protocol members, registered (so in the default room), blocking while so."""
    out = []
    for i in range(n):
        s = socket.create_connection((host, port), timeout=timeout_s)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"probe{i}\n".encode())
        buf = b""
        while b"* you are " not in buf:
            data = s.recv(4096)
            if not data or b"\n! " in b"\n" + buf + data:
                raise OSError(f"probe{i} not registered: {(buf + data)[-200:]!r}")
            buf += data
        out.append(s)
    return out


# ----------------------------------------------------------------------------- storm


#: States of one storm connection.
CONNECTING, GREETING, REGISTERED, QUITTING, DONE = range(5)


@dataclass
class StormRaw:
    """What one storm measured, before any summarising (see :func:`summarize`)."""

    plan: StormPlan
    #: (sent, round trip or None) of every probe ping, monotonic seconds
    pings: list[tuple[float, float | None]] = field(default_factory=list)
    #: monotonic times: idle_start, join_start, registered (the last greeting),
    #: join_seen (every probe saw every join), join_end, quit_start, quit_seen,
    #: quit_end, end
    edges: dict[str, float] = field(default_factory=dict)
    registered: int = 0
    #: refused by the server with a ``! `` line (server full, nick taken, ...)
    refused: int = 0
    #: connect errors, closed before the greeting, or no greeting within wait_s
    failed: int = 0
    first_error: str = ""
    #: the fewest joined/quit notices of the storm any probe received
    joins_seen: int = 0
    quits_seen: int = 0
    #: registered connections the server closed after their /quit
    closed_by_server: int = 0
    join_complete: bool = False
    quit_complete: bool = False
    #: chatd's /stats at "before" (after the idle phase), "joined" and "quit"
    counters: dict[str, dict[str, int] | None] = field(default_factory=dict)
    #: server samples (t, cpu_s, rss) at join_start, join_end, quit_start, quit_end
    server: dict[str, tuple[float, float, int] | None] = field(default_factory=dict)
    #: (monotonic time, this process's CPU seconds) at the same edges
    loadgen_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: /proc/stat busy shares of each CPU over both storms
    busy: dict[str, float] = field(default_factory=dict)
    probe_lag_max_s: float = 0.0
    #: when the probe thread was that late (monotonic seconds)
    probe_lag_at: float = 0.0
    probe_errors: list[str] = field(default_factory=list)
    rx_bytes: int = 0


class _Conn:
    __slots__ = ("sock", "nick", "state", "buf")

    def __init__(self, sock: socket.socket, nick: bytes) -> None:
        self.sock = sock
        self.nick = nick
        self.state = CONNECTING
        self.buf = b""


class Storm:
    """The storm's connections on one epoll, in this thread."""

    def __init__(self, host: str, port: int, raw: StormRaw) -> None:
        self.addr = (host, port)
        self.raw = raw
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.waiting = 0  # connections not yet greeted, refused or failed
        self.quitting = 0
        self.last_rx = time.monotonic()
        self._discard = bytearray(DISCARD_BYTES)

    def _fail(self, c: _Conn, why: str, refused: bool = False) -> None:
        if c.state in (CONNECTING, GREETING):
            self.waiting -= 1
        elif c.state == QUITTING:
            self.quitting -= 1
        if refused:
            self.raw.refused += 1
        elif c.state in (CONNECTING, GREETING):
            self.raw.failed += 1
        if not self.raw.first_error:
            self.raw.first_error = why[:200]
        self._close(c)

    def _close(self, c: _Conn) -> None:
        fd = c.sock.fileno()
        if fd >= 0:
            self.conns.pop(fd, None)
            try:
                self.ep.unregister(fd)
            except (OSError, ValueError):
                pass
        c.sock.close()
        c.state = DONE

    def open_all(self, n: int) -> None:
        """Open n sockets at once; each sends its nick line as soon as it can."""
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            c = _Conn(s, f"{NICK_PREFIX}{i}\n".encode())
            self.waiting += 1
            err = s.connect_ex(self.addr)
            if err not in (0, errno.EINPROGRESS):
                self.conns[s.fileno()] = c
                self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
                continue
            fd = s.fileno()
            self.conns[fd] = c
            sent = self._send_nick(c)
            if c.state != DONE:
                self.ep.register(fd, select.EPOLLIN if sent else select.EPOLLOUT)

    def _send_nick(self, c: _Conn) -> bool:
        """Send the nick line now; False when the socket is not connected yet."""
        try:
            c.sock.send(c.nick)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOTCONN, errno.EAGAIN):
                return False
            self._fail(c, f"send: {exc}")
            return True
        c.state = GREETING
        return True

    def pump(self, timeout: float) -> None:
        for fd, _ in self.ep.poll(timeout, 1024):
            c = self.conns.get(fd)
            if c is None:
                continue
            if c.state == CONNECTING:
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._fail(c, f"connect: {errno.errorcode.get(err, err)}")
                elif self._send_nick(c) and c.state == GREETING:
                    self.ep.modify(fd, select.EPOLLIN)
                continue
            self._on_readable(c)

    def _on_readable(self, c: _Conn) -> None:
        try:
            if c.state == GREETING:
                data = c.sock.recv(1 << 16)
                n = len(data)
            else:
                n = c.sock.recv_into(self._discard, DISCARD_BYTES, socket.MSG_TRUNC)
                data = b""
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if c.state == QUITTING:  # reset after /quit: closed all the same
                self.quitting -= 1
                self.raw.closed_by_server += 1
                self._close(c)
            else:
                self._fail(c, f"recv: {exc}")
            return
        self.last_rx = time.monotonic()
        self.raw.rx_bytes += n
        if n == 0:
            if c.state == QUITTING:
                self.quitting -= 1
                self.raw.closed_by_server += 1
                self._close(c)
            else:
                self._fail(c, f"closed by the server: {c.buf[-200:]!r}")
            return
        if c.state != GREETING:
            return
        # The greeting may arrive with thousands of join notices behind it in one read:
        # look at the whole read (and the tail of the last one, for a split greeting).
        seen = c.buf + data
        if b"* you are " in seen:
            c.state = REGISTERED
            c.buf = b""
            self.waiting -= 1
            self.raw.registered += 1
            self.raw.edges["registered"] = self.last_rx
        elif b"\n! " in b"\n" + seen:
            line = (b"\n" + seen).split(b"\n! ", 1)[1].split(b"\n", 1)[0]
            self._fail(c, "! " + line.decode(errors="replace"), refused=True)
        else:
            c.buf = seen[-256:]

    def until(self, done: Callable[[], bool], deadline: float) -> bool:
        """Pump until done() or the deadline; whether done() came true."""
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.pump(0.01)
        return True

    def give_up_waiting(self, why: str) -> None:
        """Connections neither greeted nor refused by now have failed."""
        for c in list(self.conns.values()):
            if c.state in (CONNECTING, GREETING):
                self._fail(c, why)

    def quit_all(self) -> None:
        for c in list(self.conns.values()):
            if c.state != REGISTERED:
                continue
            try:
                c.sock.send(b"/quit\n")
            except OSError as exc:
                self._fail(c, f"/quit: {exc}")
                continue
            c.state = QUITTING
            self.quitting += 1

    def close_all(self) -> None:
        """Close every connection still open, and the epoll (again: a no-op)."""
        for c in list(self.conns.values()):
            self._close(c)
        self.ep.close()


def run(
    host: str,
    port: int,
    plan: StormPlan,
    *,
    sample: Callable[[], procstat.ProcSample | None] | None = None,
    stats_query: Callable[[], dict[str, int] | None] | None = None,
) -> StormRaw:
    """One storm against a running chatd's line listener (see the module's docstring).

    ``sample`` reads the server process (CPU, RSS), ``stats_query`` its /stats; both
    are called only between the storms' edges, never while a storm runs.
    """
    procstat.raise_nofile(plan.connections + plan.probes + 256)
    raw = StormRaw(plan=plan)
    probes = Probes(register_probes(host, port, plan.probes), plan.probe_interval_s)
    storm = Storm(host, port, raw)

    def edge(name: str) -> None:
        s = sample() if sample is not None else None
        raw.server[name] = (s.t, s.cpu_s, s.rss) if s is not None else None
        raw.edges[name] = time.monotonic()
        raw.loadgen_cpu[name] = (raw.edges[name], procstat.self_cpu_seconds())

    def seen(counts: list[int], want: int) -> bool:
        return min(counts) >= want

    try:
        raw.edges["idle_start"] = time.monotonic()
        probes.start()
        time.sleep(plan.idle_s)
        raw.counters["before"] = stats_query() if stats_query else None
        p0 = procstat.read_proc_stat()
        edge("join_start")
        storm.open_all(plan.connections)
        deadline = raw.edges["join_start"] + plan.wait_s
        greeted = storm.until(lambda: storm.waiting == 0, deadline)
        if not greeted:
            storm.give_up_waiting(f"not greeted within {plan.wait_s:g} s")
        all_seen = storm.until(lambda: seen(probes.joins, raw.registered), deadline)
        if all_seen:
            raw.edges["join_seen"] = time.monotonic()
        quiet = storm.until(lambda: time.monotonic() - storm.last_rx >= QUIET_S, deadline)
        raw.join_complete = greeted and all_seen and quiet
        raw.joins_seen = min(probes.joins)
        edge("join_end")
        if raw.join_complete:
            # it ended with the last byte to a storm connection or the last join notice
            # to a probe, whichever came later, not with the quiet period after them
            raw.edges["join_end"] = max(storm.last_rx, raw.edges["join_seen"])
        raw.counters["joined"] = stats_query() if stats_query else None
        edge("quit_start")
        storm.quit_all()
        deadline = raw.edges["quit_start"] + plan.wait_s
        closed = storm.until(lambda: storm.quitting == 0, deadline)
        all_seen = storm.until(lambda: seen(probes.quits, raw.registered), deadline)
        if all_seen:
            raw.edges["quit_seen"] = time.monotonic()
        raw.quit_complete = closed and all_seen
        raw.quits_seen = min(probes.quits)
        edge("quit_end")
        raw.busy = procstat.busy_fractions(p0, procstat.read_proc_stat())
        storm.close_all()
        time.sleep(plan.settle_s)
        raw.counters["quit"] = stats_query() if stats_query else None
    finally:
        storm.close_all()
        probes.stop()
        for s in probes.socks:
            s.close()
    raw.edges["end"] = time.monotonic()
    raw.pings = probes.pings()
    raw.probe_lag_max_s = probes.lag_max_s
    raw.probe_lag_at = probes.lag_max_at
    raw.probe_errors = probes.errors[:5]
    return raw


# ----------------------------------------------------------------------------- summary


def phase_rtts(
    pings: list[tuple[float, float | None]], start: float, end: float, now: float
) -> dict[str, float]:
    """Round trips (ms) of the pings sent in [start, end]: worst, p50, p99, count, and
    how many were never answered (each counted as waiting until ``now``)."""
    sent = [(t, rtt) for t, rtt in pings if start <= t <= end]
    rtts = sorted((rtt if rtt is not None else now - t) * 1000.0 for t, rtt in sent)
    if not rtts:
        return {}
    return {
        "worst": rtts[-1],
        "p50": stats.percentile(rtts, 50.0),
        "p99": stats.percentile(rtts, 99.0),
        "count": float(len(rtts)),
        "unanswered": float(sum(1 for _, rtt in sent if rtt is None)),
    }


def summarize(raw: StormRaw) -> tuple[dict[str, Any], list[str]]:
    """The run record's metrics, and the reasons the run does not count (none: valid)."""
    plan, e = raw.plan, raw.edges
    now = e.get("end", max((t for t, _ in raw.pings), default=0.0))
    met: dict[str, Any] = {
        "connections": plan.connections,
        "registered": raw.registered,
        "refused": raw.refused,
        "failed": raw.failed,
        "joins_seen": raw.joins_seen,
        "quits_seen": raw.quits_seen,
        "closed_by_server": raw.closed_by_server,
        "probe_lag_max_ms": raw.probe_lag_max_s * 1000.0,
        # when the probes' thread was latest, from the join storm's start (seconds)
        "probe_lag_at_s": raw.probe_lag_at - e.get("join_start", raw.probe_lag_at),
        "rx_bytes": raw.rx_bytes,
    }
    idle = [
        rtt * 1000.0
        for t, rtt in raw.pings
        if rtt is not None and e.get("idle_start", 0.0) <= t < e.get("join_start", 0.0)
    ]
    if idle:
        met["rtt_idle_ms"] = statistics.median(idle)
    reasons: list[str] = []
    worst = []
    for phase, a, b in (("join", "join_start", "join_end"), ("quit", "quit_start", "quit_end")):
        if a not in e or b not in e:
            reasons.append(f"the {phase} storm did not run")
            continue
        met[f"{phase}_s"] = e[b] - e[a]
        r = phase_rtts(raw.pings, e[a], e[b], now)
        if not r:
            reasons.append(f"no round trip measured during the {phase} storm")
            continue
        for k, v in r.items():
            met[f"rtt_{phase}_{k}_ms" if k in ("worst", "p50", "p99") else f"rtt_{phase}_{k}"] = v
        worst.append(r["worst"])
        d = _delta(raw.counters, *(("before", "joined") if phase == "join" else ("joined", "quit")))
        if d is not None:
            for name in ("writes_out", "fanout_batches", "fanout_events"):
                if name in d:
                    met[f"{phase}_{name}"] = d[name]
            epb = counters.events_per_batch(d)
            if epb is not None:
                met[f"{phase}_events_per_batch"] = epb
        s0, s1 = raw.server.get(a), raw.server.get(b)
        if s0 and s1 and s1[0] > s0[0]:
            met[f"{phase}_server_cpu_s"] = s1[1] - s0[1]
            met[f"{phase}_server_cpu_util"] = (s1[1] - s0[1]) / (s1[0] - s0[0])
        c0, c1 = raw.loadgen_cpu.get(a), raw.loadgen_cpu.get(b)
        if c0 is not None and c1 is not None and c1[0] > c0[0]:
            met[f"{phase}_loadgen_cpu_util"] = (c1[1] - c0[1]) / (c1[0] - c0[0])
    if worst:
        met["rtt_worst_ms"] = max(worst)
    if "registered" in e and "join_start" in e:
        met["register_s"] = e["registered"] - e["join_start"]
    if raw.registered < plan.connections:
        reasons.append(
            f"{raw.registered} of {plan.connections} registered ({raw.refused} refused, "
            f"{raw.failed} failed; first: {raw.first_error or '?'})"
        )
    if not raw.join_complete:
        reasons.append(
            f"join storm not over within {plan.wait_s:g} s ({raw.registered} registered, "
            f"every probe saw {raw.joins_seen} joins)"
        )
    if not raw.quit_complete:
        reasons.append(
            f"quit storm not over within {plan.wait_s:g} s (the server closed "
            f"{raw.closed_by_server} of {raw.registered}, every probe saw {raw.quits_seen} "
            "quits)"
        )
    lag = raw.probe_lag_max_s
    if lag > MAX_PROBE_LAG_S and lag * 1000.0 > LAG_SHARE * met.get("rtt_worst_ms", 0.0):
        reasons.append(
            f"load generator late: a probe ping went out {raw.probe_lag_max_s * 1000:.0f} ms "
            "after its time"
        )
    if raw.probe_errors:
        reasons.append("probe: " + "; ".join(raw.probe_errors[:2]))
    return met, reasons


def _delta(snaps: dict[str, dict[str, int] | None], a: str, b: str) -> dict[str, int] | None:
    s0, s1 = snaps.get(a), snaps.get(b)
    if s0 is None or s1 is None:
        return None
    return counters.delta(s0, s1)


# ----------------------------------------------------------------------------- server


def start_chatd(target: servers.Target, *, cpus: set[int] | None, logdir: Path) -> servers.Server:
    """chatd with its default options (no limit the defaults do not have), on a free
    loopback port; history (on by default) in the run's logs. Raises RuntimeError when
    it does not start. Logs are named like ``servers.start``'s (TARGET-NS.out/.err)."""
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{target.name.replace('+', '_')}-{time.monotonic_ns()}"
    argv = [servers.python_exe(), "-m", "chatd", "--host", "127.0.0.1", "--port", "0"]
    argv += ["--engine", target.engine]
    if target.uvloop:
        argv.append("--uvloop")
    if not target.history:
        argv.append("--ephemeral")
    elif "--data-dir" in servers.chatd_help():
        argv += ["--data-dir", str(logdir / f"{stamp}-data")]
    proc, out_path, err_path = servers.popen_logged(argv, logdir, stamp, servers.chatd_env())
    pinned = procstat.pin(proc.pid, cpus)
    deadline = time.monotonic() + servers.START_TIMEOUT_S
    while time.monotonic() < deadline:
        text = out_path.read_text(errors="replace") if out_path.exists() else ""
        found = next(filter(None, map(servers.parse_listening, text.splitlines())), None)
        if found:
            host, port = found
            host = "127.0.0.1" if host in ("0.0.0.0", "", "localhost", "::") else host
            return servers.Server(
                target, proc, host, port, pinned, argv, err_path=err_path, line_port=port
            )
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait(timeout=servers.STOP_TIMEOUT_S)
    tail = err_path.read_text(errors="replace")[-1500:] if err_path.exists() else ""
    raise RuntimeError(f"server did not start (no 'listening on' line): {tail}")


# ----------------------------------------------------------------------------- goals


#: Issue 20's goal ids, in report order.
GOAL_IDS = ("fanout_knee", "irc_knee_vs_line", "storm_rtt", "irc_idle_rss")
#: Issue 20's knee goal, messages/s (room of 1,000, 10 senders): twice issue 10's knee.
KNEE_GOAL = 6400.0
#: Issue 20's idle memory goal for a registered IRC connection, bytes (at 10,000).
IRC_IDLE_GOAL = 2048.0


def _pct(v: Any) -> str:
    return f"{v * 100:.0f} %" if isinstance(v, (int, float)) else "–"


def knee_figures(k: dict[str, Any] | None, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The mechanism beside a knee, from the run's own counters: events per batch and
    deliveries per write at the knee steps, the load generator's CPU there, what ended
    each repetition's walk."""
    if k is None:
        return {}
    from bench import saturation_report  # the report side; not needed to run a storm

    at = k.get("at_knee") or {}
    out: dict[str, Any] = {
        "events per batch": saturation_report.events_per_batch_at_knee(k, runs),
        "deliveries per write": (at.get("deliveries_per_write") or {}).get("median"),
        "load-gen CPU": _pct((at.get("loadgen_cpu_util") or {}).get("median")),
        "server CPU": _pct((at.get("server_cpu_util") or {}).get("median")),
    }
    ended = "; ".join(f"{p['limit']}: {p['detail'].split('; ')[0]}" for p in k["per_rep"])
    out["next step"] = ended or "–"
    return out


def figures_at_rate(
    runs: list[dict[str, Any]], target: str, room: int, senders: int, rate: float
) -> dict[str, float | None]:
    """Medians over the valid repetitions of ``target``'s saturation step at ``rate``:
    p99, server CPU per delivery, bytes per delivery (chatd's ``bytes_out`` over the
    deliveries counted) and both CPUs. Where two targets part, these say which side of
    the wire did (issue 20: the IRC knee against the line dialect's)."""
    keys = ("p99_ms", "server_us", "bytes", "server_cpu", "loadgen_cpu")
    cols: dict[str, list[float]] = {k: [] for k in keys}
    for r in runs:
        p = r.get("params") or {}
        if (
            r.get("scenario") != "saturation"
            or r.get("target") != target
            or p.get("room") != room
            or p.get("senders") != senders
            or p.get("offered") != rate
            or not r.get("valid")
        ):
            continue
        mt, counters = r.get("metrics") or {}, r.get("server_counters") or {}
        got = {
            "p99_ms": mt.get("latency_p99_ms"),
            "server_us": mt.get("server_cpu_us_per_delivery"),
            "bytes": counters["bytes_out"] / mt["deliveries_total"]
            if counters.get("bytes_out") and mt.get("deliveries_total")
            else None,
            "server_cpu": (r.get("server") or {}).get("cpu_util"),
            "loadgen_cpu": (r.get("loadgen") or {}).get("cpu_util"),
        }
        for k, v in got.items():
            if v is not None:
                cols[k].append(float(v))
    return {k: statistics.median(v) if v else None for k, v in cols.items()}


def knee_verdict(k: dict[str, Any], goal: float) -> bool | None:
    """Met when the knee (a lower bound or not) reaches goal; not met when the server's
    own limit ended the walk below it; None when the measurement cut it short below."""
    if k["rate"] is not None and k["rate"] >= goal:
        return True
    if not k["lower_bound"]:
        return False
    return None


def _missed_by(value: float | None, goal: float, higher_is_better: bool, unit: str) -> str:
    """'no', or by how much value misses goal: '3200 msg/s (50 % short)' for a figure
    that should reach the goal, '4500 ms (10x the goal)' for one that should stay under."""
    if value is None:
        return "–"
    short = goal - value if higher_is_better else value - goal
    if short <= 0:
        return "no"
    if higher_is_better:
        return f"{fmt(short)}{unit} ({short / goal * 100:.0f} % short)"
    return f"{fmt(short)}{unit} ({value / goal:.3g}x the goal)"


def goals(
    cs: list[dict[str, Any]],
    m: Matrix,
    ks: list[dict[str, Any]] | None,
    runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Issue 20's goals, each with what the run measured, by how much it missed, and the
    mechanism from the run's own counters; met is None when the run cannot decide."""
    out: list[dict[str, Any]] = []
    ks = ks or []
    room, senders = m.headline_room, m.headline_senders
    kr = aggregate.find_knee(ks, "reactor", room, senders)
    if kr is not None:
        met = knee_verdict(kr, KNEE_GOAL)
        measured: dict[str, Any] = {
            "reactor": kr["rate"],
            "goal": KNEE_GOAL,
            "missed by": "cut short: " + kr["limit"]
            if met is None
            else _missed_by(kr["rate"], KNEE_GOAL, True, " msg/s"),
            **knee_figures(kr, runs),
        }
        out.append(
            {
                "id": "fanout_knee",
                "goal": (
                    f"reactor saturation knee >= {KNEE_GOAL:g} msg/s at p99 <= "
                    f"{m.knee_p99_ms:g} ms, nothing lost (room of {room}, {senders} senders)"
                ),
                "measured": measured,
                "met": met,
            }
        )
    ki = aggregate.find_knee(ks, "reactor-irc", room, senders)
    if kr is not None and ki is not None:
        g = aggregate.knee_goal("irc_knee_vs_line", ks, m, "reactor", 1.0, target="reactor-irc")
        mi, ml = knee_figures(ki, runs), knee_figures(kr, runs)
        g["measured"].update(
            {
                "missed by": _missed_by(ki["rate"], kr["rate"], True, " msg/s")
                if kr["rate"]
                else "–",
                "events per batch (irc / line)": f"{fmt(mi['events per batch'])} / "
                f"{fmt(ml['events per batch'])}",
                "deliveries per write (irc / line)": f"{fmt(mi['deliveries per write'])} / "
                f"{fmt(ml['deliveries per write'])}",
                "load-gen CPU (irc / line)": f"{mi['load-gen CPU']} / {ml['load-gen CPU']}",
                "irc next step": mi["next step"],
            }
        )
        if ki["rate"] and kr["rate"] and ki["rate"] < kr["rate"]:
            # Where IRC missed: both targets at the first rate past its knee.
            rate = ki["rate"] * 2
            fi = figures_at_rate(runs, "reactor-irc", room, senders, rate)
            fl = figures_at_rate(runs, "reactor", room, senders, rate)
            g["measured"].update(
                {
                    f"at {fmt(rate)} msg/s (irc / line): p99 ms": f"{fmt(fi['p99_ms'])} / "
                    f"{fmt(fl['p99_ms'])}",
                    "server CPU µs per delivery": f"{fmt(fi['server_us'])} / "
                    f"{fmt(fl['server_us'])}",
                    "bytes per delivery": f"{fmt(fi['bytes'])} / {fmt(fl['bytes'])}",
                    "server CPU": f"{_pct(fi['server_cpu'])} / {_pct(fl['server_cpu'])}",
                    "load-gen CPU": f"{_pct(fi['loadgen_cpu'])} / {_pct(fl['loadgen_cpu'])}",
                }
            )
        g["goal"] = "IRC listener's knee >= the line dialect's in the same run: " + g["goal"]
        out.append(g)
    sg = storm_goal(cs, runs)
    if sg is not None:
        out.append(sg)
    if m.idle_counts:
        n = max(m.idle_counts)
        irc = aggregate.median_of(
            aggregate.find(cs, "idle", "reactor-irc", connections=n), "rss_per_conn_bytes"
        )
        line = aggregate.median_of(
            aggregate.find(cs, "idle", "reactor", connections=n), "rss_per_conn_bytes"
        )
        if irc is not None or aggregate.find(cs, "idle", "reactor-irc") is not None:
            out.append(
                {
                    "id": "irc_idle_rss",
                    "goal": (
                        f"RSS per idle registered IRC connection (reactor-irc) at {n} <= "
                        f"{IRC_IDLE_GOAL:,.0f} B"
                    ),
                    "measured": {
                        "reactor-irc_bytes": irc,
                        "goal": IRC_IDLE_GOAL,
                        "missed by": _missed_by(irc, IRC_IDLE_GOAL, False, " B"),
                        "line dialect (reactor)_bytes": line,
                    },
                    "met": None if irc is None else irc <= IRC_IDLE_GOAL,
                }
            )
    return out


#: Reasons a run's worst round trip is not even a lower bound of the server's own.
UNSOUND = ("machine contended", "load generator late", "probe:")


def storm_goal(cs: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The reactor's members' worst round trip in the storm < GOAL_MS (median over the
    valid runs). Without a valid run, an incomplete one still decides "not met" when its
    worst round trip -- a lower bound -- already passes the goal."""
    mine = [r for r in runs if r.get("scenario") == "storm" and r["target"] == "reactor"]
    if not mine:
        return None
    c = aggregate.find(cs, "storm", "reactor")
    worst = aggregate.median_of(c, "rtt_worst_ms")
    met: bool | None = None if worst is None else worst < GOAL_MS
    bound = ""
    if worst is None:
        # a contended machine or a late load generator lengthens round trips: no bound
        sound = [r for r in mine if not any(x in " ".join(r["reasons"]) for x in UNSOUND)]
        lows = [r["metrics"].get("rtt_worst_ms") for r in sound]
        lows = [v for v in lows if isinstance(v, (int, float))]
        if lows and min(lows) >= GOAL_MS:
            met, bound = False, f">= {min(lows):.0f} (no complete run)"
    n = mine[0]["params"].get("connections")

    def med(name: str) -> Any:
        return aggregate.median_of(c, name)

    reg = med("registered")
    measured: dict[str, Any] = {
        "reactor worst_ms": bound or worst,
        "join storm worst_ms": med("rtt_join_worst_ms"),
        "quit storm worst_ms": med("rtt_quit_worst_ms"),
        "goal_ms": GOAL_MS,
        "missed by": _missed_by(worst, GOAL_MS, False, " ms"),
        "registered": f"{fmt(reg)}/{n}" if reg is not None else "–",
        "join storm s": med("join_s"),
        "quit storm s": med("quit_s"),
        "events per batch (join / quit)": (
            f"{fmt(med('join_events_per_batch'))} / {fmt(med('quit_events_per_batch'))}"
        ),
        "writes_out (join / quit)": (
            f"{fmt(med('join_writes_out'))} / {fmt(med('quit_writes_out'))}"
        ),
    }
    return {
        "id": "storm_rtt",
        "goal": (
            f"join and quit storm of {n} from loopback, default options: members' worst "
            f"round trip < {GOAL_MS:g} ms (reactor)"
        ),
        "measured": measured,
        "met": met,
    }
