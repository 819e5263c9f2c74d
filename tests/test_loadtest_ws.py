"""The load test over WebSocket (``--chat-transport ws``): ``chatload.ws``, then Locust.

* Pure tests of the sans-IO ``chatload.ws``: the handshake's bytes, checked by wsproto's own
  server side; client frames parsed by wsproto's server ``Connection`` and by chatd's
  ``FrameReader``; server frames (wsproto's) read back whole, byte by byte and split
  anywhere; control frames, fragments and every protocol breach the reader refuses.
* The ``--host`` rules of the WebSocket transport, its option and the verdict's wording.
* Locust against a real chatd's ``--http-port`` on 127.0.0.1, both dialects (and wss://
  against ``--https-port``), a few seconds each, with the same checks as the TCP runs.
"""

from __future__ import annotations

import itertools
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake

from chatd.web.frames import FrameReader
from chatwire import Server, TLSFiles
from test_loadtest import (
    LOADTEST,
    SMOKE_USERS,
    _check_run,
    _require_locust,
    _run_locust,
    _verdict_block,
)

if str(LOADTEST) not in sys.path:
    sys.path.insert(0, str(LOADTEST))

import chat_core as core  # noqa: E402
import chat_options as options  # noqa: E402
import chat_verdict as verdict  # noqa: E402
import chatload  # noqa: E402
from chatload import irc  # noqa: E402

# isort: split
from chatload import ws  # noqa: E402

# --------------------------------------------------------------------------- helpers


def server_handshake(request: bytes, subprotocol: str | None = None) -> tuple[Request, bytes]:
    """wsproto's server side: parse a client's request, return it and the 101 it answers."""
    hs = H11Handshake(ConnectionType.SERVER)
    hs.receive_data(request)
    events = list(hs.events())
    assert len(events) == 1 and isinstance(events[0], Request), events
    return events[0], hs.send(AcceptConnection(subprotocol=subprotocol))


def server_frames(*events: object) -> bytes:
    """What wsproto's server Connection writes for ``events`` (unmasked frames)."""
    conn = Connection(ConnectionType.SERVER)
    return b"".join(conn.send(e) for e in events)  # type: ignore[arg-type]


def client_events(data: bytes) -> list[object]:
    """wsproto's server Connection reading a client's frames (it insists on masks)."""
    conn = Connection(ConnectionType.SERVER)
    conn.receive_data(data)
    return list(conn.events())


def feed_in_pieces(reader: ws.ServerFrames, data: bytes, points: list[int]) -> list[bytes]:
    out: list[bytes] = []
    cuts = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    for start, end in itertools.pairwise(cuts):
        out.extend(reader.feed(data[start:end]))
    return out


# --------------------------------------------------------------------------- handshake


def test_the_request_is_an_upgrade_wsproto_accepts_with_the_dialects_subprotocols() -> None:
    hs = ws.ClientHandshake("127.0.0.1:8080", "/", ws.SUBPROTOCOLS["irc"])
    head = hs.request.decode("ascii")
    assert head.startswith("GET / HTTP/1.1\r\n") and head.endswith("\r\n\r\n")
    assert "Host: 127.0.0.1:8080\r\n" in head and "Upgrade: websocket\r\n" in head
    assert "Sec-WebSocket-Version: 13\r\n" in head
    assert "Sec-WebSocket-Protocol: text.ircv3.net, binary.ircv3.net\r\n" in head
    assert "Origin" not in head  # no browser: chatd lets a request without one in
    request, _ = server_handshake(hs.request, "text.ircv3.net")
    assert request.target == "/" and request.host == "127.0.0.1:8080"
    assert request.subprotocols == ["text.ircv3.net", "binary.ircv3.net"]
    line = ws.ClientHandshake("h", ws.PATHS["line"], origin="https://example.org")
    request, _ = server_handshake(line.request)
    assert request.target == "/line" and request.subprotocols == []
    assert (b"origin", b"https://example.org") in request.extra_headers


@pytest.mark.parametrize("subprotocol", [None, "text.ircv3.net", "binary.ircv3.net"])
def test_the_101_is_accepted_byte_by_byte_and_frames_after_it_are_kept(
    subprotocol: str | None,
) -> None:
    hs = ws.ClientHandshake("h", "/", ws.SUBPROTOCOLS["irc"])
    _, response = server_handshake(hs.request, subprotocol)
    frames = server_frames(TextMessage("* welcome"), TextMessage("* second"))
    data = response + frames
    accepted = None
    for i in range(len(data)):  # the last byte completes the head only if no frames follow
        got = hs.receive_data(data[i : i + 1])
        if got is not None:
            assert accepted is None
            accepted = got
            rest = data[i + 1 :]
            break
    assert accepted is not None
    assert accepted.subprotocol == subprotocol
    assert accepted.opcode == (ws.BINARY if subprotocol == "binary.ircv3.net" else ws.TEXT)
    reader = ws.ServerFrames()
    assert reader.feed(accepted.trailing + rest) == [b"* welcome", b"* second"]


def test_a_refusal_raises_with_its_status_and_a_broken_101_is_refused() -> None:
    hs = ws.ClientHandshake("h", "/nope")
    server = H11Handshake(ConnectionType.SERVER)
    server.receive_data(hs.request)
    list(server.events())
    refusal = server.send(RejectConnection(status_code=404, has_body=True))
    refusal += server.send(RejectData(data=b"no WebSocket endpoint here\n"))
    with pytest.raises(ws.HandshakeRefused) as info:
        hs.receive_data(refusal)
    assert info.value.status == 404 and "HTTP 404" in str(info.value)
    # A 101 whose accept token answers another key is not an upgrade of ours.
    other = ws.ClientHandshake("h")
    _, response = server_handshake(ws.ClientHandshake("h").request)
    with pytest.raises(ws.HandshakeRefused, match="bad handshake"):
        other.receive_data(response)


def test_the_handshake_bounds_the_head_and_reports_eof() -> None:
    hs = ws.ClientHandshake("h")
    with pytest.raises(ws.WebSocketError, match="head over"):
        for _ in range(ws.MAX_HEAD // 1000 + 2):
            hs.receive_data(b"X-Junk: " + b"x" * 990 + b"\r\n")
    with pytest.raises(ws.WebSocketError, match="closed"):
        ws.ClientHandshake("h").receive_data(b"")


def test_the_host_header_leaves_out_the_default_port() -> None:
    assert ws.host_header("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert ws.host_header("example.org", 80) == "example.org"
    assert ws.host_header("example.org", 443, secure=True) == "example.org"
    assert ws.host_header("::1", 8443, secure=True) == "[::1]:8443"


# --------------------------------------------------------------------------- client frames


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_client_frames_are_masked_and_wsproto_and_chatd_read_them(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    data = ws.client_frame(ws.BINARY, payload)
    assert data[1] & 0x80  # the mask bit
    events = client_events(data)
    assert len(events) == 1 and isinstance(events[0], BytesMessage)
    assert events[0].data == payload and events[0].message_finished
    reader = FrameReader(max_message=100_000)
    reader.feed(data)
    assert reader.next_message() == (ws.BINARY, payload)


def test_each_frame_gets_its_own_mask_key() -> None:
    a, b = ws.client_frame(ws.TEXT, b"hello"), ws.client_frame(ws.TEXT, b"hello")
    assert a[2:6] != b[2:6] or a[6:] != b[6:]  # 2^-32 to collide
    fixed = ws.client_frame(ws.TEXT, b"hello", key=b"\x01\x02\x03\x04")
    assert fixed == b"\x81\x85\x01\x02\x03\x04" + ws.mask(b"hello", b"\x01\x02\x03\x04")
    assert ws.mask(ws.mask(b"round trip", b"abcd"), b"abcd") == b"round trip"
    with pytest.raises(ValueError):
        ws.client_frame(ws.TEXT, b"x", key=b"abc")


@given(
    lines=st.lists(
        st.text(max_size=300).map(lambda t: t.replace("\n", "").replace("\r", "")), max_size=8
    )
)
def test_the_line_framer_sends_one_message_per_line_without_terminators(lines: list[str]) -> None:
    lines = [line for line in lines if line]
    data = b"".join(line.encode() + b"\r\n" for line in lines)
    events = client_events(ws.LineFramer(ws.TEXT).frames(data))
    assert [e.data for e in events if isinstance(e, TextMessage)] == lines  # type: ignore[attr-defined]
    assert len(events) == len(lines)


def test_the_line_framer_refuses_a_partial_line_and_odd_opcodes() -> None:
    framer = ws.LineFramer(ws.BINARY)
    assert client_events(framer.frames(b"NICK a\r\nUSER a 0 * :a\r\n"))[1].data == (  # type: ignore[attr-defined]
        b"USER a 0 * :a"
    )
    with pytest.raises(ValueError, match="not whole lines"):
        framer.frames(b"NICK a")
    with pytest.raises(ValueError):
        ws.LineFramer(ws.PING)


def test_a_close_frame_carries_its_code_and_a_reason_cut_to_fit() -> None:
    events = client_events(ws.close_frame(1000, "bye " * 100))
    assert isinstance(events[0], CloseConnection)
    assert events[0].code == 1000 and len(events[0].reason.encode()) <= 123


# --------------------------------------------------------------------------- server frames


@given(
    lines=st.lists(st.binary(max_size=200), max_size=10),
    big=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=12),
)
def test_server_frames_come_back_as_lines_however_the_bytes_are_split(
    lines: list[bytes], big: bool, cuts: list[int]
) -> None:
    if big:
        lines = [*lines, b"B" * 70_000 if len(lines) % 2 else b"m" * 300]
    data = server_frames(*(BytesMessage(line) for line in lines))
    assert ws.ServerFrames(max_message=100_000).feed(data) == lines  # whole
    reader = ws.ServerFrames(max_message=100_000)
    assert feed_in_pieces(reader, data, cuts) == lines  # split anywhere
    assert reader.pending == 0 and reader.messages == len(lines)
    counter = ws.ServerFrames(max_message=100_000)
    pieces = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    counted = sum(counter.count(data[a:b])[0] for a, b in itertools.pairwise(pieces))
    assert counted == len(lines)


def test_server_frames_byte_by_byte_with_trailing_junk_held_back() -> None:
    data = server_frames(TextMessage("* one"), TextMessage("x" * 200), TextMessage("* three"))
    reader = ws.ServerFrames()
    out: list[bytes] = []
    for i in range(len(data)):
        out.extend(reader.feed(data[i : i + 1]))
    assert out == [b"* one", b"x" * 200, b"* three"]
    # the start of a frame that never completes is held, not returned
    assert reader.feed(b"\x81\x7e\x01") == [] and reader.pending == 3


def test_a_ping_is_answered_with_a_masked_pong_and_a_pong_is_ignored() -> None:
    reader = ws.ServerFrames()
    data = server_frames(Ping(b"tok"), TextMessage("a"), Pong(b"x"), TextMessage("b"))
    assert reader.feed(data) == [b"a", b"b"]
    events = client_events(reader.take_replies())
    assert len(events) == 1 and isinstance(events[0], Pong) and events[0].payload == b"tok"
    assert reader.replies == [] and reader.take_replies() == b""


def test_the_servers_close_is_kept_and_answered_and_nothing_after_it_is_read() -> None:
    reader = ws.ServerFrames()
    data = server_frames(TextMessage("last"), CloseConnection(1001, "shutting down"))
    assert reader.feed(data + server_frames(TextMessage("after"))) == [b"last"]
    assert reader.close == (1001, "shutting down")
    events = client_events(reader.take_replies())
    assert isinstance(events[0], CloseConnection) and events[0].code == 1001
    assert reader.feed(server_frames(TextMessage("more"))) == []
    bare = ws.ServerFrames()
    bare.feed(b"\x88\x00")  # a Close without a status
    assert bare.close == (1005, "")
    assert client_events(bare.take_replies())[0].code == 1000  # type: ignore[attr-defined]


def test_a_fragmented_message_is_reassembled_between_other_frames() -> None:
    conn = Connection(ConnectionType.SERVER)
    data = conn.send(Message(data="frag", message_finished=False))  # type: ignore[arg-type]
    data += conn.send(Ping(b"p"))
    data += conn.send(Message(data="mented", message_finished=True))  # type: ignore[arg-type]
    data += conn.send(TextMessage("next"))
    for reader_feed in ("whole", "bytewise"):
        reader = ws.ServerFrames()
        if reader_feed == "whole":
            out = reader.feed(data)
        else:
            out = [line for i in range(len(data)) for line in reader.feed(data[i : i + 1])]
        assert out == [b"fragmented", b"next"]
        assert len(reader.replies) == 1
    counter = ws.ServerFrames()
    assert counter.count(data, b"mented") == (2, [b"fragmented"])


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\x81\x85abcdhello", "masked"),
        (b"\xc1\x01x", "reserved bits"),
        (b"\x83\x01x", "unknown opcode"),
        (b"\x8b\x00", "unknown opcode"),
        (b"\x80\x01x", "continuation frame without"),
        (b"\x01\x01a\x81\x01b", "new message inside"),
        (b"\x09\x01p", "fragmented or oversized control"),
        (b"\x89\x7e\x00\x7e" + b"p" * 126, "fragmented or oversized control"),
        (b"\x88\x01x", "one-byte body"),
        (b"\x81\x7f" + (1 << 20).to_bytes(8, "big"), "frame of 1048576 bytes"),
        (b"\x01\x01a" + b"\x00\x01a" * ws.MAX_FRAGMENTS, "fragments"),
        (b"\x01\x7e\x80\x00" + b"a" * 0x8000 + b"\x00\x7e\x80\x01" + b"a" * 0x8001, "over"),
    ],
)
def test_the_reader_refuses_every_breach_of_the_protocol(data: bytes, problem: str) -> None:
    with pytest.raises(ws.WebSocketError, match=problem):
        ws.ServerFrames().feed(data)


def test_counting_copies_only_the_messages_that_hold_the_needle() -> None:
    lines = [b":s 001 a :hi", b"PING chatd", b"x" * 130, b":s PRIVMSG #r :LT a 1 2", b"PING :t2"]
    data = server_frames(*(BytesMessage(line) for line in lines))
    reader = ws.ServerFrames()
    assert reader.count(data, b"PING") == (5, [b"PING chatd", b"PING :t2"])
    # the needle split over two reads is still found
    split = data.index(b"NG chatd")
    reader = ws.ServerFrames()
    first = reader.count(data[:split], b"PING")
    second = reader.count(data[split:], b"PING")
    assert first[0] + second[0] == 5 and first[1] + second[1] == [b"PING chatd", b"PING :t2"]
    assert ws.ServerFrames().count(data) == (5, [])


def test_the_message_counter_answers_irc_pings_over_websocket() -> None:
    dialect = irc.IrcDialect()
    lines = [b":s PRIVMSG #load0 :LT a 1 2", b"PING :irc.test", b":s NOTICE x :PING-like"]
    data = server_frames(*(TextMessage(line.decode()) for line in lines))

    def answer(line: bytes) -> bytes | None:
        return dialect.pong(line) if dialect.classify(line)[0] is chatload.LineKind.PING else None

    counter = ws.MessageCounter(ws.ServerFrames(), irc.IrcDialect.ping_marker, answer)
    assert counter.feed(data) == (3, [b"PONG irc.test\r\n"])
    line_counter = ws.MessageCounter(ws.ServerFrames())  # the line dialect: nothing to answer
    assert line_counter.feed(server_frames(TextMessage("PING x"))) == (1, [])


# --------------------------------------------------------------------------- options and hosts


@pytest.mark.parametrize(
    ("entry", "tls", "expected", "path"),
    [
        ("127.0.0.1:8080", False, ("127.0.0.1", 8080), "/line"),
        ("ws://127.0.0.1:8080", False, ("127.0.0.1", 8080), "/line"),
        ("ws://127.0.0.1:8080/", False, ("127.0.0.1", 8080), "/line"),
        ("ws://127.0.0.1:8080/irc", False, ("127.0.0.1", 8080), "/irc"),
        ("WSS://chat.example/line?x=1", True, ("chat.example", 443), "/line?x=1"),
        ("[::1]:8443/irc", True, ("::1", 8443), "/irc"),
        ("example.org", False, ("example.org", 80), "/line"),
    ],
)
def test_websocket_hosts_take_urls_with_paths(
    entry: str, tls: bool, expected: tuple[str, int], path: str
) -> None:
    settings = options.Settings(transport="ws", tls=tls, tls_insecure=tls)
    got = core.parse_host(entry, settings.default_port, transport="ws", tls=tls)
    assert got == expected
    assert core.ws_path(entry, ws.PATHS["line"]) == path


@pytest.mark.parametrize(
    ("entry", "transport", "tls", "message"),
    [
        ("wss://h:1", "ws", False, "wss:// needs --chat-tls"),
        ("ws://h:1", "ws", True, "ws:// is not TLS"),
        ("http://h:1", "ws", False, "with --chat-transport ws use"),
        ("ws://h:1/a b", "ws", False, "a path without spaces"),
        ("ws://h:1", "tcp", False, "add --chat-transport ws"),
        ("h:4040/line", "tcp", False, "malformed --host"),
    ],
)
def test_websocket_hosts_refuse_what_would_fail_every_connect(
    entry: str, transport: str, tls: bool, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        core.parse_hosts(entry, 80, transport=transport, tls=tls)


def test_the_transport_option_and_its_default_ports() -> None:
    parsed = options.Settings.from_options(
        type("O", (), {"chat_transport": "ws", "chat_dialect": "irc"})()
    )
    assert parsed.transport == "ws" and parsed.default_port == 80
    assert options.Settings().transport == "tcp" and options.Settings().default_port == 4040
    assert options.Settings(dialect="irc").default_port == 6667
    with pytest.raises(ValueError, match="--chat-transport"):
        options.Settings(transport="udp").validate()


def test_the_verdict_names_the_transport() -> None:
    report = {"host": "127.0.0.1:8080", "label": "reactor", "dialect": "irc", "transport": "ws"}
    assert verdict._target(report) == "127.0.0.1:8080 (reactor, irc dialect over WebSocket)"
    assert "over WebSocket" not in verdict._target({**report, "transport": "tcp"})


# --------------------------------------------------------------------------- Locust


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _web_chatd(start_server: Callable[..., Server], *args: str, https: bool = False) -> int:
    """A reactor chatd with an HTTP (or HTTPS) listener on a free port; that port."""
    port = _free_port()
    start_server("reactor", "--https-port" if https else "--http-port", str(port), *args)
    deadline = time.monotonic() + 10
    while True:  # its 'listening on' lines are printed once every listener is bound
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(name="locust_exe")
def locust_exe_fixture() -> str:
    return _require_locust()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("dialect", ["line", "irc"])
def test_locust_measures_websocket_chat_in_both_dialects(
    locust_exe: str, start_server: Callable[..., Server], tmp_path: Path, dialect: str
) -> None:
    port = _web_chatd(start_server)
    host = f"ws://127.0.0.1:{port}" if dialect == "irc" else f"127.0.0.1:{port}"
    stats, report, output = _run_locust(
        locust_exe,
        port,
        tmp_path,
        "--chat-dialect",
        dialect,
        "--chat-transport",
        "ws",
        "--chat-label",
        "reactor-ws",
        host=host,
    )
    _check_run(stats, report, SMOKE_USERS, output)
    assert report["transport"] == "ws" and report["options"]["transport"] == "ws"
    assert report["dialect"] == dialect
    assert "over WebSocket" in _verdict_block(output)
    # every counting receiver counted messages, not newlines: about as many as were timed
    received = report["received"]
    assert received["counting_receivers"] == 10 and received["counted_lines"] > 0


@pytest.mark.timeout(150)
def test_locust_speaks_wss_to_chatds_https_listener(
    locust_exe: str, start_server: Callable[..., Server], tls_files: TLSFiles, tmp_path: Path
) -> None:
    port = _web_chatd(start_server, *tls_files.args(), https=True)
    stats, report, output = _run_locust(
        locust_exe,
        port,
        tmp_path,
        "--chat-transport",
        "ws",
        "--chat-tls",
        "--chat-tls-ca",
        str(tls_files.ca_file),
        host=f"wss://127.0.0.1:{port}/line",
    )
    _check_run(stats, report, SMOKE_USERS, output)
    assert report["options"]["tls"] is True and report["transport"] == "ws"


@pytest.mark.timeout(120)
def test_a_refused_upgrade_ends_the_run_with_the_servers_status(
    locust_exe: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    port = _web_chatd(start_server)
    host = f"ws://127.0.0.1:{port}/nowhere"
    stats, report, output = _run_locust(
        locust_exe,
        port,
        tmp_path,
        "--chat-transport",
        "ws",
        host=host,
        users=5,
        run_time="40s",
        expect_rc=1,
    )
    assert "the server refuses the WebSocket upgrade: HTTP 404" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert report["connect"]["count"] == 0 and report["failures"]["by_kind"]["connect"] >= 5
    assert "FAIL" in _verdict_block(output)
