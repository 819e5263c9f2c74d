"""IRCv3 CHATHISTORY over real sockets on every engine, with the default SQLite history:
what a client reads back is what was relayed live, ids and times included."""

from __future__ import annotations

import re

import pytest

from chatwire import ALL_ENGINES, IrcClient, Server

CAPS = "batch server-time message-tags echo-message"


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


def _tag(line: str, key: str) -> str:
    found = re.match(rf"@(?:\S*;)?{key}=([^; ]+)", line)
    assert found, line
    return found[1]


def _batch(c: IrcClient, command: str) -> list[str]:
    """The lines of the chathistory batch answering ``command``, their batch tag removed."""
    c.send(command)
    opened = c.expect(r" BATCH \+")[-1]
    ref = re.fullmatch(r":irc\.test BATCH \+(\S+) chathistory #talk", opened)
    assert ref, opened
    lines = c.expect(rf"^:irc\.test BATCH -{ref[1]}$")[:-1]
    prefix = f"@batch={ref[1]};"
    assert all(line.startswith(prefix) for line in lines), lines
    return ["@" + line[len(prefix) :] for line in lines]


def test_history_reads_back_what_was_relayed_live(engine: str, start_server) -> None:
    server: Server = start_server(engine, "--irc-port", "0", "--server-name", "irc.test")
    amy = server.irc("amy", caps=CAPS)
    bob = server.irc("bob", caps="server-time message-tags")
    for c in (amy, bob):
        c.send("JOIN #talk")
        c.expect(" 366 ")
    amy.expect(" JOIN #talk")
    echoes, relayed = [], []
    for i in range(6):
        amy.send(f"PRIVMSG #talk :message {i}")
        echoes.append(amy.expect(f":message {i}$")[-1])
        relayed.append(bob.expect(f":message {i}$")[-1])
    # What bob was relayed and what amy's echo said are the same line, ids and times.
    assert [_tag(line, "msgid") for line in echoes] == [_tag(line, "msgid") for line in relayed]
    assert [_tag(line, "time") for line in echoes] == [_tag(line, "time") for line in relayed]
    assert len({_tag(line, "msgid") for line in echoes}) == 6

    assert _batch(amy, "CHATHISTORY LATEST #talk * 10") == echoes
    assert _batch(amy, "CHATHISTORY LATEST #talk * 2") == echoes[-2:]
    before = f"msgid={_tag(echoes[4], 'msgid')}"
    assert _batch(amy, f"CHATHISTORY BEFORE #talk {before} 2") == echoes[2:4]
    assert _batch(amy, f"CHATHISTORY BEFORE #talk {before} 100") == echoes[:4]
    # TARGETS always reads the disk: the reply waits as work, on every engine.
    amy.send(
        "CHATHISTORY TARGETS timestamp=2020-01-01T00:00:00.000Z "
        "timestamp=2262-01-01T00:00:00.000Z 10\r\nPING after"
    )
    opened = amy.expect(r" BATCH \+")[-1]
    ref = opened.split()[2][1:]
    assert opened == f":irc.test BATCH +{ref} draft/chathistory-targets"
    assert amy.read_line() == (
        f"@batch={ref} :irc.test CHATHISTORY TARGETS #talk {_tag(echoes[-1], 'time')}"
    )
    assert amy.read_line() == f":irc.test BATCH -{ref}"
    assert amy.read_line() == ":irc.test PONG irc.test after"  # in order, after the reply
    # Bob reads the same lines as he was relayed them (his caps: no batch → plain lines).
    bob.send("CHATHISTORY LATEST #talk * 3")
    assert [bob.read_line() for _ in range(3)] == relayed[-3:]
    # A stranger may not read it.
    dan = server.irc("dan")
    dan.send("CHATHISTORY LATEST #talk * 3")
    assert dan.read_line() == (
        ":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST #talk :Messages could not be retrieved"
    )
    assert (server.data_dir / "chatd.sqlite3").exists()  # SQLite history, not memory
