"""IRC names: casemapping, glob masks, ban-mask completion, nickname and channel rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.core.masks import (
    casefold,
    channel_error,
    mask_match,
    nick_error,
    normalize_ban_mask,
)


def test_casemappings() -> None:
    assert casefold("Bob[]\\~") == "bob[]\\~"
    assert casefold("Bob[]\\~", "rfc1459") == "bob{}|^"
    assert casefold("Bob[]\\~", "strict-rfc1459") == "bob{}|~"
    assert casefold("ÉCOLE") == "École"  # ascii folds A-Z only
    with pytest.raises(ValueError):
        casefold("x", "unicode")


@pytest.mark.parametrize(
    ("mask", "target", "expected"),
    [
        ("*", "", True),
        ("*", "anything", True),
        ("bob!*@*", "Bob!~u@127.0.0.1", True),
        ("bob!*@*", "bobby!u@h", False),
        ("b?b!*@*", "bib!u@h", True),
        ("b?b!*@*", "bb!u@h", False),
        ("*!*@*.example.org", "x!y@a.example.org", True),
        ("*!*@*.example.org", "x!y@example.org", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "acb", False),
        ("ab*ba", "aba", False),
        ("ab*ba", "abba", True),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("a\\?", "a?", True),
        ("a\\?", "ab", False),
        ("a\\\\b", "a\\b", True),
    ],
)
def test_mask_match(mask: str, target: str, expected: bool) -> None:
    assert mask_match(mask, target) is expected


def test_mask_match_folds_case_under_the_casemapping() -> None:
    assert mask_match("[bob]!*@*", "{BOB}!u@h", "rfc1459")
    assert not mask_match("[bob]!*@*", "{BOB}!u@h", "ascii")
    # An escape is read before folding: rfc1459 folds "\\" to "|".
    assert mask_match("a\\*", "A*", "rfc1459")


def _reference(mask: str, target: str) -> bool:
    """A slow, obviously right glob (no escapes): regex with .* and ."""
    pattern = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in mask)
    return re.fullmatch(pattern, target, re.DOTALL) is not None


@settings(max_examples=500, deadline=None)
@given(st.text("ab*?", max_size=8), st.text("ab", max_size=10))
def test_mask_match_agrees_with_a_regex_reference(mask: str, target: str) -> None:
    assert mask_match(mask, target) == _reference(mask, target)


def test_hostile_mask_is_matched_in_linear_time() -> None:
    # A backtracking matcher takes exponential time here; this one does one search a part.
    # (No timing assertion: a result at all, inside the suite's timeout, is the point.)
    assert not mask_match("*a" * 200 + "*b", "a" * 5000)


@pytest.mark.parametrize(
    ("mask", "expected"),
    [
        ("bob", "bob!*@*"),
        ("bob!u", "bob!u@*"),
        ("*@host", "*!*@host"),
        ("user@host", "*!user@host"),
        ("example.org", "*!*@example.org"),
        ("2001:db8::1", "*!*@2001:db8::1"),
        ("a!b@c", "a!b@c"),
        ("!@", "*!*@*"),
        ("bob!", "bob!*@*"),
    ],
)
def test_normalize_ban_mask(mask: str, expected: str) -> None:
    assert normalize_ban_mask(mask) == expected


#: PROTOCOL.md's nickname rule, transcribed independently of the implementation.
_PROTOCOL_NICK = re.compile(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,29}")


@pytest.mark.parametrize("nick", ["bob", "Bob_", "[x]", "a" * 30, "`^{}|\\-_", "x1"])
def test_valid_nicknames(nick: str) -> None:
    assert nick_error(nick) is None


@pytest.mark.parametrize(
    ("nick", "reason"),
    [
        ("", "empty"),
        ("a" * 31, "longer than 30"),
        ("1bob", "digit"),
        ("-bob", "digit or '-'"),
        ("bo b", "not allowed"),
        ("bob!", "'!' is not allowed"),
        ("bé", "U+00E9"),
        ("#bob", "not allowed"),
    ],
)
def test_invalid_nicknames_say_why(nick: str, reason: str) -> None:
    error = nick_error(nick)
    assert error is not None and reason in error


def test_nicklen_is_configurable() -> None:
    assert nick_error("a" * 9, nicklen=9) is None
    assert nick_error("a" * 10, nicklen=9) == "longer than 9 characters"


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(max_codepoint=0x7F) | st.sampled_from("éЖ"), max_size=32))
def test_nick_rule_is_the_line_dialects(nick: str) -> None:
    assert (nick_error(nick) is None) == (_PROTOCOL_NICK.fullmatch(nick) is not None)


@pytest.mark.parametrize(
    "name",
    ["#lobby", "#a", "##linux", "#лобби", "#日本語チャンネル", "#Zürich", "#c++", "#x" * 25],
)
def test_valid_channels(name: str) -> None:
    assert channel_error(name) is None


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "must start with '#'"),
        ("lobby", "must start with '#'"),
        ("#", "empty name"),
        ("#" + "x" * 50, "longer than 50"),
        ("#a b", "white space"),
        ("#a\u00a0b", "white space"),
        ("#a,b", "','"),
        ("#a:b", "':'"),
        ("#a\x07", "control character"),
        ("#a\x00", "control character"),
        ("#a\r", "white space"),
        ("#a\x02b", "IRC bold code"),
        ("#a\x03b", "IRC colour code"),
        ("#a\x0fb", "IRC reset code"),
        ("#a\x16b", "IRC reverse code"),
        ("#a\x1db", "IRC italic code"),
        ("#a\x1eb", "IRC strikethrough code"),
        ("#a\x1fb", "IRC underline code"),
        ("#a\u200bb", "ZERO WIDTH SPACE"),
        ("#a\u200db", "invisible format"),
        ("#\ufeffa", "invisible format"),
        ("#a\u202eb", "invisible format"),
        ("#a\ue000", "private-use"),
        ("#\u212a", "NFKC"),
        ("#ｌｏｂｂｙ", "NFKC"),
        ("#l\u043ebby", "mixes scripts (CYRILLIC, LATIN)"),
        ("#\u03b1b", "mixes scripts (GREEK, LATIN)"),
    ],
)
def test_invalid_channels_say_why(name: str, reason: str) -> None:
    error = channel_error(name)
    assert error is not None and reason in error, error


def test_channel_limits_are_configurable() -> None:
    assert channel_error("&local", chantypes="#&") is None
    assert channel_error("#abc", channellen=3) == "longer than 3 characters"
