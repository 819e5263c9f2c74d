"""Stalls: how long one client's expensive or hostile input holds up everyone else.

``python -m bench.stalls --scenario who-list --engine reactor`` starts chatd (IRC
listener on), fills it with idle members, then lets one attacker send its input while a
few probe members measure round trips (IRC ``PING``/``PONG``), one every
:data:`PROBE_INTERVAL` seconds in turn (each probe alone stays well inside the flood
budget of 10 lines per second, so its own pings never wait on flood control). The
figure is the probes' worst round trip while the attack runs: what every member of the
server felt. A stall-free server keeps it near the idle round trip.

Each scenario is the input an issue named (issue 15 item 4, issue 16's nine items); the
setup builds the state it needs (members, rooms, bans) through the wire like any client.
``--server-path`` runs another tree's chatd (``git worktree add /tmp/old <commit>``), so
one machine measures before and after in one sitting. Traffic stays on loopback and
every phase has a deadline; the run stops by itself.

The server and this driver share the machine's CPUs (2 here): say so beside any figure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROBE_INTERVAL = 0.02
#: Probe members taking turns: each pings every PROBE_INTERVAL * PROBES seconds.
PROBES = 10
#: The longest any phase may take before the run is abandoned.
PHASE_DEADLINE = 120.0
_LISTENING = re.compile(r"chatd \S+ (\w+)( tls)?: listening on (\S+):(\d+)")


class Conn:
    """A non-blocking IRC connection: bytes out, lines in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inbuf = b""
        self.outbuf = b""
        self.lines: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.outbuf += data
        self.flush()

    def flush(self) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except BlockingIOError:
                return
            except OSError:
                self.closed = True
                self.outbuf = b""
                return
            self.outbuf = self.outbuf[sent:]

    def read(self) -> None:
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            self.inbuf += data
        *done, self.inbuf = self.inbuf.split(b"\n")
        for line in done:
            line = line.rstrip(b"\r")
            if line.startswith(b"PING "):
                self.send(b"PONG " + line[5:] + b"\r\n")
            else:
                self.lines.append(line)


@dataclass
class Driver:
    port: int
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    conns: list[Conn] = field(default_factory=list)

    def connect(self) -> Conn:
        conn = Conn(self.port)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self.conns.append(conn)
        return conn

    def pump(self, timeout: float = 0.01) -> None:
        for key, _ in self.selector.select(timeout):
            key.data.read()
        for conn in self.conns:
            if conn.outbuf:
                conn.flush()

    def until(self, done: Callable[[], bool], what: str, deadline: float = PHASE_DEADLINE) -> None:
        end = time.monotonic() + deadline
        while not done():
            if time.monotonic() > end:
                raise TimeoutError(f"{what}: no end within {deadline:.0f} s")
            self.pump()

    def register(self, nicks: list[str], join: Callable[[int], bytes] | None = None) -> list[Conn]:
        """IRC members ``nicks``, registered (and each sent ``join(i)`` after 001)."""
        conns = []
        for i, nick in enumerate(nicks):
            conn = self.connect()
            data = f"NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n".encode()
            if join is not None:
                data += join(i)
            conn.send(data)
            conns.append(conn)
            if i % 200 == 199:
                self.pump(0)

        def ready() -> bool:
            return all(any(b" 376 " in x or b" 422 " in x for x in c.lines) for c in conns)

        self.until(ready, "registration")
        for conn in conns:
            conn.lines.clear()
        return conns


@dataclass
class Probe:
    """Members that measure round trips while the attack runs, taking turns."""

    conns: list[Conn]
    sent: dict[str, float] = field(default_factory=dict)
    rtts: list[float] = field(default_factory=list)
    seq: int = 0
    next_at: float = 0.0

    def tick(self, now: float) -> None:
        for conn in self.conns:
            for line in conn.lines:
                m = re.search(rb" PONG \S+ :?(p\d+)$", line)
                if m and (token := m.group(1).decode()) in self.sent:
                    self.rtts.append(now - self.sent.pop(token))
            conn.lines.clear()
        if now >= self.next_at:
            self.seq += 1
            token = f"p{self.seq}"
            self.sent[token] = now
            self.conns[self.seq % len(self.conns)].send(f"PING {token}\r\n".encode())
            self.next_at = now + PROBE_INTERVAL

    def worst(self, now: float) -> float:
        """The worst round trip, counting probes still unanswered as at least this long."""
        waiting = [now - t for t in self.sent.values()]
        return max([*self.rtts, *waiting], default=0.0)


# --------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    name: str
    what: str
    members: int
    setup: Callable[[Driver, Conn], None]
    attack: Callable[[Driver, Conn], None]
    #: The attacker's output that ends the attack (its last reply).
    done: bytes = b""


def _who_list_setup(d: Driver, attacker: Conn) -> None:
    for i in range(20):  # a few rooms for LIST to show
        attacker.send(f"JOIN #r{i}\r\n".encode())


def _who_list_attack(d: Driver, attacker: Conn) -> None:
    data = b"WHO *zzz*\r\n" * 40 + b"LIST\r\n" * 10 + b"PING end\r\n"
    attacker.send(data)


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "who-list",
            "issue 15 item 4: one client pipelines 40 `WHO *zzz*` and 10 LIST among 4,000 users",
            4000,
            _who_list_setup,
            _who_list_attack,
            b"PONG",
        ),
    )
}


# --------------------------------------------------------------------------- running


def start_chatd(
    engine: str, server_path: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], int]:
    env = dict(os.environ, PYTHONPATH=str(server_path), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "chatd", "--port", "0", "--irc-port", "0", "--engine"]
    argv += [engine, "--max-clients", "20000", "--log-level", "warning", *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    ports = {}
    for _ in range(2):
        line = proc.stdout.readline().decode()
        m = _LISTENING.search(line)
        if not m:
            proc.kill()
            raise RuntimeError(f"chatd did not start: {line!r}")
        ports[m.group(1)] = int(m.group(4))
    return proc, ports["irc"]


def run(scenario: Scenario, engine: str, server_path: Path, members: int) -> dict[str, object]:
    proc, port = start_chatd(engine, server_path, [])
    try:
        d = Driver(port)
        d.register([f"m{i}" for i in range(members)])
        probes = d.register([f"probe{i}" for i in range(PROBES)])
        [attacker] = d.register(["attacker"])
        scenario.setup(d, attacker)
        d.until(lambda: True, "setup")
        probe = Probe(probes)
        idle_end = time.monotonic() + 1.0
        while time.monotonic() < idle_end:  # the idle round trip first
            d.pump(0.005)
            probe.tick(time.monotonic())
        idle = sorted(probe.rtts)
        probe.rtts.clear()
        attacker.lines.clear()
        started = time.monotonic()
        scenario.attack(d, attacker)
        end = started + PHASE_DEADLINE
        while not any(scenario.done in line for line in attacker.lines):
            now = time.monotonic()
            if now > end:
                raise TimeoutError("the attack did not end")
            d.pump(0.002)
            probe.tick(time.monotonic())
        finished = time.monotonic()
        # Let the probes sent during the attack come back.
        settle = finished + 0.5
        while time.monotonic() < settle:
            d.pump(0.005)
            probe.tick(time.monotonic())
        worst = probe.worst(time.monotonic())
        result: dict[str, object] = {
            "scenario": scenario.name,
            "engine": engine,
            "members": members,
            "server_path": str(server_path),
            "idle_rtt_ms_median": round(statistics.median(idle) * 1000, 2) if idle else None,
            "attack_seconds": round(finished - started, 3),
            "probe_worst_rtt_ms": round(worst * 1000, 1),
            "probe_rtts": len(probe.rtts),
        }
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--engine", default="reactor")
    parser.add_argument("--members", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--server-path", type=Path, default=REPO / "server")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    members = args.members if args.members is not None else scenario.members
    for _ in range(args.repeat):
        result = run(scenario, args.engine, args.server_path, members)
        print(json.dumps(result), flush=True)
        if args.out is not None:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as f:
                f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
