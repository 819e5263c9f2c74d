"""Issue 16: nine ways to hurt chatd through its IRC listener, each closed, on every engine.

Real servers over real sockets on loopback, reads with deadlines. Each test failed before
its fix: a reply that could not encode reset its reader (or its sender, with a
traceback), LIST and JOIN did unbounded work, tags were free, rooms unbounded, an
invitation passed to whoever took the nick, one line carried thousands of mode letters.
What each costs everyone else in time is measured by ``python -m bench.stalls``, not here.
"""

from __future__ import annotations

import socket

import pytest

from chatwire import ALL_ENGINES, IrcClient, Server


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(engine: str, start_server) -> Server:
    return start_server(engine, "--irc-port", "0", "--server-name", "irc.test")


def _alive(client: IrcClient) -> None:
    """The client is still connected and answered (a round trip)."""
    client.sync()


def test_words_that_cannot_be_middle_parameters_never_break_a_reply(server: Server) -> None:
    """Item 1: thirteen one-line inputs reset their sender; stored masks and keys reset
    every IRC client that listed them later (a persistent trap)."""
    op = server.irc("op")
    op.send("JOIN #trap")
    op.expect(r" 366 op #trap ")
    lines = [
        "JOIN #c1,", "JOIN ,#c2", "PART #c3,", "PRIVMSG #trap, :hi", "WHOIS :a b",
        "NAMES :#a b", "MONITOR + :a b", "LIST >²", "CAP LS ²", "NICK :a b",
        "MODE #trap +b :evil mask", "MODE #trap +e ::x!y@z", "MODE #trap +I :a b",
        "MODE #trap +ik-t+l key ²", "MODE #trap +:", "KICK #trap, nobody",
    ]  # fmt: skip
    for line in lines:
        op.send(line)
        _alive(op)
    # The one that applies some changes applied them and said so.
    op.send("MODE #trap")
    assert op.expect(r" 324 op ")[-1] == ":irc.test 324 op #trap +ink :key"
    line_op = server.client("lineop")
    line_op.send("/join #lineroom")
    line_op.expect("you joined")
    line_op.send("/mode +k :x")
    assert line_op.expect(r"^! ")[-1].startswith("! #lineroom: invalid +k")
    line_op.send("/mode +l 50")
    line_op.ping()
    viewer = server.irc("viewer")
    viewer.send("JOIN #trap,#lineroom")
    viewer.send("MODE #trap\r\nMODE #trap +beI\r\nMODE #lineroom\r\nMODE #lineroom +b")
    viewer.expect(r" 368 viewer #lineroom ")
    _alive(viewer)


def test_a_member_from_an_ipv6_address_is_shown_to_who_and_whois(start_server, engine) -> None:
    """Item 1: a host of ``::1`` starts with ``:`` and broke WHO and WHOIS for everyone."""
    try:
        probe = socket.create_server(("::1", 0), family=socket.AF_INET6)
        probe.close()
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    srv = start_server(engine, "--host", "::1", "--irc-port", "0", "--server-name", "irc.test")
    clients = []
    for nick in ("six", "asker"):
        sock = socket.create_connection(("::1", srv.irc_port), timeout=10)
        client = IrcClient.__new__(IrcClient)
        client.sock, client.timeout, client.buf, client.nick = sock, 10.0, b"", None
        client.register(nick)
        clients.append(client)
    six, asker = clients
    six.send("JOIN #v6")
    six.expect(r" 366 six ")
    asker.send("WHO #v6\r\nWHOIS six\r\nWHO six %tnh,7")
    lines = asker.expect(r" 315 asker six ")
    assert ":irc.test 352 asker #v6 ~six 0::1 irc.test six H@ :0 six real name" in lines
    assert ":irc.test 311 asker six ~six 0::1 * :six real name" in lines
    assert ":irc.test 354 asker 7 0::1 six" in lines


def test_list_bounds_its_conditions(server: Server) -> None:
    """Item 2: ten lines of LIST with 246 masks each stalled everyone for seconds."""
    amy = server.irc("amy")
    amy.send("JOIN #alpha,#beta,#gamma")
    amy.expect(r" 366 amy #gamma ")
    masks = ",".join(["*"] * 246 + ["!*"])
    amy.send(f"LIST {masks}")
    assert " TOO_MANY_CONDITIONS " in amy.expect(r"FAIL LIST")[-1]
    amy.send("LIST *a*,!*beta*,>0")
    names = [line.split()[3] for line in amy.expect(r" 323 amy ") if " 322 " in line]
    assert names == ["#alpha", "#gamma"]


def test_one_join_names_at_most_ten_rooms(server: Server) -> None:
    """Item 3: one JOIN line named ~120 rooms, each matched against its ban lists."""
    amy = server.irc("amy")
    amy.send("JOIN " + ",".join(f"#r{i}" for i in range(25)))
    lines = amy.expect(r" 407 amy ")
    assert lines[-1] == ":irc.test 407 amy #r10 :Too many targets"
    amy.send("WHOIS amy")
    rooms = next(line for line in amy.expect(r" 318 amy ") if " 319 " in line)
    assert len(rooms.split(":", 2)[2].split()) == 10
    amy.send("JOIN #c1,#c2")
    amy.expect(r" 366 amy #c2 ")


def test_client_tags_count_against_the_private_budget(start_server, engine) -> None:
    """Item 4: a TAGMSG with 4 KB of tags was charged 64 bytes of the victim's budget."""
    args = ("--irc-port", "0", "--server-name", "irc.test")
    # A budget that refills slowly (100 B/s): what the messages spend is what counts.
    srv = start_server(engine, *args, "--private-rate", "100", "--private-burst", "12000")
    victim = srv.irc("victim", caps="message-tags")  # held: it must stay connected
    sender = srv.irc("sender", caps="message-tags")
    tags = ";".join(f"+t{i}={'x' * 200}" for i in range(16))  # ~3.4 KB relayed
    refused = None
    for i in range(10):
        sender.send(f"@{tags} PRIVMSG victim :{i}")
        replies = sender.sync()
        if any(" TARGET_TOO_FAST " in line for line in replies):
            refused = i
            break
    assert refused is not None and refused <= 4, "the victim's budget never ran out"
    _alive(victim)


def test_members_are_bounded_in_rooms_and_chanlimit_says_so(start_server, engine) -> None:
    """Item 5: four connections made 77,600 rooms."""
    srv = start_server(engine, "--irc-port", "0", "--server-name", "irc.test", "--max-rooms", "5")
    amy = srv.irc("amy")
    amy.send("VERSION")
    assert any("CHANLIMIT=#:5" in line for line in amy.expect(r"CHANLIMIT"))
    amy.send("JOIN #a,#b,#c,#d,#e,#f")
    assert amy.expect(r" 405 amy ")[-1].startswith(":irc.test 405 amy #f ")
    line = srv.client("lin")  # the line user's default room is one of its five
    for name in ("#1", "#2"):
        line.send(f"/join {name}")  # a line user is in one room at a time: never refused
        line.expect("you joined")


def test_an_invitation_admits_only_the_member_who_was_invited(server: Server) -> None:
    """Item 6: after an invited bob changed nick or quit, mallory took the nick and walked
    past +i, +l 1 and a ban on her."""
    op = server.irc("op")
    op.send("JOIN #club")
    op.expect(r" 366 op #club ")
    op.send("MODE #club +il 1\r\nMODE #club +b mallory!*@*")
    op.sync()
    bob = server.irc("bob")
    op.send("INVITE bob #club")
    op.expect(r" 341 op bob #club")
    bob.send("NICK robert")
    bob.expect("NICK")
    mallory = server.irc("mallory")
    mallory.send("NICK bob\r\nJOIN #club")
    assert mallory.expect(r" (473|471|474) bob ")[-1].startswith(":irc.test 473 bob #club")
    line_mallory = server.client("eve")
    line_mallory.send("/join #club")
    assert line_mallory.expect(r"^! ")[-1].startswith("! cannot join #club")
    bob.send("JOIN #club")  # robert still holds it
    bob.expect(r" 366 robert #club ")


def test_a_message_line_costs_bounded_work(server: Server) -> None:
    """Item 7: hundreds of tags and PRIVMSG #big,#big,#big,#big were encoded per
    capability set and per target: ~33 ms a line."""
    amy = server.irc("amy", caps="message-tags")
    bob = server.irc("bob", caps="message-tags")
    for c in (amy, bob):
        c.send("JOIN #big")
        c.expect(r" 366 \w+ #big ")
    tags = ";".join(f"+t{i}" for i in range(700))  # 3.5 KB of the 4 KB a client may send
    amy.send(f"@{tags} PRIVMSG #big,#BIG,#big,#big :once")
    got = bob.expect(r"PRIVMSG #big :once")[-1]
    assert got.count(";") + 1 == 1 + 16  # msgid and the first 16 client tags
    amy.send("PRIVMSG bob :after")
    assert bob.expect("PRIVMSG")[-1].endswith("PRIVMSG bob :after")  # exactly once above


def test_a_bad_mode_string_is_answered_once(server: Server) -> None:
    """Item 8: /mode +ZZZ... (4,080 letters) answered 4,080 lines."""
    op = server.irc("op")
    op.send("JOIN #m")
    op.expect(r" 366 op #m ")
    op.send("MODE #m +" + "Z" * 400)
    replies = op.sync()
    assert replies == [":irc.test 472 op Z :is unknown mode char to me"]
    lineop = server.client("lineop")
    lineop.send("/join #lm")
    lineop.expect("you joined")
    lineop.send("/mode +" + "Z" * 4000)
    assert lineop.ping() == ["! unknown mode: Z"]


def test_mode_arguments_obey_the_text_policy_and_a_length(server: Server) -> None:
    """Item 9: ban masks and keys carried ESC and BEL to line users; a line operator's
    3,000-character mask reached IRC clients in lines of ~3 KB."""
    lineop = server.client("lineop")
    lineop.send("/join #x")
    lineop.expect("you joined")
    watcher = server.irc("watcher")
    watcher.send("JOIN #x")
    watcher.expect(r" 366 watcher #x ")
    lineop.send("/mode +b " + "m" * 3000)
    assert "at most 150 characters" in lineop.expect(r"^! ")[-1]
    irc_op = server.irc("ircop")
    irc_op.send("JOIN #y")
    irc_op.expect(r" 366 ircop #y ")
    reader = server.client("reader")
    reader.send("/join #y")
    reader.expect("you joined")
    irc_op.expect("JOIN")
    irc_op.send("MODE #y +b evil\x1b[2J!*@*\r\nMODE #y +k key\x07")
    replies = irc_op.sync()
    assert [line.split()[1] for line in replies] == ["696", "696"]
    assert reader.ping() == []  # nothing reached the line user
    watcher.send("MODE #x\r\nMODE #x +b")
    assert all(len(line) < 512 for line in watcher.expect(r" 368 watcher #x "))
