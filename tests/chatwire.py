"""Test-side helpers: start a real chatd subprocess and talk to it over real sockets.

Every wait is a read with a deadline, never a sleep: a test that expects a line blocks
in ``recv`` until the line arrives or the deadline passes (then it fails).

TLS: :class:`TLSFiles` makes a throwaway CA and server certificate with ``trustme``
(never a file committed to the repository); a :class:`Server` started with ``tls=``
also listens with TLS, and its :meth:`Server.client` and :meth:`Server.connect` then
speak TLS, so the same test body runs over either transport.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERVER_SRC = ROOT / "server"
ENGINES = ("reactor", "threaded", "asyncio")
#: The asyncio engine on uvloop, tested with the protocol tests when uvloop is installed.
UVLOOP = "asyncio+uvloop"


def have_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


#: Every engine, asyncio on uvloop included when uvloop is installed.
ALL_ENGINES = ENGINES + ((UVLOOP,) if have_uvloop() else ())


#: Default read deadline: generous, since the 2 CPUs are shared with the server.
TIMEOUT = 10.0
#: Seconds a server may take to print its ``listening on`` lines.
START_TIMEOUT = 30.0
#: Options that add a listener, each announced on its own ``listening on`` line.
LISTENER_OPTIONS = ("--irc-port", "--tls-port", "--irc-tls-port", "--http-port", "--https-port")
_LISTENING = re.compile(r"^chatd \S+ (\w+)( tls)?: listening on (\S+):(\d+)")


class TLSFiles:
    """A throwaway CA and a certificate for localhost/127.0.0.1, as PEM files in ``directory``."""

    def __init__(self, directory: Path, name: str = "chatd") -> None:
        import trustme

        self.ca = trustme.CA()
        issued = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert = directory / f"{name}-cert.pem"
        self.key = directory / f"{name}-key.pem"
        self.ca_file = directory / f"{name}-ca.pem"
        issued.cert_chain_pems[0].write_to_path(str(self.cert))
        for extra in issued.cert_chain_pems[1:]:
            extra.write_to_path(str(self.cert), append=True)
        issued.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def args(self) -> tuple[str, ...]:
        return ("--tls-cert", str(self.cert), "--tls-key", str(self.key))

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (and checks the host name)."""
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def chatd_env() -> dict[str, str]:
    """This environment for a chatd subprocess, without the caller's ``CHATD_*``
    settings (a test says what it runs with)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CHATD_") and k != "STATE_DIRECTORY"
    }
    env["PYTHONPATH"] = str(SERVER_SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --------------------------------------------------------------------------- server checks
#
# The project standard: a test that starts a server fails when that server exits
# non-zero or writes a traceback. chatd's stderr goes to a file (never a pipe nobody
# reads); when the server stops, :func:`stderr_problems` reads it, and any traceback or
# log record at ERROR or above fails the test, quoting the file's tail. A test that
# provokes such a record on purpose names it in a narrow ``allow`` pattern.

TRACEBACK = "Traceback (most recent call last)"
#: Lines of stderr a failure message quotes.
TAIL_LINES = 60
#: Problem entries of stderr a failure message lists (by their first line).
MAX_LISTED = 20
#: A record as chatd's ``logging.basicConfig`` formats it: asctime, logger, level.
_RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)
_FAILING_LEVELS = ("ERROR", "CRITICAL")
#: Lines Python writes before a traceback that belongs to no log record.
_BARE_EXCEPTION = ("Exception in thread", "Exception ignored in", "Fatal Python error")
#: Lines that chain a second traceback to the first inside one record.
_CHAINED = (
    "During handling of the above exception, another exception occurred:",
    "The above exception was the direct cause of the following exception:",
)


class ServerFailure(AssertionError):
    """A server exited with the wrong status, or wrote a traceback or an ERROR record."""


def _entries(text: str) -> list[list[str]]:
    """stderr cut into entries: a log record with its continuation lines (an exception's
    traceback), or a traceback that belongs to no record (an uncaught exception)."""
    entries: list[list[str]] = []
    current: list[str] | None = None
    level = ""
    has_traceback = False
    previous = ""
    for line in text.splitlines():
        record = _RECORD.match(line)
        starts_bare = line.startswith(_BARE_EXCEPTION)
        if line.startswith(TRACEBACK) and current is not None:
            # A record at ERROR carries its exception's traceback (and chained ones), as
            # "Exception in thread ..." does; any other traceback is an entry of its
            # own, so an allowed record never hides one that follows it.
            holds = level in _FAILING_LEVELS or current[0].startswith(_BARE_EXCEPTION)
            chained = previous in _CHAINED
            starts_bare = not holds or (has_traceback and not chained)
        if record or starts_bare or current is None:
            current = []
            entries.append(current)
            level = record.group(1) if record else ""
            has_traceback = False
        current.append(line)
        has_traceback = has_traceback or line.startswith(TRACEBACK)
        if line.strip():
            previous = line.strip()
    return entries


def _json_problem(line: str) -> bool:
    """A ``--log-format json`` record at ERROR or above, or carrying a traceback."""
    if not line.startswith("{"):
        return False
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and (
        record.get("level") in ("error", "critical") or "exception" in record
    )


def stderr_problems(text: str, allow: Iterable[str] = ()) -> list[str]:
    """The first line of each entry of a chatd's stderr that must fail a test: a log
    record at ERROR or CRITICAL, or anything holding a traceback; an entry whose first
    line matches one of the ``allow`` regular expressions is expected."""
    allowed = [re.compile(pattern) for pattern in allow]
    problems = []
    for entry in _entries(text):
        level = _RECORD.match(entry[0])
        failing = (level is not None and level.group(1) in _FAILING_LEVELS) or any(
            line.startswith(TRACEBACK) or _json_problem(line) for line in entry
        )
        if failing and not any(rx.search(entry[0]) for rx in allowed):
            problems.append(entry[0] if entry[0].strip() else entry[-1])
    return problems


def tail(path: Path, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a file, indented, for a failure message."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    (cannot read it: {exc})"
    kept = text.splitlines()[-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (empty)"


def check_server_log(
    what: str,
    stderr_path: Path,
    *,
    status: int | None = None,
    expect_exit: int | None = 0,
    allow: Iterable[str] = (),
    problems: Sequence[str] = (),
    context: Sequence[str] = (),
) -> None:
    """Raise :class:`ServerFailure` when a server that ended with ``status`` should not
    have (``expect_exit`` None: any status is expected), when its stderr file holds a
    traceback or an ERROR record not ``allow``-ed, or when the caller found other
    ``problems``. The message lists them with the ``context``, names the file and quotes
    its tail."""
    found = list(problems)
    if expect_exit is not None and status is not None and status != expect_exit:
        how = f"killed by signal {-status}" if status < 0 else f"exited with status {status}"
        found.append(f"{how} (expected {expect_exit})")
    try:
        text = stderr_path.read_text(errors="replace")
    except OSError as exc:
        text = ""
        found.append(f"its stderr file cannot be read: {exc}")
    entries = stderr_problems(text, allow)
    if len(entries) == 1:
        found.append(f"stderr: {entries[0]}")
    elif entries:
        found.append(
            f"{len(entries)} tracebacks or ERROR records on stderr, the first: {entries[0]}"
        )
    if found:
        # The first line says it all (pytest's short summary shows only that one).
        listed = [*context, *(f"stderr: {line}" for line in entries[1:MAX_LISTED])]
        if len(entries) > MAX_LISTED:
            listed.append(f"... and {len(entries) - MAX_LISTED} more")
        raise ServerFailure(
            f"{what} failed: {'; '.join(found)}\n"
            + "".join(f"  - {line}\n" for line in listed)
            + f"  its stderr, {stderr_path} (last {TAIL_LINES} lines):\n{tail(stderr_path)}"
        )


class LogErrors(logging.Handler):
    """Collects the records at ERROR and above of some loggers of this process: an engine
    run in-process (tests/engines) logs where a subprocess would write to stderr."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self, allow: Iterable[str] = ()) -> list[str]:
        """Each record not ``allow``-ed (a pattern searched in its message), formatted
        with its traceback."""
        allowed = [re.compile(pattern) for pattern in allow]
        return [
            self.format(r)
            for r in self.records
            if not any(rx.search(r.getMessage()) for rx in allowed)
        ]

    def check(self, what: str, allow: Iterable[str] = ()) -> None:
        problems = self.problems(allow)
        if problems:
            raise ServerFailure(f"{what} logged at ERROR or above:\n" + "\n".join(problems))


@contextmanager
def log_errors(*names: str) -> Iterator[LogErrors]:
    """A :class:`LogErrors` on the loggers ``names`` for the duration of the block."""
    handler = LogErrors()
    loggers = [logging.getLogger(name) for name in names]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def run_chatd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``python -m chatd ARGS`` to its end, for a test of a server that must not start:
    its status and messages are the caller's to check, but a traceback or an ERROR
    record on stderr fails here."""
    with tempfile.TemporaryDirectory(prefix="chatd-state-") as state_home:
        done = subprocess.run(
            [sys.executable, "-m", "chatd", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**chatd_env(), "XDG_STATE_HOME": state_home},
        )
    problems = stderr_problems(done.stderr)
    if problems:
        raise ServerFailure(
            f"chatd {' '.join(args)} exited {done.returncode} and wrote:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\n  its stderr:\n{done.stderr}"
        )
    return done


class Server:
    """A ``python -m chatd`` subprocess on a free loopback port.

    Its stderr goes to a file (:attr:`stderr_path`), never a pipe: a chatty server cannot
    block on it, and :meth:`finish` (which conftest's ``start_server`` calls for every
    server at the end of the test) fails the test when the server exited non-zero or
    wrote a traceback or an ERROR record, quoting the file.
    """

    def __init__(
        self,
        engine: str,
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
        tls: TLSFiles | None = None,
        log_dir: Path | None = None,
        allow: Sequence[str] = (),
        expect_exit: int | None = 0,
        env: dict[str, str] | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before exec (e.g. to lower a resource limit).

        ``tls``: also listen with TLS (``--tls-port 0``); :attr:`port`, :meth:`client`
        and :meth:`connect` then use the TLS listener, :attr:`plain_port` the plain one.

        ``log_dir``: where the stderr file goes (default: the system's temporary folder,
        the file removed when :meth:`finish` finds nothing wrong). ``allow``: regular
        expressions for stderr entries (an ERROR record, a traceback) the test provokes
        on purpose, searched in each entry's first line. ``expect_exit``: the status the
        server must end with (SIGTERM'd chatd exits 0); None for a server the test kills.
        ``env``: variables to set in the server's environment besides :func:`chatd_env`'s.
        """
        self.engine = engine
        self.allow = tuple(allow)
        self.expect_exit = expect_exit
        if tls is not None:
            args = (*args, *tls.args(), "--tls-port", "0")
        #: The server's state home: its default data dir is ``state_home/chatd`` (every
        #: server gets its own, never the user's ~/.local/state), removed after a clean stop.
        self.state_home: Path | None = None
        if "--data-dir" not in args and "--ephemeral" not in args:
            self.state_home = Path(tempfile.mkdtemp(prefix="chatd-state-"))
            env = {"XDG_STATE_HOME": str(self.state_home), **(env or {})}
        if engine == UVLOOP:
            engine, args = "asyncio", ("--uvloop", *args)
        fd, name = tempfile.mkstemp(
            prefix=f"chatd-{self.engine.replace('+', '-')}-", suffix=".stderr", dir=log_dir
        )
        self._temporary = log_dir is None
        #: The server's stderr (what :meth:`finish` checks and its failure quotes).
        self.stderr_path = Path(name)
        #: What the server wrote to stdout after its ``listening on`` lines (if anything).
        self.stdout_path = self.stderr_path.with_suffix(".stdout")
        #: What went wrong besides its status and stderr (it did not stop on SIGTERM).
        self.problems: list[str] = []
        #: What a failure message also says (it had ended before it was stopped).
        self.context: list[str] = []
        self._stopped = False
        self._terminated = False
        self._stderr_seen = 0
        try:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chatd",
                    "--port",
                    "0",
                    "--engine",
                    engine,
                    "--log-level",
                    "warning",
                    *args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=fd,
                env={**chatd_env(), **(env or {})},
                preexec_fn=preexec_fn,
            )
        finally:
            os.close(fd)
        #: Port of each listener: "line", "line tls", "irc", "irc tls".
        self.ports: dict[str, int] = {}
        rest = b""
        try:
            for _ in range(1 + sum(arg in LISTENER_OPTIONS for arg in args)):
                line, rest = self._stdout_line(rest, time.monotonic() + START_TIMEOUT)
                match = _LISTENING.search(line)
                if not match:
                    raise ServerFailure(f"not a 'listening on' line: {line!r}")
                self.ports[match.group(1) + (match.group(2) or "")] = int(match.group(4))
        except ServerFailure as exc:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            raise ServerFailure(
                f"{self.describe()} did not start ({exc}; status {self.proc.returncode})\n"
                f"  its stderr, {self.stderr_path} (last {TAIL_LINES} lines):\n"
                f"{tail(self.stderr_path)}"
            ) from None
        # Nothing reads stdout from here on: a thread copies it to a file, so a server
        # that prints more cannot block on a full pipe.
        self._drain = threading.Thread(target=self._copy_stdout, args=(rest,), daemon=True)
        self._drain.start()
        self.host = "127.0.0.1"
        self.plain_port = self.ports["line"]
        #: The context clients of this server use, when it is tested over TLS.
        self.tls: ssl.SSLContext | None = tls.client_context() if tls is not None else None
        #: Where :meth:`client` connects: the TLS listener when tested over TLS.
        self.port = self.ports["line tls"] if tls is not None else self.plain_port
        #: The IRC listener's port, when started with ``--irc-port``.
        self.irc_port: int | None = self.ports.get("irc")

    def describe(self) -> str:
        return f"chatd {self.engine} (pid {self.proc.pid})"

    def _stdout_line(self, buf: bytes, deadline: float) -> tuple[str, bytes]:
        """The next stdout line (read with a deadline) and what was read beyond it."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise ServerFailure(f"no line on stdout within {START_TIMEOUT:.0f} s")
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ServerFailure(f"stdout closed; have {buf[:200]!r}")
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        return line.decode(errors="replace"), buf

    def _copy_stdout(self, first: bytes) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            with open(self.stdout_path, "wb") as out:
                chunk = first
                while True:
                    out.write(chunk)
                    out.flush()
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        return
        finally:
            self.proc.stdout.close()

    def irc(self, nick: str | None = None, caps: str = "", **kw: float) -> IrcClient:
        """An IRC client on the IRC listener (its TLS one when tested over TLS),
        registered as ``nick`` if given."""
        assert self.irc_port is not None, "start the server with --irc-port 0"
        if self.tls is not None and "irc tls" in self.ports:
            c = IrcClient(self.host, self.ports["irc tls"], tls=self.tls, **kw)
        else:
            c = IrcClient(self.host, self.irc_port, **kw)
        if nick is not None:
            c.register(nick, caps)
        return c

    def client(self, nick: str | None = None, **kw: Any) -> Client:
        c = Client(self.host, self.port, tls=self.tls, **kw)
        if nick is not None:
            c.register(nick)
        return c

    def connect(self, timeout: float = TIMEOUT) -> socket.socket:
        """A bare socket to :attr:`port`, through a finished handshake when over TLS."""
        return open_socket(self.host, self.port, timeout, self.tls)

    def room(self, *nicks: str) -> list[Client]:
        """Register clients in order, then drain their join notices (a /ping each)."""
        clients = [self.client(nick) for nick in nicks]
        for c in clients:
            c.ping()
        return clients

    def terminate(self) -> None:
        """SIGTERM, for a test that watches the shutdown itself; :meth:`stop` then only
        waits (a second SIGTERM could land after the engine has put back the default
        disposition, on its way out, and kill it)."""
        if not self._terminated and self.proc.poll() is None:
            self._terminated = True
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (unless it has exited already or was sent one), wait, and return the
        exit status. A server still running ``timeout`` seconds later is killed (SIGKILL;
        status -9) and :meth:`check` reports it."""
        first, self._stopped = not self._stopped, True
        status = self.proc.poll()
        if status is not None:
            if first:
                how = "after the test's SIGTERM" if self._terminated else "before it was stopped"
                self.context.append(f"it had ended (status {status}) {how}")
            return status
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.problems.append(f"still running {timeout:.0f} s after SIGTERM: killed")
            return self.proc.wait()

    def check(self) -> None:
        """Raise :class:`ServerFailure` when the stopped server ended with a status other
        than ``expect_exit`` or its stderr holds a traceback or an ERROR record (other
        than the ``allow``-ed ones); the message quotes the stderr file."""
        status = self.proc.poll()
        assert status is not None, "stop() the server before check()"
        self._drain.join(5)
        context = list(self.context)
        if self.stdout_path.exists() and self.stdout_path.stat().st_size:
            context.append(f"it wrote more to stdout, kept in {self.stdout_path}")
        check_server_log(
            self.describe(),
            self.stderr_path,
            status=status,
            expect_exit=self.expect_exit,
            allow=self.allow,
            problems=self.problems,
            context=context,
        )
        if self._temporary:
            self.stderr_path.unlink(missing_ok=True)
            self.stdout_path.unlink(missing_ok=True)
        if self.state_home is not None:
            shutil.rmtree(self.state_home, ignore_errors=True)

    @property
    def data_dir(self) -> Path:
        """Where this server keeps history (its default data dir)."""
        assert self.state_home is not None, "started with its own --data-dir or --ephemeral"
        return self.state_home / "chatd"

    def finish(self) -> int:
        """:meth:`stop`, then :meth:`check`; the exit status."""
        status = self.stop()
        self.check()
        return status

    def stderr_text(self) -> str:
        """What the server has written to stderr so far."""
        return self.stderr_path.read_text(errors="replace")

    def wait_for_stderr(self, pattern: str, timeout: float = TIMEOUT) -> str:
        """The first stderr line after the last one this found that matches ``pattern``.

        A file cannot be waited on like a socket: this looks every 20 ms until the
        deadline (then TimeoutError)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            with open(self.stderr_path, "rb") as f:
                f.seek(self._stderr_seen)
                data = f.read()
            offset = self._stderr_seen
            for raw in data.splitlines(keepends=True):
                if not raw.endswith(b"\n"):
                    break
                offset += len(raw)
                line = raw.decode(errors="replace").rstrip("\n")
                if rx.search(line):
                    self._stderr_seen = offset
                    return line
            if self.proc.poll() is not None:
                raise EOFError(f"the server exited; no stderr line matching {pattern!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no stderr line matching {pattern!r} in {self.stderr_path}")
            time.sleep(0.02)

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")


def open_socket(
    host: str, port: int, timeout: float = TIMEOUT, tls: ssl.SSLContext | None = None
) -> socket.socket:
    """A connected socket with TCP_NODELAY; with ``tls``, wrapped and handshaken."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls is None:
        return sock
    try:
        # Ragged EOFs raise: a server that closes without close_notify fails the test.
        return tls.wrap_socket(sock, server_hostname="localhost", suppress_ragged_eofs=False)
    except BaseException:
        sock.close()
        raise


class IrcClient:
    """A blocking IRC client with deadlines: lines without CR LF, parsed on demand."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = TIMEOUT,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sock = open_socket(host, port, timeout, tls)
        self.timeout = timeout
        self.buf = b""
        self.nick: str | None = None

    def send(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else (text + "\r\n").encode()
        self.sock.sendall(data)

    def read_line(self, timeout: float | None = None) -> str:
        """The next line (answering the server's PINGs); TimeoutError or EOFError."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            while b"\n" not in self.buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no line within the deadline; have {self.buf[:200]!r}")
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError as exc:
                    raise TimeoutError(f"no line; have {self.buf[:200]!r}") from exc
                if not chunk:
                    raise EOFError(f"server closed; have {self.buf[:200]!r}")
                self.buf += chunk
            raw, _, self.buf = self.buf.partition(b"\n")
            line = raw.rstrip(b"\r").decode()
            if line.startswith("PING "):
                self.send("PONG " + line[5:])
                continue
            return line

    def expect(self, pattern: str, timeout: float | None = None) -> list[str]:
        """Lines up to the first that matches the regular expression ``pattern``."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        lines = []
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            lines.append(line)
            if rx.search(line):
                return lines

    def register(self, nick: str, caps: str = "") -> list[str]:
        if caps:
            self.send(f"CAP LS 302\r\nCAP REQ :{caps}\r\nCAP END")
        self.send(f"NICK {nick}\r\nUSER {nick} 0 * :{nick} real name")
        lines = self.expect(rf"^:\S+ (376|422) {re.escape(nick)} ")
        self.nick = nick
        return lines

    def sync(self, token: str = "sync") -> list[str]:
        """Every line the server sent before the PONG to our PING (a round trip)."""
        self.send(f"PING {token}")
        return self.expect(rf"^:\S+ PONG \S+ :?{re.escape(token)}$")[:-1]

    def close(self) -> None:
        self.sock.close()


def connect(
    host: str,
    port: int,
    timeout: float = TIMEOUT,
    source: str | None = None,
    rcvbuf: int | None = None,
) -> socket.socket:
    """A connected TCP socket, optionally from address ``source`` and with SO_RCVBUF
    ``rcvbuf`` (which only shapes the window when set before the handshake)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.bind((source, 0))
        sock.settimeout(timeout)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


class LineReading:
    """``read_until`` and ``expect`` over a client's ``read_line(timeout)`` and its
    ``timeout`` (the line client here, the WebSocket client in tests/web)."""

    timeout: float

    def read_line(self, timeout: float | None = None) -> str:
        raise NotImplementedError

    def read_until(self, pred: Callable[[str], bool], timeout: float | None = None) -> list[str]:
        """Lines up to and including the first one matching ``pred``."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        lines = []
        while True:
            line = self.read_line(max(0.0, deadline - time.monotonic()))
            lines.append(line)
            if pred(line):
                return lines

    def expect(self, pattern: str, timeout: float | None = None) -> list[str]:
        """Lines up to the first that matches the regular expression ``pattern``."""
        rx = re.compile(pattern)
        return self.read_until(lambda line: rx.search(line) is not None, timeout)


class Client(LineReading):
    """A blocking line client with deadlines (over TLS when given a client context).

    Over TLS an EOF without close_notify raises ``ssl.SSLEOFError`` from the reads, so a
    test that waits for a graceful close also checks that the server said goodbye.
    """

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float = TIMEOUT,
        source: str | None = None,
        rcvbuf: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``source``: the local address to connect from (any address in 127.0.0.0/8
        reaches a server on 127.0.0.1, so per-address limits can be tested);
        ``rcvbuf``: SO_RCVBUF, set before connecting so the TCP window obeys it."""
        sock = connect(host, port, timeout, source=source, rcvbuf=rcvbuf)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                # Ragged EOFs raise: a server closing without close_notify fails the test.
                sock = tls.wrap_socket(
                    sock, server_hostname="localhost", suppress_ragged_eofs=False
                )
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.timeout = timeout
        self.buf = b""
        self.nick: str | None = None
        # The greeting: star lines, the last asking for a nickname.
        self.greeting = self.read_until(lambda line: "nickname" in line)

    def send(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else (text + "\n").encode()
        self.sock.sendall(data)

    def read_line(self, timeout: float | None = None) -> str:
        """The next line; raises TimeoutError, or EOFError when the server closed."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within the deadline; have {self.buf[:200]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:
                raise TimeoutError(f"no line; have {self.buf[:200]!r}") from exc
            if not chunk:
                raise EOFError(f"server closed; have {self.buf[:200]!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def register(self, nick: str) -> list[str]:
        self.send(nick)
        lines = self.expect(rf"^\* .*\b{re.escape(nick)}\b.*#")
        self.nick = nick
        return lines

    def ping(self) -> list[str]:
        """A round trip: every line the server sent before its pong."""
        self.send("/ping sync")
        return self.expect(r"^\* pong sync$")[:-1]

    def no_more_lines(self) -> None:
        """Assert the server has nothing more for us right now (a /ping round trip)."""
        extra = self.ping()
        assert extra == [], f"unexpected lines: {extra}"

    def wait_closed(self, timeout: float | None = None) -> list[str]:
        """Lines until EOF."""
        lines = []
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            try:
                lines.append(self.read_line(max(0.0, deadline - time.monotonic())))
            except EOFError:
                return lines
            except ConnectionResetError:
                return lines

    def close(self) -> None:
        self.sock.close()


_LINGER_ZERO = struct.pack("ii", 1, 0)


def reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel sends RST at once instead of FIN (no TIME_WAIT,
    no kernel buffer kept)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
    except OSError:
        pass
    sock.close()


def read_to_eof(sock: socket.socket, timeout: float = TIMEOUT) -> tuple[bytes, bool]:
    """Everything the peer sends until it closes: (data, closed). A reset counts as closed
    (the data before it is still returned: Linux delivers queued bytes before the RST)."""
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, False
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
