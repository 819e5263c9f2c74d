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
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
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
    line_port: int = 0
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    conns: list[Conn] = field(default_factory=list)
    #: Called after every pump (the probe measures round trips whatever else waits).
    on_pump: Callable[[float], None] | None = None

    def connect(self, port: int | None = None) -> Conn:
        conn = Conn(port or self.port)
        self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        self.conns.append(conn)
        return conn

    def pump(self, timeout: float = 0.01) -> None:
        for key, _ in self.selector.select(timeout):
            key.data.read()
        for conn in self.conns:
            if conn.outbuf:
                conn.flush()
        if self.on_pump is not None:
            self.on_pump(time.monotonic())

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

    def line_client(self, nick: str) -> Conn:
        """A line-dialect member, registered in the default room."""
        conn = self.connect(self.line_port)
        conn.send(f"{nick}\n".encode())
        self.until(_ended_by(conn, b"* you are "), "line registration")
        conn.lines.clear()
        return conn


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
    #: What the scenario stands for, with the issue and item it comes from.
    what: str
    #: Idle members, and the line each sends after registering (``None``: nothing).
    members: int
    member_join: Callable[[int], bytes] | None
    #: Builds the state the attack needs; returns when it is built.
    setup: Callable[[Driver], None]
    #: Starts the attack; returns a test of whether it has ended.
    attack: Callable[[Driver], Callable[[], bool]]


def _ended_by(conn: Conn, marker: bytes) -> Callable[[], bool]:
    """The attack ends when ``conn`` reads a line holding ``marker``."""
    return lambda: any(marker in line for line in conn.lines)


def _nothing(d: Driver) -> None:
    pass


def _who_list_attack(d: Driver) -> Callable[[], bool]:
    [attacker] = d.register(["attacker"], join=lambda i: b"JOIN #r1,#r2,#r3\r\n")
    attacker.send(b"WHO *zzz*\r\n" * 40 + b"LIST\r\n" * 10 + b"PING end\r\n")
    return _ended_by(attacker, b"PONG")


def _list_masks_attack(d: Driver) -> Callable[[], bool]:
    [attacker] = d.register(["attacker"])
    masks = ",".join(["*"] * 246 + ["!*"])
    attacker.send(f"LIST {masks}\r\n".encode() * 10 + b"PING end\r\n")
    return _ended_by(attacker, b"PONG")


def _list_allowed_attack(d: Driver) -> Callable[[], bool]:
    [attacker] = d.register(["attacker"])
    masks = ",".join(["*a*", "*e*", "*o*", "*1*", "*2*", "!*x*", ">0", "<9"])
    attacker.send(f"LIST {masks}\r\n".encode() * 10 + b"PING end\r\n")
    return _ended_by(attacker, b"PONG")


BAN_ROOMS = 11


def _join_bans_setup(d: Driver) -> None:
    """Eleven rooms, each with 99 bans that match nobody, one that matches the attacker,
    and 100 exceptions that match nobody: a JOIN of the attacker scans all 200."""
    ops = d.register([f"op{k}" for k in range(BAN_ROOMS)])
    for k, op in enumerate(ops):
        masks = [f"+b x{k}_{j}!*@*" for j in range(99)] + ["+b attacker!*@*"]
        masks += [f"+e y{k}_{j}!*@*" for j in range(100)]
        lines = [f"JOIN #b{k}\r\n".encode()]
        for i in range(0, len(masks), 6):
            group = masks[i : i + 6]
            letters = "".join(m.split()[0] for m in group)
            args = " ".join(m.split()[1] for m in group)
            lines.append(f"MODE #b{k} {letters} {args}\r\n".encode())
        op.send(b"".join(lines) + b"PING built\r\n")
    d.until(lambda: all(_ended_by(op, b"PONG")() for op in ops), "bans")


def _join_bans_attack(d: Driver) -> Callable[[], bool]:
    [attacker] = d.register(["attacker"])
    targets = ",".join(f"#b{i % BAN_ROOMS}" for i in range(120))
    attacker.send(f"JOIN {targets}\r\nPING end\r\n".encode())
    return _ended_by(attacker, b"PONG")


ROOM_BUILDERS = 4
ROOM_SECONDS = 20.0
#: JOIN lines a builder may have unanswered: the input queued in the kernel stays small,
#: so the setup ends soon after its 20 s on every engine, whatever the flood pace.
ROOM_WINDOW = 8


def _rooms_setup(d: Driver) -> None:
    """Four connections join as many rooms as they can for 20 s: JOIN lines as long as a
    line allows, each followed by a PING, at most :data:`ROOM_WINDOW` unanswered."""
    builders = d.register([f"b{k}" for k in range(ROOM_BUILDERS)])
    per_line = 60
    end = time.monotonic() + ROOM_SECONDS
    seq = 0
    unanswered = [0] * ROOM_BUILDERS
    while time.monotonic() < end:
        for k, conn in enumerate(builders):
            unanswered[k] -= sum(1 for line in conn.lines if b"PONG" in line)
            conn.lines.clear()
            if unanswered[k] < ROOM_WINDOW:
                names = ",".join(f"#{k}x{seq + i}" for i in range(per_line))
                conn.send(f"JOIN {names}\r\nPING {seq}\r\n".encode())
                unanswered[k] += 1
        seq += per_line
        d.pump(0.05)
    for conn in builders:
        conn.send(b"PING built\r\n")
    d.until(lambda: all(_ended_by(c, b"built")() for c in builders), "rooms")
    d.rooms_builder = builders[0]  # type: ignore[attr-defined]


def _rooms_attack(d: Driver) -> Callable[[], bool]:
    attacker: Conn = d.rooms_builder  # type: ignore[attr-defined]
    attacker.lines.clear()
    nicks = "".join(f"NICK b0n{i}\r\n" for i in range(160))
    attacker.send(b"LIST\r\n" + nicks.encode() + b"PING end\r\n")
    return _ended_by(attacker, b"PONG")


#: The six capabilities that change how a relayed line is encoded.
ENCODING_CAPS = ("server-time", "message-tags", "away-notify", "invite-notify", "setname")


def _tags_join(i: int) -> bytes:
    caps = " ".join(c for bit, c in enumerate(ENCODING_CAPS) if i & (1 << bit))
    prefix = f"CAP REQ :{caps}\r\n".encode() if caps else b""
    return prefix + b"JOIN #big\r\n"


def _tags_attack(d: Driver) -> Callable[[], bool]:
    [attacker] = d.register(["attacker"], join=lambda i: b"JOIN #big\r\n")
    tags, i = [], 0
    while len(";".join(tags)) < 4000:
        tags.append(f"+t{i}")
        i += 1
    line = f"@{';'.join(tags)} PRIVMSG #big,#big,#big,#big :x\r\n".encode()
    attacker.send(line * 40 + b"PING end\r\n")
    return _ended_by(attacker, b"PONG")


def _modes_attack(d: Driver) -> Callable[[], bool]:
    """A line-dialect operator of its own room sends 40 lines of 4,080 mode letters."""
    op = d.line_client("lineop")
    op.send(b"/join #modes\n")
    d.until(_ended_by(op, b"you joined"), "join")
    op.send(("/mode +" + "Z" * 4080 + "\n").encode() * 40 + b"/ping end\n")
    return _ended_by(op, b"* pong end")


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "who-list",
            "issue 15 item 4: one client pipelines 40 `WHO *zzz*` and 10 LIST among 4,000 users",
            4000,
            None,
            _nothing,
            _who_list_attack,
        ),
        Scenario(
            "list-masks",
            "issue 16 item 2: 10 lines of `LIST *,*,...(246 masks),!*` with 1,000 rooms",
            1000,
            lambda i: f"JOIN #room{i}\r\n".encode(),
            _nothing,
            _list_masks_attack,
        ),
        Scenario(
            "list-allowed",
            "issue 16 item 2: 10 lines of LIST with 8 conditions (the most allowed), 1,000 rooms",
            1000,
            lambda i: f"JOIN #room{i}\r\n".encode(),
            _nothing,
            _list_allowed_attack,
        ),
        Scenario(
            "join-bans",
            "issue 16 item 3: one JOIN of 120 targets over 11 rooms of 100 bans and 100 "
            "exceptions each (2,200 masks)",
            100,
            None,
            _join_bans_setup,
            _join_bans_attack,
        ),
        Scenario(
            "rooms",
            "issue 16 item 5: 4 connections join rooms for 20 s, then one LIST and 160 NICKs",
            100,
            None,
            _rooms_setup,
            _rooms_attack,
        ),
        Scenario(
            "tags",
            "issue 16 item 7: 40 lines of 4 KB of client tags to #big,#big,#big,#big, "
            "32 capability sets in the room",
            32,
            _tags_join,
            _nothing,
            _tags_attack,
        ),
        Scenario(
            "modes",
            "issue 16 item 8: a line operator sends 40 lines of 4,080 mode letters",
            100,
            None,
            _nothing,
            _modes_attack,
        ),
    )
}


# --------------------------------------------------------------------------- running


def start_chatd(
    engine: str,
    server_path: Path,
    extra: list[str],
    stderr: Path | None = None,
    data: Path | None = None,
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    """chatd with an IRC listener; its stderr to ``stderr`` (a file) or nowhere; its
    history in ``data`` (``None``: a tree from before history, which has no data dir)."""
    env = dict(os.environ, PYTHONPATH=str(server_path), PYTHONUNBUFFERED="1")
    argv = [sys.executable, "-m", "chatd", "--port", "0", "--irc-port", "0", "--engine"]
    argv += [engine, "--max-clients", "20000", "--log-level", "warning", *extra]
    if data is not None:
        argv += ["--data-dir", str(data)]
    err = stderr.open("wb") if stderr is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
    finally:
        if stderr is not None:
            err.close()  # type: ignore[union-attr]
    assert proc.stdout is not None
    ports = {}
    for _ in range(2):
        line = proc.stdout.readline().decode()
        m = _LISTENING.search(line)
        if not m:
            proc.kill()
            raise RuntimeError(f"chatd did not start: {line!r}")
        ports[m.group(1)] = int(m.group(4))
    return proc, ports


def run(
    scenario: Scenario,
    engine: str,
    server_path: Path,
    members: int,
    stderr: Path | None = None,
) -> dict[str, object]:
    """One measurement; the server's exit status is in the result (``server_exit``).

    The server runs with its default options, history included (a fresh data dir), unless
    the tree predates history (no ``--data-dir`` in its ``--help``)."""
    data = Path(tempfile.mkdtemp(prefix="chatd-stalls-"))
    has_history = (server_path / "chatd" / "history").is_dir()
    proc, ports = start_chatd(engine, server_path, [], stderr, data if has_history else None)
    result: dict[str, object] = {}
    try:
        d = Driver(ports["irc"], ports["line"])
        d.register([f"m{i}" for i in range(members)], join=scenario.member_join)
        probes = d.register([f"probe{i}" for i in range(PROBES)])
        scenario.setup(d)
        probe = Probe(probes)
        d.on_pump = probe.tick
        idle_end = time.monotonic() + 1.0
        while time.monotonic() < idle_end:  # the idle round trip first
            d.pump(0.005)
        idle = sorted(probe.rtts)
        probe.rtts.clear()
        started = time.monotonic()
        done = scenario.attack(d)
        end = started + PHASE_DEADLINE
        ended = True
        while not done():
            if time.monotonic() > end:
                ended = False  # the server is still busy with it: a stall of this long
                break
            d.pump(0.002)
        finished = time.monotonic()
        # Let the probes sent during the attack come back.
        settle = finished + 0.5
        while time.monotonic() < settle:
            d.pump(0.005)
        worst = probe.worst(time.monotonic())
        alive = proc.poll() is None
        result = {
            "scenario": scenario.name,
            "engine": engine,
            "members": members,
            "server_path": str(server_path),
            "idle_rtt_ms_median": round(statistics.median(idle) * 1000, 2) if idle else None,
            "attack_seconds": round(finished - started, 3),
            "attack_ended": ended,
            "probe_worst_rtt_ms": round(worst * 1000, 1),
            "probe_rtts": len(probe.rtts),
            "server_alive": alive,
        }
    finally:
        proc.terminate()
        try:
            result["server_exit"] = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            result["server_exit"] = proc.wait()
        shutil.rmtree(data, ignore_errors=True)
    return result


def render(directory: Path) -> str:
    """``report.md`` for a directory holding ``before.jsonl`` and ``after.jsonl``."""
    rows: dict[tuple[str, str], dict[str, dict[str, object]]] = {}
    paths: dict[str, str] = {}
    for side in ("before", "after"):
        path = directory / f"{side}.jsonl"
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            result = json.loads(line)
            key = (str(result["scenario"]), str(result["engine"]))
            rows.setdefault(key, {})[side] = result
            paths[side] = str(result["server_path"])

    def cell(result: dict[str, object] | None) -> str:
        if result is None:
            return "–"
        worst = f"{result['probe_worst_rtt_ms']} ms"
        if result.get("attack_ended") is False:
            return f"≥ {worst} (not over after {PHASE_DEADLINE:.0f} s)"
        return f"{worst} (attack {result['attack_seconds']} s)"

    out = [
        "# Stalls: what one client's input costs everyone's round trip",
        "",
        "Each row: the worst round trip of the probe members (IRC PING/PONG, one every "
        f"{PROBE_INTERVAL * 1000:.0f} ms among {PROBES} probes) while one client's input ran, "
        "and how long that input took to be answered. The server and this driver share the "
        "machine's 2 CPUs. Before: "
        f"`{paths.get('before', '–')}`; after: `{paths.get('after', '–')}`.",
        "",
        "Reproduce: `python -m bench.stalls --scenario NAME [--engine E] "
        "[--server-path TREE/server] --out DIR/after.jsonl`, then "
        "`python -m bench.stalls --render DIR`.",
        "",
        "| scenario | engine | what | idle round trip | before: worst round trip | "
        "after: worst round trip |",
        "|---|---|---|---|---|---|",
    ]
    for (name, engine), sides in sorted(rows.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        after = sides.get("after")
        idle = (after or sides.get("before") or {}).get("idle_rtt_ms_median")
        what = SCENARIOS[name].what if name in SCENARIOS else ""
        out.append(
            f"| {name} | {engine} | {what} | {idle} ms | {cell(sides.get('before'))} | "
            f"{cell(after)} |"
        )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render", type=Path, default=None, help="write DIR/report.md")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), action="append")
    parser.add_argument("--engine", default="reactor")
    parser.add_argument("--members", type=int, default=None, help="default: the scenario's")
    parser.add_argument("--server-path", type=Path, default=REPO / "server")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args(argv)
    if args.render is not None:
        (args.render / "report.md").write_text(render(args.render))
        return 0
    if not args.scenario:
        parser.error("give --scenario (or --render DIR)")
    for name in args.scenario:
        scenario = SCENARIOS[name]
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
