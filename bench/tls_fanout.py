"""Server CPU per delivered message over TLS against plain text, in one room, per engine.

    python -m bench.tls_fanout --members 1000 --rate 100 --seconds 5 \\
        --out bench/reports/DATE-tls-fanout

For each engine and transport it starts one chatd on loopback (pinned to CPU 0; this
process, the load generator, to CPU 1), connects ``members`` clients (TLS handshakes
done), registers them all in one room, then one more member sends ``rate`` messages a
second for ``seconds`` seconds (flood control off). Every receiver reads everything it
is sent; the window ends once each has every message. The figure is the server's CPU
time (user + system, from ``/proc/PID/stat``) over the window divided by the deliveries
counted at the receivers.

Why the figures differ: in clear text an event is encoded once and the same ``bytes``
go to every member (the reactor merges a turn's events into one ``send`` per member);
over TLS each member's copy must be encrypted under its own session key, so every
delivery costs an AES-GCM pass and a record header, whatever the engine.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.tls_idle import make_certificate, start_server, write_report

ENGINES = ("reactor", "threaded", "asyncio")
ROOM = "#fan"
SERVER_CPU, LOADGEN_CPU = 0, 1


@dataclass
class Result:
    engine: str
    transport: str
    members: int
    messages: int
    deliveries: int
    server_cpu_s: float
    cpu_us_per_delivery: float
    window_s: float


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def join(port: int, nick: str, tls: ssl.SSLContext | None, deadline: float) -> socket.socket:
    """One client, registered and moved to the room; its greeting and notices read away."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(f"{nick}\n/join {ROOM}\n".encode())
    buf = b""
    while f"* you joined {ROOM} ".encode() not in buf:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{nick} not confirmed in time")
        chunk = sock.recv(65536)
        if not chunk or chunk.startswith(b"!"):
            raise RuntimeError(f"{nick} refused or closed: {chunk[:200]!r}")
        buf += chunk
    sock.setblocking(False)
    return sock


def drain(socks: list[socket.socket], wait: float) -> int:
    """Read whatever arrives within ``wait`` seconds of silence; count the lines."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    lines = 0
    try:
        while events := sel.select(wait):
            for key, _ in events:
                lines += _read_all(key.fileobj)  # type: ignore[arg-type]
    finally:
        sel.close()
    return lines


def _read_all(sock: socket.socket) -> int:
    lines = 0
    while True:
        try:
            chunk = sock.recv(262144)
        except (BlockingIOError, ssl.SSLWantReadError):
            return lines
        if not chunk:
            return lines
        lines += chunk.count(b"\n")


def measure(
    engine: str,
    transport: str,
    args: argparse.Namespace,
    cert: Path,
    key: Path,
    ctx: ssl.SSLContext,
) -> Result:
    proc, ports = start_server(engine, args.members + 1, cert, key, ["--flood-rate", "0"])
    try:
        os.sched_setaffinity(proc.pid, {SERVER_CPU})
        port = ports["line tls"] if transport == "tls" else ports["line"]
        tls = ctx if transport == "tls" else None
        deadline = time.monotonic() + 600
        receivers = [join(port, f"r{i}", tls, deadline) for i in range(args.members)]
        sender = join(port, "sender", tls, deadline)
        drain([*receivers, sender], 1.0)  # the join notices of the last members
        count = int(args.rate * args.seconds)
        want = count * len(receivers)
        sel = selectors.DefaultSelector()
        for s in receivers:
            sel.register(s, selectors.EVENT_READ)
        sender.setblocking(True)
        start_cpu = cpu_seconds(proc.pid)
        started = time.monotonic()
        got = sent = 0
        while got < want:
            now = time.monotonic()
            due = min(count, int((now - started) * args.rate) + 1)
            while sent < due:
                sender.sendall(f"m{sent} {'x' * 40}\n".encode())
                sent += 1
            if now - started > args.seconds + 60:
                raise RuntimeError(f"{engine}/{transport}: {got} of {want} deliveries in time")
            for k, _ in sel.select(0.002):
                got += _read_all(k.fileobj)  # type: ignore[arg-type]
        window = time.monotonic() - started
        used = cpu_seconds(proc.pid) - start_cpu
        sel.close()
        for s in (*receivers, sender):
            s.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return Result(engine, transport, args.members, count, got, used, used / got * 1e6, window)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--transports", default="plain,tls", help="comma-separated")
    parser.add_argument("--out", type=Path, help="directory for results.json and report.md")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {LOADGEN_CPU})
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ctx = make_certificate(Path(tmp))
        for engine in args.engines.split(","):
            for transport in args.transports.split(","):
                r = measure(engine, transport, args, cert, key, ctx)
                print(
                    f"{engine:15} {transport:5} {r.deliveries} deliveries in {r.window_s:.1f} s: "
                    f"server {r.server_cpu_s:.2f} CPU-s, {r.cpu_us_per_delivery:.2f} µs/delivery",
                    flush=True,
                )
                results.append(r)
    write_report(args.out, render(results, argv if argv is not None else sys.argv[1:]), results)
    return 0


def render(results: list[Result], argv: list[str]) -> str:
    by = {(r.engine, r.transport): r for r in results}
    engines = list(dict.fromkeys(r.engine for r in results))
    first = results[0] if results else None
    lines = [
        "# Server CPU per delivery over TLS against plain text, one room",
        "",
        f"Command: `python -m bench.tls_fanout {' '.join(argv)}`  ",
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}, {platform.machine()}; "
        "certificate: trustme ECDSA P-256 (TLS 1.3, AES-GCM). The 2 CPUs are shared: server "
        "pinned to CPU 0, load generator (every client, TLS included) to CPU 1.",
        "",
        f"{first.members if first else 0} members in one room, one more sending "
        f"{first.messages if first else 0} messages of 50 bytes at an even rate; "
        "flood control off.",
        "",
        "| engine | plain µs/delivery | TLS µs/delivery | TLS / plain |",
        "|---|---:|---:|---:|",
    ]
    for engine in engines:
        plain, tls = by.get((engine, "plain")), by.get((engine, "tls"))
        cells = [f"{r.cpu_us_per_delivery:.2f}" if r else "-" for r in (plain, tls)]
        ratio = (
            f"{tls.cpu_us_per_delivery / plain.cpu_us_per_delivery:.1f}×"
            if plain and tls and plain.cpu_us_per_delivery > 0
            else "-"
        )
        lines.append(f"| {engine} | {cells[0]} | {cells[1]} | {ratio} |")
    lines += [
        "",
        "Server CPU per delivery = server CPU time (user + system) during the window / lines",
        "counted at the receivers. In clear text one encoded `bytes` object serves every",
        "member; over TLS each copy is encrypted under its member's own key.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
