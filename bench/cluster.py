"""One room spread over 1, 2 and 4 chatd nodes joined through Redis, against one node alone.

    python -m bench.cluster                  # the committed run (about 6 minutes)
    python -m bench.cluster --quick          # 2 nodes, 20 members, 2 s: a smoke run
    python -m bench.cluster --rerender bench/reports/DATE-cluster

For each configuration (:data:`CONFIGS`: one node without ``--redis``, the baseline; one
node with ``--redis``; 2 nodes; 4 nodes) it starts ``redis-server`` and the chatd nodes
on free loopback ports (``--engine reactor --ephemeral``, flood control off), connects
``--members`` clients round-robin over the nodes (client ``g`` to node ``g % n``) into
the default room, waits until every node's ``/stats`` counts every member (the cluster's
state has converged), then measures. Everything stays on loopback and every phase has a
deadline: the run stops by itself.

Theory of operation
-------------------
* **The load** is the lean driver's (:class:`bench.driver.Fleet`, one process, one
  epoll), with each client's node remembered. ``--senders`` of the members send, open
  loop, ``--rate`` messages/s in total on one schedule (message k is due at
  t0 + k / rate and goes to sender k mod S); the senders are the last S clients, so
  round-robin places them on the nodes in turn: with 4 senders, one per node at 4 nodes,
  two per node at 2. Every message names its sender, its sequence number and its
  *intended* send time, so a stalled node shows as latency, not as a slower sender.
* **Latency** is arrival at a timed receiver minus that intended time, on one clock
  (senders and receivers are this process). Timed receivers (up to ``--sample``) are
  spread evenly over the nodes and are never senders; every sample is classed by where
  its sender and receiver sit: **same node** or **cross node** (sender on one node,
  receiver on another; the line went through Redis). Each timed receiver checks every
  sender's sequence (a gap is a loss, a step back a reorder).
* **Loss** is counted on every member, not only the timed ones: each message reaches
  the room but its sender, so a window of k messages owes k x (members - 1) lines; after
  the window the driver reads (bounded) until they are all in, and what is still
  missing then is lost (more than owed would be duplicates). Beside it, each node's
  ``cluster_gaps`` (a message arrived whose predecessor had not: repaired from the
  room's stream) and ``cluster_gaps_lost`` (the stream no longer held it) from
  ``/stats``, read before and after each window by a client in a room of its own.
* **CPU** of every chatd node and of redis-server (utime+stime from /proc/PID/stat)
  and of the load generator (getrusage) over the window, as shares of one core, with
  each CPU's busy share from /proc/stat; **deliveries/s per node** are the lines its
  members received in the window.
* **Pinning.** With 2 usable CPUs, every server process (all nodes and redis-server)
  is pinned to the first and the load generator to the second, as ``python -m bench``
  does: the cluster gets the same one core the single node gets. This measures what
  the cluster costs, not what it scales to: on this machine, more nodes cannot bring
  more CPU.
* **Validity** is the bench's rule (``bench/stats.py``): a window is invalid when the
  load generator used >= 90 % of its core, sent < 95 % of the offered rate, lost or
  reordered a message at a timed receiver, saw a connection fail, or when work other
  than ours took more than :data:`MAX_FOREIGN_BUSY` of a pinned CPU (a shared machine).
  That share is stricter than ``python -m bench``'s half: a first run here showed p99
  at 100 msg/s doubling in windows where other work held 20-50 % of a CPU, while our
  own loopback softirq stays under 10 %. A contended window is measured again (after
  waiting for a quiet machine, bounded) up to ``--retries`` times, and stays in the
  records as invalid.
* **The sweep** (after the fixed-rate windows, on the same connections) doubles the
  rate from ``--rate`` until p99 passes ``--knee-ms`` or a message is lost or the load
  generator saturates (:func:`bench.stats.knee`), so the report can say where each
  configuration stops keeping up, and what stopped the walk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import hashlib
import json
import math
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import chatload
import chatload.line
from bench import counters, driver, procstat, servers, stats

SCHEMA = "chatd-bench-cluster/1"
REPORTS = servers.REPO / "bench" / "reports"

#: The configurations, in report order: name -> (nodes, with --redis).
CONFIGS: dict[str, tuple[int, bool]] = {
    "baseline": (1, False),
    "1": (1, True),
    "2": (2, True),
    "4": (4, True),
}

#: Stamped lines per second the driver may parse (fewer timed receivers at high rates).
PARSE_BUDGET = 40_000
#: How long to wait for owed deliveries after a window before counting them lost.
OWED_WAIT_S = 8.0
#: How long the cluster may take to agree on its membership after the join storm.
CONVERGE_S = 60.0
#: Contended windows are measured again at most this many times (``--retries``).
RETRIES = 3
#: Share of a pinned CPU that other work may take before a window counts as contended.
MAX_FOREIGN_BUSY = 0.2
#: Waiting for a quiet machine before a configuration or a retry: at most this long
#: (``--quiet-wait``).
QUIET_WAIT_S = 180.0
#: A CPU is "quiet" below this busy share (before our servers start).
QUIET_BUSY = 0.35


@dataclass(frozen=True)
class Config:
    """One configuration: how many nodes, and whether they go through Redis."""

    key: str
    nodes: int
    redis: bool

    @property
    def label(self) -> str:
        if not self.redis:
            return "1 node, no Redis (baseline)"
        return f"{self.nodes} node{'s' if self.nodes > 1 else ''} + Redis"


def config(key: str) -> Config:
    try:
        nodes, redis = CONFIGS[key]
    except KeyError:
        raise ValueError(f"unknown configuration {key!r} (one of {', '.join(CONFIGS)})") from None
    return Config(key, nodes, redis)


# ---------------------------------------------------------------------------- processes

NODE = servers.Target("chatd-node", "chatd", "line", engine="reactor", history=False)
REDIS = servers.Target("redis", "redis", "resp")


def redis_argv(port: int) -> list[str]:
    """redis-server as an operator would start it for the cluster: no persistence,
    otherwise its defaults (including the pub/sub output-buffer limit, 32mb 8mb 60)."""
    return [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--loglevel",
        "warning",
    ]


def node_argv(url: str | None, *, max_clients: int, lease: float) -> list[str]:
    """One reactor node: the bench's fixed chatd options, history in memory, and --redis."""
    argv = servers.chatd_argv(NODE, max_clients=max_clients, max_sendq=1024 * 1024)
    argv.append("--ephemeral")
    if url is not None:
        argv += ["--redis", url, "--redis-lease", f"{lease:g}"]
    return argv


def stderr_problems(path: Path) -> list[str]:
    """Tracebacks and ERROR records in a chatd's stderr (the tests' rule for a server)."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return [f"cannot read {path}: {exc}"]
    found = []
    for line in text.splitlines():
        if line.startswith("Traceback") or " ERROR " in line or " CRITICAL " in line:
            found.append(line.strip()[:300])
    return found


@dataclass
class Cluster:
    """redis-server (unless the baseline) and the chatd nodes of one configuration."""

    cfg: Config
    redis: servers.Server | None
    nodes: list[servers.Server]
    logdir: Path
    notes: list[str] = field(default_factory=list)

    @classmethod
    def start(
        cls,
        cfg: Config,
        *,
        cpus: set[int] | None,
        logdir: Path,
        max_clients: int,
        lease: float,
        env: dict[str, str] | None = None,
    ) -> Cluster:
        """Start Redis (unless the baseline) and the nodes; ``env`` is the nodes'
        environment (default: chatd from this tree's server/)."""
        env = env or servers.chatd_env()
        logdir.mkdir(parents=True, exist_ok=True)
        redis: servers.Server | None = None
        nodes: list[servers.Server] = []
        try:
            url = None
            if cfg.redis:
                port = servers.free_port()
                argv = redis_argv(port)
                proc, _, err = servers.popen_logged(argv, logdir, f"{cfg.key}-redis", None)
                pinned = procstat.pin(proc.pid, cpus)
                redis = servers.Server(REDIS, proc, "127.0.0.1", port, pinned, argv, err)
                servers._wait_redis(redis)
                url = f"redis://127.0.0.1:{port}"
            for i in range(cfg.nodes):
                argv = node_argv(url, max_clients=max_clients, lease=lease)
                proc, out, err = servers.popen_logged(argv, logdir, f"{cfg.key}-node{i + 1}", env)
                pinned = procstat.pin(proc.pid, cpus)
                host, port = servers._wait_for_listening(proc, out)
                nodes.append(
                    servers.Server(NODE, proc, host, port, pinned, argv, err, line_port=port)
                )
        except BaseException:
            for srv in [*nodes, *([redis] if redis else [])]:
                srv.stop()
            raise
        return cls(cfg, redis, nodes, logdir)

    @property
    def procs(self) -> list[servers.Server]:
        """Every server process: the nodes, then redis-server."""
        return [*self.nodes, *([self.redis] if self.redis else [])]

    def stop(self) -> list[str]:
        """Stop the nodes, then Redis; return what went wrong (exit codes, tracebacks)."""
        problems: list[str] = []
        for i, srv in enumerate(self.nodes, 1):
            if not srv.stop():
                problems.append(f"node {i} exit {srv.exit_code} {'; '.join(srv.notes)}".strip())
            for p in stderr_problems(srv.err_path):
                problems.append(f"node {i} stderr: {p}")
        if self.redis is not None and not self.redis.stop():
            problems.append(f"redis-server exit {self.redis.exit_code}")
        return problems


# ---------------------------------------------------------------------------- the load


@dataclass
class Measured:
    """What one paced window measured (raw; :func:`record` turns it into figures)."""

    offered_rate: float
    achieved_send_rate: float
    window_s: float
    #: latencies (ns) by receiver node, split by where the sender was
    same_ns: list[list[int]]
    cross_ns: list[list[int]]
    expected_samples: int
    timed: int
    lost: int
    reordered: int
    #: lines the members of each node received inside the window
    window_lines: list[int]
    messages_sent: int
    #: lines every member together was owed for the whole step, and got
    owed: int
    delivered: int
    driver_cpu_s: float
    cpu_wall_s: float
    errors: int
    blocked_sends: int


class ClusterFleet(driver.Fleet):
    """The lean driver's fleet, its clients dealt round-robin over several nodes."""

    def __init__(self, addrs: list[tuple[str, int]], prefix: str = "c") -> None:
        super().__init__(addrs[0][0], addrs[0][1], dialect="line", prefix=prefix)
        self.addrs = addrs
        #: id(member) -> index of its node
        self.node_of: dict[int, int] = {}
        self._dealt = 0

    def _connect(
        self, nick: str, room: str | None, subscribe: bool, rcvbuf: int = 0, mss: int = 0
    ) -> driver.Member:
        node = self._dealt % len(self.addrs)
        self._dealt += 1
        self.host, self.port = self.addrs[node]
        m = super()._connect(nick, room, subscribe, rcvbuf, mss)
        self.node_of[id(m)] = node
        return m

    def everyone(self) -> list[driver.Member]:
        return self.members + self.senders

    def lines_by_node(self) -> list[int]:
        out = [0] * len(self.addrs)
        for m in self.everyone():
            out[self.node_of[id(m)]] += m.lines
        return out

    def drain_owed(self, owed: int, deadline: float) -> None:
        """Read every socket until ``owed`` lines are in and nothing more comes for a
        quiet period, or until the deadline (what is missing then is lost)."""
        while time.monotonic() < deadline:
            self.drain_quiet(min(deadline, time.monotonic() + 1.0))
            if self.delivered_lines() >= owed:
                self.drain_quiet(deadline)  # duplicates, if any, arrive now
                return

    def measure(
        self,
        *,
        rate: float,
        warmup_s: float,
        window_s: float,
        payload: int,
        sample: int,
        drain_s: float = 2.0,
        on_window: Callable[[str], None] | None = None,
    ) -> Measured:
        """Senders send ``rate`` messages/s in total on a fixed schedule for warmup +
        window; latency at the timed receivers of every node, lines at everyone.

        Follows :meth:`bench.driver.Fleet.paced` (open loop, stamps with the intended
        time, timed receivers read at once and the others lazily) and adds what a
        cluster needs: each sample is classed same node / cross node, lines are counted
        per node, and after the window every member's owed lines are waited for.
        """
        hook = on_window or (lambda _edge: None)
        n_nodes = len(self.addrs)
        senders = self.senders
        n_send = len(senders)
        sender_node = [self.node_of[id(m)] for m in senders]
        want = max(2 * n_nodes, min(sample, int(PARSE_BUDGET / max(rate, 1e-9))))
        per_node = max(1, math.ceil(want / n_nodes))
        timed: list[driver.Member] = []
        for node in range(n_nodes):
            pool = [m for m in self.members if self.node_of[id(m)] == node]
            timed += pool[:: max(1, len(pool) // per_node)][:per_node]
        timed_node = {m.sock.fileno(): self.node_of[id(m)] for m in timed}
        for m in self.everyone():
            m.splitter = None
            m.checker = None
        for m in timed:
            m.splitter = chatload.LineSplitter()
            m.checker = chatload.SequenceTracker()
        fast, lazy = self._fast_ep, self._lazy_ep
        lazy_fds = [m.sock.fileno() for m in self.everyone() if m.sock.fileno() not in timed_node]
        for fd in timed_node:
            fast.register(fd, select.EPOLLIN)
        for fd in lazy_fds:
            lazy.register(fd, select.EPOLLIN)
        frame = len(chatload.line.chat_line(b"x" * payload)) + 12
        lazy_ns = int(
            min(driver.LAZY_MAX_S, max(driver.LAZY_MIN_S, driver.LAZY_BYTES / (rate * frame))) * 1e9
        )
        if self._seq is None or len(self._seq) < n_send:
            self._seq = [0] * n_send
        seq0 = list(self._seq)
        period_ns = 1e9 / rate
        now_ns = time.perf_counter_ns
        t0 = now_ns() + 20_000_000
        win_start = t0 + int(warmup_s * 1e9)
        win_end = win_start + int(window_s * 1e9)
        k_end = max(0, int((win_end - t0 - 1) // period_ns) + 1)
        k = 0
        out = [bytearray() for _ in senders]
        dirty: set[int] = set()
        in_window = 0
        same: list[list[int]] = [[] for _ in range(n_nodes)]
        cross: list[list[int]] = [[] for _ in range(n_nodes)]
        n_samples = 0
        self.reset_counts()
        lines0 = [0] * n_nodes
        lines1 = [0] * n_nodes
        cpu0 = cpu1 = wall0 = wall1 = 0.0
        started = closed = False
        errors = blocked = pending_at_end = 0
        buf, by_fd = self._buf, self.by_fd
        count = buf.count
        next_lazy = t0
        drain_deadline = win_end + int(drain_s * 1e9)
        gc.disable()
        try:
            while True:
                now = now_ns()
                if now >= next_lazy:
                    errors += self._read_lazy(lazy)
                    next_lazy = now + lazy_ns
                if not started and now >= win_start:
                    errors += self._read_lazy(lazy)
                    lines0 = self.lines_by_node()
                    cpu0, wall0 = procstat.self_cpu_seconds(), time.monotonic()
                    hook("start")
                    started = True
                if started and not closed and now >= win_end:
                    errors += self._read_lazy(lazy)
                    lines1 = self.lines_by_node()
                    cpu1, wall1 = procstat.self_cpu_seconds(), time.monotonic()
                    pending_at_end = sum(out[i].count(b"\n") for i in dirty)
                    hook("end")
                    closed = True
                expected = in_window * len(timed)
                if closed and (n_samples >= expected or now >= drain_deadline):
                    break
                while k < k_end:
                    due = t0 + int(k * period_ns)
                    if due > now:
                        break
                    i = k % n_send
                    msg = chatload.encode_stamp(b"%d" % i, seq0[i] + k // n_send, due, payload)
                    out[i] += chatload.line.chat_line(msg)
                    dirty.add(i)
                    if due >= win_start:
                        in_window += 1
                    k += 1
                for i in list(dirty):
                    try:
                        n = senders[i].sock.send(out[i])
                        del out[i][:n]
                    except BlockingIOError:
                        blocked += 1
                    except OSError:
                        errors += 1
                        out[i].clear()
                    if not out[i]:
                        dirty.discard(i)
                if k < k_end:
                    next_due = t0 + int(k * period_ns)
                elif now < win_end:
                    next_due = win_end
                else:
                    next_due = min(drain_deadline, now + 20_000_000)
                wait_ns = max(0, min(next_due, next_lazy) - now_ns())
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
                        fast.unregister(fd)
                        self.error_lines.append(f"server closed {m.nick} during a paced run")
                        continue
                    m.lines += count(b"\n", 0, n)
                    node = timed_node[fd]
                    assert m.splitter is not None and m.checker is not None
                    for ln in m.splitter.feed(bytes(buf[:n])):
                        st = chatload.find_stamp(ln)
                        if st is None:
                            continue
                        sender, seq, intended = st
                        m.checker.observe(sender, seq)
                        if win_start <= intended < win_end:
                            lat = arrived - intended
                            if sender_node[int(sender)] == node:
                                same[node].append(lat)
                            else:
                                cross[node].append(lat)
                            n_samples += 1
                if errors:
                    break
        finally:
            gc.enable()
            for ep, fds in ((fast, list(timed_node)), (lazy, lazy_fds)):
                for fd in fds:
                    try:
                        ep.unregister(fd)
                    except (OSError, ValueError):
                        pass  # unregistered already, after the server closed it
        if not closed:  # an error ended the loop first
            lines1 = self.lines_by_node()
            cpu1, wall1 = procstat.self_cpu_seconds(), time.monotonic()
            if not started:
                cpu0, wall0 = cpu1, wall1
        # Whatever a sender still holds goes out now, then every owed line is waited for.
        for i in list(dirty):
            try:
                senders[i].sock.setblocking(True)
                senders[i].sock.sendall(out[i])
            except OSError:
                errors += 1
            finally:
                senders[i].sock.setblocking(False)
        members = len(self.everyone())
        owed = k * (members - 1)
        if not errors:
            self.drain_owed(owed, time.monotonic() + OWED_WAIT_S)
        for i in range(n_send):
            self._seq[i] = seq0[i] + (k - i + n_send - 1) // n_send
        return Measured(
            offered_rate=rate,
            achieved_send_rate=(in_window - pending_at_end) / window_s,
            window_s=window_s,
            same_ns=same,
            cross_ns=cross,
            expected_samples=in_window * len(timed),
            timed=len(timed),
            lost=sum(m.checker.lost for m in timed if m.checker),
            reordered=sum(m.checker.reordered for m in timed if m.checker),
            window_lines=[b - a for a, b in zip(lines0, lines1, strict=True)],
            messages_sent=k,
            owed=owed,
            delivered=self.delivered_lines(),
            driver_cpu_s=cpu1 - cpu0,
            cpu_wall_s=max(1e-9, wall1 - wall0),
            errors=errors + self.errors,
            blocked_sends=blocked,
        )


# ---------------------------------------------------------------------------- one window


class Edges:
    """Samples every server process and /proc/stat at a window's edges."""

    def __init__(self, procs: list[servers.Server]) -> None:
        self.procs = procs
        self.s0: list[procstat.ProcSample | None] = []
        self.s1: list[procstat.ProcSample | None] = []
        self.p0: dict[str, procstat.CpuStat] = {}
        self.p1: dict[str, procstat.CpuStat] = {}

    def __call__(self, edge: str) -> None:
        snap = [p.sample() for p in self.procs]
        if edge == "start":
            self.s0, self.p0 = snap, procstat.read_proc_stat()
        else:
            self.s1, self.p1 = snap, procstat.read_proc_stat()

    def utils(self) -> list[float | None]:
        out: list[float | None] = []
        for a, b in zip(self.s0, self.s1, strict=False):
            if a is None or b is None or b.t <= a.t:
                out.append(None)
            else:
                out.append((b.cpu_s - a.cpu_s) / (b.t - a.t))
        return out

    def rss(self) -> list[int | None]:
        return [s.rss if s else None for s in self.s1]

    def busy(self) -> dict[str, float]:
        return procstat.busy_fractions(self.p0, self.p1) if self.p0 and self.p1 else {}

    def steal(self) -> dict[str, float]:
        return procstat.steal_fractions(self.p0, self.p1) if self.p0 and self.p1 else {}


def _summary(samples: list[int]) -> dict[str, float] | None:
    return stats.latency_summary_ms(samples)


def _pct(s: dict[str, float] | None, key: str) -> float | None:
    return s[key] if s else None


def read_counters(clients: list[counters.StatsClient]) -> list[dict[str, int]]:
    return [c.query() for c in clients]


def record(
    cfg: Config,
    kind: str,
    rep: int,
    r: Measured,
    edges: Edges,
    before: list[dict[str, int]],
    after: list[dict[str, int]],
    *,
    cpus: tuple[set[int] | None, set[int] | None],
    attempt: int,
) -> dict[str, Any]:
    """One window's record: figures, resources, counters, and whether it counts."""
    n = cfg.nodes
    same = [x for xs in r.same_ns for x in xs]
    cross = [x for xs in r.cross_ns for x in xs]
    everything = same + cross
    utils = edges.utils()
    node_utils, redis_util = utils[:n], (utils[n] if cfg.redis and len(utils) > n else None)
    loadgen_util = r.driver_cpu_s / r.cpu_wall_s
    missing_lines = max(0, r.owed - r.delivered)
    metrics: dict[str, Any] = {
        "offered_rate": r.offered_rate,
        "achieved_send_rate": r.achieved_send_rate,
        "window_s": r.window_s,
        "timed_receivers": r.timed,
        "latency_samples": len(everything),
        "expected_samples": r.expected_samples,
        "missing_samples": max(0, r.expected_samples - len(everything)),
        "same_samples": len(same),
        "cross_samples": len(cross),
        "lost": r.lost,
        "reordered": r.reordered,
        "messages_sent": r.messages_sent,
        "deliveries_owed": r.owed,
        "deliveries_received": r.delivered,
        "deliveries_missing": missing_lines,
        "deliveries_extra": max(0, r.delivered - r.owed),
        "deliveries_per_s": sum(r.window_lines) / r.window_s,
        "deliveries_per_s_by_node": [x / r.window_s for x in r.window_lines],
        "blocked_sends": r.blocked_sends,
    }
    for name, samples in (("all", everything), ("same", same), ("cross", cross)):
        s = _summary(samples)
        for key in ("p50", "p90", "p99", "p999", "max"):
            metrics[f"{name}_{key}_ms"] = _pct(s, key)
    # What the knee (stats.knee) judges: the worse of the same-node and cross-node p99,
    # so a cluster passes a step only if lines that cross nodes meet the bound too.
    worst = [v for v in (metrics["same_p99_ms"], metrics["cross_p99_ms"]) if v is not None]
    metrics["latency_p99_ms"] = max(worst) if worst else None
    metrics["by_node"] = [
        {
            "same_p50_ms": _pct(_summary(r.same_ns[i]), "p50"),
            "same_p99_ms": _pct(_summary(r.same_ns[i]), "p99"),
            "cross_p50_ms": _pct(_summary(r.cross_ns[i]), "p50"),
            "cross_p99_ms": _pct(_summary(r.cross_ns[i]), "p99"),
            "samples": len(r.same_ns[i]) + len(r.cross_ns[i]),
        }
        for i in range(n)
    ]
    counter_delta = [counters.delta(b, a) for b, a in zip(before, after, strict=False)]
    cluster_counts = {
        key: sum(d.get(key, 0) for d in counter_delta)
        for key in (
            "cluster_published",
            "cluster_received",
            "cluster_gaps",
            "cluster_gaps_lost",
            "cluster_duplicates",
            "cluster_publish_errors",
            "cluster_disconnects",
            "cluster_unsent",
            "disconnect_sendq",
            "disconnect_soft_sendq",
        )
    }
    busy = edges.busy()
    srv_cpus, lg_cpus = cpus
    server_total = sum(u for u in utils if u is not None)
    foreign: dict[str, float | None] = {}
    if srv_cpus:
        foreign["server_cpu"] = stats.foreign_busy(busy.get(f"cpu{min(srv_cpus)}"), server_total)
    if lg_cpus:
        foreign["loadgen_cpu"] = stats.foreign_busy(busy.get(f"cpu{min(lg_cpus)}"), loadgen_util)
    verdict = stats.judge_run(
        offered_rate=r.offered_rate,
        achieved_rate=r.achieved_send_rate,
        loadgen_saturated=stats.is_saturated(r.driver_cpu_s, r.cpu_wall_s),
        lost=r.lost + r.reordered,
        errors=r.errors,
    )
    if missing_lines:
        verdict.fail(f"{missing_lines} of {r.owed} deliveries never arrived")
    for role, other in foreign.items():
        if other is not None and other > MAX_FOREIGN_BUSY:
            what = "server" if role == "server_cpu" else "load generator"
            verdict.fail(
                f"machine contended: {other * 100:.0f} % of the {what}'s CPU went to other work"
            )
    return {
        "config": cfg.key,
        "label": cfg.label,
        "nodes": n,
        "redis": cfg.redis,
        "kind": kind,
        "rep": rep,
        "attempt": attempt,
        "params": {"offered": r.offered_rate},
        "metrics": metrics,
        "cpu": {
            "nodes": node_utils,
            "nodes_total": sum(u for u in node_utils if u is not None),
            "redis": redis_util,
            "servers_total": server_total,
            "servers_us_per_delivery": (
                server_total / metrics["deliveries_per_s"] * 1e6
                if metrics["deliveries_per_s"]
                else None
            ),
            "loadgen": loadgen_util,
            "busy": busy,
            "foreign": foreign,
            "steal": edges.steal().get("cpu"),
            "rss_bytes": edges.rss(),
        },
        "counters": cluster_counts,
        "counters_by_node": counter_delta,
        "valid": verdict.valid,
        "reasons": verdict.reasons,
    }


def contended(rec: dict[str, Any]) -> bool:
    return any("contended" in why for why in rec["reasons"])


# ---------------------------------------------------------------------------- a configuration


@dataclass
class Plan:
    """Every knob of a run (results.json keeps it)."""

    configs: list[str]
    members: int
    senders: int
    rate: float
    payload: int
    warmup_s: float
    window_s: float
    reps: int
    sample: int
    sweep: bool
    sweep_max: float
    sweep_window_s: float
    knee_ms: float
    stop_ms: float
    lease: float
    #: seconds to wait for a quiet machine (before a configuration, before a retry)
    quiet_wait_s: float = QUIET_WAIT_S
    #: contended windows measured again at most this many times
    retries: int = RETRIES
    #: after this many seconds of the run, no more waiting for a quiet machine and no
    #: more retries: the rest is measured once, contended or not
    budget_s: float = 1800.0
    #: when the run started (time.monotonic())
    t0: float = field(default_factory=time.monotonic)

    def patience(self) -> bool:
        """Whether there is still time to wait for a quiet machine and to retry."""
        return time.monotonic() - self.t0 < self.budget_s


def wait_quiet(log: Callable[[str], None], max_s: float) -> float:
    """Wait (bounded) until the machine's CPUs are mostly idle; return seconds waited.

    The 2 cores are shared with other work; a configuration started while another job
    holds them would only measure that job. The windows are checked on their own too.
    """
    t0 = time.monotonic()
    said = 0.0
    while time.monotonic() - t0 < max_s:
        a = procstat.read_proc_stat()
        time.sleep(1.0)
        busy = procstat.busy_fractions(a, procstat.read_proc_stat())
        cpus = [v for k, v in busy.items() if k != "cpu"]
        if cpus and max(cpus) < QUIET_BUSY:
            break
        if time.monotonic() - said >= 10.0:
            said = time.monotonic()
            shares = ", ".join(f"{b * 100:.0f} %" for b in cpus)
            log(f"  machine busy with other work ({shares}); waiting (at most {max_s:.0f} s)")
    return time.monotonic() - t0


def converge(clients: list[counters.StatsClient], want: int, deadline: float) -> None:
    """Wait until every node counts ``want`` registered members (the state converged)."""
    while True:
        seen = [c.query().get("registered", 0) for c in clients]
        if all(s >= want for s in seen):
            return
        if time.monotonic() > deadline:
            raise driver.DriverError(f"cluster did not converge: nodes see {seen} of {want}")
        time.sleep(0.2)


def settle(cl: Cluster, fleet: ClusterFleet, max_s: float = 15.0) -> None:
    """Wait (bounded) until the servers have worked off what the last window left."""
    deadline = time.monotonic() + max_s
    prev = [p.sample() for p in cl.procs]
    while time.monotonic() < deadline:
        fleet.drain_quiet(time.monotonic() + 0.3)
        now = [p.sample() for p in cl.procs]
        busy = 0.0
        for a, b in zip(prev, now, strict=True):
            if a and b and b.t > a.t:
                busy += (b.cpu_s - a.cpu_s) / (b.t - a.t)
        if busy < 0.1:
            return
        prev = now


def window(
    cl: Cluster,
    fleet: ClusterFleet,
    stats_clients: list[counters.StatsClient],
    plan: Plan,
    *,
    kind: str,
    rep: int,
    rate: float,
    window_s: float,
    cpus: tuple[set[int] | None, set[int] | None],
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Measure one window, again if the machine was contended; every attempt's record."""
    recs: list[dict[str, Any]] = []
    for attempt in range(1 + plan.retries):
        settle(cl, fleet)
        before = read_counters(stats_clients)
        edges = Edges(cl.procs)
        r = fleet.measure(
            rate=rate,
            warmup_s=plan.warmup_s,
            window_s=window_s,
            payload=plan.payload,
            sample=plan.sample,
            on_window=edges,
        )
        after = read_counters(stats_clients) if not r.errors else before
        rec = record(cl.cfg, kind, rep, r, edges, before, after, cpus=cpus, attempt=attempt)
        log("    " + describe(rec))
        recs.append(rec)
        if not contended(rec) or r.errors or attempt == plan.retries or not plan.patience():
            break
        waited = wait_quiet(log, plan.quiet_wait_s)
        log(f"    contended: measured again after waiting {waited:.0f} s")
    return recs


def describe(rec: dict[str, Any]) -> str:
    """One progress line."""
    m, c = rec["metrics"], rec["cpu"]

    def ms(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f}"

    nodes = "/".join(f"{u * 100:.0f}" if u is not None else "–" for u in c["nodes"])
    redis = f", redis {c['redis'] * 100:.0f} %" if c["redis"] is not None else ""
    state = "ok" if rec["valid"] else "INVALID: " + "; ".join(rec["reasons"])
    return (
        f"{rec['kind']} {m['offered_rate']:g}/s: same p50/p99 {ms(m['same_p50_ms'])}/"
        f"{ms(m['same_p99_ms'])} ms, cross {ms(m['cross_p50_ms'])}/{ms(m['cross_p99_ms'])} ms "
        f"({m['same_samples']}+{m['cross_samples']} samples), {m['deliveries_per_s']:.0f} "
        f"deliveries/s, nodes {nodes} %{redis}, load gen {c['loadgen'] * 100:.0f} %, "
        f"missing {m['deliveries_missing']}, gaps {rec['counters']['cluster_gaps']}/"
        f"{rec['counters']['cluster_gaps_lost']} lost; {state}"
    )


def run_config(
    cfg: Config,
    plan: Plan,
    *,
    cpus: tuple[set[int] | None, set[int] | None],
    logdir: Path,
    log: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Start one configuration, fill the room, measure, sweep, stop; never raises for a
    server or load problem (it is recorded)."""
    out: dict[str, Any] = {
        "config": cfg.key,
        "label": cfg.label,
        "nodes": cfg.nodes,
        "redis": cfg.redis,
        "runs": [],
        "sweep": [],
        "problems": [],
        "notes": [],
    }
    waited = wait_quiet(log, plan.quiet_wait_s if plan.patience() else 0.0)
    if waited > 2:
        out["notes"].append(f"waited {waited:.0f} s for a quiet machine before starting")
    t0 = time.monotonic()
    cl = Cluster.start(
        cfg,
        cpus=cpus[0],
        logdir=logdir,
        max_clients=plan.members + 50,
        lease=plan.lease,
        env=env,
    )
    stats_clients: list[counters.StatsClient] = []
    fleet: ClusterFleet | None = None
    try:
        stats_clients = [
            counters.StatsClient(s.host, s.line_port, nick=f"benchctl{i + 1}")
            for i, s in enumerate(cl.nodes)
        ]
        fleet = ClusterFleet([(s.host, s.port) for s in cl.nodes])
        fleet.add(plan.members, senders=plan.senders, timeout_s=CONVERGE_S)
        converge(stats_clients, plan.members + cfg.nodes, time.monotonic() + CONVERGE_S)
        fleet.drain_quiet(time.monotonic() + 5.0)
        out["fill_s"] = time.monotonic() - t0
        out["sender_nodes"] = [fleet.node_of[id(m)] + 1 for m in fleet.senders]
        out["members_by_node"] = [
            sum(1 for m in fleet.everyone() if fleet.node_of[id(m)] == i) for i in range(cfg.nodes)
        ]
        log(
            f"  {plan.members} members on {cfg.nodes} node(s) {out['members_by_node']}, "
            f"senders on nodes {out['sender_nodes']}, filled in {out['fill_s']:.1f} s"
        )
        for rep in range(1, plan.reps + 1):
            out["runs"] += window(
                cl,
                fleet,
                stats_clients,
                plan,
                kind="fixed",
                rep=rep,
                rate=plan.rate,
                window_s=plan.window_s,
                cpus=cpus,
                log=log,
            )
        if plan.sweep:
            rate = plan.rate
            while rate <= plan.sweep_max:
                recs = window(
                    cl,
                    fleet,
                    stats_clients,
                    plan,
                    kind="sweep",
                    rep=1,
                    rate=rate,
                    window_s=plan.sweep_window_s,
                    cpus=cpus,
                    log=log,
                )
                out["sweep"] += recs
                last = recs[-1]
                p99 = last["metrics"]["latency_p99_ms"]
                if not last["valid"] or p99 is None or p99 > plan.stop_ms:
                    break
                rate *= 2
    except (driver.DriverError, OSError, RuntimeError) as exc:
        out["problems"].append(f"{type(exc).__name__}: {exc}"[:500])
        log(f"  FAILED: {exc}")
    finally:
        for c in stats_clients:
            c.close()
        if fleet is not None:
            fleet.close()
        out["problems"] += cl.stop()
    if out["problems"]:
        for rec in out["runs"] + out["sweep"]:
            rec["valid"] = False
            rec["reasons"].append("a server failed: " + "; ".join(out["problems"])[:300])
    out["knee"] = knee_of(out["sweep"], plan.knee_ms) if plan.sweep else None
    out["wall_s"] = time.monotonic() - t0
    return out


def knee_of(sweep: list[dict[str, Any]], knee_ms: float) -> dict[str, Any]:
    """The sweep's knee (bench's rule) on the last attempt of each rate."""
    by_rate: dict[float, dict[str, Any]] = {}
    for rec in sweep:
        by_rate[rec["params"]["offered"]] = rec
    k = stats.knee(list(by_rate.values()), knee_ms)
    return {"rate": k.rate, "limit": k.limit, "detail": k.detail, "lower_bound": k.lower_bound}


# ---------------------------------------------------------------------------- summary


def _spread(values: list[float | None]) -> dict[str, float] | None:
    s = stats.spread([v for v in values if v is not None])
    return s.as_dict() if s else None


def summarize(cfg_out: dict[str, Any]) -> dict[str, Any]:
    """Median [min-max] over the valid fixed-rate windows of one configuration."""
    valid = [r for r in cfg_out["runs"] if r["valid"]]
    out: dict[str, Any] = {"n_valid": len(valid), "n_runs": len(cfg_out["runs"])}
    keys = (
        "all_p50_ms",
        "all_p99_ms",
        "same_p50_ms",
        "same_p99_ms",
        "cross_p50_ms",
        "cross_p99_ms",
        "deliveries_per_s",
        "same_samples",
        "cross_samples",
    )
    for key in keys:
        out[key] = _spread([r["metrics"][key] for r in valid])
    nodes = cfg_out["nodes"]
    out["deliveries_per_s_by_node"] = [
        _spread([r["metrics"]["deliveries_per_s_by_node"][i] for r in valid]) for i in range(nodes)
    ]
    out["cpu_nodes"] = [_spread([r["cpu"]["nodes"][i] for r in valid]) for i in range(nodes)]
    for key in ("nodes_total", "redis", "loadgen", "servers_total"):
        out[f"cpu_{key}"] = _spread([r["cpu"][key] for r in valid])
    for key in ("server_cpu", "loadgen_cpu"):
        out[f"foreign_{key}"] = _spread([r["cpu"]["foreign"].get(key) for r in valid])
    out["cpu_servers_us_per_delivery"] = _spread(
        [
            r["cpu"]["servers_total"] / r["metrics"]["deliveries_per_s"] * 1e6
            for r in valid
            if r["metrics"]["deliveries_per_s"]
        ]
    )
    runs = cfg_out["runs"]
    out["deliveries_missing"] = sum(r["metrics"]["deliveries_missing"] for r in runs)
    out["deliveries_owed"] = sum(r["metrics"]["deliveries_owed"] for r in runs)
    out["deliveries_extra"] = sum(r["metrics"]["deliveries_extra"] for r in runs)
    out["lost"] = sum(r["metrics"]["lost"] + r["metrics"]["reordered"] for r in runs)
    for key in ("cluster_gaps", "cluster_gaps_lost", "cluster_duplicates"):
        out[key] = sum(r["counters"][key] for r in runs)
    return out


# ---------------------------------------------------------------------------- CLI


def tree_hash(root: Path) -> str:
    """A short sha256 of the Python files under root (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot_server(into: Path) -> dict[str, str]:
    """Copy server/chatd into ``into`` and return an environment that runs chatd from
    the copy: every node of the run runs the same code, whatever is edited meanwhile."""
    shutil.copytree(
        servers.REPO / "server" / "chatd",
        into / "chatd",
        ignore=shutil.ignore_patterns("__pycache__"),
        dirs_exist_ok=True,
    )
    env = servers.chatd_env()
    env["PYTHONPATH"] = str(into) + os.pathsep + env["PYTHONPATH"]
    return env


def server_tree(snapshot: Path | None = None) -> dict[str, Any]:
    """Which chatd ran: the commit, whether server/ differed from it, and a hash of the
    Python files of server/chatd (of the snapshot the nodes ran, when there is one)."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=servers.REPO, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return out.stdout.strip() if out.returncode == 0 else ""

    root = snapshot / "chatd" if snapshot else servers.REPO / "server" / "chatd"
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "server_changed": bool(git("status", "--porcelain", "--", "server")),
        "server_sha256": tree_hash(root),
        "snapshot": snapshot is not None,
    }


def machine_caption(mach: dict[str, Any], pinning: str) -> str:
    return (
        f"{mach['cpus_usable']} CPUs shared by every chatd node, redis-server and the load "
        f"generator ({pinning}), machine shared with other work"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.cluster", description=(__doc__ or "").split("\n", 1)[0]
    )
    p.add_argument("--configs", default="baseline,1,2,4", help="comma-separated: baseline,1,2,4")
    p.add_argument("--members", type=int, default=500, help="members of the one room")
    p.add_argument("--senders", type=int, default=4, help="of the members, how many send")
    p.add_argument("--rate", type=float, default=100.0, help="messages/s in total (fixed)")
    p.add_argument("--payload", type=int, default=48, help="bytes per message")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds before each window")
    p.add_argument("--seconds", type=float, default=10.0, help="fixed-rate window, seconds")
    p.add_argument("--reps", type=int, default=3, help="fixed-rate windows per configuration")
    p.add_argument("--sample", type=int, default=100, help="timed receivers at most")
    p.add_argument("--no-sweep", dest="sweep", action="store_false", help="skip the sweep")
    p.add_argument("--sweep-max", type=float, default=25600.0, help="highest sweep rate")
    p.add_argument("--sweep-seconds", type=float, default=4.0, help="sweep window, seconds")
    p.add_argument("--knee-ms", type=float, default=100.0, help="p99 bound of the knee")
    p.add_argument("--stop-ms", type=float, default=1000.0, help="p99 that ends a sweep")
    p.add_argument("--lease", type=float, default=15.0, help="chatd --redis-lease")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET_WAIT_S,
        help="seconds to wait for a quiet machine before a configuration or a retry",
    )
    p.add_argument("--retries", type=int, default=RETRIES, help="contended windows measured again")
    p.add_argument(
        "--budget",
        type=float,
        default=30.0,
        help="minutes after which contended windows are no longer waited for or retried",
    )
    p.add_argument("--quick", action="store_true", help="2 nodes, 20 members, 2 s, no sweep")
    p.add_argument("--out", type=Path, help="report directory (default bench/reports/DATE-cluster)")
    p.add_argument("--logdir", type=Path, help="servers' stdout/stderr (default: a temp dir)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="pin nothing")
    p.add_argument("--rerender", type=Path, help="rebuild report.md and the plot from DIR")
    args = p.parse_args(argv)
    if args.quick:
        args.configs, args.members, args.senders, args.rate = "2", 20, 2, 20.0
        args.seconds, args.warmup, args.reps, args.sweep = 2.0, 0.5, 1, False
        args.quiet_wait, args.retries = 0.0, 0
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench import cluster_report

    if args.rerender:
        old = json.loads((args.rerender / "results.json").read_text())
        for res in old["configs"]:
            res["summary"] = summarize(res)  # by the current rules
        cluster_report.write(old, args.rerender)
        print(f"bench.cluster: rewrote {args.rerender / 'report.md'}")
        return 0
    if not servers.redis_available():
        print("bench.cluster: redis-server is not installed", file=sys.stderr)
        return 2
    cfgs = [config(k.strip()) for k in args.configs.split(",") if k.strip()]
    if not 1 <= args.senders < args.members:
        raise SystemExit("--senders must be at least 1 and fewer than --members")
    plan = Plan(
        configs=[c.key for c in cfgs],
        members=args.members,
        senders=args.senders,
        rate=args.rate,
        payload=args.payload,
        warmup_s=args.warmup,
        window_s=args.seconds,
        reps=args.reps,
        sample=args.sample,
        sweep=args.sweep,
        sweep_max=args.sweep_max,
        sweep_window_s=args.sweep_seconds,
        knee_ms=args.knee_ms,
        stop_ms=args.stop_ms,
        lease=args.lease,
        quiet_wait_s=args.quiet_wait,
        retries=args.retries,
        budget_s=args.budget * 60,
    )
    command = "python -m bench.cluster" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    mach = procstat.machine_description()  # before pinning narrows our affinity
    srv_cpus, lg_cpus = procstat.cpu_plan() if args.pin else (None, None)
    pinned = procstat.pin(0, lg_cpus)
    procstat.raise_nofile(args.members * 2 + 256)
    pinning = (
        f"every chatd node and redis-server on CPU {min(srv_cpus)}, "
        f"load generator on CPU {min(lg_cpus)}"
        if pinned and srv_cpus and lg_cpus
        else "nothing pinned"
    )
    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="chatd-bench-cluster-"))

    def log(line: str) -> None:
        print(line, flush=True)

    snapshot = logdir / "server-snapshot"
    env = snapshot_server(snapshot)
    tree = server_tree(snapshot)
    log(f"bench.cluster: {pinning}; logs in {logdir}; chatd {tree}")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    t0 = time.monotonic()
    results = []
    for cfg in cfgs:
        log(f"{cfg.label}:")
        try:
            res = run_config(
                cfg,
                plan,
                cpus=(srv_cpus, lg_cpus) if pinned else (None, None),
                logdir=logdir,
                log=log,
                env=env,
            )
        except RuntimeError as exc:  # a server did not start
            res = {
                "config": cfg.key,
                "label": cfg.label,
                "nodes": cfg.nodes,
                "redis": cfg.redis,
                "runs": [],
                "sweep": [],
                "problems": [str(exc)[:500]],
                "notes": [],
                "knee": None,
            }
            log(f"  FAILED to start: {exc}")
        res["summary"] = summarize(res)
        results.append(res)
    now = dt.datetime.now()
    outdir = args.out or REPORTS / f"{now:%Y-%m-%d}-cluster"
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "created": now.isoformat(timespec="seconds"),
        "command": command,
        "duration_s": time.monotonic() - t0,
        "machine": mach,
        "python": platform.python_version(),
        "versions": {
            "chatd": servers._run_version(
                [servers.python_exe(), "-m", "chatd", "--version"], env=env
            ),
            "redis": servers.version("redis"),
        },
        "chatd_tree": tree,
        "caption": machine_caption(mach, pinning),
        "pinning": pinning,
        "plan": {k: v for k, v in plan.__dict__.items() if k != "t0"},
        "configs": results,
    }
    cluster_report.write(doc, outdir)
    log(f"bench.cluster: wrote {outdir / 'report.md'} ({doc['duration_s'] / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
