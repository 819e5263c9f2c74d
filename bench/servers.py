"""Start and stop the servers under test: chatd's engines (line protocol and IRC
listener), redis-server, and the C IRC daemons ngircd and InspIRCd.

The targets are data (:data:`TARGETS`): a name, which program, and which wire dialect
the load speaks to it. :func:`unavailable` says why a target cannot run here, so the CLI
can skip it with that reason instead of failing the whole bench.

Every server runs as its own subprocess on a free loopback port, pinned to its own CPU
when the machine has two, and is stopped with SIGTERM (chatd and ngircd exit 0 then,
InspIRCd 10). The exit status is recorded so a run against a server that crashed is
marked invalid.
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

from bench import ircd, procstat

#: Repository root (bench/ lives directly under it).
REPO = Path(__file__).resolve().parent.parent

#: chatd prints this once it listens (PROTOCOL.md, "Command line"): one line per listener,
#: ``chatd ENGINE: listening on HOST:PORT`` and, with --irc-port,
#: ``chatd ENGINE irc: listening on HOST:PORT``.
_LISTENING = re.compile(r"listening on (?:\[([^\]\s]+)\]|([^\s:\[]+)):(\d+)")
#: The word before ": listening" names a listener other than the line protocol's.
_LISTENER_TAG = re.compile(r"\b(irc|http|tls)\s*:\s*listening on")

#: How long a server may take to start listening before the run is given up.
START_TIMEOUT_S: float = 15.0

#: How long SIGTERM may take before we SIGKILL and record a failure. Generous: the
#: threaded engine says goodbye to 10,000 clients one blocking send at a time.
STOP_TIMEOUT_S: float = 30.0


def parse_listening(line: str, listener: str = "line") -> tuple[str, int] | None:
    """(host, port) from chatd's 'listening on HOST:PORT' line for ``listener``, else None.

    ``listener`` is "line" (the plain line-protocol listener), "irc" or "http" (the
    WebSocket listener of ``--http-port``); a line for any other listener gives None.
    """
    m = _LISTENING.search(line)
    if not m:
        return None
    tag = _LISTENER_TAG.search(line)
    if (tag.group(1) if tag else "line") != listener:
        return None
    return m.group(1) or m.group(2), int(m.group(3))


@dataclass(frozen=True)
class Target:
    """One thing to benchmark: which program runs, and which dialect the load speaks."""

    #: name in the report and on the command line
    name: str
    #: the program: "chatd", "redis", "ngircd" or "inspircd"
    kind: str
    #: the wire protocol of the load: "line" (chatd's), "irc" or "resp" (Redis)
    dialect: str
    engine: str = ""
    uvloop: bool = False
    #: chatd: history on disk (the default, ``--data-dir`` in the run's logs) or off
    #: (``--ephemeral``), to measure what history costs side by side
    history: bool = True
    #: how the load reaches the dialect: "tcp" (its own port) or "ws" (WebSocket through
    #: chatd's ``--http-port``: the line dialect at /line, IRC at /)
    transport: str = "tcp"

    @property
    def is_redis(self) -> bool:
        return self.kind == "redis"

    @property
    def is_chatd(self) -> bool:
        return self.kind == "chatd"

    @property
    def is_irc(self) -> bool:
        return self.dialect == "irc"


#: Every target the bench knows, in report order. chatd's line-protocol engines first
#: (the reactor also with history off, ``reactor-ephemeral``, for history's cost), then
#: Redis, then the IRC targets: chatd's reactor behind its IRC listener and the two C IRC
#: daemons, all driven by the same IRC client code.
TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("reactor", "chatd", "line", engine="reactor"),
        Target("reactor-ephemeral", "chatd", "line", engine="reactor", history=False),
        Target("threaded", "chatd", "line", engine="threaded"),
        Target("asyncio", "chatd", "line", engine="asyncio"),
        Target("asyncio+uvloop", "chatd", "line", engine="asyncio", uvloop=True),
        Target("redis", "redis", "resp"),
        Target("reactor-irc", "chatd", "irc", engine="reactor"),
        Target("ngircd", "ngircd", "irc"),
        Target("inspircd", "inspircd", "irc"),
    )
}

#: Targets outside the main matrix: the same dialects over WebSocket (chatd's
#: ``--http-port``), measured against their TCP twins by ``python -m bench.websocket``.
#: Kept out of :data:`TARGETS` so ``python -m bench``'s plan stays as it is.
WS_TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("reactor-ws", "chatd", "line", engine="reactor", transport="ws"),
        Target("reactor-irc-ws", "chatd", "irc", engine="reactor", transport="ws"),
    )
}

#: chatd's line-protocol engines (the targets of the chatd-only scenarios).
ENGINES: tuple[str, ...] = tuple(
    n for n, t in TARGETS.items() if t.is_chatd and t.dialect == "line" and t.history
)


def target_for(name: str) -> Target:
    """Map a report name to a Target."""
    target = TARGETS.get(name) or WS_TARGETS.get(name)
    if target is None:
        raise ValueError(f"unknown target {name!r}")
    return target


def unavailable(name: str) -> str | None:
    """Why target ``name`` cannot run here, or None when it can."""
    t = target_for(name)
    if t.is_chatd:
        if not chatd_available():
            return "`python -m chatd --help` does not run"
        if t.uvloop and not uvloop_available():
            return "uvloop or chatd --uvloop not available"
        if t.is_irc and "--irc-port" not in chatd_help():
            return "chatd has no --irc-port (its IRC listener) yet"
        if t.transport == "ws" and "--http-port" not in chatd_help():
            return "chatd has no --http-port (WebSocket) yet"
        if not t.history and "--ephemeral" not in chatd_help():
            return "chatd has no --ephemeral (history off) yet"
        return None
    if t.is_redis:
        return None if redis_available() else "redis-server not installed"
    if not ircd.available(t.kind):
        return f"{ircd.EXECUTABLES[t.kind]} not installed (Debian package {t.kind})"
    return None


def version(name: str) -> str:
    """The program's version line for the report ('' when it cannot be asked)."""
    t = target_for(name)
    if t.is_chatd:
        return _run_version([python_exe(), "-m", "chatd", "--version"], env=chatd_env())
    if t.is_redis:
        return _run_version(["redis-server", "--version"])
    return ircd.version(t.kind)


def _run_version(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, env=env)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0].strip() if lines else ""


def python_exe() -> str:
    """The interpreter that runs chatd: the one running the bench."""
    return sys.executable


#: Where chatd's package is imported from: server/ in the repository, or a copy of it
#: taken at the start of a run (``bench.websocket``), so every server of the run runs the
#: same code whatever is edited meanwhile.
SERVER_SRC: Path = REPO / "server"


def chatd_env() -> dict[str, str]:
    """Environment for a chatd subprocess: server/ (:data:`SERVER_SRC`) on PYTHONPATH,
    unbuffered output, and none of the caller's ``CHATD_*`` settings (a run's options
    are the ones its report states)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CHATD_") and k != "STATE_DIRECTORY"
    }
    server = str(SERVER_SRC)
    env["PYTHONPATH"] = server + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def popen_logged(
    argv: list[str], logdir: Path, stem: str, env: dict[str, str] | None
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Start ``argv`` from the repository with its output in ``logdir/STEM.out`` and
    ``.err`` (files, never pipes nobody reads); returns the process and both paths."""
    out_path, err_path = logdir / f"{stem}.out", logdir / f"{stem}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=env,
            cwd=str(REPO),
        )
    return proc, out_path, err_path


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
    #: exit statuses that count as a clean stop on SIGTERM
    clean_exit: frozenset[int] = frozenset({0})
    #: chatd's line-protocol port (its /stats; for an IRC target, port is the IRC one)
    line_port: int = 0
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
        return self.exit_code in self.clean_exit and not self.notes


def chatd_argv(target: Target, *, max_clients: int, max_sendq: int) -> list[str]:
    """The command line for one chatd engine, with the bench's fixed options.

    --flood-rate 0 turns off per-client flood control where chatd has it: a benchmark
    sender that is throttled measures the throttle, not the engine; --ping-interval 3600
    for IRC, as the other IRC servers are set up. An IRC target adds
    the IRC listener on a free port (--irc-port 0); the load then goes there. A
    WebSocket target adds the HTTP listener instead (--http-port 0), which carries both
    dialects.
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
    if target.transport == "ws":
        argv += ["--http-port", "0"]
    elif target.is_irc:
        argv += ["--irc-port", "0"]
    if target.is_irc or target.transport == "ws":
        # Once an hour, as ngircd and InspIRCd are configured (bench.ircd): no job lasts
        # that long, so the lean driver's lazily read members never see a PING.
        argv += ["--ping-interval", "3600"]
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


def _wait_for_listening(
    proc: subprocess.Popen[bytes], out_path: Path, listener: str = "line"
) -> tuple[str, int]:
    """Poll chatd's stdout file until the listener's 'listening on' line shows up.

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
            found = parse_listening(line, listener)
            if found:
                return found
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _fail_start(proc, out_path, f"no '{listener}' 'listening on' line")
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
    clean = frozenset({0})
    env: dict[str, str] | None = None
    if target.is_redis:
        port = free_port()
        argv = redis_argv(port, max_clients + 32)
    elif target.is_chatd:
        argv = chatd_argv(target, max_clients=max_clients, max_sendq=max_sendq)
        if not target.history:
            argv.append("--ephemeral")
        elif "--data-dir" in chatd_help():
            # History on, as by default, kept with this run's logs.
            argv += ["--data-dir", str(logdir / f"{stamp}-data")]
        env = chatd_env()
    else:
        port = free_port()
        rundir = logdir / stamp
        rundir.mkdir(parents=True, exist_ok=True)
        conf = rundir / f"{target.kind}.conf"
        conf.write_text(ircd.config_text(target.kind, port, rundir))
        argv = ircd.argv(target.kind, conf)
        clean = ircd.CLEAN_EXIT[target.kind]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=str(REPO)
        )
    pinned = procstat.pin(proc.pid, cpus)
    if target.is_redis:
        srv = Server(target, proc, "127.0.0.1", port, pinned, argv, err_path=err_path)
        _wait_redis(srv)
        return srv
    if not target.is_chatd:
        srv = Server(
            target, proc, "127.0.0.1", port, pinned, argv, err_path=err_path, clean_exit=clean
        )
        _wait_accepting(srv)
        return srv
    listener = "http" if target.transport == "ws" else target.dialect
    host, port = _wait_for_listening(proc, out_path, listener)
    line_port = port if listener == "line" else _wait_for_listening(proc, out_path)[1]
    if host in ("0.0.0.0", "", "localhost", "::"):
        host = "127.0.0.1"
    return Server(target, proc, host, port, pinned, argv, err_path=err_path, line_port=line_port)


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


def _wait_accepting(srv: Server) -> None:
    """Poll with a TCP connect until the daemon accepts (IRC daemons print no port)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not srv.alive():
            _fail_start(srv.proc, srv.err_path, "exited")
        try:
            with socket.create_connection((srv.host, srv.port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    _fail_start(srv.proc, srv.err_path, "not accepting connections")
