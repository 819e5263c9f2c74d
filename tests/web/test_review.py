"""Defects found in review of the HTTP/WebSocket layer, each pinned down.

* A WebSocket session's timers on the reactor: the reactor keeps every ``call_at`` it is
  given, and the HttpSession asked again for a callback already pending on every timer
  cycle, so each cycle added one more pending callback, each of which asked again:
  memory per idle connection and timer work grew without bound over its life.
* Handshakes wsproto does not refuse cleanly (an HTTP/1.0 upgrade without Host, a header
  that is not ASCII, an Origin ``urlsplit`` rejects, a method other than GET): an
  exception in the session (a traceback in the log per attempt) instead of an answer.
* A page file was copied into every response (head and body joined), so pipelined
  requests for it queued one copy each; it is now queued by reference.

The in-process tests drive :class:`~chatd.web.http.HttpSession` as an engine would
(``test_frames``' helpers); one test runs the hostile handshakes against a real server
of every engine and checks its stderr.
"""

from __future__ import annotations

import heapq
import socket
from collections.abc import Iterator

import pytest
from test_frames import (
    NOW,
    Conn,
    RecordingTransport,
    client_events,
    make_service,
    responses,
    upgrade_request,
    ws_member,
)
from wsclient import http_port, problems_since, read_response, stderr_size
from wsproto.events import AcceptConnection, Ping, TextMessage

from chatd import web
from chatd.net.transport import DisconnectReason
from chatd.web import http
from chatwire import ENGINES, TIMEOUT, Server, open_socket

# =========================================================================== timers


class ReactorTransport(RecordingTransport):
    """The reactor's timers: every ``call_at`` is kept until its time, duplicates too."""

    def __init__(self) -> None:
        super().__init__()
        self.heap: list[float] = []

    def call_at(self, when: float) -> None:
        super().call_at(when)
        heapq.heappush(self.heap, when)


def reactor_conn(**options: object) -> tuple[Conn, ReactorTransport]:
    """A :class:`Conn` whose transport keeps timers as the reactor does."""
    service = make_service(**options)
    conn = Conn.__new__(Conn)
    conn.service = service
    conn.now = NOW
    conn.transport = transport = ReactorTransport()
    session = service.accept(web.DIALECT, "10.0.0.7", NOW)
    assert isinstance(session, http.HttpSession)
    conn.session = session
    session.connection_made(transport, NOW)
    return conn, transport


def test_a_websocket_session_keeps_one_pending_timer_however_many_cycles_it_lives() -> None:
    """An IRC client over WebSocket that answers every PING, for hours: the reactor
    holds one pending callback for it at any time (before the fix: one more per cycle,
    and every one of them ran at every deadline)."""
    conn, transport = reactor_conn(ping_interval=60.0)
    client, request = upgrade_request("/irc", subprotocols=["text.ircv3.net"])
    conn.feed(request)
    assert isinstance(client_events(client, transport.take())[0], AcceptConnection)
    conn.feed(client.send(TextMessage("NICK bob")) + client.send(TextMessage("USER b 0 * :b")))
    assert b" 001 bob " in transport.take()
    callbacks = 0
    most_pending = 0
    while conn.now < NOW + 6 * 3600:
        when = heapq.heappop(transport.heap)
        callbacks += 1
        conn.now = when
        conn.session.on_timer(when)
        assert transport.closed is None, transport.closed
        if b"PING" in transport.take():
            conn.now = when + 1
            conn.feed(client.send(TextMessage("PONG :irc.test")))
        most_pending = max(most_pending, len(transport.heap))
    # Six hours of 60 s pings: two callbacks a cycle at most (the ping, the pong's wait).
    assert most_pending <= 2, most_pending
    assert callbacks <= 2 * 6 * 60 + 5, callbacks


def test_a_timer_callback_that_comes_a_hair_early_is_asked_for_again() -> None:
    """asyncio may run a callback up to its clock resolution before its time: the
    session asks again rather than losing its deadline (and its slot with it)."""
    conn = Conn(make_service(), NOW)
    deadline = NOW + http.REQUEST_SECONDS
    assert conn.transport.timer == deadline
    conn.transport.timer = None
    conn.timer(deadline - 1e-9)
    assert conn.transport.closed is None
    assert conn.transport.timer == deadline
    conn.timer(deadline)
    ((status, _, _),) = responses(conn.transport.take())
    assert status == 408 and conn.session.lost
    assert conn.service.admission.clients == 0


def test_a_kept_alive_connection_still_times_out_once_its_deadline_moved_later() -> None:
    """Requests move the deadline later; the earlier callback finds nothing due and asks
    for the later one, on an engine that keeps only the earliest request."""
    conn = Conn(make_service(), NOW)
    asked: list[float] = []
    conn.transport.call_at = asked.append  # type: ignore[method-assign,assignment]
    conn.now = NOW + 4
    conn.feed(b"GET /health HTTP/1.1\r\nHost: chat.test\r\n\r\n")
    conn.transport.take()
    conn.timer(NOW + http.REQUEST_SECONDS)  # the first deadline's callback: nothing due
    assert conn.transport.closed is None
    assert asked[-1] == NOW + 4 + http.REQUEST_SECONDS
    conn.timer(NOW + 4 + http.REQUEST_SECONDS)
    assert conn.transport.closed is not None
    assert conn.transport.closed[0] is DisconnectReason.IDLE


def test_a_ping_between_cycles_does_not_add_callbacks() -> None:
    conn, transport = reactor_conn(ping_interval=60.0)
    client, request = upgrade_request("/irc", subprotocols=["text.ircv3.net"])
    conn.feed(request)
    client_events(client, transport.take())
    conn.feed(client.send(TextMessage("NICK amy")) + client.send(TextMessage("USER a 0 * :a")))
    transport.take()
    for i in range(200):
        conn.now = NOW + 0.5 * i
        conn.feed(client.send(Ping(b"x")))
        transport.take()
    assert len(transport.heap) <= 2, transport.heap


# =========================================================================== handshakes

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
UPGRADE = (
    f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
    "Sec-WebSocket-Version: 13\r\n"
).encode()

#: (name, request head, the status it must get)
HOSTILE_HANDSHAKES = [
    ("http/1.0 without Host", b"GET /line HTTP/1.0\r\n" + UPGRADE + b"\r\n", 400),
    (
        "subprotocol not ASCII",
        b"GET /irc HTTP/1.1\r\nHost: a\r\n" + UPGRADE + b"Sec-WebSocket-Protocol: \xff\r\n\r\n",
        400,
    ),
    (
        "extension not ASCII",
        b"GET /irc HTTP/1.1\r\nHost: a\r\n" + UPGRADE + b"Sec-WebSocket-Extensions: \xff\r\n\r\n",
        400,
    ),
    (
        "origin urlsplit refuses",
        b"GET /irc HTTP/1.1\r\nHost: a\r\nOrigin: http://[::1\r\n" + UPGRADE + b"\r\n",
        403,
    ),
    ("POST upgrade", b"POST /line HTTP/1.1\r\nHost: a\r\n" + UPGRADE + b"\r\n", 400),
]


@pytest.mark.parametrize(
    ("request_head", "status"),
    [pytest.param(head, status, id=name) for name, head, status in HOSTILE_HANDSHAKES],
)
def test_a_hostile_handshake_gets_an_http_error_and_its_slot_back(
    request_head: bytes, status: int
) -> None:
    service = make_service()
    conn = Conn(service, NOW)
    conn.feed(request_head)  # before the fix: an exception out of the session
    ((got, headers, body),) = responses(conn.transport.take())
    assert got == status, body
    assert headers["connection"] == "close"
    assert conn.session.inner is None and conn.session.lost
    assert service.stats["websocket_refused"] == 1
    assert service.stats["websocket_upgrades"] == 0
    assert service.admission.clients == 0


@pytest.fixture(scope="module", params=ENGINES)
def review_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    server = Server(
        request.param,
        "--ephemeral",
        "--http-port",
        "0",
        "--server-name",
        "irc.test",
        log_dir=tmp_path_factory.mktemp("review"),
    )
    try:
        yield server
    finally:
        server.finish()


def test_hostile_handshakes_leave_no_traceback_on_any_engine(review_server: Server) -> None:
    offset = stderr_size(review_server)
    port = http_port(review_server)
    for name, head, status in HOSTILE_HANDSHAKES:
        sock = open_socket("127.0.0.1", port, TIMEOUT, None)
        try:
            sock.sendall(head)
            response = read_response(sock, wait_close=True)
        finally:
            sock.close()
        assert response.status == status, (name, response)
        assert response.closed, name
    # The server still serves, and wrote no traceback meanwhile.
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(sock).status == 200
    assert problems_since(review_server, offset) == []


# =========================================================================== responses


def test_a_page_file_is_queued_by_reference_in_every_response() -> None:
    """Pipelined requests for app.js queue the one bytes object the server holds, not
    a copy per response."""
    conn = Conn(make_service(), NOW)
    conn.feed(b"GET /static/app.js HTTP/1.1\r\nHost: chat.test\r\n\r\n" * 3)
    body = conn.session.web.static.files["/static/app.js"][0]
    assert len(body) > 1000
    assert sum(1 for piece in conn.transport.writes if piece is body) == 3
    assert [r[0] for r in responses(conn.transport.take())] == [200, 200, 200]
    # HEAD: the head alone.
    conn.feed(b"HEAD /static/app.js HTTP/1.1\r\nHost: chat.test\r\n\r\n")
    ((status, headers, got),) = responses(conn.transport.take())
    assert status == 200 and got == b"" and int(headers["content-length"]) == len(body)


def test_pipelined_requests_are_answered_a_few_per_turn() -> None:
    """100 requests in one read held the loop for all 100 responses (25 ms on the test
    machine); now a turn answers a few and asks the engine to come back after the
    others, and the rest follow in order."""
    conn = Conn(make_service(), NOW)
    delay = conn.feed(b"GET /health HTTP/1.1\r\nHost: chat.test\r\n\r\n" * 20)
    assert delay is not None and 0 < delay < 0.1
    assert len(responses(conn.transport.take())) == http.REQUESTS_PER_TURN
    statuses = []
    while delay is not None:
        delay = conn.turn()
        statuses += [r[0] for r in responses(conn.transport.take())]
    assert statuses == [200] * (20 - http.REQUESTS_PER_TURN)
    assert conn.transport.closed is None
    # Exactly REQUESTS_PER_TURN in one read is one turn, with no pause.
    conn = Conn(make_service(), NOW)
    assert conn.feed(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n" * http.REQUESTS_PER_TURN) is None


@pytest.mark.parametrize("path", ["/irc", "/line"])
def test_head_of_a_websocket_endpoint_gets_a_426_head_and_the_connection_goes_on(
    path: str,
) -> None:
    """h11 refused the 426's body for a HEAD: the fallback wrote a raw response with a
    body a HEAD must not have, without the security headers, and closed."""
    conn = Conn(make_service(), NOW)
    conn.feed(
        f"HEAD {path} HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n".encode()
    )
    data = conn.transport.take()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 ")
    assert b"Content-Security-Policy" in head and b"Connection: close" not in head
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body in between, and served on
    assert conn.transport.closed is None


def test_a_head_request_refused_for_its_body_gets_a_head_only() -> None:
    conn = Conn(make_service(), NOW)
    conn.feed(b"HEAD /health HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    data = conn.transport.take()
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ") and b"Content-Security-Policy" in head
    assert rest == b""
    assert conn.transport.closed is not None


def test_bytes_in_counts_a_websocket_message_once() -> None:
    """The frames were counted by the HTTP layer and their lines again by the dialect
    session: 106 bytes on the wire showed as 207 in bytes_in (and /metrics)."""
    service = make_service()
    conn, client = ws_member(service, "amy")
    before = service.stats["bytes_in"]
    data = client.send(TextMessage("x" * 100))
    conn.feed(data)
    counted = service.stats["bytes_in"] - before
    assert 100 <= counted <= len(data), (counted, len(data))
