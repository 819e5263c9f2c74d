"""Start and stop the servers under test: each chatd engine and redis-server.

Every server runs as its own subprocess on a free loopback port, pinned to its own CPU
when the machine has two, and is stopped with SIGTERM (chatd promises exit 0 then).
The exit status is recorded so a run against a server that crashed is marked invalid.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procstat

#: Repository root (bench/ lives directly under it).
REPO = Path(__file__).resolve().parent.parent

#: chatd prints this once it listens (PROTOCOL.md, "Command line").
_LISTENING = re.compile(r"listening on (?:\[([^\]\s]+)\]|([^\s:\[]+)):(\d+)")

#: How long a server may take to start listening before the run is given up.
START_TIMEOUT_S: float = 15.0

#: How long SIGTERM may take before we SIGKILL and record a failure. Generous: the
#: threaded engine says goodbye to 10,000 clients one blocking send at a time.
STOP_TIMEOUT_S: float = 30.0


def parse_listening(line: str) -> tuple[str, int] | None:
    """Extract (host, port) from chatd's 'listening on HOST:PORT' line, else None."""
    m = _LISTENING.search(line)
    if not m:
        return None
    return m.group(1) or m.group(2), int(m.group(3))


@dataclass(frozen=True)
class Target:
    """One thing to benchmark: a chatd engine (optionally on uvloop) or Redis."""

    #: name in the report: reactor, threaded, asyncio, asyncio+uvloop, redis
    name: str
    #: "chatd" or "redis": which wire protocol the lean driver speaks
    kind: str
    engine: str = ""
    uvloop: bool = False

    @property
    def is_redis(self) -> bool:
        return self.kind == "redis"


ENGINES: tuple[str, ...] = ("reactor", "threaded", "asyncio", "asyncio+uvloop")


def target_for(name: str) -> Target:
    """Map a report name to a Target."""
    if name == "redis":
        return Target("redis", "redis")
    if name == "asyncio+uvloop":
        return Target(name, "chatd", engine="asyncio", uvloop=True)
    if name in ENGINES:
        return Target(name, "chatd", engine=name)
    raise ValueError(f"unknown target {name!r}")


def python_exe() -> str:
    """The interpreter that runs chatd: the one running the bench."""
    return sys.executable


def chatd_env() -> dict[str, str]:
    """Environment for a chatd subprocess: server/ on PYTHONPATH, unbuffered output."""
    env = dict(os.environ)
    server = str(REPO / "server")
    env["PYTHONPATH"] = server + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


@functools.lru_cache(maxsize=1)
def chatd_help() -> str:
    """chatd's --help text ('' if it cannot run), to see which options exist."""
    try:
        out = subprocess.run(
            [python_exe(), "-m", "chatd", "--help"],
            env=chatd_env(),
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout + out.stderr if out.returncode == 0 else ""


def chatd_available() -> bool:
    """True when `python -m chatd --help` works."""
    return bool(chatd_help())


def uvloop_available() -> bool:
    """True when uvloop is importable and chatd offers --uvloop."""
    return importlib.util.find_spec("uvloop") is not None and "--uvloop" in chatd_help()


def redis_available() -> bool:
    """True when redis-server is on PATH (Debian installs /usr/bin/redis-server)."""
    return shutil.which("redis-server") is not None


def free_port() -> int:
    """A currently free loopback TCP port (for redis-server, which cannot take 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running server subprocess and what we learned about it."""

    target: Target
    proc: subprocess.Popen[bytes]
    host: str
    port: int
    pinned: bool
    argv: list[str]
    err_path: Path
    exit_code: int | None = None
    #: seconds from SIGTERM to exit
    stop_s: float = 0.0
    stderr_tail: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample(self) -> procstat.ProcSample | None:
        """CPU seconds and RSS now, or None if the process is gone."""
        try:
            return procstat.sample_process(self.proc.pid)
        except OSError:
            return None

    def stop(self) -> bool:
        """SIGTERM, wait, SIGKILL if needed. Returns True when it exited cleanly."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                self.notes.append("did not exit on SIGTERM; killed")
        self.exit_code = self.proc.returncode
        self.stop_s = time.monotonic() - t0
        try:
            self.stderr_tail = self.err_path.read_text(errors="replace")[-2000:]
        except OSError:
            self.stderr_tail = ""
        return self.exit_code == 0 and not self.notes


def chatd_argv(target: Target, *, max_clients: int, max_sendq: int) -> list[str]:
    """The command line for one chatd engine, with the bench's fixed options.

    --flood-rate 0 turns off per-client flood control where chatd has it: a benchmark
    sender that is throttled measures the throttle, not the engine.
    """
    argv = [
        python_exe(),
        "-m",
        "chatd",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--engine",
        target.engine,
        "--max-clients",
        str(max_clients),
        "--max-sendq",
        str(max_sendq),
    ]
    if target.uvloop:
        argv.append("--uvloop")
    if "--flood-rate" in chatd_help():
        argv += ["--flood-rate", "0"]
    return argv


def redis_argv(port: int, max_clients: int) -> list[str]:
    """redis-server as a plain in-memory pub/sub broker on loopback.

    No persistence (it would only add noise), and no pub/sub output-buffer limit: the
    driver's flood window bounds what is pending, as it does for chatd's large sendq.
    """
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
        "--protected-mode",
        "no",
        "--maxclients",
        str(max_clients),
        "--client-output-buffer-limit",
        "pubsub 0 0 0",
        "--loglevel",
        "warning",
    ]


def _wait_for_listening(proc: subprocess.Popen[bytes], out_path: Path) -> tuple[str, int]:
    """Poll chatd's stdout file until the 'listening on' line shows up.

    stdout and stderr go to files, not pipes: a server that logs every connection
    would fill a 64 KiB pipe that nobody reads and block mid-benchmark.
    """
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            text = out_path.read_text(errors="replace")
        except OSError:
            text = ""
        for line in text.splitlines():
            found = parse_listening(line)
            if found:
                return found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _fail_start(proc, out_path, "no 'listening on' line")
    raise AssertionError("unreachable")


def start(
    target: Target,
    *,
    cpus: set[int] | None,
    logdir: Path,
    max_clients: int = 12000,
    max_sendq: int = 1024 * 1024,
) -> Server:
    """Start target on a free loopback port and wait until it accepts connections.

    max_sendq is chatd's own default (1 MiB): the flood keeps at most 512 KiB in flight
    per member, and the slow-consumer scenario should meet the limits users get.
    Its stdout/stderr go to files under logdir. Raises RuntimeError (with the tail of
    stderr) if it does not start in time.
    """
    logdir.mkdir(parents=True, exist_ok=True)
    stamp = f"{target.name.replace('+', '_')}-{time.monotonic_ns()}"
    out_path, err_path = logdir / f"{stamp}.out", logdir / f"{stamp}.err"
    if target.is_redis:
        port = free_port()
        argv = redis_argv(port, max_clients + 32)
        env = None
    else:
        argv = chatd_argv(target, max_clients=max_clients, max_sendq=max_sendq)
        env = chatd_env()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=str(REPO)
        )
    pinned = procstat.pin(proc.pid, cpus)
    if target.is_redis:
        srv = Server(target, proc, "127.0.0.1", port, pinned, argv, err_path=err_path)
        _wait_redis(srv)
        return srv
    host, port = _wait_for_listening(proc, out_path)
    if host in ("0.0.0.0", "", "localhost", "::"):
        host = "127.0.0.1"
    return Server(target, proc, host, port, pinned, argv, err_path=err_path)


def _fail_start(proc: subprocess.Popen[bytes], err_path: Path, why: str) -> None:
    """Kill a server that did not come up and raise with the tail of its stderr."""
    proc.kill()
    proc.wait(timeout=STOP_TIMEOUT_S)
    try:
        err = err_path.read_text(errors="replace")[-1500:]
    except OSError:
        err = ""
    raise RuntimeError(f"server did not start ({why}): {err}")


def _wait_redis(srv: Server) -> None:
    """Poll with PING until redis-server answers (it prints nothing we can wait on)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not srv.alive():
            _fail_start(srv.proc, srv.err_path, "exited")
        try:
            with socket.create_connection((srv.host, srv.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.05)
    _fail_start(srv.proc, srv.err_path, "no PONG")
