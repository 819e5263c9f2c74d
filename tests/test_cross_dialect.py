"""What crosses between the dialects, on every engine over real sockets: one text policy,
KILL of any member, message ids per line, operators from a file (issue 15).

Each test here failed before the hub was reshaped: IRC texts reached line users with ESC
and BEL intact, U+009B and U+2028 passed, ``KILL lineuser`` reset the operator instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from chatwire import ALL_ENGINES, Server


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(engine: str, start_server, tmp_path: Path) -> Server:
    opers = tmp_path / "opers"
    opers.write_text("# operators\n\nboss:s3cret\n")
    args = ("--irc-port", "0", "--server-name", "irc.test", "--oper-file", str(opers))
    return start_server(engine, *args)


#: Texts that act on a terminal or forge a line: ESC sequences, BEL, a one-character CSI,
#: the line and paragraph separators.
HOSTILE = ["q\x07\x1b]0;pwned\x07", "csi\u009b2J", "a\u2028bob: forged", "p\u2029q"]


def test_irc_texts_that_would_act_on_a_line_users_screen_are_refused(server: Server) -> None:
    eve = server.irc("eve")
    eve.send("JOIN #lobby")
    eve.expect(r" 366 eve #lobby ")
    cid = server.client("cid")
    eve.expect("JOIN")
    for bad in HOSTILE:
        eve.send(f"PRIVMSG #lobby :{bad}")
        assert " INVALID_TEXT " in eve.expect(r"^:irc.test FAIL PRIVMSG ")[-1]
        eve.send(f"TOPIC #lobby :{bad}")
        eve.send(f"AWAY :{bad}")
        eve.send(f"SETNAME :{bad}")
        eve.send(f"PART #lobby :{bad}")
        eve.sync()
    cid.send("/topic")
    lines = cid.ping()
    assert lines == ["* #lobby has no topic"], lines  # nothing else reached the line user
    # Nothing changed: eve is still in the room, and is not away.
    eve.send("NAMES #lobby")
    assert "eve" in eve.expect(r" 353 eve ")[-1]
    eve.send("WHOIS eve")
    assert not any(" 301 " in line for line in eve.expect(r" 318 eve "))


def test_a_quit_reason_is_cleaned_on_its_way_to_line_users(server: Server) -> None:
    eve = server.irc("eve")
    eve.send("JOIN #lobby")
    eve.expect(r" 366 eve #lobby ")
    cid = server.client("cid")
    eve.send("QUIT :q\x07\x1b]0;pwned\x07\u2028cid: forged\u009b")
    line = cid.expect(r"eve quit")[-1]
    assert line == "* eve quit (q\ufffd\ufffd]0;pwned\ufffd\ufffdcid: forged\ufffd)"
    cid.no_more_lines()


def test_kick_reasons_from_irc_obey_the_same_policy(server: Server) -> None:
    boss = server.irc("boss")
    boss.send("JOIN #ops")
    boss.expect(r" 366 boss #ops ")
    cid = server.client("cid")
    cid.send("/join #ops")
    cid.expect("you joined #ops")
    boss.expect("JOIN")
    boss.send("KICK #ops cid :bye\x1b[2J")
    assert " INVALID_TEXT " in boss.expect(r"FAIL KICK")[-1]
    cid.no_more_lines()  # still there, nothing shown
    boss.send("KICK #ops cid :bye")
    assert cid.expect("kicked")[-1] == "* you were kicked from #ops by boss (bye)"


def test_kill_of_a_line_user_tells_it_why_and_keeps_the_operator(server: Server) -> None:
    boss = server.irc("boss")
    boss.send("OPER boss s3cret")
    boss.expect(r" 381 boss ")
    boss.expect(r"^:boss MODE boss \+o$")
    amy = server.client("amy")
    victim = server.client("victim")
    amy.ping()
    boss.send("KILL victim :flooding")
    lines = victim.wait_closed()
    assert lines == ["* you were disconnected by boss (flooding)"], lines
    assert amy.expect("victim quit")[-1] == "* victim quit (Killed (boss (flooding)))"
    assert boss.sync() == []  # the operator is still connected and was told nothing odd
    boss.send("WHOIS victim")
    assert " 401 boss victim " in boss.expect(r" 318 boss ")[0]


def test_kill_of_an_irc_user_and_a_wrong_operator_password(server: Server) -> None:
    boss, eve = server.irc("boss"), server.irc("eve")
    boss.send("OPER boss wrong")
    boss.expect(r" 464 boss ")
    boss.send("KILL eve :x")
    boss.expect(r" 481 boss ")
    boss.send("OPER boss s3cret")
    boss.expect(r" 381 boss ")
    assert boss.expect(r"MODE boss")[-1] == ":boss MODE boss +o"
    boss.send("KILL eve :spam")
    assert eve.expect("ERROR")[-1] == "ERROR :Closing Link: 127.0.0.1 (Killed (boss (spam)))"
    with pytest.raises(EOFError):
        eve.read_line()


def test_each_piece_of_a_long_line_user_message_has_its_own_msgid(server: Server) -> None:
    irc = server.irc("ircy", caps="message-tags server-time")
    irc.send("JOIN #lobby")
    irc.expect(r" 366 ircy #lobby ")
    cid = server.client("cid")
    irc.expect("JOIN")
    text = " ".join(f"w{i:04d}" for i in range(600))  # 3,599 bytes: several IRC lines
    cid.send(text)
    cid.send("short")
    pieces = []
    while not pieces or not pieces[-1].endswith(":short"):
        pieces.append(irc.expect("PRIVMSG")[-1])
    ids = [re.search(r"msgid=([^; ]+)", line).group(1) for line in pieces]  # type: ignore[union-attr]
    assert len(pieces) > 2 and len(set(ids)) == len(ids)
    untagged = [line.split(" ", 1)[1] for line in pieces]
    assert all(len(line.encode()) + 2 <= 512 for line in untagged)
    body = "".join(line.split(" :", 1)[1] for line in untagged[:-1])
    assert body == text
    # A line user gets it back whole, as one line.
    amy = server.client("amy")
    cid.send(text)
    assert amy.expect("cid: ")[-1] == "cid: " + text
