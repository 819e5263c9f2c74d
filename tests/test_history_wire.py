"""``/history [N]`` over real sockets, on every engine, with the default SQLite store
(issue 17): chat from both dialects, then exactly the last N lines, framed."""

from __future__ import annotations

import calendar
import re
import time

import pytest

from chatwire import ALL_ENGINES, Server


@pytest.fixture(params=ALL_ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def server(engine: str, start_server) -> Server:
    return start_server(engine, "--irc-port", "0")


_REPLAYED = re.compile(r"^\* #lobby (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (.*)$")


def test_history_gives_exactly_the_last_n_lines_framed(server: Server) -> None:
    amy, bob = server.room("amy", "bob")
    eve = server.irc("eve")
    eve.send("JOIN #lobby")
    eve.expect(r" 366 eve #lobby ")
    amy.expect("eve joined")
    bob.expect("eve joined")
    started = time.time()
    long_line = "long " * 300 + "end"  # 1,503 bytes: cut into pieces for IRC, kept so
    for i in range(4):
        amy.send(f"line {i}")
    bob.expect(r"^amy: line 3$")  # before eve speaks: the order is known
    eve.send("PRIVMSG #lobby :from IRC")
    eve.send("PRIVMSG #lobby :\x01ACTION waves from IRC\x01")
    eve.send("PRIVMSG @#lobby :to the operators only")
    eve.send("PRIVMSG bob :private, never kept")
    bob.expect("^eve \\(private\\)")
    amy.expect(r"^\* eve to the operators of #lobby: ")  # amy operates #lobby
    amy.send("/me stretches")
    amy.send(long_line)
    bob.expect(r"^amy: long long")
    bob.send("/history 5")
    got = bob.expect(r"^\* end of history of #lobby$")
    assert got[0] == "* history of #lobby (5 lines, times in UTC):"
    replayed = [_REPLAYED.match(line) for line in got[1:-1]]
    assert all(replayed), got
    assert [m.group(2) for m in replayed if m] == [
        "amy: line 3",
        "eve: from IRC",
        "* eve waves from IRC",
        "* amy stretches",
        f"amy: {long_line}",
    ]
    for m in replayed:  # the times are UTC, of just now
        assert m is not None
        at = calendar.timegm(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        assert started - 2 <= at <= time.time() + 1
    bob.no_more_lines()
    amy.no_more_lines()  # nobody else sees a replay
    # Later input waits behind the replay: the reply comes before the pong.
    amy.send("/history 1\n/ping order")
    assert amy.expect(r"^\* pong order$") == [
        "* history of #lobby (1 line, times in UTC):",
        got[-2],
        "* end of history of #lobby",
        "* pong order",
    ]


def test_history_refusals(server: Server) -> None:
    (amy,) = server.room("amy")
    amy.send("/history 0")
    assert amy.read_line() == "! usage: /history [N] (N lines, 1 to 100; 20 without N)"
    amy.send("/history")
    assert amy.expect(r"^\* end of history") == [
        "* history of #lobby (no lines, times in UTC):",
        "* end of history of #lobby",
    ]
    c = server.client()
    c.send("history")
    assert c.read_line() == "! nickname is reserved: history"


def test_after_a_restart_history_comes_from_the_disk(engine: str, start_server, tmp_path) -> None:
    """The store's cache is empty after a restart: the replay waits for the reader thread
    a loop turn at a time, on every engine, and the reply still comes before later input."""
    data = str(tmp_path / "data")
    first = start_server(engine, "--data-dir", data)
    (amy,) = first.room("amy")
    for i in range(30):
        amy.send(f"before the restart {i}")
    amy.ping()
    first.finish()  # SIGTERM: what is queued is written
    second = start_server(engine, "--data-dir", data)
    (bob,) = second.room("bob")
    bob.send("/history 3\n/ping order")
    got = bob.expect(r"^\* pong order$")
    assert got[0] == "* history of #lobby (3 lines, times in UTC):"
    assert [line.split(": ", 1)[1] for line in got[1:4]] == [
        f"before the restart {i}" for i in (27, 28, 29)
    ]
    assert all(line.startswith("* #lobby ") and " amy: " in line for line in got[1:4])
    assert got[4:] == ["* end of history of #lobby", "* pong order"]


def _history(client, room: str) -> list[str]:
    """The lines ``/history`` replays in ``room`` (the client's current room)."""
    client.send("/history")
    got = client.expect(rf"^\* end of history of {room}$")
    return [line.split(" ", 4)[4] for line in got[1:-1]]


def test_a_guarded_room_that_ended_takes_its_lines_along(
    engine: str, start_server, tmp_path
) -> None:
    """Nobody owns a room name: whoever makes a room again must not read what a key, an
    invitation or a ban kept from them in the one that ended (its last member left), from
    the cache or from the disk. An open room's lines stay; a room that only the shutdown
    emptied comes back with its lines (and its key)."""
    data = str(tmp_path / "data")
    first = start_server(engine, "--data-dir", data)
    (amy,) = first.room("amy")
    # A line user is in one room at a time: each /join ends the room before.
    for room, mode in (("#open", ""), ("#secret", "+i"), ("#kept", "+k sesame")):
        amy.send(f"/join {room}")
        amy.expect(rf"^\* you joined {room} ")
        if mode:
            amy.send(f"/mode {mode}")
            amy.expect(r"^\* amy set mode ")
        amy.send(f"said in {room}")
        amy.ping()
    (bob,) = first.room("bob")
    for room, lines in (("#secret", []), ("#open", ["amy: said in #open"])):
        bob.send(f"/join {room}")  # made again, by bob
        bob.expect(rf"^\* you joined {room} \(1 here\)")
        assert _history(bob, room) == lines
    first.finish()  # SIGTERM: #kept (emptied by the shutdown) and its line are kept
    second = start_server(engine, "--data-dir", data)
    (carol,) = second.room("carol")
    carol.send("/join #kept sesame")
    carol.expect(r"^\* you joined #kept \(1 here\)")
    assert _history(carol, "#kept") == ["amy: said in #kept"]
    carol.send("/join #lobby")  # #kept ends now: its line came from the disk
    carol.expect(r"^\* you joined #lobby ")
    carol.send("/join #kept")  # no key: a new room
    carol.expect(r"^\* you joined #kept \(1 here\)")
    assert _history(carol, "#kept") == []
