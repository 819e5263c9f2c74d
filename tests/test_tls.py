"""TLS listeners on every engine: startup, plain and TLS clients together, the handshake
deadline and its --max-clients slot, hostile handshakes while others chat, output limits
through the TLS layer, SIGHUP reload and close_notify at shutdown.

The protocol itself over TLS is tests/test_contract.py (its ``tls`` half). Certificates
come from trustme, never from files in the repository.
"""

from __future__ import annotations

import resource
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import chatwire
from chatwire import (
    ALL_ENGINES,
    TIMEOUT,
    Client,
    IrcClient,
    Server,
    TLSFiles,
    open_socket,
)

ServerFactory = Callable[..., Server]


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """uvloop has its own SSL layer: it runs these tests too when installed."""
    return request.param


#: --tls-handshake-timeout for the tests that wait for it (short, with margins around it).
DEADLINE = 2.0
_LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"


def stats(client: Client) -> dict[str, int]:
    client.send("/stats")
    line = client.expect(r"^\* stats: ")[-1]
    pairs = (item.split("=", 1) for item in line.removeprefix("* stats: ").split())
    return {k: int(v) for k, v in pairs}


def stats_when(client: Client, ready: Callable[[dict[str, int]], bool]) -> dict[str, int]:
    """/stats until ``ready`` (a close is counted just after the peer sees it), bounded."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        counters = stats(client)
        if ready(counters) or time.monotonic() > deadline:
            return counters
        time.sleep(0.05)


def client_hello() -> bytes:
    """The first flight of a real TLS client (any server answers it with a handshake)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """Read (and discard) until the server closes ``sock``, or until ``deadline``."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:  # reset: closed too
            return True


def run_chatd(*args: str) -> subprocess.CompletedProcess[str]:
    """chatd to its end (a traceback on its stderr fails there); its status is ours."""
    return chatwire.run_chatd("--port", "0", *args)


# --------------------------------------------------------------------------- start-up


def test_tls_listener_is_announced_and_plain_and_tls_clients_share_a_room(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    server = start_server(engine, tls=tls_files)
    # chatwire parsed "chatd ENGINE line: listening on ..." and "... line tls: ...".
    assert set(server.ports) == {"line", "line tls"}
    assert server.ports["line"] != server.ports["line tls"]
    amy = Client(server.host, server.plain_port)
    amy.register("amy")
    bob = server.client("bob")
    assert isinstance(bob.sock, ssl.SSLSocket) and bob.sock.version() in ("TLSv1.2", "TLSv1.3")
    amy.expect("bob joined")
    amy.send("over tcp")
    assert bob.expect("over tcp")[-1] == "amy: over tcp"
    bob.send("over tls")
    assert amy.expect("over tls")[-1] == "bob: over tls"
    # A plain client on the TLS port is not a TLS client: it is dropped, nobody notices.
    wrong = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    wrong.sendall(b"carl\n")
    assert closed_by_server(wrong, time.monotonic() + TIMEOUT)
    counters = stats_when(bob, lambda c: c.get("disconnect_handshake_failed", 0) >= 1)
    assert counters["disconnect_handshake_failed"] == 1
    assert counters["tls_handshakes"] == 1 and counters["clients"] == 2
    amy.no_more_lines()


def test_bad_certificate_or_options_are_a_one_line_error_at_start(
    tmp_path: Path, tls_files: TLSFiles
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("no certificate here\n")
    missing = tmp_path / "missing.pem"
    for cert, key, expected in (
        (missing, tls_files.key, f"cannot read {missing}: No such file or directory"),
        (garbage, tls_files.key, f"{garbage}: no PEM certificate in it"),
        (tls_files.cert, garbage, f"{garbage}: no usable PEM private key in it"),
    ):
        done = run_chatd("--tls-port", "0", "--tls-cert", str(cert), "--tls-key", str(key))
        assert done.returncode != 0 and done.stdout == ""
        assert done.stderr == f"Error: TLS: {expected}\n"
    done = run_chatd("--tls-port", "0")
    assert done.returncode == 2 and "--tls-port needs --tls-cert" in done.stderr
    done = run_chatd(*tls_files.args())
    assert done.returncode == 2 and "need --tls-port, --irc-tls-port or --https-port" in done.stderr


def test_irc_tls_port_needs_the_irc_dialect(
    start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    from chatd.dialects import DIALECTS

    if "irc" in DIALECTS:
        server = start_server("reactor", "--irc-tls-port", "0", *tls_files.args())
        assert "irc tls" in server.ports
        # Served, not only announced (and a SIGTERM before the engine runs would kill it:
        # see test_server_checks.py's test of SIGTERM right after the announcement).
        irc = IrcClient(server.host, server.ports["irc tls"], tls=tls_files.client_context())
        irc.register("amy")
        irc.close()
    else:
        done = run_chatd("--irc-tls-port", "0", *tls_files.args())
        assert done.returncode == 2 and "this build has no IRC dialect" in done.stderr


def test_a_line_sent_with_the_clients_finished_is_answered(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    """A client may send its first line in the same segment as its Finished: the server
    gets both in one read, and must not wait for more bytes before handling the line."""
    server = start_server(engine, tls=tls_files)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = tls_files.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    sock.sendall(outgoing.read())
    while True:
        chunk = sock.recv(65536)
        assert chunk, "closed during the handshake"
        incoming.write(chunk)
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            continue
    client.write(b"amy\n")
    sock.sendall(outgoing.read())  # Finished and the line, in one send
    got = b""
    deadline = time.monotonic() + TIMEOUT
    while b"you are amy" not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no answer to a line sent with the Finished: {got!r}"
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        assert chunk, f"closed: {got!r}"
        incoming.write(chunk)
        try:
            while True:
                got += client.read(65536)
        except ssl.SSLWantReadError:
            pass
    sock.close()


# --------------------------------------------------------------------------- handshakes


def test_a_handshake_holds_a_slot_until_its_deadline_then_releases_it_once(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    server = start_server(
        engine, "--max-clients", "3", "--tls-handshake-timeout", str(DEADLINE), tls=tls_files
    )
    amy = server.client("amy")
    silent = [socket.create_connection((server.host, server.port)) for _ in range(2)]
    assert stats_when(amy, lambda c: c["connections"] >= 3)["connections"] == 3
    started = time.monotonic()
    # Both silent connections count: the server is full (refused before any handshake).
    with pytest.raises(OSError):
        server.connect().recv(1024)
    for sock in silent:
        assert closed_by_server(sock, time.monotonic() + DEADLINE + TIMEOUT)
    waited = time.monotonic() - started
    assert waited >= DEADLINE * 0.5, f"closed after {waited:.2f} s, before the deadline"
    # Their slots are free again: two clients fit.
    bob, cid = server.client("bob"), server.client("cid")
    counters = stats(amy)
    assert counters["disconnect_handshake_timeout"] == 2
    assert counters["disconnect_server_full"] == 1
    assert counters["clients"] == 3
    cid.send("in")
    assert bob.expect("cid: in")[-1] == "cid: in"


def test_a_trickling_handshake_is_cut_at_the_deadline_not_stretched(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    """A peer sending its ClientHello a byte every 0.25 s would take over a minute; the
    deadline is for the whole handshake, so it is closed about DEADLINE after connect."""
    server = start_server(engine, "--tls-handshake-timeout", str(DEADLINE), tls=tls_files)
    hello = client_hello()
    sock = socket.create_connection((server.host, server.port))
    started = time.monotonic()
    closed_after = None
    for byte in hello[:-1]:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed_after = time.monotonic() - started
            break
        if select.select([sock], [], [], 0.25)[0]:  # the pace of the trickle
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed_after = time.monotonic() - started
                break
        if time.monotonic() - started > DEADLINE + TIMEOUT:
            break
    assert closed_after is not None, "still open long after the deadline"
    assert DEADLINE * 0.5 <= closed_after <= DEADLINE + TIMEOUT / 2, closed_after
    (amy,) = server.room("amy")
    assert stats(amy)["disconnect_handshake_timeout"] == 1


def test_hostile_handshakes_cost_the_chatters_nothing(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    """Garbage, silence after the ClientHello, a reset mid-handshake, and 500 slow
    handshakes that all finish their ClientHello at once, while 10 clients chat: every
    line reaches every member, quickly, and each hostile connection is closed once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    server = start_server(
        engine, "--tls-handshake-timeout", str(DEADLINE), "--flood-rate", "0", tls=tls_files
    )
    plain = [Client(server.host, server.plain_port) for _ in range(5)]
    chatters = plain + [server.client() for _ in range(5)]
    for n, c in enumerate(chatters):
        c.register(f"c{n}")
    for c in chatters:
        c.ping()
    hello = client_hello()
    address = (server.host, server.port)
    kinds = {"garbage": 20, "silent": 20, "reset": 20, "slow": 500}
    outcome: dict[str, object] = {}

    def hostile() -> None:
        try:
            held: list[socket.socket] = []
            for n in range(kinds["garbage"]):
                s = socket.create_connection(address)
                s.sendall(b"GET / HTTP/1.1\r\n\r\n" if n % 2 else bytes(range(256)))
                held.append(s)
            for _ in range(kinds["silent"]):
                s = socket.create_connection(address)
                s.sendall(hello)
                held.append(s)
            for _ in range(kinds["reset"]):
                s = socket.create_connection(address)
                s.sendall(hello)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                s.close()
            slow = [socket.create_connection(address) for _ in range(kinds["slow"])]
            for s in slow:
                s.sendall(hello[:40])
            time.sleep(0.5)  # the behaviour under test (a slow client), not a wait
            for s in slow:
                s.sendall(hello[40:])  # 500 key exchanges at once; then silence
            held += slow
            deadline = time.monotonic() + DEADLINE + 3 * TIMEOUT
            outcome["open"] = sum(not closed_by_server(s, deadline) for s in held)
            for s in held:
                s.close()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=hostile)
    thread.start()
    worst = 0.0
    rounds = 0
    stop_at = time.monotonic() + 60
    while (thread.is_alive() or rounds < 40) and time.monotonic() < stop_at:
        sender = chatters[rounds % len(chatters)]
        started = time.monotonic()
        sender.send(f"m{rounds}")
        for other in chatters:
            if other is not sender:
                assert other.expect(rf"^{sender.nick}: m{rounds}$")[-1]
        worst = max(worst, time.monotonic() - started)
        rounds += 1
    thread.join(TIMEOUT)
    print(f"{engine}: worst round trip {worst:.3f} s over {rounds} rounds")
    assert "error" not in outcome, outcome
    assert outcome["open"] == 0, f"{outcome['open']} hostile connections left open"
    # Every member got every line (expect() would have failed), in lock step, and the
    # worst round trip to all nine others stays short. asyncio's SSL layer runs each
    # handshake step in the loop turn that read it, with no bound per turn, so 500
    # ClientHellos completing together cost its loop 500 key exchanges in one go: its
    # bound is looser (the reactor runs at most HANDSHAKES_PER_TURN steps per turn).
    bound = 3.0 if engine.startswith("asyncio") else 1.0
    assert worst < bound, f"a line took {worst:.2f} s to reach everyone ({rounds} rounds)"
    failed = kinds["garbage"] + kinds["reset"]
    timed_out = kinds["silent"] + kinds["slow"]
    counters = stats_when(
        chatters[0],
        lambda c: (
            c.get("disconnect_handshake_failed", 0) + c.get("disconnect_handshake_timeout", 0)
            >= failed + timed_out
        ),
    )
    assert counters.get("disconnect_handshake_failed", 0) == failed, counters
    assert counters.get("disconnect_handshake_timeout", 0) == timed_out, counters
    assert counters["clients"] == len(chatters)
    for c in chatters:
        c.no_more_lines()


# --------------------------------------------------------------------------- limits


def test_output_limit_drops_a_tls_reader_that_stopped_reading(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    """The limits measure the plaintext queue under the TLS layer, as for plain clients
    (the threaded engine has no queue: its send timeout drops the reader instead)."""
    server = start_server(
        engine,
        "--flood-rate", "0", "--max-sendq", "65536", "--sendq-soft", "0",
        "--send-timeout", "1",
        tls=tls_files,
    )  # fmt: skip
    writer, watcher = server.room("writer", "watcher")
    # A small receive window and an Ethernet MSS, so the kernel holds ~100 KB, not MiBs.
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1460)
    stalled.settimeout(TIMEOUT)
    stalled.connect((server.host, server.port))
    stalled_tls = tls_files.client_context().wrap_socket(stalled, server_hostname="localhost")
    stalled_tls.sendall(b"stalled\n")
    watcher.expect("stalled joined")
    line = "x" * 1000
    quit_line = None
    deadline = time.monotonic() + 30
    n = 0
    while quit_line is None and time.monotonic() < deadline:
        writer.send("\n".join(f"{n + i} {line}" for i in range(50)))
        n += 50
        got = watcher.expect(rf"^writer: {n - 1} ")
        quit_line = next((g for g in got if g.startswith("* stalled quit")), None)
    if quit_line is None:
        quit_line = watcher.expect(r"^\* stalled quit", 15)[-1]
    reason = "send timeout" if engine == "threaded" else "output buffer full"
    assert reason in quit_line
    key = "disconnect_send_timeout" if engine == "threaded" else "disconnect_sendq"
    assert stats(watcher)[key] == 1
    # The writer was never held up for long, and everyone else still gets every line.
    writer.send("after")
    assert watcher.expect("after")[-1] == "writer: after"
    stalled_tls.close()


# --------------------------------------------------------------------------- reload, close


def test_sighup_reloads_the_certificate_for_new_connections_only(
    engine: str, start_server: ServerFactory, tmp_path: Path
) -> None:
    first = TLSFiles(tmp_path, "first")
    second = TLSFiles(tmp_path, "second")
    # The broken file below is refused with an ERROR record, on purpose.
    refused = "TLS reload failed, keeping the current certificate"
    server = start_server(engine, "--log-level", "info", tls=first, allow=[refused])
    old_client = server.client("old")
    shutil.copyfile(second.cert, first.cert)
    shutil.copyfile(second.key, first.key)
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("TLS certificate reloaded")
    # New connections get the new certificate; the old CA no longer verifies it.
    new_client = Client(server.host, server.port, tls=second.client_context())
    new_client.register("new")
    with pytest.raises(ssl.SSLCertVerificationError):
        open_socket(server.host, server.port, TIMEOUT, first.client_context())
    # The connection made before the reload is still there and still talks.
    old_client.expect("new joined")
    old_client.send("still here")
    assert new_client.expect("still here")[-1] == "old: still here"
    # A broken file on disk is refused: the current certificate stays.
    first.cert.write_text("truncated\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr(refused)
    third = Client(server.host, server.port, tls=second.client_context())
    third.register("third")
    assert server.proc.poll() is None


def test_shutdown_says_goodbye_with_close_notify_and_drops_handshakes(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    server = start_server(engine, tls=tls_files)
    amy = server.client("amy")
    amy.ping()
    half = socket.create_connection((server.host, server.port))
    half.sendall(client_hello()[:30])  # in the middle of a handshake at shutdown
    time.sleep(0.2)
    started = time.monotonic()
    server.terminate()
    # wait_closed() ends on a clean TLS EOF; without close_notify it raises SSLEOFError.
    rest = amy.wait_closed()
    assert any("shutting down" in line for line in rest), rest
    assert closed_by_server(half, time.monotonic() + TIMEOUT)
    assert server.proc.wait(TIMEOUT) == 0
    assert time.monotonic() - started < 5.0


def test_quit_over_tls_ends_with_close_notify(
    engine: str, start_server: ServerFactory, tls_files: TLSFiles
) -> None:
    server = start_server(engine, tls=tls_files)
    amy, bob = server.room("amy", "bob")
    amy.send("/quit bye")
    amy.wait_closed()  # raises ssl.SSLEOFError if the server closed without close_notify
    assert "amy quit" in bob.expect("quit")[-1]


def test_reactor_runs_at_most_its_handshake_budget_per_turn(tls_files: TLSFiles) -> None:
    """In-process, turn by turn: 3 × HANDSHAKES_PER_TURN ClientHellos wait at once; each
    turn answers exactly HANDSHAKES_PER_TURN of them (the rest stay readable)."""
    from chatd.config import Config
    from chatd.engines.reactor import HANDSHAKES_PER_TURN, Reactor
    from chatd.service import ChatService

    config = Config(port=0, tls_port=0, tls_cert=str(tls_files.cert), tls_key=str(tls_files.key))
    service = ChatService(config)
    listeners = service.bind_listeners()
    reactor = Reactor(service, listeners)
    reactor._start_accepting()
    n = 3 * HANDSHAKES_PER_TURN
    hello = client_hello()
    clients = [socket.create_connection(listeners[1].sock.getsockname()[:2]) for _ in range(n)]
    try:
        for c in clients:
            c.sendall(hello)
        deadline = time.monotonic() + TIMEOUT
        while len(reactor.conns) < n and time.monotonic() < deadline:
            reactor.run_once()  # accepts; the hellos are read from the next turn on
        assert len(reactor.conns) == n
        waiting = set(clients)
        for _ in range(3):
            reactor.run_once()
            answered: set[socket.socket] = set()
            until = time.monotonic() + TIMEOUT
            while len(answered) < HANDSHAKES_PER_TURN and time.monotonic() < until:
                ready, _, _ = select.select(list(waiting - answered), [], [], 0.5)
                answered.update(ready)
            late, _, _ = select.select(list(waiting - answered), [], [], 0.2)
            assert len(answered) == HANDSHAKES_PER_TURN and not late
            waiting -= answered
        assert not waiting
    finally:
        for c in clients:
            c.close()
        for conn in list(reactor.conns.values()):
            conn.sock.close()
        for listener in listeners:
            listener.sock.close()
        reactor.selector.close()
