"""RSS per idle connection, plain and TLS, per engine: what the TLS layer costs at rest.

    python -m bench.tls_idle --connections 5000 --out bench/reports/DATE-tls-idle

For each engine (and transport) it starts one chatd on loopback, samples its RSS, opens
N clients that each finish the handshake (TLS), register and ``/join`` a room of 100
(as ``bench``'s idle scenario does, so N²/2 join notices do not swamp the figure), waits
until every one is confirmed, samples again, and reports ``(RSS - RSS at start) / N``.
The certificate is a throwaway one from trustme (ECDSA P-256), made in a temporary
directory. The clients live in this process; only the server's RSS is measured.

The reactor's goal is at most 20 KB per idle TLS connection. asyncio's ``SSLProtocol``
allocates a 256 KiB read buffer per connection (CPython 3.11 ``sslproto.py``), which is
what its figure shows.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("reactor", "threaded", "asyncio")
#: Members per room, as in bench's idle scenario.
ROOM = 100
_LISTENING = re.compile(r"^chatd \S+ (\w+)( tls)?: listening on (\S+):(\d+)")


@dataclass
class Result:
    engine: str
    transport: str
    connections: int
    rss_base_bytes: int
    rss_bytes: int
    rss_per_conn_bytes: float
    setup_s: float


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def make_certificate(directory: Path) -> tuple[Path, Path, ssl.SSLContext]:
    """A trustme CA and server certificate; the client context trusts that CA only."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = directory / "cert.pem", directory / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return cert, key, context


def start_server(
    engine: str, n: int, cert: Path, key: Path, extra: list[str]
) -> tuple[subprocess.Popen[bytes], dict[str, int]]:
    uv = engine == "asyncio+uvloop"
    args = [
        sys.executable, "-m", "chatd", "--port", "0",
        "--engine", "asyncio" if uv else engine,
        "--tls-port", "0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--max-clients", str(n + 100), "--register-timeout", "0",
        # Memory is measured here, not latency: 5,000 threads contending for the GIL
        # can take the threaded engine past the default handshake deadline.
        "--tls-handshake-timeout", "120",
        "--log-level", "warning", "--ephemeral", *extra,
    ]  # fmt: skip
    if uv:
        args.append("--uvloop")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "server") + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    ports: dict[str, int] = {}
    for _ in range(2):
        match = _LISTENING.search(proc.stdout.readline().decode())
        if not match:
            proc.kill()
            raise RuntimeError("chatd did not start")
        ports[match.group(1) + (match.group(2) or "")] = int(match.group(4))
    return proc, ports


def open_clients(
    port: int, n: int, tls: ssl.SSLContext | None, timeout: float
) -> tuple[list[socket.socket], float]:
    """N registered clients, each in room #idle<i // ROOM>; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    clients: list[socket.socket] = []
    for i in range(n):
        # One deadline for the whole setup: on a busy machine the threaded engine's
        # thousands of threads can take a while to answer one client.
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname="localhost")
        nick = f"i{i}"
        room = f"#idle{i // ROOM}"
        sock.sendall(f"{nick}\n/join {room}\n".encode())
        buf = b""
        # Confirmed once the server says this client joined its room.
        want = re.compile(rf"^\* you joined {room} ", re.M)
        while not want.search(buf.decode(errors="replace")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"client {i} not confirmed in time")
            sock.settimeout(max(1.0, deadline - time.monotonic()))
            chunk = sock.recv(65536)
            if not chunk:
                raise RuntimeError(f"server closed client {i}: {buf[-200:]!r}")
            if chunk.startswith(b"!"):
                raise RuntimeError(f"client {i} refused: {chunk[:200]!r}")
            buf += chunk
        clients.append(sock)
    return clients, time.monotonic() - started


def measure(
    engine: str, transport: str, n: int, cert: Path, key: Path, ctx: ssl.SSLContext
) -> Result:
    proc, ports = start_server(engine, n, cert, key, [])
    try:
        time.sleep(0.5)  # let the interpreter settle before the baseline
        base = rss_bytes(proc.pid)
        port = ports["line tls"] if transport == "tls" else ports["line"]
        clients, setup = open_clients(port, n, ctx if transport == "tls" else None, 600)
        time.sleep(1.0)  # join notices still in flight to the last rooms
        rss = rss_bytes(proc.pid)
        for sock in clients:
            sock.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return Result(engine, transport, n, base, rss, (rss - base) / n, setup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated")
    parser.add_argument("--transports", default="plain,tls", help="comma-separated")
    parser.add_argument("--out", type=Path, help="directory for results.json and report.md")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 100:
        parser.error(f"open-file limit {hard} is too low for {args.connections} clients")
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        cert, key, ctx = make_certificate(Path(tmp))
        for engine in args.engines.split(","):
            for transport in args.transports.split(","):
                r = measure(engine, transport, args.connections, cert, key, ctx)
                print(
                    f"{engine:15} {transport:5} {r.connections} conns: "
                    f"{r.rss_per_conn_bytes / 1024:8.1f} KiB/conn "
                    f"(RSS {r.rss_base_bytes >> 20} -> {r.rss_bytes >> 20} MiB, "
                    f"setup {r.setup_s:.1f} s)",
                    flush=True,
                )
                results.append(r)
    write_report(args.out, render(results, argv if argv is not None else sys.argv[1:]), results)
    return 0


def write_report(out: Path | None, report: str, results: list[Any]) -> None:
    """Print the report; with ``out``, also write it and the results (dataclasses) there."""
    print(report)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        (out / "report.md").write_text(report)


def render(results: list[Result], argv: list[str]) -> str:
    by = {(r.engine, r.transport): r for r in results}
    engines = list(dict.fromkeys(r.engine for r in results))
    n = results[0].connections if results else 0
    lines = [
        f"# RSS per idle connection at {n} connections, plain and TLS",
        "",
        f"Command: `python -m bench.tls_idle {' '.join(argv)}`  ",
        f"Python {platform.python_version()}, {ssl.OPENSSL_VERSION}, {platform.machine()}; "
        "certificate: trustme ECDSA P-256. Registered clients, rooms of 100.",
        "",
        "| engine | plain B/conn | TLS B/conn | TLS layer B/conn |",
        "|---|---:|---:|---:|",
    ]
    for engine in engines:
        plain, tls = by.get((engine, "plain")), by.get((engine, "tls"))
        cells = [f"{r.rss_per_conn_bytes:,.0f}" if r else "-" for r in (plain, tls)]
        extra = (
            f"{tls.rss_per_conn_bytes - plain.rss_per_conn_bytes:,.0f}" if plain and tls else "-"
        )
        lines.append(f"| {engine} | {cells[0]} | {cells[1]} | {extra} |")
    lines += [
        "",
        "RSS per connection = (server RSS with N idle clients - RSS at start) / N.",
        "",
        "* reactor: the TLS layer is OpenSSL's `SSL` object after a TLS 1.3 handshake, its",
        "  two `MemoryBIO`s (holding their high-water mark: one record each at most) and",
        "  the `SSLObject`/`TLSStream` wrappers. Goal: at most 20 KB per idle connection.",
        "* asyncio: CPython 3.11's `SSLProtocol` allocates `bytearray(256 KiB)` per",
        "  connection for its reads (`sslproto.py`, `max_size`), zero-filled, so resident.",
        "* asyncio+uvloop: uvloop's SSL layer mallocs its read buffer without touching it.",
        "* threaded: one thread per client; the handshake runs on that thread, so its",
        "  stack and malloc arena grow with it (not broken down further here).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
