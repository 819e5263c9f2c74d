"""The sans-IO line dialect: framing, command parsing, encoding, forgery rule. No sockets."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.dialects.base import BLANK
from chatd.dialects.line import (
    ENCODER,
    NOTICES,
    RESERVED_NICKS,
    Command,
    DecodeError,
    LineDecoder,
    Say,
    action_forgeable,
    listing,
    parse_command,
)

CASES: list[tuple[bytes, list[object]]] = [
    (b"hello\n", ["hello"]),
    (b"hello\r\n", ["hello"]),
    (b"a\nb\r\nc\n", ["a", "b", "c"]),
    (b"\n\r\n   \nx\n", ["x"]),
    (b"caf\xc3\xa9\n", ["café"]),
    (b"bad \xff\xfe\nok\n", [DecodeError.BAD_UTF8, "ok"]),
    (b"esc \x1b[2J\nok\n", [DecodeError.CONTROL_CHAR, "ok"]),
    (b"nul \x00\n", [DecodeError.CONTROL_CHAR]),
    (b"c1 \xc2\x9b\n", [DecodeError.CONTROL_CHAR]),
    (b"\tb\x02\x0304c\x0f\x16\x1d\x1f\n", ["\tb\x02\x0304c\x0f\x16\x1d\x1f"]),
    (b"mid\rline\n", [DecodeError.CONTROL_CHAR]),
    (b"x" * 16 + b"\n", ["x" * 16]),
    (b"x" * 16 + b"\r\n", ["x" * 16]),
    (b"x" * 17 + b"\nafter\n", [DecodeError.TOO_LONG, "after"]),
    (b"x" * 100 + b"\nafter\n", [DecodeError.TOO_LONG, "after"]),
]
MAX = 16


def decode_whole(data: bytes) -> list[object]:
    dec = LineDecoder(MAX)
    dec.feed(data)
    return dec.items()


def decode_split(data: bytes, cuts: list[int]) -> list[object]:
    dec = LineDecoder(MAX)
    out: list[object] = []
    prev = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        dec.feed(data[prev:cut])
        out.extend(dec.items())
        prev = cut
    return out


@pytest.mark.parametrize("data,expected", CASES)
def test_decoder_whole(data: bytes, expected: list[object]) -> None:
    assert decode_whole(data) == expected


@pytest.mark.parametrize("data,expected", CASES)
def test_decoder_byte_by_byte(data: bytes, expected: list[object]) -> None:
    assert decode_split(data, list(range(len(data)))) == expected


@pytest.mark.parametrize("data,expected", CASES)
def test_decoder_with_trailing_partial_line(data: bytes, expected: list[object]) -> None:
    dec = LineDecoder(MAX)
    dec.feed(data + b"junk-no-newline")
    assert dec.items() == expected
    assert dec.buffered == len(b"junk-no-newline")


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_decoder_random_splits(data: st.DataObject) -> None:
    case, expected = data.draw(st.sampled_from(CASES))
    cuts = data.draw(st.lists(st.integers(0, len(case)), max_size=10))
    assert decode_split(case, cuts) == expected


def test_overlong_unterminated_line_is_reported_at_once_and_memory_stays_bounded() -> None:
    dec = LineDecoder(MAX)
    dec.feed(b"y" * 1000)
    assert dec.items() == [DecodeError.TOO_LONG]
    for _ in range(100):
        dec.feed(b"y" * 1000)
        assert dec.items() == []
        assert dec.buffered == 0
    dec.feed(b"yyy\nnext\n")
    assert dec.items() == ["next"]


def test_line_of_exactly_the_limit_split_before_crlf_is_accepted() -> None:
    dec = LineDecoder(MAX)
    dec.feed(b"z" * MAX + b"\r")
    assert dec.items() == []
    dec.feed(b"\n")
    assert dec.items() == ["z" * MAX]


_line_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\n\r"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() and len(s.encode()) <= 100)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=20))
def test_decoder_never_raises_and_never_yields_an_overlong_line(
    blob: bytes, cuts: list[int]
) -> None:
    dec = LineDecoder(64)
    prev = 0
    for cut in sorted(set(c for c in cuts if c <= len(blob))) + [len(blob)]:
        dec.feed(blob[prev:cut])
        prev = cut
        for item in dec.items():
            assert isinstance(item, (str, DecodeError))
            if isinstance(item, str):
                assert len(item.encode()) <= 64 and "\n" not in item
        assert dec.buffered <= 65


@settings(max_examples=200, deadline=None)
@given(st.lists(_line_text, min_size=1, max_size=20), st.lists(st.integers(0, 5000), max_size=30))
def test_valid_lines_reassemble_exactly_whatever_the_split(
    lines: list[str], cuts: list[int]
) -> None:
    wire = b"".join(line.encode() + b"\r\n" for line in lines)
    dec = LineDecoder(100)
    out = []
    prev = 0
    for cut in sorted(set(c for c in cuts if c <= len(wire))) + [len(wire)]:
        dec.feed(wire[prev:cut])
        prev = cut
        out.extend(dec.items())
    assert out == lines


def test_parse_command() -> None:
    assert parse_command("hello") == Say("hello")
    assert parse_command("//slash") == Say("/slash")
    assert parse_command("/NICK  bob ") == Command("nick", "bob")
    assert parse_command("/msg bob hi there") == Command("msg", "bob hi there")
    assert parse_command("/who") == Command("who", "")


BOB = ev.Source("bob", "line", "10.0.0.2")


def encode(event: ev.Event, role: Role = Role.OTHER) -> bytes:
    return ENCODER.encode(event, role)


def lines(*texts: str) -> tuple[ev.ChatLine, ...]:
    return tuple(ev.ChatLine(text, f"id{i}", 1.0) for i, text in enumerate(texts))


def test_encode_lines() -> None:
    assert encode(ev.Chat(BOB, "#lobby", lines("hi"))) == b"bob: hi\n"
    assert encode(ev.Chat(BOB, "#lobby", lines("a", "b"))) == b"bob: a\nbob: b\n"
    assert encode(ev.PrivateChat(BOB, "amy", "u1", lines("psst"))) == b"bob (private): psst\n"
    action = ev.Chat(BOB, "#lobby", lines("waves"), ev.ChatKind.ACTION)
    assert encode(action) == b"* bob waves\n"
    # Pieces of one long line (cut for IRC, each with its own id) are one line here.
    pieces = (
        ev.ChatLine("a" * 300, "id0", 1.0),
        ev.ChatLine("b" * 300, "id1", 1.0, concat=True),
        ev.ChatLine("c", "id2", 1.0),
    )
    assert encode(ev.Chat(BOB, "#lobby", pieces)) == (
        b"bob: " + b"a" * 300 + b"b" * 300 + b"\nbob: c\n"
    )
    assert encode(ev.NickChanged(BOB, "b")) == b"* bob is now known as b\n"
    assert encode(ev.Joined(BOB, "#x", 3)) == b"* bob joined #x\n"
    assert encode(ev.Joined(BOB, "#x", 3), Role.ACTOR) == b""  # the session says "you joined"
    assert encode(ev.Parted(BOB, "#x")) == b"* bob left #x\n"
    assert encode(ev.Quit(BOB, "bye", True)) == b"* bob quit (bye)\n"
    assert encode(ev.Quit(BOB)) == b"* bob quit\n"
    kick = ev.Kicked(ev.Source("op", "u", "h"), "#x", BOB, "rude")
    assert encode(kick) == b"* bob was kicked from #x by op (rude)\n"
    assert encode(kick, Role.SUBJECT) == b"* you were kicked from #x by op (rude)\n"
    assert encode(ev.ServerShutdown()) == b"* server shutting down: please reconnect\n"
    assert encode(ev.AwayChanged(BOB, "lunch")) == b""


def test_blank_lines_are_items_so_that_flood_control_can_charge_them() -> None:
    dec = LineDecoder(MAX)
    dec.feed(b"\n \r\n\nx\n")
    assert [dec.next_item() for _ in range(5)] == [BLANK, BLANK, BLANK, "x", None]


def test_end_of_input_delivers_an_unterminated_last_line_once() -> None:
    dec = LineDecoder(MAX)
    dec.feed(b"one\ntwo")
    dec.feed_eof()
    assert dec.items() == ["one", "two"]
    dec.feed_eof()
    assert dec.items() == []
    overlong = LineDecoder(MAX)
    overlong.feed(b"y" * 100)
    overlong.feed_eof()
    assert overlong.items() == [DecodeError.TOO_LONG]


@pytest.mark.parametrize(
    "text",
    [
        "quit (connection reset)",
        "quit",
        "joined #kitchen",
        "left #lobby",
        "left #lobby (bye)",
        "is now known as bob",
        "was kicked from #lobby by op (spam)",
        "set the topic of #lobby to: free beer",
        "set mode +o mallory on #lobby",
    ],
)
def test_actions_that_render_as_a_notice_are_forgeable(text: str) -> None:
    assert action_forgeable("mallory", text)


@pytest.mark.parametrize("text", ["waves", "quit smoking", "joined the fun", "left early"])
def test_ordinary_actions_are_not(text: str) -> None:
    assert not action_forgeable("mallory", text)


def test_the_words_that_open_fixed_notices_are_reserved_nicks() -> None:
    assert {"server", "pong", "you", "bye", "welcome", "rooms", "stats"} <= RESERVED_NICKS
    for template in NOTICES.values():  # every fixed notice is covered by a reservation
        first = re.split(r"[ :{(]", template, maxsplit=1)[0]
        if first and not first.startswith("-"):
            assert first in RESERVED_NICKS, template


def test_listings_are_split_into_lines_of_bounded_length() -> None:
    words = [f"nick{i:05d}" for i in range(5000)]
    lines = listing("* #big (5000): ", words)
    assert all(len(line.encode()) + 1 <= 512 for line in lines)
    assert all(line.startswith("* #big (5000): ") for line in lines)
    assert [w for line in lines for w in line.split(": ", 1)[1].split()] == words
    assert listing("* #empty (0): ", []) == ["* #empty (0): "]
