"""The sans-IO line dialect: framing, command parsing, encoding. No sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd import events as ev
from chatd.protocol import (
    Command,
    DecodeError,
    LineDecoder,
    Say,
    encode,
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


def test_encode_lines() -> None:
    assert encode(ev.Message("bob", "#lobby", "hi")) == b"bob: hi\n"
    assert encode(ev.Messages("bob", "#lobby", ("a", "b"))) == b"bob: a\nbob: b\n"
    assert encode(ev.PrivateMessage("bob", "amy", "psst")) == b"bob (private): psst\n"
    assert encode(ev.Action("bob", "#lobby", "waves")) == b"* bob waves\n"
    assert encode(ev.NickChanged("a", "b")) == b"* a is now known as b\n"
    assert encode(ev.Error("nope")) == b"! nope\n"
    greeting = encode(ev.Greeting("chatd")).decode().splitlines()
    assert all(line.startswith("* ") for line in greeting) and "nickname" in greeting[-1]
    joined = encode(ev.Joined("bob", "#x")).decode()
    assert joined.startswith("* ") and "bob" in joined and "joined" in joined
    for event in (ev.Left("bob", "#x"), ev.Quit("bob", "#x", "bye")):
        line = encode(event).decode()
        assert line.startswith("* bob ") and ("left" in line or "quit" in line)
