"""The IRC wire layer without a socket: decoder, parser, encoder, split_text, CTCP.

Decoder cases run h11-style: each whole, then byte by byte, then at random split points
(hypothesis), then with an unterminated tail of junk that must stay buffered.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.dialects.irc.wire import (
    MAX_BLANKS_PER_ITEM,
    MAX_TAGS_TOTAL,
    Blank,
    InputTooLong,
    InvalidUtf8,
    IrcDecoder,
    Item,
    Malformed,
    Message,
    ctcp,
    encode,
    escape_tag_value,
    parse,
    parse_ctcp,
    split_text,
    unescape_tag_value,
)


def M(command: str, *params: str, source: str | None = None, **tags: str) -> Message:
    return Message(command, params, source, dict(tags))


def merge_blanks(items: list[Item]) -> list[Item]:
    """Adjacent Blank counts summed: how a run is chunked depends on the segmentation."""
    out: list[Item] = []
    for item in items:
        if isinstance(item, Blank) and out and isinstance(out[-1], Blank):
            out[-1] = Blank(out[-1].count + item.count)
        else:
            out.append(item)
    return out


def decode(chunks: list[bytes], eof: bool = False) -> tuple[list[Item], IrcDecoder]:
    decoder = IrcDecoder()
    items: list[Item] = []
    for chunk in chunks:
        decoder.feed(chunk)
        items += decoder.items()
    if eof:
        decoder.feed_eof()
        items += decoder.items()
    return merge_blanks(items), decoder


BODY_510 = b"PRIVMSG nick2 :" + b"a" * (510 - len(b"PRIVMSG nick2 :"))

#: (wire bytes, items). Every case ends with a terminator, so trailing junk stays put.
CASES: list[tuple[bytes, list[Item]]] = [
    (b"PING :hello\r\n", [M("PING", "hello")]),
    (b"ping hello\n", [M("PING", "hello")]),
    (b"privmsg #chan :hi there\r\n", [M("PRIVMSG", "#chan", "hi there")]),
    (b":nick!u@h PRIVMSG #c :\r\n", [M("PRIVMSG", "#c", "", source="nick!u@h")]),
    (b"PRIVMSG   #c    a   \r\n", [M("PRIVMSG", "#c", "a")]),
    (b"PRIVMSG #c ::starts with a colon\r\n", [M("PRIVMSG", "#c", ":starts with a colon")]),
    (b"001 bob :Welcome\r\n", [M("001", "bob", "Welcome")]),
    (
        b"@a=1;b=x\\sy\\:z\\\\;+c;d=;e\\ :src CMD p1  p2   :t  t\r\n",
        [
            Message(
                "CMD", ("p1", "p2", "t  t"), "src", {"a": "1", "b": "x y;z\\", "+c": "", "d": ""}
            )
        ],
    ),
    (b"@ PING x\r\n", [M("PING", "x")]),
    (b"@b@d=1;ok=2 PING x\r\n", [Message("PING", ("x",), None, {"ok": "2"})]),
    (
        b"CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\r\n",
        [M("CMD", *map(str, range(1, 15)), "15 16")],
    ),
    (
        b"CMD 1 2 3 4 5 6 7 8 9 10 11 12 13 14 :15 16\r\n",
        [M("CMD", *map(str, range(1, 15)), "15 16")],
    ),
    (
        b"PING a\rPING b\r\nPING c\n\rPING d\r",
        [M("PING", "a"), M("PING", "b"), M("PING", "c"), Blank(1), M("PING", "d")],
    ),
    (b"\r\n\n   \r\nPING x\r\n\n", [Blank(3), M("PING", "x"), Blank(1)]),
    (BODY_510 + b"\r\n", [M("PRIVMSG", "nick2", "a" * 495)]),
    (BODY_510 + b"a\r\nPING x\r\n", [InputTooLong("body"), M("PING", "x")]),
    # A client's tag section, "@" and space included, may be 4096 bytes; the body 510.
    (
        b"@t=" + b"v" * 4092 + b" " + BODY_510 + b"\n",
        [Message("PRIVMSG", ("nick2", "a" * 495), None, {"t": "v" * 4092})],
    ),
    (b"@t=" + b"v" * 4093 + b" PING x\nPING y\n", [InputTooLong("tags"), M("PING", "y")]),
    # irctest messages.py testLineTooLong's line.
    (b"@+clientOnlyTagExample=" + b"a" * 4096 + b" PRIVMSG #xyz hi!\r\n", [InputTooLong("tags")]),
    (b"@t=1  " + BODY_510 + b"\n", [InputTooLong("body")]),
    (b"PRIVMSG bar hi\xaa\r\n", [InvalidUtf8(M("PRIVMSG", "bar", "hi\xaa"))]),
    (b"PRIVMSG bar :\xc3\xa9t\xc3\xa9\r\n", [M("PRIVMSG", "bar", "été")]),
    (b"PRIVMSG bar :a\0b\r\nPING x\n", [Malformed("NUL byte in line"), M("PING", "x")]),
    (b":src\r\n", [Malformed("source but no command")]),
    (b"@a=b\r\n", [Malformed("tags but no command")]),
    (b": CMD\r\n", [Malformed("empty source")]),
    (b"@a=b  \r\n", [Malformed("no command")]),
]


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_decoder_whole(data: bytes, expected: list[Item]) -> None:
    items, decoder = decode([data])
    assert items == expected
    assert decoder.buffered == 0


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_decoder_byte_by_byte(data: bytes, expected: list[Item]) -> None:
    items, _ = decode([data[i : i + 1] for i in range(len(data))])
    assert items == expected


@pytest.mark.parametrize(("data", "expected"), CASES)
def test_decoder_with_trailing_junk(data: bytes, expected: list[Item]) -> None:
    items, decoder = decode([data + b"JUNK"])
    assert items == expected
    assert decoder.buffered == 4
    decoder.feed_eof()
    assert decoder.items() == [M("JUNK")]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize(("case", "expected"), CASES)
def test_decoder_random_splits(case: bytes, expected: list[Item], data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(case)), max_size=8)))
    bounds = [0, *cuts, len(case)]
    items, _ = decode([case[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    assert items == expected


def test_eof_delivers_an_unterminated_last_line_once() -> None:
    decoder = IrcDecoder()
    decoder.feed(b"PING x\r\nQUIT :bye")
    assert decoder.items() == [M("PING", "x")]
    decoder.feed_eof()
    assert decoder.next_item() == M("QUIT", "bye")
    assert decoder.next_item() is None
    assert decoder.next_item() is None
    with pytest.raises(RuntimeError):
        decoder.feed(b"more")


def test_eof_after_a_bare_cr_or_nothing_adds_nothing() -> None:
    assert decode([b"PING x\r"], eof=True)[0] == [M("PING", "x")]
    assert decode([b""], eof=True)[0] == []
    assert decode([b"   "], eof=True)[0] == [Blank(1)]


def test_cr_then_lf_in_the_next_feed_is_one_terminator() -> None:
    items, _ = decode([b"PING x\r", b"\nPING y\r", b"\n"])
    assert items == [M("PING", "x"), M("PING", "y")]


def test_overlong_line_is_reported_before_its_end_and_discarded_in_bounded_memory() -> None:
    decoder = IrcDecoder()
    decoder.feed(b"PRIVMSG #c :" + b"x" * 600)
    assert decoder.items() == [InputTooLong("body")]
    assert decoder.buffered == 0
    for _ in range(256):  # 1 MiB more of the same line, in 4 KiB reads
        decoder.feed(b"x" * 4096)
        assert decoder.items() == []
        assert decoder.buffered == 0
    decoder.feed(b"x\r\nPING ok\r\n")
    assert decoder.items() == [M("PING", "ok")]


def test_unterminated_line_never_buffers_past_the_limits() -> None:
    decoder = IrcDecoder()
    chunk = b"@" + b"t" * 1000
    peak = 0
    for _ in range(20):
        decoder.feed(chunk)
        items = decoder.items()
        peak = max(peak, decoder.buffered)
        if items:
            assert items == [InputTooLong("tags")]
    assert peak <= 4096 + 512


def test_a_run_of_blank_lines_comes_out_in_bounded_items() -> None:
    decoder = IrcDecoder()
    decoder.feed(b"\n" * 2000 + b"PING x\n")
    items = decoder.items()
    assert all(i.count <= MAX_BLANKS_PER_ITEM for i in items if isinstance(i, Blank))
    assert sum(i.count for i in items if isinstance(i, Blank)) == 2000
    assert items[-1] == M("PING", "x")


def test_irctest_message_tags_length_limits() -> None:
    """message_tags.py testLengthLimits: tag section of 4096 bytes passes, 4097 does not."""
    at_limit = "@foo=bar;+baz={} TAGMSG #test".format("a" * 4081)
    over = "@foo=bar;+baz={} TAGMSG #test".format("a" * 4082)
    max_privmsg = "@foo=bar;+baz={} PRIVMSG #test {}".format("a" * 4081, "b" * 496)
    items, _ = decode([f"{at_limit}\r\n{over}\r\n{max_privmsg}\r\n".encode()])
    assert items == [
        Message("TAGMSG", ("#test",), None, {"foo": "bar", "+baz": "a" * 4081}),
        InputTooLong("tags"),
        Message("PRIVMSG", ("#test", "b" * 496), None, {"foo": "bar", "+baz": "a" * 4081}),
    ]


def test_server_to_client_tag_limit_is_available() -> None:
    decoder = IrcDecoder(max_tags=MAX_TAGS_TOTAL)
    decoder.feed(b"@t=" + b"v" * 8187 + b" PING x\n@t=" + b"v" * 8188 + b" PING y\n")
    assert decoder.items() == [
        Message("PING", ("x",), None, {"t": "v" * 8187}),
        InputTooLong("tags"),
    ]


def test_decoder_limits_are_configurable() -> None:
    decoder = IrcDecoder(max_line=10, max_tags=6)
    decoder.feed(b"PING 123\nPING 1234\n@a=12 X\n@a=123 X\n")  # body <= 8, tags <= 6
    assert decoder.items() == [
        M("PING", "123"),
        InputTooLong("body"),
        Message("X", (), None, {"a": "12"}),
        InputTooLong("tags"),
    ]


# --------------------------------------------------------------------------- encoder


def test_encode_adds_the_colon_only_when_needed() -> None:
    assert encode("PRIVMSG", "#c", "hi") == b"PRIVMSG #c hi\r\n"
    assert encode("PRIVMSG", "#c", "hi there") == b"PRIVMSG #c :hi there\r\n"
    assert encode("PRIVMSG", "#c", "") == b"PRIVMSG #c :\r\n"
    assert encode("PRIVMSG", "#c", ":)") == b"PRIVMSG #c ::)\r\n"
    assert encode("PING") == b"PING\r\n"
    assert encode("001", "bob", "Welcome", source="My.Little.Server") == (
        b":My.Little.Server 001 bob Welcome\r\n"
    )


def test_encode_escapes_tags() -> None:
    line = encode("TAGMSG", "#c", tags={"+x": "a b;c\\d\r\n", "k": "", "n": None})
    assert line == b"@+x=a\\sb\\:c\\\\d\\r\\n;k;n TAGMSG #c\r\n"


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("PRIVMSG", "#c", "a\rb"), {}),
        (("PRIVMSG", "#c", "a\nb"), {}),
        (("PRIVMSG", "#c", "a\0b"), {}),
        (("PRIVMSG", "a b", "x"), {}),
        (("PRIVMSG", ":a", "x"), {}),
        (("PRIVMSG", "", "x"), {}),
        (("PRIV MSG",), {}),
        (("",), {}),
        (("12",), {}),
        (("CMD", *["p"] * 16), {}),
        (("PING",), {"source": "a b"}),
        (("PING",), {"source": ""}),
        (("PING",), {"tags": {"bad key": "v"}}),
        (("PING",), {"tags": {"k": "a\0"}}),
        (("PRIVMSG", "#c", "\ud800"), {}),
    ],
)
def test_encode_rejects_what_only_our_bug_can_produce(args: tuple, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        encode(*args, **kwargs)


def test_tag_value_escaping_round_trips_and_tolerates_odd_escapes() -> None:
    assert unescape_tag_value("a\\b\\") == "ab"
    assert unescape_tag_value(escape_tag_value("; \\\r\n")) == "; \\\r\n"


_middle = st.text(
    st.characters(blacklist_characters=" \r\n\0", blacklist_categories=("Cs",)), min_size=1
).filter(lambda s: not s.startswith(":"))
_trailing = st.text(st.characters(blacklist_characters="\r\n\0", blacklist_categories=("Cs",)))
_tag_key = st.from_regex(r"\A\+?([a-z0-9.-]{1,8}/)?[A-Za-z0-9-]{1,8}\Z")
_tag_value = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)))
_messages = st.builds(
    lambda command, middles, last, source, tags: Message(command, (*middles, *last), source, tags),
    st.sampled_from(["PRIVMSG", "NOTICE", "JOIN", "001", "433", "TAGMSG"]),
    st.lists(_middle, max_size=5),
    st.lists(_trailing, max_size=1),
    st.none() | _middle,
    st.dictionaries(_tag_key, _tag_value, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(_messages)
def test_encode_then_parse_round_trips(message: Message) -> None:
    line = message.to_bytes()
    assert line.endswith(b"\r\n")
    assert parse(line[:-2].decode()) == message


def _fits(message: Message) -> bool:
    line = message.to_bytes()
    tags, _, body = line.partition(b" ") if message.tags else (b"", b"", line)
    return len(tags) + 1 <= 4096 and len(body) <= 512


@settings(max_examples=150, deadline=None)
@given(st.lists(_messages.filter(_fits), min_size=1, max_size=6), st.data())
def test_encoded_stream_decodes_back_whatever_the_splits(
    messages: list[Message], data: st.DataObject
) -> None:
    stream = b"".join(m.to_bytes() for m in messages)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    items, decoder = decode([stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)])
    assert items == messages
    assert decoder.buffered == 0


# --------------------------------------------------------------------------- split_text


def test_split_text_small_and_empty() -> None:
    assert split_text(40, "hello") == ["hello"]
    assert split_text(40, "") == []


def test_split_text_prefers_a_space_near_the_end() -> None:
    budget = 512 - 100 - 2
    text = "word " * 200
    pieces = split_text(100, text)
    assert "".join(pieces) == text
    assert all(p.endswith(" ") for p in pieces[:-1])
    assert all(len(p.encode()) <= budget for p in pieces)


def test_split_text_never_cuts_a_multibyte_character() -> None:
    text = "😃" * 300  # 4 bytes each, no spaces
    pieces = split_text(33, text)
    assert "".join(pieces) == text
    assert all(len(p.encode()) <= 512 - 33 - 2 for p in pieces)
    assert len(pieces[0].encode()) == (512 - 33 - 2) // 4 * 4


def test_split_text_rejects_a_prefix_that_leaves_no_room() -> None:
    with pytest.raises(ValueError):
        split_text(507, "x")
    assert split_text(506, "xyzw") == ["xyzw"]


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 520),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=2000),
)
def test_split_text_properties(prefix: int, text: str) -> None:
    budget = 512 - prefix - 2
    if budget < 4:
        with pytest.raises(ValueError):
            split_text(prefix, text)
        return
    pieces = split_text(prefix, text)
    assert "".join(pieces) == text
    for k, piece in enumerate(pieces):
        size = len(piece.encode("utf-8"))
        assert 0 < size <= budget
        assert prefix + size + 2 <= 512
        nxt = pieces[k + 1] if k + 1 < len(pieces) else None
        if nxt is not None and not piece.endswith(" "):
            # Greedy: the next character would not have fit.
            assert size + len(nxt[0].encode()) > budget


# --------------------------------------------------------------------------- CTCP


def test_ctcp_parse_and_build() -> None:
    assert parse_ctcp("\x01ACTION waves\x01") == ("ACTION", "waves")
    assert parse_ctcp("\x01action waves hello") == ("ACTION", "waves hello")
    assert parse_ctcp("\x01VERSION\x01") == ("VERSION", "")
    assert parse_ctcp("\x01\x01") is None
    assert parse_ctcp("\x01") is None
    assert parse_ctcp("hello") is None
    assert ctcp("ACTION", "waves") == "\x01ACTION waves\x01"
    assert ctcp("VERSION") == "\x01VERSION\x01"
    for bad in [("", ""), ("A B", ""), ("ACTION", "a\x01b"), ("ACTION", "a\r")]:
        with pytest.raises(ValueError):
            ctcp(*bad)


@settings(deadline=None)
@given(
    st.from_regex(r"\A[A-Z]{1,10}\Z"),
    st.text(st.characters(blacklist_characters="\x01\r\n\0", blacklist_categories=("Cs",))),
)
def test_ctcp_round_trips(command: str, args: str) -> None:
    assert parse_ctcp(ctcp(command, args)) == (command, args)
