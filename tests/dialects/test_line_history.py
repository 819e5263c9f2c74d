"""The line dialect's ``/history [N]`` through the real service, hub, router and history
store, with an engine stand-in (issue 17): golden replays, what is kept and what is not,
long lines made whole again, the argument's limits, its price, the anti-forgery rules,
and a store that answers later or fails."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatd.client.lines import Notice, Replayed, classify, history_frame
from chatd.core.names import valid_nick
from chatd.dialects.base import STEP_PAUSE
from chatd.dialects.line import NOTICES, RESERVED_NICKS, history
from chatd.dialects.line.notices import _template_regex
from chatd.history.model import Query, Selection
from engine_double import Peer, World

#: The World's wall clock: 1_800_000_000 is this, in UTC.
T0 = "2027-01-15 08:00"

GOLDEN = f"""\
* history of #lobby (9 lines, times in UTC):
* #lobby {T0}:00 amy: hello
* #lobby {T0}:05 bob: hi from IRC
* #lobby {T0}:06 bob: an IRC notice
* #lobby {T0}:07 * bob dances
* #lobby {T0}:08 * amy waves
* #lobby {T0}:09 amy: {"long " * 200}end
* #lobby {T0}:10 amy: first of a batch
* #lobby {T0}:10 amy: second of a batch
* #lobby {T0}:12 bob: last
* end of history of #lobby
"""


def chat_scene() -> tuple[World, Peer, Peer]:
    """amy (line) and bob (IRC) in #lobby say one of everything, a second apart or so."""
    w = World()
    amy, bob = w.line("amy"), w.irc("bob")
    bob.send("JOIN #lobby")
    amy.send("hello")
    w.wall += 5
    bob.send("PRIVMSG #lobby :hi from IRC")
    w.wall += 1
    bob.send("NOTICE #lobby :an IRC notice")
    w.wall += 1
    bob.send("PRIVMSG #lobby :\x01ACTION dances\x01")
    w.wall += 1
    amy.send("/me waves")
    w.wall += 1
    amy.send("long " * 200 + "end")  # cut into pieces for IRC's 512-byte lines
    w.wall += 1
    amy.send("first of a batch\nsecond of a batch")
    w.wall += 1
    # Never kept: the room's operators only (STATUSMSG), and private messages.
    bob.send("PRIVMSG @#lobby :ops only\r\nPRIVMSG amy :psst\r\nNOTICE amy :private notice")
    amy.send("/msg @#lobby to the ops\n/msg bob private")
    w.wall += 1
    bob.send("PRIVMSG #lobby :last")
    amy.lines()
    bob.lines()
    return w, amy, bob


def test_history_golden_replay_of_both_dialects() -> None:
    w, amy, bob = chat_scene()
    ring = w.service.history.rooms["#lobby"]  # type: ignore[attr-defined]
    assert sum(line.concat for line in ring) >= 2, "the long line was stored in pieces"
    cid = w.line("cid")  # joined after all of it
    amy.lines()
    bob.lines()
    cid.send("/history")
    assert cid.lines() == GOLDEN.splitlines()
    assert amy.lines() == [] and bob.lines() == []  # nobody else hears of it


def test_history_n_gives_exactly_the_last_n_whole_lines() -> None:
    w, amy, _ = chat_scene()
    amy.send("/history 3")
    assert amy.lines() == [
        "* history of #lobby (3 lines, times in UTC):",
        *GOLDEN.splitlines()[-4:],
    ]
    amy.send("/history 1")
    assert amy.lines()[1:] == [f"* #lobby {T0}:12 bob: last", "* end of history of #lobby"]
    amy.send("/HISTORY 0004")
    assert len(amy.lines()) == 6


@pytest.mark.parametrize(
    "args",
    [
        *("0", "-3", "x", "1.5", "5 6", "+5", "٣", "0x10", "00", "-0", "5x", "#lobby"),
        pytest.param("0" * 4000, id="4000-zeros"),
    ],
)
def test_a_bad_n_gets_the_usage(args: str) -> None:
    w = World()
    amy = w.line("amy")
    amy.send(f"/history {args}")
    assert amy.lines() == [f"! {history.USAGE}"]
    assert history.USAGE == "usage: /history [N] (N lines, 1 to 100; 20 without N)"


@pytest.mark.parametrize(
    "args,n", [("", 20), ("   ", 20), ("1", 1), ("100", 100), ("101", 100), ("99999", 100)]
)
def test_n_defaults_to_20_and_is_cut_to_100(args: str, n: int) -> None:
    assert history.count(args) == n
    assert history.count("9" * 4000) == 100  # never converted
    assert history.count("0" * 4000 + "7") == 7


def test_the_default_and_the_maximum_over_the_wire() -> None:
    w = World()
    amy = w.line("amy")
    amy.send("".join(f"line {i}\n" for i in range(150)))
    amy.send("/history")
    got = amy.lines()
    assert got[0] == "* history of #lobby (20 lines, times in UTC):"
    assert [line.split(": ", 1)[1] for line in got[1:-1]] == [f"line {i}" for i in range(130, 150)]
    amy.send("/history 99999")
    got = amy.lines()
    assert got[0] == "* history of #lobby (100 lines, times in UTC):" and len(got) == 102
    assert got[1].endswith("amy: line 50") and got[-2].endswith("amy: line 149")


def test_an_empty_room_has_an_empty_frame_and_one_line_is_singular() -> None:
    w = World()
    amy = w.line("amy")
    amy.send("/join #new\n/history")
    assert amy.lines()[1:] == [
        "* history of #new (no lines, times in UTC):",
        "* end of history of #new",
    ]
    amy.send("only\n/history 5")
    assert amy.lines() == [
        "* history of #new (1 line, times in UTC):",
        f"* #new {T0}:00 amy: only",
        "* end of history of #new",
    ]


def test_history_is_the_current_rooms_only() -> None:
    w = World()
    amy, bob = w.line("amy"), w.line("bob")
    amy.send("in the lobby")
    bob.lines()
    bob.send("/join #side\nin the side room\n/history")
    assert bob.lines()[1:] == [
        "* history of #side (1 line, times in UTC):",
        f"* #side {T0}:00 bob: in the side room",
        "* end of history of #side",
    ]


def test_without_a_room_history_is_refused() -> None:
    w = World()
    amy, bob = w.line("amy"), w.line("bob")  # amy, the first, is #lobby's operator
    amy.send("something\n/kick bob")
    bob.lines()
    bob.send("/history\n/history 5")
    assert bob.lines() == ["! you are not in a room; /join ROOM"] * 2


def test_before_registration_history_waits_for_a_nick() -> None:
    w = World()
    c = w.connect("line")
    c.lines()
    c.send("/history")
    assert c.lines() == ["! choose a nickname first"]


# --------------------------------------------------------------------------- long lines


def test_long_lines_are_whole_however_many_pieces_and_queries_they_take() -> None:
    w = World(max_line=20000)
    amy, bob = w.line("amy"), w.irc("bob")  # an IRC member: long lines are cut for it
    bob.send("JOIN #lobby")
    amy.lines()
    texts = [f"{i} " + "word " * (400 * (i + 1)) for i in range(4)]  # 4 to 16 pieces+
    amy.send("".join(text + "\n" for text in texts))
    ring = w.service.history.rooms["#lobby"]  # type: ignore[attr-defined]
    assert len(ring) > 40
    for n in (1, 2, 4):
        amy.send(f"/history {n}")
        got = amy.lines()
        assert [line.split(" amy: ", 1)[1] for line in got[1:-1]] == texts[-n:]


def test_a_line_whose_start_is_out_of_reach_is_left_out_not_shown_in_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history, "QUERIES", 1)
    w = World(max_line=20000)
    amy, bob = w.line("amy"), w.irc("bob")
    bob.send("JOIN #lobby")
    amy.lines()
    amy.send("short\n" + "word " * 3000)  # 30-odd pieces: more than one query of 10
    amy.send("/history 1")
    assert amy.lines() == [
        "* history of #lobby (no lines, times in UTC):",
        "* end of history of #lobby",
    ]


def test_a_piece_whose_start_the_store_no_longer_has_stands_alone() -> None:
    w = World(max_line=20000, history_max_per_room=5)  # the ring keeps the last 5 pieces
    amy, bob = w.line("amy"), w.irc("bob")
    bob.send("JOIN #lobby")
    amy.lines()
    amy.send("word " * 3000)
    amy.send("/history 3")
    got = amy.lines()
    assert got[0] == "* history of #lobby (1 line, times in UTC):"
    assert got[1].startswith(f"* #lobby {T0}:00 amy: word") and got[1].endswith("word ")
    assert 4 * 400 < len(got[1]) < 15000  # the last 5 pieces, joined


# --------------------------------------------------------------------------- price


def drive(work: Any) -> tuple[int, int]:
    """Run long work to its end: (steps, the cost it returned plus what steps yielded)."""
    steps = cost = 0
    while True:
        try:
            cost += next(work)
        except StopIteration as end:
            return steps + 1, cost + (end.value or 0)
        steps += 1


def test_history_costs_a_flood_token_per_ten_lines() -> None:
    w = World()
    amy = w.line("amy")
    amy.send("".join(f"line {i}\n" for i in range(120)))
    room = w.service.hub.rooms["#lobby"]
    for n, tokens in ((5, 0), (10, 1), (25, 2), (100, 10)):
        amy.lines()
        steps, cost = drive(history.replay(amy.session, room, n))
        assert (steps, cost) == (1, tokens), n  # from memory: one step, no disk token


def test_history_costs_a_token_per_16_kib_when_lines_are_long() -> None:
    w = World(max_line=8000)
    amy = w.line("amy")
    amy.send("".join("x" * 7000 + "\n" for _ in range(9)))
    steps, cost = drive(history.replay(amy.session, w.service.hub.rooms["#lobby"], 9))
    # 63 KB: 3 tokens, and 2 for the further queries (each 7,000-byte line was stored as
    # 15 pieces of IRC's frame, more than the first query asked for).
    assert (steps, cost) == (1, 3 + 2)


def test_the_flood_bucket_is_charged_for_a_replay() -> None:
    w = World(flood_rate=1.0, flood_burst=40)
    amy = w.line("amy")
    amy.send("".join(f"line {i}\n" for i in range(30)))
    w.now += 100  # the bucket is full again
    amy.lines()
    amy.send("/history 100")
    bucket = amy.session.bucket
    assert bucket.tokens == pytest.approx(40 - 1 - 3)  # the line, and 30 lines // 10


def test_a_history_flood_is_read_slowly() -> None:
    """20 ``/history 100`` at once, default flood limits: the burst of 40 pays for 4
    (1 + 10 tokens each); the rest wait, unread, for tokens at 10 a second."""
    w = World(flood_rate=10.0, flood_burst=40)
    amy = w.line("amy")
    amy.send("".join(f"line {i}\n" for i in range(100)))
    while amy.session.held is not None or amy.session.decoder.buffered:
        w.now += 4.0
        amy.process()
    w.now += 100
    amy.lines()
    delay = amy.send("/history 100\n" * 20)
    assert delay == pytest.approx(0.5)  # a slice of the wait for 5 tokens
    assert sum(line == "* end of history of #lobby" for line in amy.lines()) == 4
    w.now += 1.1  # 11 tokens: 1 for the line, 10 for the replay
    amy.process()
    assert sum(line == "* end of history of #lobby" for line in amy.lines()) == 1


# --------------------------------------------------------------------------- forgery


def test_history_and_end_are_reserved_nicks() -> None:
    assert {"history", "end"} <= RESERVED_NICKS
    w = World()
    c = w.connect("line")
    c.lines()
    c.send("history\nEnd")
    assert c.lines() == ["! nickname is reserved: history", "! nickname is reserved: End"]
    irc = w.connect("irc")
    irc.send("NICK history\r\nUSER h 0 * :h")
    assert any(" 432 " in line and "history" in line for line in irc.lines())


def test_an_action_never_reads_as_a_replay() -> None:
    w = World()
    amy, bob = w.line("amy"), w.line("bob")
    bob.lines()
    for text in (
        "history of #lobby (1 line, times in UTC):",
        f"#lobby {T0}:00 bob: forged",
        "end of history of #lobby",
    ):
        amy.send(f"/me {text}")
    got = bob.lines()
    assert all(line.startswith("* amy ") for line in got)
    assert not any(isinstance(classify(line), Replayed) for line in got)
    assert not any(history_frame(line[2:]) for line in got)


_HISTORY_TEMPLATES = [
    re.compile(_template_regex(NOTICES[name]))
    for name in ("history", "history_say", "history_action", "history_end")
]


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,29}", fullmatch=True),
    st.text(max_size=60),
)
def test_no_action_of_an_allowed_nick_matches_a_history_template(nick: str, text: str) -> None:
    """``* NICK TEXT`` by anyone who may hold NICK is never one of /history's lines, for
    the server's templates and for the client's reading of them."""
    if not valid_nick(nick) or nick.lower() in RESERVED_NICKS:
        return
    body = f"{nick} {text}"
    assert not any(rx.fullmatch(body) for rx in _HISTORY_TEMPLATES)
    assert isinstance(classify("* " + body), Notice)
    assert history_frame(body) is None


def test_every_history_line_is_a_notice_the_client_reads_as_history() -> None:
    w, amy, _ = chat_scene()
    amy.send("/history")
    got = amy.lines()
    assert history_frame(got[0][2:]) == "start" and history_frame(got[-1][2:]) == "end"
    replayed = [classify(line) for line in got[1:-1]]
    assert all(isinstance(line, Replayed) for line in replayed)
    assert [line.nick for line in replayed if isinstance(line, Replayed)][:4] == [
        "amy",
        "bob",
        "bob",
        "bob",
    ]


# --------------------------------------------------------------------------- the store


class LateStore:
    """Stands in for the store's query: futures the test completes when it wants."""

    def __init__(self, real: Callable[[str, Query], Future[Selection]]) -> None:
        self.real = real
        self.futures: list[Future[Selection]] = []
        self.answers: list[Selection] = []

    def __call__(self, room: str, query: Query) -> Future[Selection]:
        self.answers.append(self.real(room, query).result())
        future: Future[Selection] = Future()
        self.futures.append(future)
        return future

    def answer(self) -> None:
        self.futures[-1].set_result(self.answers[-1])


def late(w: World) -> LateStore:
    store = LateStore(w.service.history.query)
    w.service.history.query = store  # type: ignore[method-assign]
    return store


def test_the_replay_never_waits_for_the_store_and_later_input_waits_behind_it() -> None:
    w = World()
    amy, bob = w.line("amy"), w.line("bob")
    amy.send("before")
    store = late(w)
    amy.lines()
    bob.lines()
    session = amy.session
    session.data_received(b"/history 5\nafter\n")
    for _ in range(3):  # each loop turn polls once and hands the loop back
        assert session.process(w.now) == STEP_PAUSE
    assert amy.lines() == [] and bob.lines() == []  # "after" is not sent before the reply
    store.answer()
    amy.process()
    assert amy.lines() == [
        "* history of #lobby (1 line, times in UTC):",
        f"* #lobby {T0}:00 amy: before",
        "* end of history of #lobby",
    ]
    assert bob.lines() == ["amy: after"]


def test_a_disk_answer_costs_one_more_token() -> None:
    w = World()
    amy = w.line("amy")
    amy.send("one")
    store = late(w)
    work = history.replay(amy.session, w.service.hub.rooms["#lobby"], 5)
    assert next(work) == 0
    store.answer()
    assert drive(work) == (1, 1)


@pytest.mark.parametrize("failure", [sqlite3.OperationalError("disk I/O error"), OSError(5)])
def test_a_failed_read_is_an_error_line_never_a_traceback(failure: Exception) -> None:
    w = World()
    amy = w.line("amy")
    store = late(w)
    amy.session.data_received(b"/history\n/ping\n")
    amy.session.process(w.now)
    store.futures[-1].set_exception(failure)
    amy.process()
    assert amy.lines() == ["! history is not available now; try again later", "* pong"]


def test_kicked_while_the_store_answers() -> None:
    w = World()
    amy, bob = w.line("amy"), w.line("bob")  # amy operates #lobby
    store = late(w)
    bob.session.data_received(b"/history\n")
    bob.session.process(w.now)
    amy.send("/kick bob")
    store.answer()
    bob.process()
    assert bob.lines()[-1] == "! you are not in #lobby"


def test_a_closed_connection_drops_its_replay() -> None:
    w = World()
    amy = w.line("amy")
    store = late(w)
    amy.session.data_received(b"/history\n")
    amy.session.process(w.now)
    amy.close()
    store.answer()
    assert amy.session.work is None


def test_after_a_restart_the_replay_reads_the_disk(tmp_path: Path) -> None:
    w = World(data_dir=str(tmp_path))
    amy = w.line("amy")
    amy.send("".join(f"line {i}\n" for i in range(30)))
    w.service.finish()  # writes what is queued
    again = World(data_dir=str(tmp_path))
    try:
        bob = again.line("bob")
        work = history.replay(bob.session, again.service.hub.rooms["#lobby"], 5)
        steps, cost = drive(work)  # polls until the reader thread has answered
        assert cost == 1  # the disk
        got = bob.lines()
        assert got[0] == "* history of #lobby (5 lines, times in UTC):"
        assert [line.split(": ", 1)[1] for line in got[1:-1]] == [
            f"line {i}" for i in range(25, 30)
        ]
        bob.send("/history 2")  # through the session, as an engine runs it
        assert bob.lines()[1:3] == [f"* #lobby {T0}:00 amy: line {i}" for i in (28, 29)]
    finally:
        again.service.finish()
