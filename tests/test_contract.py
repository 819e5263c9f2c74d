"""Every line of PROTOCOL.md, over real sockets, against every engine, in plain TCP and
over TLS (the same test bodies: ``server.client()`` speaks whichever the server is for)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from typing import Any

import pytest

from chatwire import ALL_ENGINES, Server, TLSFiles


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    """The protocol tests also run on asyncio with uvloop when it is installed."""
    return request.param


@pytest.fixture(params=("plain", "tls"))
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def start_server(
    start_server: Callable[..., Server], transport: str, tls_files: TLSFiles
) -> Callable[..., Server]:
    """conftest's ``start_server``; for ``tls``, clients use the server's TLS listener."""
    if transport == "plain":
        return start_server

    def start(engine: str, *args: str, **kw: Any) -> Server:
        return start_server(engine, *args, tls=tls_files, **kw)

    return start


def test_greeting_asks_for_a_nickname(server: Server) -> None:
    c = server.client()
    assert c.greeting and all(line.startswith("* ") for line in c.greeting)
    assert "nickname" in c.greeting[-1]


def test_registration_confirms_nick_and_room_and_tells_the_room(server: Server) -> None:
    amy = server.client("amy")
    bob = server.client()
    lines = bob.register("bob")
    assert lines[-1].startswith("* ") and "bob" in lines[-1] and "#lobby" in lines[-1]
    joined = amy.expect("joined")
    assert joined == ["* bob joined #lobby"]


def test_invalid_and_taken_nicknames_get_an_error_and_the_server_waits(server: Server) -> None:
    amy = server.client("amy")
    c = server.client()
    for bad in ("AMY", "9lives", "-dash", "has space", "x" * 31):
        c.send(bad)
        assert c.read_line().startswith("! "), bad
    c.register("amy2")
    assert "amy2 joined" in amy.expect("joined")[-1]


def test_chat_reaches_every_other_member_once_in_order_and_not_the_sender(server: Server) -> None:
    amy, bob, cid = server.room("amy", "bob", "cid")
    for i in range(5):
        amy.send(f"line {i}")
    for other in (bob, cid):
        got = other.expect(r"^amy: line 4$")
        assert [line for line in got if line.startswith("amy:")] == [
            f"amy: line {i}" for i in range(5)
        ]
    amy.no_more_lines()
    bob.no_more_lines()


def test_sender_is_stamped_by_the_server_not_the_text(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send("bob: I am bob")
    assert bob.expect("I am bob")[-1] == "amy: bob: I am bob"


def test_message_split_into_pieces_and_merged_lines_arrive_whole(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    for piece in (b"hel", b"lo wo", b"rld\r", b"\nsecond\nthird\n"):
        amy.send(piece)
        amy.sock.getpeername()  # keep pieces as separate sends
    got = bob.expect("^amy: third$")
    assert [line for line in got if line.startswith("amy:")] == [
        "amy: hello world",
        "amy: second",
        "amy: third",
    ]


def test_empty_lines_are_ignored(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send(b"\n\r\n\n")
    amy.no_more_lines()
    amy.send("after")
    assert bob.expect("after")[-1] == "amy: after"


def test_overlong_line_is_refused_and_the_connection_stays(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send(b"x" * 5000 + b"\nshort\n")
    assert amy.read_line().startswith("! ")
    assert bob.expect("short")[-1] == "amy: short"
    # An unterminated monster arriving in pieces.
    for _ in range(10):
        amy.send(b"y" * 1000)
    amy.send(b"\nstill here\n")
    assert amy.read_line().startswith("! ")
    assert bob.expect("still here")[-1] == "amy: still here"
    assert not any("yyyy" in line for line in bob.ping())


def test_max_line_option_sets_the_limit(engine: str, start_server) -> None:
    server = start_server(engine, "--max-line", "100")
    amy, bob = server.room("amy", "bob")
    amy.send("a" * 100)
    assert bob.expect("aaa")[-1] == "amy: " + "a" * 100
    amy.send("b" * 101)
    assert amy.read_line().startswith("! ")


def test_invalid_utf8_is_refused(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send(b"bad \xc3\x28 bytes\n")
    assert amy.read_line().startswith("! ")
    amy.send("fine")
    assert bob.expect("fine")[-1] == "amy: fine"
    assert len([line for line in bob.ping() if "bad" in line]) == 0


def test_control_characters_are_refused(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send(b"\x1b[2Jgotcha\n")
    assert amy.read_line().startswith("! ")
    amy.send(b"null\x00byte\n")
    assert amy.read_line().startswith("! ")
    amy.send(b"\x02bold\x02 and\ttab\n")
    assert bob.expect("bold")[-1] == "amy: \x02bold\x02 and\ttab"
    assert not any("gotcha" in line for line in bob.ping())


def test_nick_command(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send("/nick ann")
    assert bob.expect("known as")[-1] == "* amy is now known as ann"
    assert amy.expect("known as")[-1] == "* amy is now known as ann"
    amy.send("hi")
    assert bob.expect("hi")[-1] == "ann: hi"
    bob.send("/nick ANN")
    assert bob.read_line().startswith("! ")
    bob.send("/nick")
    assert bob.read_line().startswith("! ")
    other = server.client()
    other.register("amy")  # the old nick is free


def test_join_command_moves_rooms(server: Server) -> None:
    amy, bob, cid = server.room("amy", "bob", "cid")
    amy.send("/join dev")
    assert re.search(r"^\* .*#dev", amy.expect("#dev")[-1])
    left = bob.expect("left")[-1]
    assert left.startswith("* ") and "amy" in left
    cid.send("/join #dev")
    joined = amy.expect("joined")[-1]
    assert joined.startswith("* ") and "cid" in joined
    cid.send("dev talk")
    assert amy.expect("dev talk")[-1] == "cid: dev talk"
    assert bob.read_line() == "* cid left #lobby"
    bob.no_more_lines()
    amy.send("/join bad,name")
    assert amy.read_line().startswith("! ")


def test_who_lists_the_current_room(server: Server) -> None:
    amy, bob, cid = server.room("amy", "bob", "cid")
    cid.send("/join elsewhere")
    cid.expect("#elsewhere")
    bob.send("/who")
    line = bob.expect(r"^\* .*amy")[-1]
    assert "amy" in line and "bob" in line and "cid" not in line


def test_rooms_lists_rooms_and_counts(server: Server) -> None:
    amy, _bob, cid = server.room("amy", "bob", "cid")
    cid.send("/join dev")
    cid.expect("#dev")
    amy.send("/rooms")
    line = amy.expect("#dev")[-1]
    assert "#lobby (2)" in line and "#dev (1)" in line


def test_private_message(server: Server) -> None:
    amy, bob, cid = server.room("amy", "bob", "cid")
    amy.send("/msg bob secret stuff")
    assert bob.expect("secret")[-1] == "amy (private): secret stuff"
    assert amy.read_line().startswith("* ")
    cid.no_more_lines()
    amy.send("/msg nobody hello")
    assert amy.read_line().startswith("! ")
    amy.send("/msg bob")
    assert amy.read_line().startswith("! ")


def test_me_action(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send("/me waves")
    assert bob.expect("waves")[-1] == "* amy waves"


def test_help_and_unknown_and_case_insensitive_commands(server: Server) -> None:
    (amy,) = server.room("amy")
    amy.send("/HELP")
    lines = amy.expect("/quit")
    assert all(line.startswith("* ") for line in lines)
    amy.ping()
    amy.send("/frobnicate")
    assert amy.read_line().startswith("! ")
    amy.send("/WhO")
    assert "amy" in amy.read_line()


def test_quit_tells_the_room_and_closes_after_flushing(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send("/quit gone fishing")
    rest = amy.wait_closed()
    assert rest and rest[-1].startswith("* ")
    line = bob.expect("quit")[-1]
    assert line.startswith("* amy") and "gone fishing" in line


def test_closed_socket_tells_the_room(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.close()
    line = bob.expect("amy")[-1]
    assert line.startswith("* amy") and ("quit" in line or "left" in line)


def test_reset_socket_tells_the_room(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    amy.close()
    assert "quit" in bob.expect("amy")[-1]


def test_room_option_sets_the_default_room(engine: str, start_server) -> None:
    server = start_server(engine, "--room", "main")
    bob = server.client()
    assert "#main" in bob.register("bob")[-1]


def test_max_clients_refuses_with_server_full(engine: str, start_server) -> None:
    server = start_server(engine, "--max-clients", "2")
    a, b = server.room("a", "b")
    if server.tls is None:
        extra = server.connect()
        data = b""
        while True:
            chunk = extra.recv(1024)
            if not chunk:
                break
            data += chunk
        assert data == b"! server full\n"
    else:
        # Refused before a handshake, which a full server does not spend on anyone.
        with pytest.raises(OSError):
            server.connect().recv(1024)
    a.send("still fine")
    assert b.expect("still fine")[-1] == "a: still fine"


def test_commands_before_registration(server: Server) -> None:
    c = server.client()
    c.send("/who")
    assert c.read_line().startswith("! ")
    c.send("/nick amy")
    assert "amy" in c.expect("#lobby")[-1]


def test_double_slash_sends_a_line_starting_with_slash(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    amy.send("//shrug")
    assert bob.expect("shrug")[-1] == "amy: /shrug"


@pytest.mark.parametrize("line", ["/join", "/msg", "/me", "/nick a b c"])
def test_malformed_commands_get_an_error(server: Server, line: str) -> None:
    amy = server.client("amy")
    amy.send(line)
    assert amy.read_line().startswith("! ")
