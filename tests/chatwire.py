"""Test-side helpers: start a real chatd subprocess and talk to it over real sockets.

Every wait is a read with a deadline, never a sleep: a test that expects a line blocks
in ``recv`` until the line arrives or the deadline passes (then it fails).

TLS: :class:`TLSFiles` makes a throwaway CA and server certificate with ``trustme``
(never a file committed to the repository); a :class:`Server` started with ``tls=``
also listens with TLS, and its :meth:`Server.client` and :meth:`Server.connect` then
speak TLS, so the same test body runs over either transport.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
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
#: Options that add a listener, each announced on its own ``listening on`` line.
LISTENER_OPTIONS = ("--irc-port", "--tls-port", "--irc-tls-port")
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
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SERVER_SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """A ``python -m chatd`` subprocess on a free loopback port."""

    def __init__(
        self,
        engine: str,
        *args: str,
        preexec_fn: Callable[[], None] | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        """``preexec_fn`` runs in the child before exec (e.g. to lower a resource limit).

        ``tls``: also listen with TLS (``--tls-port 0``); :attr:`port`, :meth:`client`
        and :meth:`connect` then use the TLS listener, :attr:`plain_port` the plain one.
        """
        self.engine = engine
        if tls is not None:
            args = (*args, *tls.args(), "--tls-port", "0")
        if engine == UVLOOP:
            engine, args = "asyncio", ("--uvloop", *args)
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
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=chatd_env(),
            preexec_fn=preexec_fn,
        )
        assert self.proc.stdout is not None
        #: Port of each listener: "line", "line tls", "irc", "irc tls".
        self.ports: dict[str, int] = {}
        for _ in range(1 + sum(arg in LISTENER_OPTIONS for arg in args)):
            line = self.proc.stdout.readline().decode()
            match = _LISTENING.search(line)
            if not match:
                self.proc.kill()
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"chatd did not start: {line!r} {err}")
            self.ports[match.group(1) + (match.group(2) or "")] = int(match.group(4))
        self.host = "127.0.0.1"
        self.plain_port = self.ports["line"]
        #: The context clients of this server use, when it is tested over TLS.
        self.tls: ssl.SSLContext | None = tls.client_context() if tls is not None else None
        #: Where :meth:`client` connects: the TLS listener when tested over TLS.
        self.port = self.ports["line tls"] if tls is not None else self.plain_port
        #: The IRC listener's port, when started with ``--irc-port``.
        self.irc_port: int | None = self.ports.get("irc")

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

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

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


class Client:
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
