"""Nothing is lost or reordered under load; a slow reader costs nobody else a message;
SIGTERM ends the server cleanly. Real servers, real sockets, every engine."""

from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest

from chatwire import Client

SENDERS = 20
PER_SENDER = 300


def test_no_loss_when_twenty_clients_send_at_once(engine: str, start_server) -> None:
    server = start_server(engine, "--flood-rate", "0")
    clients = server.room(*(f"c{i}" for i in range(SENDERS)))
    expected = (SENDERS - 1) * PER_SENDER
    barrier = threading.Barrier(SENDERS)
    results: dict[int, dict[str, list[int]]] = {}
    errors: list[BaseException] = []

    def run(idx: int, client: Client) -> None:
        try:
            payload = "".join(f"{idx} {seq}\n" for seq in range(PER_SENDER)).encode()
            barrier.wait(10)
            client.sock.sendall(payload)
            seen: dict[str, list[int]] = {}
            count = 0
            deadline = time.monotonic() + 60
            while count < expected:
                line = client.read_line(max(0.1, deadline - time.monotonic()))
                nick, _, text = line.partition(": ")
                if not nick.startswith("c"):
                    continue
                seen.setdefault(nick, []).append(int(text.split()[1]))
                count += 1
            results[idx] = seen
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors, errors[:3]
    for idx, seen in results.items():
        assert f"c{idx}" not in seen, "a sender got its own message back"
        assert sorted(seen) == sorted(f"c{i}" for i in range(SENDERS) if i != idx)
        for nick, seqs in seen.items():
            assert seqs == list(range(PER_SENDER)), f"{nick} -> c{idx} out of order or lost"
    for client in clients:
        client.no_more_lines()


def _fill_until_dropped(writer: Client, watcher: Client, slow_nick: str) -> int:
    """Send 1 KB lines until the watcher hears the slow member quit; return lines sent.

    The watcher reads everything on the way and checks it got every line, in order.
    """
    payload = "p" * 1000
    sent = received = 0
    sel = selectors.DefaultSelector()
    sel.register(watcher.sock, selectors.EVENT_READ)
    deadline = time.monotonic() + 60
    dropped = False
    while time.monotonic() < deadline:
        if not dropped and sent - received < 200:
            writer.send("".join(f"{n} {payload}\n" for n in range(sent, sent + 50)))
            sent += 50
        if sel.select(0.05):
            for line in watcher.read_until(lambda _: True, 10):
                if line.startswith(f"{writer.nick}: "):
                    assert int(line.split()[1]) == received, "watcher lost or reordered a line"
                    received += 1
                elif slow_nick in line and "quit" in line:
                    dropped = True
            while b"\n" in watcher.buf:
                line = watcher.read_line()
                if line.startswith(f"{writer.nick}: "):
                    assert int(line.split()[1]) == received
                    received += 1
                elif slow_nick in line and "quit" in line:
                    dropped = True
        if dropped and received == sent:
            return sent
    raise AssertionError(f"slow reader never dropped (sent {sent}, watcher got {received})")


def test_slow_reader_is_dropped_and_others_miss_nothing(engine: str, start_server) -> None:
    server = start_server(
        engine,
        "--flood-rate",
        "0",
        "--max-sendq",
        "65536",
        "--sendq-soft",
        "0",
        "--send-timeout",
        "1",
    )
    writer, watcher = server.room("writer", "watcher")
    slow = Client(server.host, server.port)
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.register("slow")
    writer.ping()
    watcher.ping()
    # From here on "slow" reads nothing.
    sent = _fill_until_dropped(writer, watcher, "slow")
    assert sent > 0
    writer.send("after the drop")
    assert watcher.expect("after the drop")[-1] == "writer: after the drop"
    # The slow client finds the connection closed once it does read.
    with pytest.raises((EOFError, ConnectionResetError, TimeoutError)):
        while True:
            slow.read_line(10)


def test_sigterm_notifies_clients_and_exits_zero(engine: str, start_server) -> None:
    server = start_server(engine)
    amy, bob = server.room("amy", "bob")
    unregistered = Client(server.host, server.port)
    started = time.monotonic()
    server.terminate()
    for c in (amy, bob, unregistered):
        lines = c.wait_closed(10)
        assert any("shutting down" in line for line in lines), lines
    assert server.proc.wait(10) == 0
    assert time.monotonic() - started < 5


def test_bad_option_and_port_in_use_fail_with_one_line(start_server) -> None:
    from chatwire import run_chatd

    first = start_server("reactor")
    for args in (["--port", str(first.port)], ["--engine", "nope"], ["--max-line", "-1"]):
        proc = run_chatd(*args)  # fails on a traceback
        assert proc.returncode != 0
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip(), args


@pytest.mark.parametrize("dialect", ["line", "irc"])
def test_the_last_output_survives_input_the_server_never_read(
    engine: str, start_server, dialect: str
) -> None:
    """A client with a small window asks for a lot, quits, and keeps typing. Closing a
    socket with unread input makes the kernel reset it and throw away what it had not
    sent yet, so the server must read that input away (linger) before it closes. Before,
    this client got a reset and lost the tail of its replies and the goodbye."""
    server = start_server(engine, "--flood-rate", "0", "--irc-port", "0")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((server.host, server.port if dialect == "line" else server.irc_port))
    if dialect == "line":
        ask, last = b"amy\n" + b"/help\n" * 300 + b"/quit\n", b"* bye\n"
    else:
        ask = b"NICK amy\r\nUSER a 0 * :a\r\n" + b"HELP\r\n" * 300 + b"QUIT\r\n"
        last = b"ERROR :"
    sock.sendall(ask)
    sock.setblocking(False)
    typed, line = 0, b"x" * 1000 + b"\n"
    while typed < 400_000:  # what the kernels will hold, read by nobody yet
        try:
            typed += sock.send(line)
        except BlockingIOError:
            break
    sock.settimeout(10)
    received = bytearray()
    with sock:
        while chunk := sock.recv(65536):  # a reset raises ConnectionResetError here
            received += chunk
    assert typed > 65536
    assert last in received[-300:]
