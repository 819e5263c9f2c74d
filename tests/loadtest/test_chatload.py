"""The load library ``chatload`` (``loadtest/chatload``) as bench's lean driver uses it:
the stamp in every dialect's line, splitting and sequence checks, the Redis and IRC bytes
the driver sends, and the handshakes it runs with the dialects. Pure: no sockets.

The Locust user's side of the same modules is tested in ``tests/test_loadtest*.py``.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chatload
from chatload import irc, line, resp, ws

# --------------------------------------------------------------------------- stamp


def test_resp_encoding_and_push_newlines() -> None:
    assert resp.command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert resp.publish(b"hi") == b"*3\r\n$7\r\nPUBLISH\r\n$4\r\nroom\r\n$2\r\nhi\r\n"
    assert resp.push(b"x" * 40).count(b"\n") == resp.PUSH_NEWLINES
    assert resp.subscribe() == b"*2\r\n$9\r\nSUBSCRIBE\r\n$4\r\nroom\r\n"
    assert resp.confirms_subscribe(b"subscribe\r") and not resp.confirms_subscribe(b"$9\r")


def test_one_stamp_format_serves_the_locust_user_and_the_driver() -> None:
    # The Locust user stamps its nick and epoch microseconds, the driver its sender
    # index and perf_counter nanoseconds: the same bytes either way.
    assert chatload.encode_stamp("lab1", 3, 1700000000123456, 0) == b"LT lab1 3 1700000000123456"
    assert chatload.encode_stamp(b"7", 3, 99, 0) == b"LT 7 3 99"
    msg = chatload.parse_text(b"lab1", chatload.encode_stamp("lab1", 3, 5, 40))
    assert (msg.sender, msg.seq, msg.intended_us) == ("lab1", 3, 5)
    assert chatload.find_stamp(b"x: " + chatload.encode_stamp("lab1", 3, 5, 40)) == (
        b"lab1",
        3,
        5,
    )


def test_stamp_round_trips_through_a_chat_line_and_a_resp_push() -> None:
    payload = chatload.encode_stamp(b"3", 17, 123456789, 48)
    assert len(payload) == 48
    want = (b"3", 17, 123456789)
    assert chatload.find_stamp(b"d000001: " + payload) == want
    lines = resp.push(payload).split(b"\n")
    assert [s for s in map(chatload.find_stamp, lines) if s] == [want]


def test_a_stamp_is_found_behind_an_irc_prefix() -> None:
    payload = chatload.encode_stamp(b"7", 42, 999, 48)
    raw = b":d000003!~d000003@127.0.0.1 PRIVMSG #bench :" + payload + b"\r"
    assert chatload.find_stamp(raw) == (b"7", 42, 999)
    assert chatload.find_stamp(b":d1!~d1@127.0.0.1 JOIN :#bench\r") is None


@pytest.mark.parametrize(
    "text",
    [b"* d000001 joined #lobby", b"! unknown command", b"$48\r", b"x: LT a b c", b"BOLT 1 2 3"],
)
def test_lines_without_a_stamp_give_none(text: bytes) -> None:
    assert chatload.find_stamp(text) is None


def test_filler_is_exactly_the_size_asked() -> None:
    assert chatload.filler(5) == b"fffff"
    with pytest.raises(ValueError):
        chatload.filler(0)


# --------------------------------------------------------------------------- lines


@given(
    st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\n", b"")), max_size=20),
    st.sampled_from([b"\n", b"\r\n"]),
    st.data(),
)
def test_line_splitter_is_independent_of_segmentation(
    lines: list[bytes], end: bytes, data: st.DataObject
) -> None:
    # A CR is stripped only before the LF (IRC's CRLF), wherever the read was cut.
    lines = [ln.rstrip(b"\r") for ln in lines]
    stream = b"".join(ln + end for ln in lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    sp = chatload.LineSplitter()
    got: list[bytes] = []
    prev = 0
    for c in [*cuts, len(stream)]:
        got += sp.feed(stream[prev:c])
        prev = c
    assert got == lines and sp.pending == 0


def test_sequence_tracker_counts_gaps_and_reorders() -> None:
    c: chatload.SequenceTracker[bytes] = chatload.SequenceTracker()
    for seq in (5, 6, 8, 7, 9):
        c.observe(b"0", seq)
    c.observe(b"1", 0)
    assert (c.lost, c.reordered) == (1, 1)
    assert c.received_counts() == {b"0": 10, b"1": 1}


# --------------------------------------------------------------------------- what the driver sends


def test_chat_line_refuses_commands_and_newlines() -> None:
    assert line.chat_line(b"hello") == b"hello\n"
    for bad in (b"/quit", b"a\nb"):
        with pytest.raises(ValueError):
            line.chat_line(bad)


def test_irc_privmsg_and_pongs() -> None:
    assert irc.privmsg(b"#bench", b"LT 1 2 3 xx") == b"PRIVMSG #bench :LT 1 2 3 xx\r\n"
    with pytest.raises(ValueError):
        irc.privmsg(b"#bench", b"a\r\nQUIT")
    chunk = b"ING :cut\r\nPING :abc\r\n:s 001 d1 :hi\r\n:oops\r\nPING bare"
    assert irc.pongs(chunk.split(b"\n")) == [b"PONG abc\r\n", b"PONG bare\r\n"]


def test_ping_frames_are_found_in_an_unparsed_chunk() -> None:
    def frame(text: bytes) -> bytes:
        return bytes((0x81, len(text))) + text

    chunk = b"tail of a frame" + frame(b":a PRIVMSG #b :PING me") + frame(b"PING chatd")
    assert ws.frames_starting(chunk, b"PING", 0x81) == [b"PING chatd"]
    assert ws.frames_starting(chunk[:-2], b"PING", 0x81) == []  # cut short: missed


# --------------------------------------------------------------------------- handshakes


def _events(dialect: chatload.Dialect, *lines: bytes) -> list[object]:
    return [e for ln in lines if (e := dialect.handshake_event(ln)) is not None]


def test_line_handshake_with_the_join_sent_with_the_nick() -> None:
    d = line.LineDialect()
    hello = d.register("d000001") + d.join("#r3")
    assert hello == b"d000001\n/join #r3\n"
    got = _events(d, b"* welcome d000001, you are in #lobby", b"* you joined #r3")
    assert got == [chatload.Joined("#r3")]


def test_irc_handshake_pings_registers_then_joins() -> None:
    d = irc.IrcDialect()
    assert d.register("d000001").startswith(b"NICK d000001\r\nUSER d000001 ")
    got = _events(d, b"PING :x", b":s 001 d000001 :Welcome", b":s 376 d000001 :End")
    assert got == [chatload.Reply(b"PONG x\r\n"), chatload.Registered("d000001")]
    assert d.join("#bench") == b"JOIN #bench\r\n"
    got = _events(d, b":s 353 d000001 = #bench :d000001", b":d000001!u@h JOIN #bench")
    assert got == [chatload.Joined("#bench")]


def test_refusals_are_events_the_driver_treats_as_fatal() -> None:
    d = irc.IrcDialect()
    d.register("d1")
    assert _events(d, b":s 433 * d1 :in use") == [chatload.RegisterRefused("433 in use", True)]
    d = line.LineDialect()
    d.register("d1")
    d.join("#full")
    assert _events(d, b"! room #full is full") == [chatload.JoinRefused("room #full is full")]
