"""Hostile input on the HTTP listener, each refused, on every engine, and nobody else loses a line.

Each attack runs while a pair of line users chats on the TCP line port (:class:`Pair`):
before, during and after it, every line each of them sends reaches the other, once, in
order. The attacks: a text message that is not UTF-8 (Close 1007), a message over the
limit (Close 1009, refused from its header, never buffered), a message that never ends
(Close 1008 after the fragment limit), a ping flood (the flood budget throttles it), a
request that never arrives (408 at the deadline, however slowly its bytes trickle in),
a request head over 8 KB (431), a request with a body (413), and garbage (400).

Most tests share one server per engine (their own nicks and rooms; a test still fails
on a traceback its server wrote meanwhile); the request deadline is tested in-process,
with the deadline shortened to a second (``REQUEST_SECONDS`` is a constant, no option).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wsclient import (
    BINARY_IRC,
    CONTINUATION,
    PING,
    TEXT,
    TEXT_IRC,
    Refused,
    WsClient,
    client_frame,
    http_port,
    problems_since,
    read_response,
    recv_some,
    request_bytes,
    stderr_size,
    wait_closed,
)

from chatd.web import http
from chatwire import ENGINES, TIMEOUT, Client, Server, open_socket

OPTIONS = ("--ephemeral", "--irc-port", "0", "--http-port", "0", "--server-name", "irc.test")
#: The server's largest message with the default --max-line (4096): 4608 + 2 bytes.
MAX_MESSAGE = 4610
#: The default flood budget (--flood-burst, --flood-rate).
FLOOD_BURST = 40
FLOOD_RATE = 10.0


@pytest.fixture(scope="module", params=ENGINES)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server per engine for the attacks (each with its own nicks and rooms)."""
    server = Server(request.param, *OPTIONS, log_dir=tmp_path_factory.mktemp("hostile"))
    try:
        yield server
    finally:
        server.finish()


@pytest.fixture
def hostile(shared_server: Server) -> Iterator[Server]:
    """The shared server; the test fails if the server wrote a traceback or an ERROR
    record meanwhile, or died."""
    offset = stderr_size(shared_server)
    yield shared_server
    problems = problems_since(shared_server, offset)
    if problems:
        pytest.fail(f"{shared_server.describe()}: " + "; ".join(problems), pytrace=False)


class Pair:
    """Two line users in a room of their own, on the TCP line port: :meth:`chat` sends
    ``n`` lines each way and checks every one arrived, once, in order (whatever else the
    other received meanwhile)."""

    def __init__(self, port: int, tag: str, room: str | None = None) -> None:
        self.tag = tag
        self.room = room or f"#{tag}"
        self.a = Client("127.0.0.1", port)
        self.a.register(f"{tag}a")
        self.b = Client("127.0.0.1", port)
        self.b.register(f"{tag}b")
        for client in (self.a, self.b):
            client.send(f"/join {self.room}")
            client.expect(rf"^\* you joined {self.room}\b")
        self.a.expect(rf"^\* {tag}b joined {self.room}")
        self.sent = 0

    def chat(self, n: int = 4) -> None:
        for sender, receiver in ((self.a, self.b), (self.b, self.a)):
            lines = [f"{self.tag} line {self.sent + i}" for i in range(n)]
            self.sent += n
            for line in lines:
                sender.send(line)
            prefix = f"{sender.nick}: "
            received = receiver.read_until(_is(prefix + lines[-1]))
            got = [x for x in received if x.startswith(prefix)]
            assert got == [prefix + line for line in lines], "a line was lost or reordered"


def _is(wanted: str) -> Callable[[str], bool]:
    return lambda line: line == wanted


def refused_with(client: WsClient, code: int) -> None:
    close = client.wait_close()
    assert close.code == code, client.close_description()


# =========================================================================== WebSocket


def test_a_text_message_that_is_not_utf8_closes_with_1007(hostile: Server) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "utf")
    pair.chat()
    line = WsClient(port, "/line")
    line.register_line("utfline")
    irc = WsClient(port, "/irc", subprotocols=[TEXT_IRC])
    irc.register_irc("utfirc")
    # A character split between two fragments is still UTF-8: the message is checked whole.
    e_acute = "\u00e9".encode()
    line.send_raw(
        client_frame(TEXT, b"/msg utfb caf" + e_acute[:1], fin=False)
        + client_frame(CONTINUATION, e_acute[1:])
    )
    pair.b.expect("^utfline \\(private\\): caf\u00e9$")
    line.send_raw(client_frame(TEXT, b"/msg utfb caf\xe9"))
    irc.send_raw(client_frame(TEXT, b"PRIVMSG utfb :\xff\xfe"))
    pair.chat()
    refused_with(line, 1007)
    refused_with(irc, 1007)
    pair.chat()
    # Binary messages carry bytes as they are: the same bytes do not end the session.
    binary = WsClient(port, "/", subprotocols=[BINARY_IRC])
    binary.register_irc("utfbin")
    binary.send_bytes(b"PRIVMSG utfb :caf\xe9")
    binary.sync()
    assert binary.close_event is None and not binary.eof
    pair.chat()


def test_an_oversized_message_closes_with_1009_and_is_never_buffered(hostile: Server) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "big")
    pair.chat()
    # At the limit the frame layer lets it through, and the line dialect refuses the line.
    at_limit = WsClient(port, "/line")
    at_limit.register_line("biglimit")
    at_limit.send_text("z" * MAX_MESSAGE)
    assert at_limit.expect(r"^! ")[-1].startswith("! line too long")
    assert at_limit.sync() == []
    # One frame that claims more: refused from its header, no payload sent at all.
    header_only = WsClient(port, "/line")
    header_only.register_line("bighead")
    header_only.send_raw(client_frame(TEXT, length=1 << 30))
    refused_with(header_only, 1009)
    pair.chat()
    # Fragments that add up to more.
    fragments = WsClient(port, "/irc", subprotocols=[TEXT_IRC])
    fragments.register_irc("bigfrag")
    fragments.send_raw(client_frame(TEXT, b"x" * 4000, fin=False))
    fragments.send_raw(client_frame(CONTINUATION, b"y" * 4000, fin=False))
    refused_with(fragments, 1009)
    pair.chat()
    # Pushing megabytes behind such a header costs the server nothing: it reads none of it.
    before = hostile.rss_kib()
    pusher = WsClient(port, "/line")
    pushed = 0
    chunk = client_frame(TEXT, length=1 << 40) + bytes(64 * 1024)
    try:
        while pushed < 8 << 20:
            pusher.sock.sendall(chunk)
            pushed += len(chunk)
            chunk = bytes(64 * 1024)
    except OSError:
        pass  # reset: the server closed it
    wait_closed(pusher.sock)  # (its Close 1009 may be lost to the reset)
    pair.chat()
    growth = hostile.rss_kib() - before
    assert growth < 2048, f"the server grew by {growth} KiB while a client pushed {pushed} B"
    pusher.abort()
    pair.chat()


def test_a_message_that_never_ends_closes_with_1008_at_the_fragment_limit(
    hostile: Server,
) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "frag")
    pair.chat()
    empty = WsClient(port, "/line")
    empty.register_line("fragempty")
    empty.send_raw(
        client_frame(TEXT, b"", fin=False) + client_frame(CONTINUATION, b"", fin=False) * 100
    )
    small = WsClient(port, "/", subprotocols=[TEXT_IRC])
    small.register_irc("fragsmall")
    # One byte each, with pings in between (control frames may interleave; they are no
    # fragments, and they do not reset the count).
    endless = client_frame(TEXT, b"P", fin=False)
    for _ in range(100):
        endless += client_frame(CONTINUATION, b"x", fin=False) + client_frame(PING, b"k")
    small.send_raw(endless)
    pair.chat()
    refused_with(empty, 1008)
    refused_with(small, 1008)
    pair.chat()


def flooder(port: int, nick: str, room: str) -> WsClient:
    client = WsClient(port, "/line")
    client.register_line(nick)
    client.send_line(f"/join {room}")
    client.expect(rf"^\* you joined {room}\b")
    return client


def test_a_ping_flood_costs_the_room_nothing_and_its_sender_waits(hostile: Server) -> None:
    """Thousands of pings at once, never reading: every chat line of the room still
    arrives in order (the flooder is in the room too), and what the flooder sends next
    waits for the flood budget its pings spent."""
    port = http_port(hostile)
    flood = flooder(port, "pingflood", "#flood")
    pair = Pair(hostile.port, "flood", room="#flood")
    pair.chat()
    flood.send_raw(client_frame(PING, b"") * 5000)
    pair.chat(10)
    flood.send_line("a line after 5000 pings")
    pair.chat(10)
    with pytest.raises(TimeoutError):
        pair.b.expect(r"^pingflood: a line after", timeout=1.0)
    pair.chat()


def test_pongs_to_a_ping_flood_wait_for_the_flood_budget(hostile: Server) -> None:
    """Every ping costs a flood token (http.py's theory of operation): a burst of them is
    answered as fast as the budget allows, as IRC PINGs on TCP are, or the sender is
    dropped; not all at once. Counted for a second and a half after the burst."""
    port = http_port(hostile)
    flood = flooder(port, "pongcount", "#pongs")
    pair = Pair(hostile.port, "pongs", room="#pongs")
    sent_at = time.monotonic()
    flood.send_raw(client_frame(PING, b"") * 2000)
    pair.chat()
    deadline = time.monotonic() + 1.5
    pongs = 0
    try:
        while time.monotonic() < deadline:
            flood.wait_pong(timeout=max(0.01, deadline - time.monotonic()))
            pongs += 1
    except TimeoutError:
        pass
    except EOFError:
        return  # dropped: also an answer to a flood
    allowed = FLOOD_BURST + FLOOD_RATE * (time.monotonic() - sent_at) + 10
    assert pongs <= allowed, f"{pongs} pongs in {time.monotonic() - sent_at:.1f} s"
    pair.chat()


def test_one_message_is_one_line_even_with_a_newline_inside(hostile: Server) -> None:
    """A message is one line for the dialect (http.py: "each message becomes one line"):
    a newline inside it must not start a second command, in either dialect."""
    port = http_port(hostile)
    pair = Pair(hostile.port, "nl")
    line = WsClient(port, "/line")
    line.register_line("nlline")
    line.send_line("/msg nlb first\n/nick mallory")
    answered = line.sync()
    assert not any("mallory" in x for x in answered), answered
    pair.a.send("/msg nlline still you?")
    assert pair.a.expect(r"^(\* -> |! )")[-1] == "* -> nlline: still you?", "the nick changed"
    irc = WsClient(port, "/irc", subprotocols=[TEXT_IRC])
    irc.register_irc("nlirc")
    irc.send_line("PRIVMSG nlb :one\r\nPRIVMSG nlb :smuggled")
    irc.sync()  # what it sent has been handled, and delivered before b's round trip
    seen = pair.b.ping()
    assert not any("smuggled" in x for x in seen), seen
    pair.chat()


# =========================================================================== HTTP


def raw_exchange(port: int, data: bytes, timeout: float = TIMEOUT) -> tuple[int, bool]:
    """Send ``data`` as it is; the response's status and whether the server then closed."""
    sock = open_socket("127.0.0.1", port, timeout)
    try:
        sock.sendall(data)
        response = read_response(sock, wait_close=True, timeout=timeout)
        return response.status, response.closed
    finally:
        sock.close()


def test_a_request_head_over_8_kb_gets_431(hostile: Server) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "head")
    host = f"127.0.0.1:{port}"
    filler = [("X-Filler", "a" * 9000)]
    status, closed = raw_exchange(port, request_bytes("GET", "/", host=host, headers=filler))
    assert status in (431, 400) and closed
    pair.chat()
    # A head that never ends is cut once it passes the limit, not at the deadline.
    started = time.monotonic()
    endless = request_bytes("GET", "/", host=host)[:-2] + b"X-Endless: " + b"b" * 9000
    status, closed = raw_exchange(port, endless, timeout=5.0)
    assert status in (431, 400) and closed
    assert time.monotonic() - started < http.REQUEST_SECONDS
    pair.chat()
    # A request line alone that long.
    status, closed = raw_exchange(port, request_bytes("GET", "/" + "p" * 9000, host=host))
    assert status in (431, 414, 400) and closed
    pair.chat()


def test_a_request_with_a_body_gets_413(hostile: Server) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "body")
    host = f"127.0.0.1:{port}"
    with_length = request_bytes("GET", "/health", host=host, headers=[("Content-Length", "5")])
    assert raw_exchange(port, with_length + b"hello") == (413, True)
    pair.chat()
    chunked = request_bytes("GET", "/health", host=host, headers=[("Transfer-Encoding", "chunked")])
    assert raw_exchange(port, chunked + b"5\r\nhello\r\n0\r\n\r\n") == (413, True)
    pair.chat()
    # A WebSocket upgrade with a body is refused all the same, and starts no session.
    upgrade = request_bytes(
        "GET",
        "/line",
        host=host,
        headers=[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
            ("Content-Length", "4"),
        ],
    )
    assert raw_exchange(port, upgrade + b"nick") == (413, True)
    pair.chat()


@pytest.mark.parametrize(
    ("tag", "garbage"),
    [
        ("tls", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"),
        ("nick", b"alice\r\n\r\n"),
        ("colon", b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
        ("hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("nohost", b"GET / HTTP/1.1\r\n\r\n"),
    ],
)
def test_garbage_instead_of_http_gets_400(hostile: Server, tag: str, garbage: bytes) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "junk" + tag)
    status, closed = raw_exchange(port, garbage)
    assert status == 400 and closed, status
    pair.chat()


def test_a_bad_websocket_handshake_gets_400_and_no_session(hostile: Server) -> None:
    port = http_port(hostile)
    pair = Pair(hostile.port, "hand")
    host = f"127.0.0.1:{port}"
    for headers in (
        [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "8"),
        ],
    ):
        status, closed = raw_exchange(
            port, request_bytes("GET", "/line", host=host, headers=headers)
        )
        assert status in (400, 426) and closed, status
    with pytest.raises(Refused) as caught:
        WsClient(port, "/nowhere")
    assert caught.value.status == 404
    pair.chat()


def chat_client(port: int) -> Client | None:
    """A line client, or None when the server is full."""
    try:
        return Client("127.0.0.1", port)
    except (EOFError, ConnectionResetError):
        return None


def test_refused_requests_give_their_slots_back(engine: str, start_server: Any) -> None:
    """With --max-clients 6, thirty refused or finished HTTP connections later, four more
    chat clients still get in besides the pair: none of them kept its slot."""
    server = start_server(engine, *OPTIONS, "--max-clients", "6")
    port = http_port(server)
    pair = Pair(server.port, "slot")
    host = f"127.0.0.1:{port}"
    close = [("Connection", "close")]
    for _ in range(5):
        raw_exchange(port, b"junk\r\n\r\n")
        raw_exchange(port, request_bytes("POST", "/", host=host, headers=close))
        with_body = request_bytes("GET", "/", host=host, headers=[("Content-Length", "1")])
        raw_exchange(port, with_body + b"x")
        with pytest.raises(Refused):
            WsClient(port, "/line", origin="http://evil.example")
        bad = WsClient(port, "/line")
        bad.send_raw(client_frame(TEXT, b"\xff"))
        refused_with(bad, 1007)
        abandoned = WsClient(port, "/irc")
        abandoned.abort()
    pair.chat()
    # The last closes may still be on their way to the server: a few tries, each after a
    # round trip of the pair.
    deadline = time.monotonic() + TIMEOUT
    while True:
        got = [chat_client(server.port) for _ in range(4)]
        clients = [c for c in got if c is not None]
        if len(clients) == 4:
            break
        for c in clients:
            c.close()
        assert time.monotonic() < deadline, "HTTP connections kept their --max-clients slots"
        pair.chat(1)
    for i, c in enumerate(clients):
        c.register(f"slot{i}")
    pair.chat()


# =========================================================================== the deadline


#: The request deadline (``--register-timeout``, which bounds it), and how late a close
#: may come (a loaded CI machine); a head trickled in over several seconds must not
#: stretch it.
DEADLINE = 1.0
LATE = 2.0


def test_a_slow_request_gets_408_at_the_deadline(engine: str, start_server: Any) -> None:
    """Slowloris: a head sent a byte at a time, slower than the deadline allows, is cut
    at the deadline counted from the connection (a byte does not buy more time); one
    never finished, never started, or never HTTP at all, the same; a kept-alive
    connection that goes quiet is closed then too, without a 408. The deadline is
    shortened with ``--register-timeout`` (a request is a connection that has not named
    itself yet); all wait at once, the pair chats."""
    server = start_server(engine, *OPTIONS, "--register-timeout", str(DEADLINE))
    ports = {"line": server.port, "http": http_port(server)}
    pair = Pair(ports["line"], "slow")
    pair.chat()
    head = request_bytes("GET", "/health", host=f"127.0.0.1:{ports['http']}")
    starts = {
        "half a head": head[:20],
        "nothing": b"",
        "a TLS hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(200),
        "kept alive": head,
    }
    waiting = {}
    for name, data in starts.items():
        sock = open_socket("127.0.0.1", ports["http"])
        waiting[name] = (sock, time.monotonic())
        sock.sendall(data)
    # A byte every 0.1 s: the whole head would take over 4 s.
    trickle = open_socket("127.0.0.1", ports["http"])
    started = time.monotonic()
    answer = b""
    for byte in head:
        try:
            trickle.sendall(bytes((byte,)))
        except OSError:
            break  # closed already
        try:
            answer = recv_some(trickle, time.monotonic() + 0.1)
        except TimeoutError:
            pair.chat(1)
            continue
        break
    answer += wait_eof(trickle)
    took = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
    assert took < DEADLINE + LATE, f"cut after {took:.2f} s, not at the deadline"
    trickle.close()
    for name, (sock, opened) in waiting.items():
        answer = wait_eof(sock)
        took = time.monotonic() - opened
        if name == "kept alive":
            first = read_response(sock, buf=answer)
            assert first.status == 200 and first.rest == b"", name
        elif name == "a TLS hello":  # h11 may see at once that it is no request line
            assert answer.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 400 ")), answer[:100]
        else:
            assert answer.startswith(b"HTTP/1.1 408 "), (name, answer[:100])
        assert took < DEADLINE + LATE, (name, took)
        if name != "a TLS hello":
            assert took > DEADLINE - 0.2, (name, took)  # nor before it
        sock.close()
    pair.chat()


def wait_eof(sock: socket.socket, buf: bytes = b"", timeout: float = TIMEOUT) -> bytes:
    """What the server sends until it closes (TimeoutError if it does not)."""
    deadline = time.monotonic() + timeout
    data = buf
    while chunk := recv_some(sock, deadline):
        data += chunk
    return data
