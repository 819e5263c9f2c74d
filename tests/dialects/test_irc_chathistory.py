"""IRCv3 draft/chathistory (issue 17) through the real service, hub, router and history.

Golden lines for every subcommand and its edges: a reply is compared with the lines the
client was relayed live, each with ``batch=`` added, so ids, times, sources and
renderings are pinned exactly. Memory history answers at once; the SQLite tests at the
end make a query go to the reader thread and wait as work.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatd.dialects.base import STEP_PAUSE
from chatd.dialects.irc import chathistory
from chatd.dialects.irc.wire import Message, parse
from chatd.history import Kind, Query
from engine_double import Peer, World

CAPS = "batch server-time message-tags"
#: World's wall clock: 2027-01-15T08:00:00.000Z.
BASE = 1_800_000_000.0
EPOCH = "timestamp=2020-01-01T00:00:00.000Z"
FAR = "timestamp=2262-01-01T00:00:00.000Z"


def msgid(line: str) -> str:
    found = re.search(r"[@;]msgid=([^; ]+)", line)
    assert found, line
    return found[1]


def stamp(line: str) -> str:
    found = re.search(r"[@;]time=([^; ]+)", line)
    assert found, line
    return found[1]


def at(seconds: float) -> str:
    """``timestamp=`` of BASE + ``seconds``."""
    return f"timestamp=2027-01-15T08:00:{seconds:06.3f}Z"


def history(peer: Peer, command: str, target: str = "#c") -> list[str]:
    """Send ``command``; check that the reply is exactly one chathistory batch of
    ``target`` whose every line carries its ``batch`` tag first; return those lines as
    they would have been relayed live (the batch tag taken off)."""
    peer.send(command)
    lines = peer.lines()
    assert lines, command
    opened = re.fullmatch(rf":irc\.test BATCH \+(\w+) chathistory {re.escape(target)}", lines[0])
    assert opened, lines
    ref = opened[1]
    assert lines[-1] == f":irc.test BATCH -{ref}", lines
    inner = lines[1:-1]
    prefix = f"@batch={ref};"
    assert all(line.startswith(prefix) for line in inner), inner
    return ["@" + line[len(prefix) :] for line in inner]


def ten(w: World) -> tuple[Peer, Peer, list[str]]:
    """amy (with CAPS) and bob in #c; bob says ``line 0`` .. ``line 9`` a second apart;
    returns them and the ten lines as amy was relayed them."""
    amy, bob = w.irc("amy", caps=CAPS), w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines(), bob.lines()
    live = []
    for i in range(10):
        w.wall = BASE + i
        bob.send(f"PRIVMSG #c :line {i}")
        live += amy.lines()
    assert len(live) == 10
    return amy, bob, live


# --------------------------------------------------------------------------- transcript

LATEST = """\
:irc.test BATCH +1 chathistory #lobby
@batch=1;time=2027-01-15T08:00:00.000Z;msgid=1a3185c5000000aaaaa \
:bob!~bob@10.0.0.1 PRIVMSG #lobby :hello
@batch=1;time=2027-01-15T08:00:00.000Z;msgid=1a3185c5000001aaaaa \
:bob!~bob@10.0.0.1 PRIVMSG #lobby :\x01ACTION waves\x01
@batch=1;time=2027-01-15T08:00:00.000Z;msgid=1a3185c5000002aaaaa \
:bob!~bob@10.0.0.1 NOTICE #lobby :note
@batch=1;time=2027-01-15T08:00:00.000Z;msgid=1a3185c5000003aaaaa \
:cid!line@10.0.0.2 PRIVMSG #lobby :hi from the line
:irc.test BATCH -1
"""


def test_latest_transcript_says_actions_notices_and_line_users_as_they_were_relayed() -> None:
    w = World()
    amy, bob, cid = w.irc("amy", caps=CAPS), w.irc("bob"), w.line("cid")
    amy.send("JOIN #lobby")
    bob.send("JOIN #lobby")
    bob.send("PRIVMSG #lobby :hello\r\nPRIVMSG #lobby :\x01ACTION waves\x01\r\nNOTICE #lobby :note")
    cid.send("hi from the line")
    amy.lines()
    amy.send("CHATHISTORY LATEST #lobby * 10")
    assert amy.lines() == LATEST.splitlines()


# --------------------------------------------------------------------------- subcommands


def test_latest_the_most_recent_lines_or_those_after_a_reference() -> None:
    w = World()
    amy, _, live = ten(w)
    assert history(amy, "CHATHISTORY LATEST #c * 20") == live
    assert history(amy, "CHATHISTORY LATEST #C * 5") == live[-5:]  # any case of the name
    assert history(amy, f"CHATHISTORY LATEST #c msgid={msgid(live[4])} 20") == live[5:]
    assert history(amy, f"CHATHISTORY LATEST #c timestamp={stamp(live[4])} 20") == live[5:]
    assert history(amy, f"CHATHISTORY LATEST #c msgid={msgid(live[4])} 2") == live[-2:]
    assert history(amy, f"CHATHISTORY latest #c MSGID={msgid(live[9])} 2") == []


def test_before_is_exclusive_and_keeps_the_nearest_lines() -> None:
    w = World()
    amy, _, live = ten(w)
    assert history(amy, f"CHATHISTORY BEFORE #c msgid={msgid(live[6])} 20") == live[:6]
    assert history(amy, f"CHATHISTORY BEFORE #c timestamp={stamp(live[6])} 20") == live[:6]
    assert history(amy, f"CHATHISTORY BEFORE #c timestamp={stamp(live[6])} 2") == live[4:6]
    assert history(amy, f"CHATHISTORY BEFORE #c msgid={msgid(live[0])} 20") == []
    assert history(amy, f"CHATHISTORY BEFORE #c {FAR} 3") == live[-3:]


def test_after_is_exclusive_and_keeps_the_nearest_lines() -> None:
    w = World()
    amy, _, live = ten(w)
    assert history(amy, f"CHATHISTORY AFTER #c msgid={msgid(live[3])} 20") == live[4:]
    assert history(amy, f"CHATHISTORY AFTER #c timestamp={stamp(live[3])} 20") == live[4:]
    assert history(amy, f"CHATHISTORY AFTER #c timestamp={stamp(live[3])} 3") == live[4:7]
    assert history(amy, f"CHATHISTORY AFTER #c msgid={msgid(live[9])} 20") == []
    assert history(amy, f"CHATHISTORY AFTER #c {EPOCH} 2") == live[:2]


def test_between_counts_from_the_first_reference_forwards_or_backwards() -> None:
    w = World()
    amy, _, live = ten(w)
    first, last = live[0], live[-1]
    for a, b in ((f"msgid={msgid(first)}", f"msgid={msgid(last)}"), (at(0), at(9))):
        assert history(amy, f"CHATHISTORY BETWEEN #c {a} {b} 20") == live[1:-1]
        assert history(amy, f"CHATHISTORY BETWEEN #c {b} {a} 20") == live[1:-1]
        assert history(amy, f"CHATHISTORY BETWEEN #c {a} {b} 3") == live[1:4]
        assert history(amy, f"CHATHISTORY BETWEEN #c {b} {a} 3") == live[-4:-1]
    # A msgid and a timestamp together; neighbours and one reference twice give nothing.
    mixed = f"CHATHISTORY BETWEEN #c msgid={msgid(live[2])} {at(7)} 20"
    assert history(amy, mixed) == live[3:7]
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(7)} msgid={msgid(live[2])} 20") == live[3:7]
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(2)} {at(3)} 20") == []
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(4)} {at(4)} 20") == []
    same = f"msgid={msgid(live[4])}"
    assert history(amy, f"CHATHISTORY BETWEEN #c {same} {same} 20") == []


def test_around_centres_on_the_reference_and_fills_the_limit_at_the_ends() -> None:
    w = World()
    amy, _, live = ten(w)
    assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[7])} 1") == [live[7]]
    assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[7])} 3") == live[6:9]
    assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[7])} 4") == live[6:10]
    assert history(amy, f"CHATHISTORY AROUND #c timestamp={stamp(live[7])} 3") == live[6:9]
    assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[0])} 3") == live[0:3]
    assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[9])} 3") == live[7:10]
    assert history(amy, f"CHATHISTORY AROUND #c {at(4.5)} 2") == live[4:6]  # between lines


def test_a_timestamp_names_the_millisecond_its_lines_show() -> None:
    """A line's ``time`` shows its millisecond; ``AFTER`` that time excludes it and every
    other line of that millisecond, ``BEFORE`` the next one includes them, and a line
    half a microsecond short of a millisecond shows (and counts as) the next one."""
    w = World()
    amy, bob = w.irc("amy", caps=CAPS), w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines()
    live = []
    for offset in (0.0002, 0.0007, 0.0012, 0.0029998):
        w.wall = BASE + offset
        bob.send(f"PRIVMSG #c :at {offset}")
        live += amy.lines()
    a, b, c, d = live
    assert [stamp(line)[-5:] for line in live] == [".000Z", ".000Z", ".001Z", ".003Z"]
    assert history(amy, f"CHATHISTORY AFTER #c {at(0)} 10") == [c, d]
    assert history(amy, f"CHATHISTORY LATEST #c {at(0.001)} 10") == [d]
    assert history(amy, f"CHATHISTORY BEFORE #c {at(0.001)} 10") == [a, b]
    assert history(amy, f"CHATHISTORY BEFORE #c {at(0.003)} 10") == [a, b, c]
    assert history(amy, f"CHATHISTORY AFTER #c {at(0.002)} 10") == [d]
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(0)} {at(0.001)} 10") == []
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(0)} {at(0.003)} 10") == [c]
    assert history(amy, f"CHATHISTORY BETWEEN #c {at(0.003)} {at(0)} 10") == [c]
    assert history(amy, f"CHATHISTORY AROUND #c {at(0)} 2") == [a, b]


def test_pieces_of_a_long_line_come_back_as_the_privmsgs_that_were_relayed() -> None:
    w = World()
    amy = w.irc("amy", caps=CAPS)
    amy.send("JOIN #lobby")
    cid = w.line("cid")
    amy.lines()
    cid.send("".join(f"{i:04d}é€😃 " for i in range(150)))
    live = amy.lines()
    assert len(live) >= 3 and len({msgid(line) for line in live}) == len(live)
    assert history(amy, "CHATHISTORY LATEST #lobby * 100", "#lobby") == live


# --------------------------------------------------------------------------- errors


def test_an_unknown_msgid_is_a_message_error() -> None:
    w = World()
    amy, _, live = ten(w)
    amy.send("JOIN #d")
    w.irc("dan").send("JOIN #d\r\nPRIVMSG #d :elsewhere")
    other = msgid(amy.lines()[-1])
    amy.send(
        "CHATHISTORY BEFORE #c msgid=nope 10\r\n"
        f"CHATHISTORY AFTER #c msgid={other} 10\r\n"  # a line of another room
        f"CHATHISTORY BETWEEN #c msgid={msgid(live[1])} msgid=nope 10\r\n"
        "CHATHISTORY LATEST #c msgid=nope 10"
    )
    assert amy.lines() == [
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR BEFORE #c :Unknown message id",
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR AFTER #c :Unknown message id",
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR BETWEEN #c :Unknown message id",
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR LATEST #c :Unknown message id",
    ]


LONG = "timestamp=" + "9" * 200


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        ("CHATHISTORY", "INVALID_PARAMS * :Insufficient parameters"),
        ("CHATHISTORY FOO #c * 10", "INVALID_PARAMS FOO :Unknown command"),
        ("CHATHISTORY latest #c *", "INVALID_PARAMS LATEST :Insufficient parameters"),
        ("CHATHISTORY LATEST #c * 10 20", "INVALID_PARAMS LATEST :Too many parameters"),
        ("CHATHISTORY BETWEEN #c msgid=a 10", "INVALID_PARAMS BETWEEN :Insufficient parameters"),
        ("CHATHISTORY TARGETS * 10", "INVALID_PARAMS TARGETS :Insufficient parameters"),
        ("CHATHISTORY BEFORE #c * 10", "INVALID_PARAMS BEFORE * :Invalid message reference"),
        (
            "CHATHISTORY BEFORE #c 2027-01-15T08:00:00.000Z 10",
            "INVALID_PARAMS BEFORE 2027-01-15T08:00:00.000Z :Invalid message reference",
        ),
        (
            "CHATHISTORY AFTER #c timestamp=2027-01-15T08:00:00Z 10",
            "INVALID_PARAMS AFTER timestamp=2027-01-15T08:00:00Z :Invalid timestamp",
        ),
        (
            "CHATHISTORY AFTER #c timestamp=2027-02-30T08:00:00.000Z 10",
            "INVALID_PARAMS AFTER timestamp=2027-02-30T08:00:00.000Z :Invalid timestamp",
        ),
        (
            "CHATHISTORY AFTER #c timestamp=2027-01-15T08:00:00.000+01:00 10",
            "INVALID_PARAMS AFTER timestamp=2027-01-15T08:00:00.000+01:00 :Invalid timestamp",
        ),
        (
            "CHATHISTORY AFTER #c timestamp=١٢ 10",
            "INVALID_PARAMS AFTER timestamp=١٢ :Invalid timestamp",
        ),
        (f"CHATHISTORY AFTER #c {LONG} 10", "INVALID_PARAMS AFTER * :Invalid timestamp"),
        ("CHATHISTORY AROUND #c msgid= 10", "INVALID_PARAMS AROUND msgid= :Invalid message id"),
        (
            "CHATHISTORY AFTER #c foo=bar 10",
            "INVALID_MSGREFTYPE AFTER #c :Only timestamp= and msgid= references are supported",
        ),
        ("CHATHISTORY LATEST #c * x", "INVALID_PARAMS LATEST x :Invalid limit"),
        ("CHATHISTORY LATEST #c * -1", "INVALID_PARAMS LATEST -1 :Invalid limit"),
        ("CHATHISTORY LATEST #c * 1.5", "INVALID_PARAMS LATEST 1.5 :Invalid limit"),
        ("CHATHISTORY LATEST #c * ²", "INVALID_PARAMS LATEST ² :Invalid limit"),
        ("CHATHISTORY LATEST #c * :", "INVALID_PARAMS LATEST * :Invalid limit"),
        (
            f"CHATHISTORY TARGETS msgid=a {FAR} 10",
            "INVALID_PARAMS TARGETS msgid=a :TARGETS takes timestamps",
        ),
        (f"CHATHISTORY TARGETS {EPOCH} * 10", "INVALID_PARAMS TARGETS * :TARGETS takes timestamps"),
        (
            f"CHATHISTORY TARGETS {EPOCH} timestamp=x 10",
            "INVALID_PARAMS TARGETS timestamp=x :Invalid timestamp",
        ),
        (f"CHATHISTORY TARGETS {EPOCH} {FAR} many", "INVALID_PARAMS TARGETS many :Invalid limit"),
        # Syntax is checked before membership: nothing here says whether #nope exists.
        ("CHATHISTORY LATEST #nope * x", "INVALID_PARAMS LATEST x :Invalid limit"),
    ],
)
def test_malformed_commands_get_the_specs_fail(command: str, reply: str) -> None:
    w = World()
    amy, _, _ = ten(w)
    amy.send(command)
    assert amy.lines() == [":irc.test FAIL CHATHISTORY " + reply]


def test_limit_zero_and_limits_over_the_maximum_give_the_maximum() -> None:
    w = World()
    amy, bob = w.irc("amy", caps=CAPS), w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines()
    bob.send("\r\n".join(f"PRIVMSG #c :n{i}" for i in range(120)))
    live = amy.lines()
    assert len(live) == 120
    assert history(amy, "CHATHISTORY LATEST #c * 0") == live[-100:]
    assert history(amy, "CHATHISTORY LATEST #c * 101") == live[-100:]
    assert history(amy, "CHATHISTORY LATEST #c * 99999999999999999999") == live[-100:]
    assert history(amy, f"CHATHISTORY AFTER #c {EPOCH} 1000") == live[:100]
    assert history(amy, "CHATHISTORY LATEST #c * 007") == live[-7:]


def test_only_members_read_a_room_and_strangers_cannot_tell_it_exists() -> None:
    w = World()
    amy, bob, _ = ten(w)
    bob.send("JOIN #secret\r\nMODE #secret +s\r\nPRIVMSG #secret :hush")
    dan = w.irc("dan", caps=CAPS)
    dan.send(
        "CHATHISTORY LATEST #c * 10\r\n"
        "CHATHISTORY LATEST #secret * 10\r\n"
        "CHATHISTORY LATEST #nope * 10\r\n"
        f"CHATHISTORY BETWEEN #c {EPOCH} {FAR} 10\r\n"
        "CHATHISTORY LATEST # * 10"
    )
    fail = ":irc.test FAIL CHATHISTORY INVALID_TARGET {} :Messages could not be retrieved"
    assert dan.lines() == [
        fail.format("LATEST #c"),
        fail.format("LATEST #secret"),
        fail.format("LATEST #nope"),
        fail.format("BETWEEN #c"),
        fail.format("LATEST #"),
    ]
    amy.send("PART #c")
    amy.lines()
    amy.send("CHATHISTORY LATEST #c * 10")
    assert amy.lines() == [fail.format("LATEST #c")]
    amy.send("JOIN #c")  # a member again: what was said before it joined is readable
    amy.lines()
    assert len(history(amy, "CHATHISTORY LATEST #c * 100")) == 10


def test_a_nick_target_gets_an_empty_batch_since_private_messages_are_not_kept() -> None:
    w = World()
    amy, bob, _ = ten(w)
    bob.send("PRIVMSG amy :psst")
    amy.lines()
    assert history(amy, "CHATHISTORY LATEST BOB * 10", "bob") == []  # its canonical name
    assert history(amy, f"CHATHISTORY BEFORE bob {FAR} 10", "bob") == []
    assert history(amy, "CHATHISTORY LATEST nobody * 10", "nobody") == []
    amy.send("CHATHISTORY LATEST a,b * 10\r\nCHATHISTORY LATEST * * 10")
    assert amy.lines() == [
        ":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST a,b :Messages could not be retrieved",
        ":irc.test FAIL CHATHISTORY INVALID_TARGET LATEST * :Messages could not be retrieved",
    ]


# --------------------------------------------------------------------------- capabilities


def test_without_batch_the_lines_come_alone_with_the_tags_the_client_asked_for() -> None:
    w = World()
    _, bob, live = ten(w)
    bob.send("CHATHISTORY LATEST #c * 2")
    assert bob.lines() == [
        ":bob!~bob@10.0.0.1 PRIVMSG #c :line 8",
        ":bob!~bob@10.0.0.1 PRIVMSG #c :line 9",
    ]
    bob.send(f"CHATHISTORY AFTER #c msgid={msgid(live[9])} 10")  # empty: nothing at all
    assert bob.lines() == []
    timed = w.irc("tim", caps="server-time")
    timed.send("JOIN #c")
    timed.lines()
    timed.send("CHATHISTORY LATEST #c * 1")
    assert timed.lines() == ["@time=2027-01-15T08:00:09.000Z :bob!~bob@10.0.0.1 PRIVMSG #c :line 9"]


def test_a_labeled_request_gets_the_label_on_its_batch() -> None:
    w = World()
    amy, _, live = ten(w)
    amy.send("CAP REQ labeled-response")
    amy.lines()
    amy.send("@label=h1 CHATHISTORY LATEST #c * 2")
    assert amy.lines() == [
        "@label=h1 :irc.test BATCH +1 chathistory #c",
        *("@batch=1;" + line[1:] for line in live[-2:]),
        ":irc.test BATCH -1",
    ]
    amy.send(f"@label=h2 CHATHISTORY AFTER #c msgid={msgid(live[9])} 5")
    assert amy.lines() == ["@label=h2 :irc.test BATCH +2 chathistory #c", ":irc.test BATCH -2"]
    amy.send("@label=h3 CHATHISTORY LATEST #nope * 5")
    assert amy.lines() == [
        "@label=h3 :irc.test FAIL CHATHISTORY INVALID_TARGET LATEST #nope "
        ":Messages could not be retrieved"
    ]


def test_the_bot_tag_comes_back_with_message_tags() -> None:
    w = World()
    amy, bot = w.irc("amy", caps=CAPS), w.irc("robo")
    amy.send("JOIN #c")
    bot.send("MODE robo +B\r\nJOIN #c\r\nPRIVMSG #c :beep")
    live = amy.lines()[-1]
    assert ";bot " in live
    assert history(amy, "CHATHISTORY LATEST #c * 1") == [live]


# --------------------------------------------------------------------------- TARGETS


def _rooms(w: World) -> tuple[Peer, Peer]:
    """amy in #a #b #c #e, bob in those and #d; lines: #a at 1 s, #b at 2, #d at 3,
    #c at 4 and 6 (#e has none)."""
    amy, bob = w.irc("amy", caps=CAPS), w.irc("bob")
    amy.send("JOIN #a,#b,#c,#e")
    bob.send("JOIN #a,#b,#c,#d,#e")
    for room, second in (("#a", 1), ("#b", 2), ("#d", 3), ("#c", 4), ("#c", 6)):
        w.wall = BASE + second
        bob.send(f"PRIVMSG {room} :in {room}")
    amy.lines(), bob.lines()
    return amy, bob


def targets(peer: Peer, command: str) -> list[str]:
    peer.send(command)
    lines = peer.lines()
    opened = re.fullmatch(r":irc\.test BATCH \+(\w+) draft/chathistory-targets", lines[0])
    assert opened, lines
    ref = opened[1]
    assert lines[-1] == f":irc.test BATCH -{ref}", lines
    prefix = f"@batch={ref} :irc.test CHATHISTORY TARGETS "
    assert all(line.startswith(prefix) for line in lines[1:-1]), lines
    return [line[len(prefix) :] for line in lines[1:-1]]


def test_targets_lists_the_clients_rooms_by_their_latest_line() -> None:
    w = World()
    amy, bob = _rooms(w)
    a, b, c = (
        "#a 2027-01-15T08:00:01.000Z",
        "#b 2027-01-15T08:00:02.000Z",
        "#c 2027-01-15T08:00:06.000Z",
    )
    assert targets(amy, f"CHATHISTORY TARGETS {EPOCH} {FAR} 100") == [a, b, c]
    assert targets(amy, f"CHATHISTORY targets {EPOCH} {FAR} 2") == [a, b]
    assert targets(amy, f"CHATHISTORY TARGETS {FAR} {EPOCH} 2") == [b, c]  # backwards
    assert targets(amy, f"CHATHISTORY TARGETS {at(1)} {FAR} 100") == [b, c]  # exclusive
    # #c has a line inside but its latest is outside: not listed (the spec's rule).
    assert targets(amy, f"CHATHISTORY TARGETS {EPOCH} {at(5)} 100") == [a, b]
    assert targets(amy, f"CHATHISTORY TARGETS {at(2)} {at(1)} 100") == []
    assert targets(amy, f"CHATHISTORY TARGETS {at(2)} {at(2)} 100") == []
    assert targets(w.irc("zed", caps=CAPS), f"CHATHISTORY TARGETS {EPOCH} {FAR} 100") == []
    bob.send(f"CHATHISTORY TARGETS {EPOCH} {at(3.5)} 0")  # without batch: the lines alone
    assert bob.lines() == [
        ":irc.test CHATHISTORY TARGETS #a 2027-01-15T08:00:01.000Z",
        ":irc.test CHATHISTORY TARGETS #b 2027-01-15T08:00:02.000Z",
        ":irc.test CHATHISTORY TARGETS #d 2027-01-15T08:00:03.000Z",
    ]


# --------------------------------------------------------------------------- nothing unasked


def test_nothing_is_replayed_to_a_client_that_did_not_ask() -> None:
    w = World()
    ten(w)
    for caps in ("", CAPS + " draft/chathistory"):
        dan = w.connect()
        if caps:
            dan.send(f"CAP LS 302\r\nCAP REQ :{caps}")
        dan.send("NICK dan\r\nUSER dan 0 * :Dan")
        if caps:
            dan.send("CAP END")
        dan.send("JOIN #c\r\nPING done")
        lines = dan.lines()
        assert lines[-1].endswith("PONG irc.test done")
        assert not any(re.search(" (PRIVMSG|NOTICE|BATCH) ", line) for line in lines), lines
        assert any(" JOIN #c" in line for line in lines)
        dan.send("QUIT")


# --------------------------------------------------------------------------- price


def test_it_is_priced_like_who_a_token_per_ten_lines() -> None:
    w = World(flood_rate=10.0, flood_burst=40)
    amy, bob = w.irc("amy", caps=CAPS), w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    bob.session.bucket = None  # bob's 120 lines are not what is measured
    bob.send("\r\n".join(f"PRIVMSG #c :n{i}" for i in range(120)))
    amy.lines()
    bucket = amy.session.bucket
    before = bucket.tokens
    amy.send("CHATHISTORY LATEST #c * 100")
    assert len(amy.lines()) == 102
    assert before - bucket.tokens == 1 + 100 // chathistory.LINES_PER_TOKEN
    before = bucket.tokens
    amy.send("CHATHISTORY LATEST #c * 5")
    assert before - bucket.tokens == 1


# --------------------------------------------------------------------------- waiting


def test_a_reply_not_ready_waits_as_work_and_later_input_waits_behind_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = World(flood_rate=10.0, flood_burst=40)
    amy, bob, live = ten(w)
    amy.send("CAP REQ labeled-response")
    amy.lines()
    store = w.service.history
    real = store.query
    pending: Future = Future()
    monkeypatch.setattr(store, "query", lambda room, query: pending)
    session = amy.session
    before = session.bucket.tokens
    session.data_received(b"@label=w CHATHISTORY LATEST #c * 2\r\nPING after\r\n")
    assert session.process(w.now) == STEP_PAUSE
    assert session.process(w.now) == STEP_PAUSE  # still waiting, the loop not held
    bob.send("PRIVMSG #c :meanwhile")  # others' lines still arrive, unlabeled
    relayed = amy.lines()
    assert len(relayed) == 1 and relayed[0].endswith("PRIVMSG #c :meanwhile")
    pending.set_result(real("#c", Query(Kind.LATEST, None, 2)).result())
    amy.process()
    assert amy.lines() == [
        "@label=w :irc.test BATCH +1 chathistory #c",
        "@batch=1;" + live[-1][1:],
        "@batch=1;" + relayed[0][1:],
        ":irc.test BATCH -1",
        ":irc.test PONG irc.test after",
    ]
    # The line, the PING, and the disk token.
    assert before - session.bucket.tokens == 2 + chathistory.DISK_TOKENS


def test_a_failed_or_stuck_read_is_a_message_error(monkeypatch: pytest.MonkeyPatch) -> None:
    w = World()
    amy, _, _ = ten(w)
    store = w.service.history
    failed: Future = Future()
    failed.set_exception(OSError("disk on fire"))
    monkeypatch.setattr(store, "query", lambda room, query: failed)
    amy.send("CHATHISTORY BEFORE #c timestamp=2027-01-15T08:00:05.000Z 3")
    assert amy.lines() == [
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR BEFORE #c :Messages could not be retrieved"
    ]
    monkeypatch.setattr(store, "query", lambda room, query: Future())  # never answered
    monkeypatch.setattr(store, "targets", lambda *args: Future())
    monkeypatch.setattr(chathistory, "WAIT_SECONDS", 0.0)
    amy.send(f"CHATHISTORY LATEST #c * 3\r\nCHATHISTORY TARGETS {EPOCH} {FAR} 3")
    assert amy.lines() == [
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR LATEST #c :History is busy; try again",
        ":irc.test FAIL CHATHISTORY MESSAGE_ERROR TARGETS :History is busy; try again",
    ]


# --------------------------------------------------------------------------- SQLite


def _sqlite_world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    """A World on SQLite history whose cache keeps 4 lines per room."""
    monkeypatch.setattr("chatd.history.sqlite.CACHE_LINES", 4)
    return World(data_dir=str(tmp_path), history_window=0.01, flood_rate=10.0, flood_burst=40)


def _written(w: World, count: int) -> None:
    deadline = time.monotonic() + 10
    while w.service.history.counters()["history_lines_written"] < count:
        assert time.monotonic() < deadline, "the writer did not write"
        time.sleep(0.01)


def test_queries_the_cache_cannot_answer_go_to_the_disk_and_cost_a_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = _sqlite_world(tmp_path, monkeypatch)
    try:
        amy, _, live = ten(w)
        _written(w, 10)
        bucket = amy.session.bucket
        before = bucket.tokens
        assert history(amy, "CHATHISTORY LATEST #c * 3") == live[-3:]  # the cache's
        assert before - bucket.tokens == 1
        before = bucket.tokens
        assert history(amy, f"CHATHISTORY BEFORE #c msgid={msgid(live[3])} 10") == live[:3]
        assert before - bucket.tokens == 1 + chathistory.DISK_TOKENS
        assert history(amy, "CHATHISTORY LATEST #c * 20") == live
        assert history(amy, f"CHATHISTORY AROUND #c msgid={msgid(live[2])} 3") == live[1:4]
        first, last = f"msgid={msgid(live[0])}", f"msgid={msgid(live[9])}"
        assert history(amy, f"CHATHISTORY BETWEEN #c {last} {first} 3") == live[-4:-1]
        assert history(amy, f"CHATHISTORY AFTER #c {at(1)} 2") == live[2:4]
        amy.send("CHATHISTORY BEFORE #c msgid=nope 2")  # not in the cache nor on disk
        assert amy.lines() == [
            ":irc.test FAIL CHATHISTORY MESSAGE_ERROR BEFORE #c :Unknown message id"
        ]
        assert targets(amy, f"CHATHISTORY TARGETS {EPOCH} {FAR} 5") == [
            "#c 2027-01-15T08:00:09.000Z"
        ]
    finally:
        w.service.history.close()


# --------------------------------------------------------------------------- any input


def _words(live: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "*",
                "#c",
                "#C",
                "#nope",
                "#",
                "bob",
                "BOB",
                "nobody",
                "a,b",
                "0",
                "1",
                "3",
                "100",
                "101",
                "-1",
                "x",
                "²",
                "",
                ":",
                EPOCH,
                FAR,
                at(4),
                at(4.5),
                "timestamp=",
                "timestamp=x",
                "timestamp=2027-02-30T00:00:00.000Z",
                "msgid=",
                "msgid=nope",
                "foo=bar",
                "=",
                "x" * 300,
                *(f"msgid={msgid(line)}" for line in live[::3]),
            ]
        ),  # fmt: skip
        st.text(max_size=10).filter(lambda t: "\r" not in t and "\n" not in t and "\0" not in t),
    )


def test_any_chathistory_gets_a_batch_or_one_fail_and_never_a_traceback() -> None:
    w = World()
    amy, bob, live = ten(w)
    amy.send("CAP REQ labeled-response")
    amy.lines()
    words = _words(live)
    subs = st.sampled_from(["LATEST", "BEFORE", "AFTER", "AROUND", "BETWEEN", "TARGETS", "x"])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(subs, st.lists(words, max_size=5), st.booleans(), st.booleans())
    def check(sub: str, args: list[str], labeled: bool, plain: bool) -> None:
        peer = bob if plain else amy
        middles = [a for a in args[:-1] if a and " " not in a and not a.startswith(":")]
        line = " ".join(["CHATHISTORY", sub, *middles])
        if args:
            line += " :" + args[-1]
        peer.send(("@label=l " if labeled else "") + line)
        lines = peer.lines()
        for out in lines:
            message = parse(out)
            assert isinstance(message, Message), out
            body = out.split(" ", 1)[1] if out.startswith("@") else out
            assert len(body.encode()) + 2 <= 512, out
        if peer is amy and lines:
            head = lines[0]
            if len(line.encode()) + 2 > 512:  # not read as a command at all
                assert lines == [":irc.test 417 amy :Input line was too long"], lines
                return
            assert " FAIL CHATHISTORY " in head or " BATCH +" in head, lines
            if " FAIL " in head:
                assert len(lines) == 1, lines

    check()
