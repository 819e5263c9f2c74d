"""The IRC listener on every engine, over real sockets (plain and TLS), beside line clients.

The conformance suite (irctest, run by tests/irc/run_irctest.py from .ci/run) checks the
letter of IRC; these check what crosses between the dialects and that bad IRC input
costs nobody else anything.
"""

from __future__ import annotations

import re
import socket

import pytest

from chatwire import ALL_ENGINES, IrcClient, Server, TLSFiles


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=("plain", "tls"))
def server(
    engine: str, start_server, tls_files: TLSFiles, request: pytest.FixtureRequest
) -> Server:
    """A server with an IRC listener; for ``tls``, every client (line and IRC) uses TLS."""
    args = ("--irc-port", "0", "--server-name", "irc.test")
    if request.param == "tls":
        return start_server(engine, *args, "--irc-tls-port", "0", tls=tls_files)
    return start_server(engine, *args)


def test_announces_one_line_per_listener_line_first(server: Server) -> None:
    names = list(server.ports)  # in the order of the "listening on" lines
    assert names[0] == "line" and "irc" in names  # PROTOCOL.md's line comes first
    assert len(set(server.ports.values())) == len(names)
    c = server.client()  # the line listener (its TLS one when tested over TLS)
    assert "nickname" in c.greeting[-1]


def test_both_dialects_in_one_room_through_chat_actions_privates_nicks_and_quits(
    server: Server,
) -> None:
    amy = server.irc("amy")
    amy.send("JOIN #lobby")
    amy.expect(r" 366 amy #lobby ")
    cid = server.client("cid")
    assert amy.expect(r"JOIN")[-1] == ":cid!line@127.0.0.1 JOIN #lobby"
    cid.send("hello from the line")
    assert amy.expect("PRIVMSG")[-1] == ":cid!line@127.0.0.1 PRIVMSG #lobby :hello from the line"
    amy.send("PRIVMSG #lobby :hello from irc")
    amy.send("PRIVMSG #lobby :\x01ACTION waves\x01")
    amy.send("NOTICE #lobby :notice me")
    assert cid.expect("notice me") == ["amy: hello from irc", "* amy waves", "amy: notice me"]
    cid.send("/me nods")
    assert amy.expect("ACTION")[-1] == ":cid!line@127.0.0.1 PRIVMSG #lobby :\x01ACTION nods\x01"
    amy.send("PRIVMSG cid :psst")
    assert cid.expect("psst")[-1] == "amy (private): psst"
    cid.send("/msg amy hush")
    assert amy.expect("hush")[-1] == ":cid!line@127.0.0.1 PRIVMSG amy :hush"
    cid.send("/who")
    assert cid.expect(r"^\* #lobby")[-1] == "* #lobby (2): amy cid"
    amy.send("NICK rory")
    assert cid.expect("known as")[-1] == "* amy is now known as rory"
    cid.send("/nick river")
    assert amy.expect("NICK river")[-1] == ":cid!line@127.0.0.1 NICK river"
    cid.send("/quit spoilers")
    assert amy.expect(" QUIT ")[-1] == ":river!line@127.0.0.1 QUIT :Quit: spoilers"
    bob = server.client("bob")
    amy.expect("JOIN")
    amy.send("QUIT :gone")
    assert amy.expect("^ERROR")[-1].startswith("ERROR :Closing Link")
    assert bob.expect("quit")[-1] == "* rory quit (gone)"


def test_operator_commands_work_across_dialects(server: Server) -> None:
    amy = server.irc("amy")
    amy.send("JOIN #club")
    amy.expect(" 366 ")
    cid = server.client("cid")
    cid.send("/join #club")
    cid.expect("you joined")
    amy.send("MODE #club +i")
    assert cid.expect("mode")[-1] == "* amy set mode +i on #club"
    dan = server.client("dan")
    dan.send("/join #club")
    assert dan.read_line() == "! cannot join #club: it is invite-only (+i)"
    amy.send("INVITE dan #club")
    assert dan.expect("invited")[-1] == "* amy invited you to #club (/join #club)"
    dan.send("/join #club")
    dan.expect("you joined")
    cid.send("/kick dan")
    assert cid.expect("^!")[-1] == "! you are not an operator of #club"
    amy.send("KICK #club dan :out")
    assert dan.expect("kicked")[-1] == "* you were kicked from #club by amy (out)"
    assert cid.expect("kicked")[-1] == "* dan was kicked from #club by amy (out)"
    amy.send("TOPIC #club :members only")
    assert cid.expect("topic")[-1] == "* amy set the topic of #club to: members only"
    cid.send("/topic")
    assert cid.read_line() == "* topic of #club: members only"


def test_a_long_line_message_reaches_irc_users_split_whole_and_in_order(
    server: Server,
) -> None:
    amy = server.irc("amy")
    amy.send("JOIN #lobby")
    amy.expect(" 366 ")
    cid = server.client("cid")
    amy.expect("JOIN")
    text = "".join(f"{i:04d}é€😃 " for i in range(250))  # 3,500 bytes
    cid.send(text)
    cid.send("done")
    lines = amy.expect(":done$")[:-1]
    head = ":cid!line@127.0.0.1 PRIVMSG #lobby :"
    assert len(lines) >= 7 and all(line.startswith(head) for line in lines)
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    assert "".join(line[len(head) :] for line in lines) == text


def test_nicknames_are_unique_across_dialects(server: Server) -> None:
    sam = server.client("sam")
    irc = server.irc()
    irc.send("NICK SAM\r\nUSER s 0 * :S")
    assert re.match(r"^:irc\.test 433 \* SAM :", irc.read_line())
    irc.send("NICK tom")
    irc.expect(r" (376|422) tom ")
    line = server.client()
    line.send("Tom")
    assert line.read_line() == "! nickname is taken: Tom"
    irc.send("NICK sam")
    assert re.match(r"^:irc\.test 433 tom sam :", irc.read_line())
    sam.no_more_lines()


def test_bad_irc_input_gets_its_numeric_and_costs_nobody_else_a_message(
    server: Server,
) -> None:
    amy = server.irc("amy")
    amy.send("JOIN #lobby")
    amy.expect(" 366 ")
    cid, dan = server.room("cid", "dan")
    amy.sync()
    hostile = server.irc("mallory")
    hostile.send(b"PRIVMSG #lobby :" + b"x" * 600 + b"\r\n")
    assert " 417 mallory " in hostile.read_line()
    hostile.send(b"PRIVMSG amy :\xff\xfe\r\n")
    assert hostile.read_line().startswith(":irc.test FAIL PRIVMSG INVALID_UTF8 ")
    hostile.send(b"\x00\x01\x02 garbage\r\nPRIVMSG\r\n" + b"\r\n" * 10 + b"FROB\r\n")
    assert " 411 mallory " in hostile.read_line()
    assert " 421 mallory FROB " in hostile.read_line()
    hostile.send(b"NICK " + b"a" * 40 + b"\r\nJOIN #lo\xe2\x80\x8bbby\r\nMODE #nope +o x\r\n")
    assert " 432 mallory " in hostile.read_line()
    assert " 479 mallory " in hostile.read_line()
    assert " 403 mallory #nope " in hostile.read_line()
    for i in range(20):
        cid.send(f"line {i}")
    assert [x for x in dan.expect("line 19") if x.startswith("cid:")] == [
        f"cid: line {i}" for i in range(20)
    ]
    got = [x for x in amy.expect(":line 19$") if "PRIVMSG" in x]
    assert len(got) == 20
    hostile.close()


def test_keepalive_pings_silent_irc_clients_and_drops_those_that_never_answer(
    engine: str, start_server
) -> None:
    server = start_server(engine, "--irc-port", "0", "--ping-interval", "1")
    mute = IrcClient(server.host, server.irc_port)  # type: ignore[arg-type]
    mute.send("NICK mute\r\nUSER m 0 * :M")
    lines = []
    mute.sock.settimeout(10)
    data = b""
    while True:  # read raw, never answering the PING
        chunk = mute.sock.recv(65536)
        if not chunk:
            break
        data += chunk
    lines = data.decode().splitlines()
    assert "PING :chatd" in lines or "PING chatd" in lines
    assert lines[-1] == "ERROR :Closing Link: 127.0.0.1 (Ping timeout)"
    talker = server.irc("talker")  # answers PINGs (IrcClient does) and stays
    talker.sync()


def test_refused_irc_connections_get_an_irc_error(engine: str, start_server) -> None:
    server = start_server(engine, "--irc-port", "0", "--max-clients", "1")
    keep = server.client("keep")
    extra = socket.create_connection((server.host, server.irc_port), timeout=10)
    data = b""
    while chunk := extra.recv(1024):
        data += chunk
    assert data == b"ERROR :Closing Link: (server full)\r\n"
    keep.no_more_lines()


def test_monitor_statusmsg_and_exceptions_cross_dialects(server: Server) -> None:
    amy = server.irc("amy")
    amy.send("MONITOR + cid,dan")
    assert amy.expect(" 731 ")[-1] == ":irc.test 731 amy :cid,dan"
    cid = server.client("cid")  # a line user: the first in #lobby, its operator
    assert amy.expect(" 730 ")[-1] == ":irc.test 730 amy :cid!line@127.0.0.1"
    cid.send("/monitor amy")
    assert cid.expect("online")[-1] == "* amy is online"
    cid.send("/mode +b *!*@127.0.0.1")
    cid.send("/mode +e amy!*@*")
    cid.ping()
    amy.send("JOIN #lobby")  # banned by host, excepted by nick
    amy.expect(" 366 amy #lobby ")
    dan = server.irc()
    dan.send("NICK dan\r\nUSER dan 0 * :Dan")
    dan.expect(" 376 | 422 ")
    assert amy.expect(" 730 ")[-1] == ":irc.test 730 amy :dan!~dan@127.0.0.1"
    dan.send("JOIN #lobby")
    assert " 474 dan #lobby " in dan.read_line()
    amy.send("PRIVMSG @#lobby :ops only")
    assert cid.expect("ops only")[-1] == "* amy to the operators of #lobby: ops only"
    cid.send("/msg @#lobby noted")
    cid.expect("-> @#lobby")
    amy.sync()  # amy is not an operator: nothing for her
    amy.send("QUIT :bye")
    assert cid.expect("offline")[-1] == "* amy is offline"


def test_labeled_responses_over_a_socket(server: Server) -> None:
    amy = server.irc("amy", caps="batch labeled-response")
    amy.send("@label=a JOIN #c")
    lines = amy.expect("BATCH -")
    assert lines[0].startswith("@label=a :irc.test BATCH +")
    ref = lines[0].split()[3][1:]
    assert all(line.startswith(f"@batch={ref} ") for line in lines[1:-1])
    assert [line.split()[2] for line in lines[1:-1]] == ["JOIN", "353", "366"]
    amy.send("@label=b PONG x\r\n@label=c PING y")
    assert amy.read_line() == "@label=b :irc.test ACK"
    assert amy.read_line() == "@label=c :irc.test PONG irc.test y"
