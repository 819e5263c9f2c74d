"""chatd-client driven through pipes as a subprocess, against real servers.

Besides chatd itself, two small servers stand in where chatd cannot help yet:
:class:`FakeServer` (a scripted line server: it records what the client sends, e.g.
``/pass``, and sends what chatd refuses to relay, e.g. control characters) and
:class:`Relay` (a TCP or TLS-terminating relay in front of chatd, since chatd has no
TLS listener yet, and a way to cut connections without stopping the server). Both
listen on real loopback sockets; the TLS certificates come from trustme, made per run.
The interactive tests (tests/test_client_tui.py) and the in-process session tests
(tests/test_client_session.py) use them too.
"""

from __future__ import annotations

import asyncio
import queue
import re
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import pytest
import trustme

from chatd.client import printable
from chatwire import TIMEOUT, Server, TLSFiles, chatd_env

T = TypeVar("T")

# --------------------------------------------------------------------------- helpers


def run_client(server: Server, stdin: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_client_at(server.port, stdin, *args)


def run_client_at(
    port: int, data: bytes | None, *args: str, stdin: int | IO[bytes] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the client to its end; its input is ``data``, or else ``stdin``."""
    return subprocess.run(
        [sys.executable, "-m", "chatd.client", "--port", str(port), *args],
        input=data,
        stdin=stdin,
        capture_output=True,
        timeout=30,
        env=chatd_env(),
    )


class ClientProcess:
    """A chatd-client subprocess with pipes, whose output lines are read with deadlines."""

    def __init__(self, port: int, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatd.client", "--port", str(port), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=chatd_env(),
        )
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr
        self.stdout = _LineReader(self.proc.stdout)
        self.stderr = _LineReader(self.proc.stderr)

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def wait(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self.stdout.thread.join(timeout)
        self.stderr.thread.join(timeout)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _LineReader:
    """Lines of a pipe, collected by a thread, so a test can wait with a deadline."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self.thread.start()

    def _read(self, pipe: IO[bytes]) -> None:
        for raw in pipe:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def expect(self, pattern: str, timeout: float = TIMEOUT) -> list[str]:
        """Lines up to the first matching ``pattern``; fails at the deadline or the end."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}; got {seen}") from None
            if line is None:
                self._queue.put(None)
                raise AssertionError(f"stream ended before {pattern!r}; got {seen}")
            seen.append(line)
            self.lines.append(line)
            if rx.search(line):
                return seen

    def rest(self) -> list[str]:
        """Every line, once the stream has ended."""
        self.thread.join(TIMEOUT)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        self._queue.put(None)
        return self.lines


@pytest.fixture
def client_process() -> Iterator[Callable[..., ClientProcess]]:
    started: list[ClientProcess] = []

    def start(port: int, *args: str) -> ClientProcess:
        started.append(ClientProcess(port, *args))
        return started[-1]

    yield start
    for client in started:
        client.kill()


class FakeServer:
    """A scripted line server on a loopback port, a thread per connection.

    It greets like chatd, records every line it receives (:meth:`next_line`), answers
    the first line that is not a command with chatd's registration notice followed by
    ``after_nick``, answers ``/quit`` with ``* bye`` and a close, and on end of input
    closes too, unless ``close_on_eof`` is false (a server that never lets go).
    """

    def __init__(self, after_nick: bytes = b"", close_on_eof: bool = True) -> None:
        self.after_nick = after_nick
        self.close_on_eof = close_on_eof
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: queue.Queue[str] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn:
            self._script(conn)

    def _script(self, conn: socket.socket) -> None:
        conn.settimeout(0.2)
        conn.sendall(b"* welcome to fake\n* please choose a nickname\n")
        buf = b""
        registered = False
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                if self.close_on_eof:
                    return
                self._stop.wait()
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                line = raw.decode()
                self.received.put(line)
                if line.lower().startswith("/quit"):
                    conn.sendall(b"* bye\n")
                    return
                if not registered and line and not line.startswith("/"):
                    registered = True
                    conn.sendall(
                        f"* you are {line}, in #lobby (1 here); /help lists commands\n".encode()
                        + self.after_nick
                    )

    def next_line(self, timeout: float = TIMEOUT) -> str:
        return self.received.get(timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        self._thread.join(TIMEOUT)

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Relay:
    """A relay from a loopback port to ``upstream_port``, on its own thread and event loop.

    With ``tls`` it terminates TLS (what chatd's TLS listener will do). :meth:`cut`
    drops the client side of every relayed connection while keeping the server side
    open, as when a network path dies and the server has not noticed yet.
    """

    def __init__(self, upstream_port: int, tls: ssl.SSLContext | None = None) -> None:
        self.upstream_port = upstream_port
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._held: set[asyncio.StreamWriter] = set()
        self.server = self._call(asyncio.start_server(self._relay, "127.0.0.1", 0, ssl=tls))
        self.port: int = self.server.sockets[0].getsockname()[1]

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(TIMEOUT)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self._pairs.append((writer, up_writer))
        await asyncio.gather(self._copy(reader, up_writer), self._copy(up_reader, writer))

    async def _copy(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError):
            pass
        if writer in self._held:
            return
        try:
            if writer.can_write_eof():
                writer.write_eof()  # pass a half-close on, as the piped client relies on
            else:
                writer.close()
        except (OSError, RuntimeError):
            pass

    def cut(self) -> None:
        async def cut() -> None:
            for client, upstream in self._pairs:
                self._held.add(upstream)
                client.transport.abort()

        self._call(cut())

    def close(self) -> None:
        async def close() -> None:
            self.server.close()
            for client, upstream in self._pairs:
                client.transport.abort()
                upstream.transport.abort()
            relays = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, return_exceptions=True)

        self._call(close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def tls_relay(
    ca: trustme.CA, start_server: Callable[..., Server]
) -> Iterator[tuple[Server, Relay]]:
    """chatd behind a TLS-terminating relay whose certificate (for 127.0.0.1) ``ca`` signed."""
    server = start_server("reactor")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    with Relay(server.port, tls=context) as relay:
        yield server, relay


_SERVER_LINE = re.compile(r"(\* |! |[A-Za-z_\[\]\\^{}|`][\w\-\[\]\\^{}|`]*( \(private\))?: )")


def is_server_line(line: str) -> bool:
    """One of PROTOCOL.md's four kinds of server line."""
    return _SERVER_LINE.match(line) is not None


# --------------------------------------------------------------------------- piped


def test_piped_session_sends_and_exits_cleanly(start_server) -> None:
    server = start_server("reactor")
    (bob,) = server.room("bob")
    proc = run_client(server, b"alice\nhello from a pipe\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert "alice" in out and "#lobby" in out
    assert bob.expect("hello from a pipe")[-1] == "alice: hello from a pipe"


def test_piped_output_is_exactly_the_server_lines(start_server) -> None:
    server = start_server("reactor")
    (bob,) = server.room("bob")
    proc = run_client(server, b"alice\n/who\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [
        "* welcome to chatd",
        "* please choose a nickname",
        "* you are alice, in #lobby (2 here); /help lists commands",
        "* #lobby (2): alice bob",
        "* bye",
    ]
    assert proc.stderr == b"" and b"\x1b" not in proc.stdout


def test_input_ending_without_quit_still_exits_zero(start_server) -> None:
    server = start_server("reactor")
    (bob,) = server.room("bob")
    proc = run_client(server, b"carol\nbye without quit")
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("bye without quit")[-1] == "carol: bye without quit"


def test_input_from_a_regular_file_or_dev_null(start_server, tmp_path: Path) -> None:
    # epoll refuses both, so the client reads them at once instead of through the loop.
    server = start_server("reactor")
    (bob,) = server.room("bob")
    script = tmp_path / "input.txt"
    script.write_bytes(b"erin\nfrom a file\n")
    with script.open("rb") as f:
        proc = run_client_at(server.port, None, stdin=f)
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("from a file")[-1] == "erin: from a file"
    proc = run_client_at(server.port, None, "--nick", "frank", stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert b"you are frank" in proc.stdout


def test_timestamps_prefix_every_server_line(start_server) -> None:
    server = start_server("reactor")
    proc = run_client(server, b"alice\n/quit\n", "--timestamps")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines and all(re.fullmatch(r"\d\d:\d\d \* .*", line) for line in lines), lines


def test_control_characters_from_the_server_are_shown_visibly() -> None:
    # chatd refuses such lines, so a fake server sends them (and the renderer is checked
    # directly as well).
    assert printable(b"\x1b[2Jx\x07\x9b") == "^[[2Jx^G\ufffd"
    assert printable("a\u009bb".encode()) == "a<U+009B>b"
    assert printable(b"tab\there") == "tab\there"
    evil = "eve: \x1b[31mred\x07 \u009b2J\x7f\n".encode()
    with FakeServer(after_nick=evil) as fake:
        proc = run_client_at(fake.port, b"alice\n/quit\n")
    assert proc.returncode == 0, proc.stderr
    assert "eve: ^[[31mred^G <U+009B>2J^?" in proc.stdout.decode().splitlines()
    assert not set(proc.stdout) & (set(range(32)) - {9, 10} | {127})


def test_connection_refused_is_a_clear_error(start_server) -> None:
    server = start_server("reactor")
    port = server.port
    server.client("amy").ping()  # serving: its SIGTERM handler is in place
    assert server.stop() == 0
    proc = run_client_at(port, b"")
    assert proc.returncode != 0
    expected = f"Error: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    assert proc.stderr.decode() == expected


def test_server_going_away_is_reported(start_server) -> None:
    server = start_server("reactor")
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatd.client", "--port", str(server.port), "--nick", "dave"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=chatd_env(),
    )
    assert proc.stdout is not None
    while b"dave" not in proc.stdout.readline():
        pass
    server.stop()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert b"* server shutting down: please reconnect\n" in out
    assert err == b"chatd-client: server closed the connection\n"


def test_a_server_that_never_closes_is_given_up_after_linger() -> None:
    with FakeServer(close_on_eof=False) as fake:
        started = time.monotonic()
        proc = run_client_at(fake.port, b"alice\nhello\n", "--linger", "0.5")
    assert proc.returncode == 1
    assert b"did not close" in proc.stderr
    assert time.monotonic() - started < 20


# --------------------------------------------------------------------------- password


def test_password_is_sent_first_before_the_nick() -> None:
    with FakeServer() as fake:
        proc = run_client_at(fake.port, b"hello\n/quit\n", "--password", "s3cret", "--nick", "al")
        assert [fake.next_line() for _ in range(4)] == ["/pass s3cret", "al", "hello", "/quit"]
    assert proc.returncode == 0, proc.stderr
    assert b"s3cret" not in proc.stdout + proc.stderr


def test_password_can_come_from_the_environment() -> None:
    with FakeServer() as fake:
        proc = subprocess.run(
            [sys.executable, "-m", "chatd.client", "--port", str(fake.port)],
            input=b"al\n/quit\n",
            capture_output=True,
            timeout=30,
            env={**chatd_env(), "CHATD_PASSWORD": "from env"},
        )
        assert [fake.next_line() for _ in range(2)] == ["/pass from env", "al"]
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- TLS


def test_tls_with_the_servers_ca(tls_relay: tuple[Server, Relay], ca_file: Path) -> None:
    server, relay = tls_relay
    (bob,) = server.room("bob")
    proc = run_client_at(relay.port, b"alice\nover tls\n/quit\n", "--tls", "--ca", str(ca_file))
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("over tls")[-1] == "alice: over tls"
    assert "* you are alice, in #lobby (2 here); /help lists commands" in proc.stdout.decode()


def test_tls_input_ending_without_quit_sends_quit(
    tls_relay: tuple[Server, Relay], ca_file: Path
) -> None:
    # TLS cannot close only the sending half, so the client says /quit instead.
    server, relay = tls_relay
    (bob,) = server.room("bob")
    proc = run_client_at(relay.port, b"alice\nlast words", "--tls", "--ca", str(ca_file))
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("last words")[-1] == "alice: last words"
    assert bob.expect(r"alice (quit|left)")


def test_tls_refuses_an_unknown_ca(tls_relay: tuple[Server, Relay]) -> None:
    _, relay = tls_relay
    proc = run_client_at(relay.port, b"alice\n", "--tls")
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "certificate not trusted" in err and "--ca" in err and "Traceback" not in err


def test_tls_insecure_connects_and_says_so(tls_relay: tuple[Server, Relay]) -> None:
    _, relay = tls_relay
    proc = run_client_at(relay.port, b"alice\n/quit\n", "--tls", "--insecure")
    assert proc.returncode == 0, proc.stderr
    assert b"--insecure" in proc.stderr and b"not checked" in proc.stderr
    assert b"you are alice" in proc.stdout


def test_tls_to_a_plain_port_is_a_clear_error(start_server, ca_file: Path) -> None:
    server = start_server("reactor")
    proc = run_client_at(server.port, b"", "--tls", "--ca", str(ca_file))
    assert proc.returncode == 1
    assert b"TLS" in proc.stderr and b"Traceback" not in proc.stderr


def test_ca_without_tls_is_a_usage_error(ca_file: Path) -> None:
    proc = run_client_at(4040, b"", "--ca", str(ca_file))
    assert proc.returncode == 2 and b"--tls" in proc.stderr


# --------------------------------------------------------------------------- reconnect


def test_reconnect_after_a_server_restart_rejoins_the_room(
    start_server, client_process: Callable[..., ClientProcess]
) -> None:
    server = start_server("reactor")
    port = server.port
    dave = client_process(port, "--nick", "dave", "--reconnect")
    dave.stdout.expect(r"^\* you are dave")
    dave.send("/join #side\n")
    dave.stdout.expect(r"^\* you joined #side")
    server.stop()
    dave.stdout.expect(r"^\* server shutting down: please reconnect$")  # and it does
    dave.stderr.expect(r"^chatd-client: reconnecting in \d+\.\d s \(attempt 1\)$")
    server = start_server("reactor", "--port", str(port))
    dave.stdout.expect(r"^\* you are dave, in #lobby", timeout=40)
    dave.stdout.expect(r"^\* you joined #side")
    carol = server.client("carol")
    carol.send("/join #side")
    carol.expect("you joined #side")
    dave.send("back again\n")
    assert carol.expect("back again")[-1] == "dave: back again"
    dave.send("/quit\n")
    assert dave.wait() == 0
    # Status lines go to stderr only, marked; stdout holds nothing but server lines.
    assert all(is_server_line(line) for line in dave.stdout.rest()), dave.stdout.lines
    err = dave.stderr.rest()
    assert all(line.startswith("chatd-client: ") for line in err), err
    assert any("connected to 127.0.0.1" in line for line in err), err


# --------------------------------------------------------------------------- chatd's own TLS
# listener and password (the tests above use the relay and the fake server; these close the
# loop against the real thing).


def test_tls_to_chatds_own_tls_listener(start_server, tls_files: TLSFiles) -> None:
    server = start_server("reactor", tls=tls_files)
    (bob,) = server.room("bob")
    proc = run_client_at(
        server.port, b"alice\ndirect tls\n/quit\n", "--tls", "--ca", str(tls_files.ca_file)
    )
    assert proc.returncode == 0, proc.stderr
    assert bob.expect("direct tls")[-1] == "alice: direct tls"


def test_password_against_chatds_own_password(start_server) -> None:
    server = start_server("reactor", "--password", "sesame")
    proc = run_client_at(server.port, b"alice\n/quit\n", "--password", "sesame")
    assert proc.returncode == 0, proc.stderr
    assert "* you are alice, in #lobby (1 here); /help lists commands" in proc.stdout.decode()
    wrong = run_client_at(server.port, b"alice\n/quit\n", "--password", "guess")
    assert b"! wrong password" in wrong.stdout
