"""The WebSocket layer without a socket: :mod:`chatd.web.frames` and an HttpSession driven
by hand.

The client's frames are wsproto's (its client-side ``Connection``, masked as a browser
masks them), fed to :class:`FrameReader` whole, byte by byte, in splits hypothesis picks,
and with trailing junk (h11's decoder tests do the same); what a well-behaved client
never sends is built by hand (``wsclient.client_frame``). The server's frames are
decoded with wsproto's client, so a frame it would refuse fails here.

The last part drives :class:`~chatd.web.http.HttpSession` as an engine would, through a
recording transport and a real :class:`~chatd.service.ChatService` (hub, router, line
sessions): deadlines fire when the test says, not after seconds.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsclient import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, client_frame, server_frames
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from chatd import web
from chatd.config import Config
from chatd.dialects import DIALECTS
from chatd.net.transport import DisconnectReason
from chatd.service import ChatService
from chatd.web import frames, http
from chatd.web.frames import (
    FRAMED_KEPT,
    MAX_CONTROL,
    MAX_FRAGMENTS,
    CloseCode,
    FrameError,
    Framer,
    FrameReader,
)

#: The reader's limit in these tests (the server's is the line limit plus a margin).
LIMIT = 4610


def client_bytes(*events: Event) -> bytes:
    """What a client (wsproto, masking as RFC 6455 requires) sends for ``events``."""
    conn = Connection(ConnectionType.CLIENT)
    return b"".join(conn.send(event) for event in events)


def drain(reader: FrameReader) -> list[tuple[int, bytes]]:
    """Every message and control frame the reader has whole."""
    out = []
    while (got := reader.next_message()) is not None:
        out.append(got)
    return out


def feed_in(reader: FrameReader, pieces: Iterator[bytes] | list[bytes]) -> list[tuple[int, bytes]]:
    """Feed the pieces one by one, pulling after each (as the server does per read)."""
    out = []
    for piece in pieces:
        reader.feed(piece)
        out.extend(drain(reader))
    return out


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITS = [whole, bytewise]


def decode_server(data: bytes) -> list[Event]:
    """The server's frames as wsproto's client reads them (it refuses bad ones)."""
    conn = Connection(ConnectionType.CLIENT)
    conn.receive_data(data)
    events = list(conn.events())
    for event in events:
        if isinstance(event, CloseConnection) and event.code in (1002, 1007):
            raise AssertionError(f"wsproto's client refused the server's frames: {event}")
    return events


def messages_of(data: bytes) -> list[str | bytes]:
    """Whole messages (fragments joined) in the server's ``data``."""
    out: list[str | bytes] = []
    parts: list[str | bytes] = []
    for event in decode_server(data):
        assert isinstance(event, Message), event
        parts.append(event.data)
        if event.message_finished:
            if isinstance(parts[0], str):
                out.append("".join(str(p) for p in parts))
            else:
                out.append(b"".join(bytes(p) for p in parts))  # type: ignore[arg-type]
            parts = []
    assert not parts, "a message left unfinished"
    return out


# =========================================================================== FrameReader

#: (what the client sends, what the reader yields): well-formed input.
CASES: dict[str, tuple[list[Event], list[tuple[int, bytes]]]] = {
    "text": ([TextMessage("hello")], [(TEXT, b"hello")]),
    "utf-8 text": ([TextMessage("h\u00e9llo \u2603")], [(TEXT, "h\u00e9llo \u2603".encode())]),
    "binary": ([BytesMessage(b"\x00\xff\r\n")], [(BINARY, b"\x00\xff\r\n")]),
    "empty text": ([TextMessage("")], [(TEXT, b"")]),
    "125 bytes": ([TextMessage("a" * 125)], [(TEXT, b"a" * 125)]),
    "126 bytes": ([TextMessage("b" * 126)], [(TEXT, b"b" * 126)]),
    "the limit": ([BytesMessage(b"c" * LIMIT)], [(BINARY, b"c" * LIMIT)]),
    "two messages": (
        [TextMessage("one"), BytesMessage(b"two")],
        [(TEXT, b"one"), (BINARY, b"two")],
    ),
    "fragments joined": (
        [
            TextMessage("ab", message_finished=False),
            TextMessage("", message_finished=False),
            TextMessage("cd", message_finished=False),
            TextMessage("ef"),
        ],
        [(TEXT, b"abcdef")],
    ),
    "a ping between fragments": (
        [BytesMessage(b"ab", message_finished=False), Ping(b"p"), BytesMessage(b"cd")],
        [(PING, b"p"), (BINARY, b"abcd")],
    ),
    "ping, pong, close": (
        [Ping(b"x" * MAX_CONTROL), Pong(b""), CloseConnection(1000, "bye")],
        [(PING, b"x" * MAX_CONTROL), (PONG, b""), (CLOSE, struct.pack("!H", 1000) + b"bye")],
    ),
}


@pytest.mark.parametrize("split", SPLITS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("case", list(CASES))
def test_reader_yields_wsprotos_client_frames_however_split(
    split: Callable[[bytes], list[bytes]], case: str
) -> None:
    sent, expected = CASES[case]
    reader = FrameReader(LIMIT)
    assert feed_in(reader, split(client_bytes(*sent))) == expected
    assert reader.buf is None and reader.message is None and reader.buffered == 0


@pytest.mark.parametrize("case", list(CASES))
def test_reader_keeps_trailing_junk_as_the_start_of_the_next_frame(case: str) -> None:
    """h11's third way: the same events, then the reader waits, holding the junk."""
    sent, expected = CASES[case]
    following = client_bytes(TextMessage("next one"))
    for cut in (1, 2, 5, len(following) - 1):
        junk = following[:cut]
        reader = FrameReader(LIMIT)
        assert feed_in(reader, [client_bytes(*sent) + junk]) == expected
        assert reader.next_message() is None
        assert reader.buffered == len(junk)
        reader.feed(following[cut:])
        assert drain(reader) == [(TEXT, b"next one")]
        assert reader.buf is None


@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=4),
)
def test_reader_gives_the_same_messages_for_any_split(cuts: list[int], texts: list[str]) -> None:
    events: list[Event] = []
    for i, text in enumerate(texts):
        events.append(TextMessage(text, message_finished=i == len(texts) - 1))
        if i == 0:
            events.append(Ping(b"mid"))
    data = client_bytes(*events)
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    pieces = [data[a:b] for a, b in zip(points, points[1:], strict=False)]
    reader = FrameReader(1 << 20)
    message = (TEXT, "".join(texts).encode())
    expected = [(PING, b"mid"), message] if len(texts) > 1 else [message, (PING, b"mid")]
    assert feed_in(reader, pieces) == expected
    assert reader.buf is None


def test_an_idle_reader_keeps_no_buffer() -> None:
    """An idle connection is three small fields: no bytearray before, between or after."""
    reader = FrameReader(LIMIT)
    assert reader.buf is None and reader.message is None
    data = client_bytes(TextMessage("a"), BytesMessage(b"b"))
    reader.feed(data[:3])
    assert drain(reader) == []
    assert reader.buf is not None  # a frame half received is held
    reader.feed(data[3:])
    assert drain(reader) == [(TEXT, b"a"), (BINARY, b"b")]
    assert reader.buf is None and reader.message is None
    # A finished fragmented message leaves nothing behind either.
    reader.feed(client_bytes(TextMessage("x", message_finished=False), TextMessage("y")))
    assert drain(reader) == [(TEXT, b"xy")]
    assert reader.buf is None and reader.message is None


def refused(data: bytes, limit: int = LIMIT) -> FrameError:
    """The error the reader raises on ``data`` (fed whole, then pulled)."""
    reader = FrameReader(limit)
    reader.feed(data)
    with pytest.raises(FrameError) as caught:
        drain(reader)
    return caught.value


def test_fragments_up_to_the_limit_are_joined_and_one_more_is_a_policy_close() -> None:
    pieces = [TextMessage("f", message_finished=False) for _ in range(MAX_FRAGMENTS - 1)]
    reader = FrameReader(LIMIT)
    reader.feed(client_bytes(*pieces, TextMessage("!")))
    assert drain(reader) == [(TEXT, b"f" * (MAX_FRAGMENTS - 1) + b"!")]
    endless = [TextMessage("", message_finished=False) for _ in range(MAX_FRAGMENTS + 1)]
    error = refused(client_bytes(*endless))
    assert error.code == CloseCode.POLICY


def test_a_continuation_without_a_message_is_a_protocol_error() -> None:
    assert refused(client_frame(CONTINUATION, b"orphan")).code == CloseCode.PROTOCOL_ERROR


def test_a_new_message_inside_a_message_is_a_protocol_error() -> None:
    data = client_frame(TEXT, b"start", fin=False) + client_frame(BINARY, b"again")
    assert refused(data).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("size", [LIMIT + 1, 1 << 16, 1 << 40])
def test_an_oversized_frame_is_refused_from_its_header_alone(size: int) -> None:
    """Nothing of the payload is needed (or buffered): 2 to 10 header bytes decide."""
    header = client_frame(BINARY, length=size)  # the header and mask, no payload
    reader = FrameReader(LIMIT)
    for byte in bytewise(header)[:-4]:  # the mask is not even needed
        reader.feed(byte)
        try:
            drain(reader)
        except FrameError as exc:
            assert exc.code == CloseCode.TOO_BIG
            break
    else:
        raise AssertionError("the header was read and nothing refused")
    assert reader.buffered <= 10


def test_fragments_that_add_up_past_the_limit_are_refused_at_the_last_header() -> None:
    reader = FrameReader(LIMIT)
    reader.feed(client_frame(TEXT, b"x" * (LIMIT - 1), fin=False))
    assert drain(reader) == []
    reader.feed(client_frame(CONTINUATION, length=2)[:4])  # the header only
    with pytest.raises(FrameError) as caught:
        drain(reader)
    assert caught.value.code == CloseCode.TOO_BIG


def test_an_unmasked_client_frame_is_refused() -> None:
    assert refused(client_frame(TEXT, b"plain", mask=None)).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("rsv", [1, 2, 4, 7])
def test_reserved_bits_are_refused_since_no_extension_is_agreed(rsv: int) -> None:
    assert refused(client_frame(TEXT, b"deflated?", rsv=rsv)).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [PING, PONG, CLOSE])
def test_control_frames_over_125_bytes_or_fragmented_are_refused(opcode: int) -> None:
    too_long = client_frame(opcode, length=MAX_CONTROL + 1)[:4]  # refused from the header
    assert refused(too_long).code == CloseCode.PROTOCOL_ERROR
    fragmented = client_frame(opcode, b"x", fin=False)
    assert refused(fragmented).code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [3, 7, 0xB, 0xF])
def test_unknown_opcodes_are_refused(opcode: int) -> None:
    assert refused(client_frame(opcode, b"?")).code == CloseCode.PROTOCOL_ERROR


def test_unmask_is_the_xor_with_the_repeated_key() -> None:
    mask = b"\x01\x80\xff\x10"
    payload = bytes(range(256)) * 3 + b"tail"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert frames.unmask(masked, mask) == payload
    assert frames.unmask(b"", mask) == b""


def test_close_frame_cuts_a_long_reason_to_fit_on_a_character_boundary() -> None:
    frame = frames.close_frame(CloseCode.POLICY, "\u00e9" * 200)
    (event,) = decode_server(frame)
    assert isinstance(event, CloseConnection)
    assert event.code == 1008
    assert len(frame) - 2 <= MAX_CONTROL
    assert set(event.reason or "") == {"\u00e9"}


# =========================================================================== Framer


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_the_framer_makes_one_message_per_line(terminator: bytes) -> None:
    lines = [b"* welcome", b"alice: hi there", b":irc.test 001 bob :Welcome"]
    data = b"".join(line + terminator for line in lines)
    assert messages_of(Framer(TEXT).frames(data)) == [line.decode() for line in lines]
    assert messages_of(Framer(BINARY).frames(data)) == lines


def test_the_same_input_is_framed_once() -> None:
    """The encode-once property: the router hands every recipient of one encoder the same
    bytes object, and every WebSocket recipient then gets the same frame object."""
    framer = Framer(TEXT)
    line = b"alice: the same line for everyone\n"
    first = framer.frames(line)
    assert framer.frames(line) is first
    assert framer.frames(line) is first


def test_alternating_inputs_still_hit_the_cache() -> None:
    """Members of two encoders (two IRC capability sets) alternate within one room."""
    framer = Framer(BINARY)
    inputs = [f":a!a@h PRIVMSG #r :line {i}\r\n".encode() for i in range(FRAMED_KEPT)]
    framed = [framer.frames(data) for data in inputs]
    for _ in range(3):
        for data, out in zip(inputs, framed, strict=True):
            assert framer.frames(data) is out
    # It remembers no more than that: a fifth input pushes the oldest out.
    framer.frames(b"another\n")
    assert len(framer.recent) == FRAMED_KEPT
    again = framer.frames(inputs[0])
    assert again == framed[0]


def test_an_equal_input_that_is_another_object_is_framed_the_same() -> None:
    framer = Framer(TEXT)
    line = b"bob: hello\n"
    copy = bytes(bytearray(line))
    assert copy is not line
    assert framer.frames(copy) == framer.frames(line)


def test_invalid_utf8_in_a_text_frame_becomes_the_replacement_character() -> None:
    data = b"carol: caf\xe9 \xff\xfe ok\n"
    (text,) = messages_of(Framer(TEXT).frames(data))
    assert text == "carol: caf\ufffd \ufffd\ufffd ok"
    (raw,) = messages_of(Framer(BINARY).frames(data))
    assert raw == b"carol: caf\xe9 \xff\xfe ok"


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f" + (65536).to_bytes(8, "big")),
    ],
)
def test_frame_headers_at_the_length_boundaries(size: int, header: bytes) -> None:
    line = b"x" * size
    framed = Framer(TEXT).frames(line + b"\n")
    assert framed[: len(header)] == header
    assert len(framed) == len(header) + size
    assert messages_of(framed) == [line.decode()]
    assert server_frames(framed) == [(TEXT, True, line)]


def test_empty_lines_and_the_piece_after_the_last_terminator_make_no_frame() -> None:
    framed = Framer(TEXT).frames(b"one\n\n\r\ntwo\n")
    assert messages_of(framed) == ["one", "two"]


# =========================================================================== HttpSession by hand


class RecordingTransport:
    """An engine's connection as the session sees it: writes, close, timer, recorded."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed: tuple[DisconnectReason, str] | None = None
        self.timer: float | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.closed is None:
            self.closed = (reason, detail)

    def call_at(self, when: float) -> None:
        self.timer = when

    def take(self) -> bytes:
        out = b"".join(self.writes)
        self.writes.clear()
        return out


class Conn:
    """One connection to the HTTP listener, driven as an engine drives it."""

    def __init__(self, service: ChatService, now: float, host: str = "10.0.0.7") -> None:
        self.service = service
        self.now = now
        self.transport = RecordingTransport()
        session = service.accept(web.DIALECT, host, now)
        assert isinstance(session, http.HttpSession), session
        self.session: http.HttpSession = session
        session.connection_made(self.transport, now)

    def feed(self, data: bytes) -> float | None:
        self.session.data_received(data)
        return self.turn()

    def turn(self) -> float | None:
        delay = self.session.process(self.now)
        self.settle()
        return delay

    def timer(self, at: float) -> None:
        self.now = at
        self.session.on_timer(at)
        self.settle()

    def settle(self) -> None:
        if self.transport.closed is not None and not self.session.lost:
            self.session.connection_lost(*self.transport.closed)


def make_service(**options: object) -> ChatService:
    defaults: dict[str, object] = {"server_name": "irc.test", "flood_rate": 0.0}
    defaults.update(options)
    return ChatService(dataclasses.replace(Config(), **defaults))  # type: ignore[arg-type]


def responses(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """The HTTP responses in ``data`` (Content-Length bodies)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        size = int(headers.get("content-length", "0"))
        out.append((int(status_line.split()[1]), headers, data[:size]))
        data = data[size:]
    return out


NOW = 5000.0


def test_a_request_that_does_not_arrive_in_time_gets_408_and_the_slot_back() -> None:
    service = make_service()
    conn = Conn(service, NOW)
    assert conn.transport.timer == NOW + http.REQUEST_SECONDS
    assert service.admission.clients == 1
    assert conn.feed(b"GET / HTTP/1.1\r\nHost: chat") is None
    assert conn.transport.writes == [] and conn.transport.closed is None
    conn.timer(NOW + http.REQUEST_SECONDS)
    ((status, headers, _),) = responses(conn.transport.take())
    assert status == 408
    assert headers["connection"] == "close"
    assert conn.transport.closed is not None
    assert conn.session.lost and service.admission.clients == 0


def test_a_kept_alive_connection_serves_a_second_request_then_goes_idle_quietly() -> None:
    service = make_service()
    conn = Conn(service, NOW)
    conn.feed(b"GET /health HTTP/1.1\r\nHost: chat.test\r\n\r\n")
    ((status, _, body),) = responses(conn.transport.take())
    assert status == 200 and json.loads(body)["status"] == "ok"
    conn.now = NOW + 3
    conn.feed(b"HEAD /nothing-here HTTP/1.1\r\nHost: chat.test\r\n\r\n")
    ((status, headers, body),) = responses(conn.transport.take())
    assert status == 404 and body == b"" and int(headers["content-length"]) > 0
    assert conn.transport.closed is None
    # The next request's deadline runs from the last response.
    assert conn.transport.timer == NOW + 3 + http.REQUEST_SECONDS
    conn.timer(NOW + 3 + http.REQUEST_SECONDS)
    assert conn.transport.take() == b""  # no 408 for a connection merely kept alive
    assert conn.transport.closed is not None
    assert conn.transport.closed[0] is DisconnectReason.IDLE
    assert service.admission.clients == 0


def test_two_pipelined_requests_get_two_responses_in_order() -> None:
    conn = Conn(make_service(), NOW)
    conn.feed(
        b"GET /health HTTP/1.1\r\nHost: chat.test\r\n\r\n"
        b"GET /irc HTTP/1.1\r\nHost: chat.test\r\n\r\n"
    )
    assert [r[0] for r in responses(conn.transport.take())] == [200, 426]


def upgrade_request(
    path: str = "/line", host: str = "chat.test", **kw: Any
) -> tuple[WSConnection, bytes]:
    client = WSConnection(ConnectionType.CLIENT)
    data = client.send(Request(host=host, target=path, **kw))
    return client, data


def client_events(client: WSConnection, data: bytes) -> list[Event]:
    client.receive_data(data)
    return list(client.events())


def lines_of(events: list[Event]) -> list[str]:
    out = []
    for event in events:
        assert isinstance(event, TextMessage | BytesMessage), event
        assert event.message_finished
        data = event.data
        out.append(data if isinstance(data, str) else bytes(data).decode())
    return out


def ws_member(service: ChatService, nick: str) -> tuple[Conn, WSConnection]:
    """A line-dialect member over WebSocket, its greeting and confirmation read."""
    client, request = upgrade_request()
    conn = Conn(service, NOW)
    conn.feed(request)
    events = client_events(client, conn.transport.take())
    assert isinstance(events[0], AcceptConnection), events
    assert any("nickname" in line for line in lines_of(events[1:]))
    conn.feed(client.send(TextMessage(nick)))
    confirmation = lines_of(client_events(client, conn.transport.take()))
    assert confirmation[0].startswith(f"* you are {nick},"), confirmation
    return conn, client


class LinePeer:
    """A line-dialect member over plain TCP (a recording transport)."""

    def __init__(self, service: ChatService, nick: str) -> None:
        self.transport = RecordingTransport()
        session = service.accept(DIALECTS["line"], "10.0.0.9", NOW)
        assert not isinstance(session, bytes)
        self.session: Any = session
        session.connection_made(self.transport, NOW)
        self.send(nick)
        self.lines()

    def send(self, line: str) -> None:
        self.session.data_received(line.encode() + b"\n")
        self.session.process(NOW)

    def lines(self) -> list[str]:
        return self.transport.take().decode().splitlines()


def test_after_the_upgrade_messages_reach_the_line_session_and_lines_come_back_framed() -> None:
    service = make_service()
    tcp = LinePeer(service, "tcpuser")
    conn, client = ws_member(service, "webuser")
    assert any("webuser" in line and "joined" in line for line in tcp.lines())
    assert service.stats["websocket_clients"] == 1
    # A message is one line for the dialect, a line is one message for the browser.
    conn.feed(client.send(TextMessage("hello from the browser")))
    assert tcp.lines() == ["webuser: hello from the browser"]
    tcp.send("hello from a terminal")
    assert lines_of(client_events(client, conn.transport.take())) == [
        "tcpuser: hello from a terminal"
    ]
    # Fragments and a ping in between: the ping is answered at once, the line arrives whole.
    conn.feed(
        client.send(TextMessage("frag", message_finished=False))
        + client.send(Ping(b"p1"))
        + client.send(TextMessage("mented"))
    )
    assert client_events(client, conn.transport.take()) == [Pong(b"p1")]
    assert tcp.lines() == ["webuser: fragmented"]
    # The client's Close is answered, and the session ends as at end of input.
    conn.feed(client.send(CloseConnection(1000)))
    events = client_events(client, conn.transport.take())
    assert events == [CloseConnection(1000, "")]
    assert conn.transport.closed is not None
    assert conn.session.lost
    assert any("webuser" in line and ("left" in line or "quit" in line) for line in tcp.lines())
    assert service.stats["websocket_clients"] == 0


def test_a_broadcast_is_one_frame_object_for_every_websocket_recipient() -> None:
    service = make_service()
    tcp = LinePeer(service, "speaker")
    first, _ = ws_member(service, "first")
    second, _ = ws_member(service, "second")
    first.transport.take()
    tcp.lines()
    tcp.send("one line for all")
    (a,) = first.transport.writes
    (b,) = second.transport.writes
    assert a is b
    assert server_frames(a) == [(TEXT, True, b"speaker: one line for all")]


def test_a_text_message_that_is_not_utf8_closes_with_1007() -> None:
    service = make_service()
    conn, client = ws_member(service, "sender")
    conn.feed(client_frame(TEXT, b"caf\xe9"))
    events = client_events(client, conn.transport.take())
    assert events[-1] == CloseConnection(1007, "text message not UTF-8")
    assert conn.transport.closed is not None and conn.session.lost


def test_an_upgrade_from_another_origin_gets_403_and_no_session() -> None:
    service = make_service()
    client, request = upgrade_request(extra_headers=[(b"Origin", b"http://evil.example")])
    conn = Conn(service, NOW)
    conn.feed(request)
    events = client_events(client, conn.transport.take())
    assert isinstance(events[0], RejectConnection) and events[0].status_code == 403
    assert isinstance(events[-1], RejectData)
    assert conn.session.inner is None
    assert service.stats["websocket_refused"] == 1
    assert service.stats["websocket_upgrades"] == 0
    assert conn.session.lost and service.admission.clients == 0


def test_a_refused_method_is_answered_and_the_connection_goes_on_or_closes() -> None:
    """405, then the request's end is read like any other's: the next request is served,
    ``Connection: close`` closes at once, a body closes (it is never read)."""
    service = make_service()
    conn = Conn(service, NOW)
    conn.feed(b"POST / HTTP/1.1\r\nHost: chat.test\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [r[0] for r in responses(conn.transport.take())] == [405, 200]
    assert conn.transport.closed is None
    conn.feed(b"DELETE / HTTP/1.1\r\nHost: chat.test\r\nConnection: close\r\n\r\n")
    ((status, headers, _),) = responses(conn.transport.take())
    assert status == 405 and headers["allow"] == "GET, HEAD"
    assert conn.transport.closed is not None  # not at the deadline
    with_body = Conn(service, NOW)
    with_body.feed(b"POST / HTTP/1.1\r\nHost: chat.test\r\nContent-Length: 5\r\n\r\nhello")
    assert [r[0] for r in responses(with_body.transport.take())] == [405]
    assert with_body.transport.closed is not None
    assert service.admission.clients == 0


def test_a_whole_request_head_over_the_limit_gets_431() -> None:
    """h11 bounds a head still arriving; one that arrives whole in one read is measured."""
    conn = Conn(make_service(), NOW)
    filler = b"X-Filler: " + b"a" * http.MAX_HEAD + b"\r\n"
    conn.feed(b"GET / HTTP/1.1\r\nHost: chat.test\r\n" + filler + b"\r\n")
    ((status, _, _),) = responses(conn.transport.take())
    assert status == 431 and conn.transport.closed is not None
    # Just under it is served.
    conn = Conn(make_service(), NOW)
    filler = b"X-Filler: " + b"a" * (http.MAX_HEAD - 100) + b"\r\n"
    conn.feed(b"GET /health HTTP/1.1\r\nHost: chat.test\r\n" + filler + b"\r\n")
    ((status, _, _),) = responses(conn.transport.take())
    assert status == 200


def test_an_upgrade_with_a_body_gets_413_and_its_body_is_never_read_as_frames() -> None:
    service = make_service()
    client, request = upgrade_request(extra_headers=[(b"Content-Length", b"6")])
    conn = Conn(service, NOW)
    conn.feed(request + client_frame(TEXT, b""))  # six bytes that would be a frame
    ((status, _, _),) = responses(conn.transport.take())
    assert status == 413
    assert conn.session.inner is None and service.stats["websocket_upgrades"] == 0
    assert conn.transport.closed is not None
