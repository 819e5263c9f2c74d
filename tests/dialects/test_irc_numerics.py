"""The numerics table and the RPL_ISUPPORT line builder."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.dialects.irc import isupport
from chatd.dialects.irc.numerics import BY_CODE, Numeric
from chatd.dialects.irc.wire import parse

#: Issue 9's list of numerics the dialect answers with.
REQUIRED = (
    "001 002 003 004 005 221 251 252 253 254 255 265 266 301 302 303 305 306 311 312 313 314"
    " 315 317 318 319 321 322 323 324 329 331 332 333 341 346 347 348 349 351 352 353 366"
    " 367 368 369 371 372 374 375 376 381 391 401 402 403 404 405 406 409 411 412 417 421"
    " 422 431 432 433 436 441 442 443 451 461 462 464 465 467 471 472 473 474 475 476 477"
    " 481 482 483 491 501 502 524 525 671 704 705 706 900 901 902 903 904 905 906 907 908"
).split()


def test_every_required_numeric_is_in_the_table_once() -> None:
    assert sorted(set(REQUIRED) - set(BY_CODE)) == []
    assert len(BY_CODE) == len(Numeric)  # no code twice


@pytest.mark.parametrize("numeric", list(Numeric), ids=lambda n: n.name)
def test_numeric_entry_is_consistent(numeric: Numeric) -> None:
    assert re.fullmatch(r"[0-9]{3}", numeric.code)
    assert numeric.name.startswith(("RPL_", "ERR_"))
    assert numeric.template.startswith("<client>")
    if numeric.text is not None:
        # The text is the template's trailing part, <field> written as {field}.
        trailing = numeric.template.partition(" :")[2]
        assert re.sub(r"<([a-z ]+)>", lambda m: "{" + m.group(1) + "}", trailing) in (
            numeric.text,
            "Welcome to the {networkname} Network, {nick}[!{user}@{host}]",
        )


def test_known_texts() -> None:
    assert Numeric.ERR_NOSUCHNICK.code == "401"
    assert Numeric.ERR_NOSUCHNICK.text == "No such nick/channel"
    assert Numeric.ERR_INPUTTOOLONG.text == "Input line was too long"
    assert Numeric.ERR_NORECIPIENT.text.format(command="PRIVMSG") == (
        "No recipient given (PRIVMSG)"
    )
    assert Numeric.RPL_WELCOME.text.format(network="chatd", nick="bob") == (
        "Welcome to the chatd Network, bob"
    )
    assert Numeric.RPL_TOPIC.text is None


def test_isupport_tokens() -> None:
    assert isupport.tokens(
        {"NICKLEN": 30, "SAFELIST": None, "EXCEPTS": True, "X": False, "E": "", "V": "a b=\\"}
    ) == ["NICKLEN=30", "SAFELIST", "EXCEPTS", "-X", "E", "V=a\\x20b\\x3D\\x5C"]
    with pytest.raises(ValueError):
        isupport.tokens({"BAD KEY": 1})


def test_isupport_lines_hold_13_tokens_at_most() -> None:
    support = {f"T{i}": i for i in range(30)}
    lines = isupport.rpl_isupport_lines("My.Little.Server", "bob", support)
    params = [parse(line[:-2].decode()).params for line in lines]
    assert [len(p) - 2 for p in params] == [13, 13, 4]
    assert [t for p in params for t in p[1:-1]] == isupport.tokens(support)
    assert all(p[0] == "bob" and p[-1] == "are supported by this server" for p in params)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.from_regex(r"\A[A-Z]{1,20}\Z"), st.text("abc,:()", max_size=200)))
def test_isupport_lines_fit_512_bytes_and_keep_every_token_in_order(support: dict) -> None:
    lines = isupport.rpl_isupport_lines("My.Little.Server", "a" * 30, support)
    assert all(len(line) <= 512 for line in lines)
    params = [parse(line[:-2].decode()).params for line in lines]
    assert all(1 <= len(p) - 2 <= 13 for p in params)
    assert [t for p in params for t in p[1:-1]] == isupport.tokens(support)


def test_isupport_token_too_long_for_a_line_is_our_bug() -> None:
    with pytest.raises(ValueError):
        isupport.rpl_isupport_lines("s", "bob", {"X": "y" * 600})
