"""WHO with IRCv3 WHOX, NAMES of several channels, and the INVITE list."""

from __future__ import annotations

import re

from engine_double import World


def _pair(w: World) -> tuple:
    amy = w.irc("amy")
    bob = w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines(), bob.lines()
    return amy, bob


def test_whox_sends_the_asked_fields_in_the_fixed_order_with_the_token() -> None:
    w = World()
    amy, bob = _pair(w)
    bob.send("WHO #c %rofnt,42\r\nWHO amy %tn,321\r\nWHO amy %")
    assert bob.lines() == [
        ":irc.test 354 bob 42 amy H@ n/a :Amy Realname",
        ":irc.test 354 bob 42 bob H n/a :Bob Realname",
        ":irc.test 315 bob #c :End of WHO list",
        ":irc.test 354 bob 321 amy",
        ":irc.test 315 bob amy :End of WHO list",
        ":irc.test 354 bob",
        ":irc.test 315 bob amy :End of WHO list",
    ]


def test_whox_every_field() -> None:
    w = World()
    amy, bob = _pair(w)
    bob.send("WHO amy %" + "".join(reversed("tcuihsnfdlaor")) + ",7")
    reply, end = bob.lines()
    assert re.fullmatch(
        r":irc\.test 354 bob 7 \* ~amy 10\.0\.0\.1 10\.0\.0\.1 irc\.test amy H 0 \d+ 0 n/a "
        r":Amy Realname",
        reply,
    ), reply
    assert end == ":irc.test 315 bob amy :End of WHO list"


def test_whox_of_a_line_user() -> None:
    w = World()
    amy = w.irc("amy")
    w.line("cid")
    amy.send("WHO cid %cuhnfr")
    assert amy.lines() == [
        ":irc.test 354 amy * line 10.0.0.2 cid H :chatd line user",
        ":irc.test 315 amy cid :End of WHO list",
    ]


def test_names_of_several_channels_ends_with_one_366_naming_them() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #a\r\nJOIN #b")
    amy.lines()
    amy.send("NAMES #a,#nope,#b\r\nNAMES #A")
    assert amy.lines() == [
        ":irc.test 353 amy = #a :@amy",
        ":irc.test 353 amy = #b :@amy",
        ":irc.test 366 amy #a,#nope,#b :End of /NAMES list",
        ":irc.test 353 amy = #a :@amy",
        ":irc.test 366 amy #a :End of /NAMES list",
    ]


def test_invite_without_parameters_lists_the_pending_invitations() -> None:
    w = World()
    amy, bob = w.irc("amy"), w.irc("bob")
    amy.send("JOIN #a\r\nJOIN #b\r\nINVITE bob #a\r\nINVITE bob #b")
    bob.lines()
    bob.send("JOIN #b\r\nINVITE")
    got = [line for line in bob.lines() if " 33" in line]
    assert got == [":irc.test 336 bob #a", ":irc.test 337 bob :End of /INVITE list"]


def _crowd(w: World, count: int) -> None:
    """``count`` members registered straight in the hub (no connections), in #crowd."""
    hub = w.service.hub
    for i in range(count):
        uid = w.service.mint.uid()
        hub.register(uid, f"user{i}", "~u", f"10.1.{i // 250}.{i % 250}")
        hub.join(uid, "#crowd")


def test_a_who_mask_is_paid_for_by_the_members_it_scans_even_when_none_match() -> None:
    """Issue 15: ``WHO *zzz*`` over 10,000 nicks took 60-100 ms and cost one token."""
    w = World(flood_rate=10.0, flood_burst=40)
    _crowd(w, 2000)
    amy = w.irc("amy")
    bucket = amy.session.bucket
    before = bucket.tokens
    amy.send("WHO *zzz*")
    assert amy.lines() == [":irc.test 315 amy *zzz* :End of WHO list"]
    assert before - bucket.tokens >= 1 + 2000 // 500  # the line, and the scan
    amy.send("WHO user7")  # an exact nick scans nothing
    spent = bucket.tokens
    amy.send("WHO user8")
    assert spent - bucket.tokens == 1


def test_list_is_paid_for_by_the_rooms_it_scans_and_does_not_sort() -> None:
    w = World(flood_rate=10.0, flood_burst=40)
    hub = w.service.hub
    for i in range(1000):
        uid = w.service.mint.uid()
        hub.register(uid, f"r{i}", "~u", f"10.2.{i // 250}.{i % 250}")
        hub.join(uid, f"#room{i}")
    amy = w.irc("amy")
    bucket = amy.session.bucket
    before = bucket.tokens
    amy.send("LIST *nomatch*")
    lines = amy.lines()
    assert [line.split()[1] for line in lines] == ["321", "323"]
    assert before - bucket.tokens >= 1 + 1000 // 200
    amy.send("LIST >²")  # not a number IRC knows: a plain (missing) room name
    assert [line.split()[1] for line in amy.lines()] == ["321", "323"]


def test_lusers_comes_from_counts_not_a_scan() -> None:
    w = World()
    _crowd(w, 50)
    amy = w.irc("amy")
    amy.send("MODE amy +i\r\nLUSERS")
    lines = amy.lines()
    assert ":irc.test 251 amy :There are 50 users and 1 invisible on 1 servers" in lines
    amy.send("QUIT")
    bob = w.irc("bob")
    bob.send("LUSERS")
    assert ":irc.test 251 bob :There are 51 users and 0 invisible on 1 servers" in bob.lines()


def test_a_long_who_runs_in_steps_and_others_are_served_between_them() -> None:
    """No command holds the loop: a mask over 2,000 members is matched 500 at a time,
    one step per process() call, and deliveries to the asker go out between steps while
    its labeled response still comes whole at the end."""
    from chatd.dialects.base import STEP_PAUSE

    w = World()
    _crowd(w, 2000)
    amy = w.irc("amy", caps="labeled-response batch")
    bob = w.irc("bob")
    amy.session.data_received(b"@label=w1 WHO *user1*\r\nPING after\r\n")
    assert amy.session.process(w.now) == STEP_PAUSE
    assert amy.session.work is not None and amy.lines() == []
    bob.send("PRIVMSG amy :between steps")
    assert amy.lines() == [":bob!~bob@10.0.0.1 PRIVMSG amy :between steps"]
    steps = 1
    while amy.session.process(w.now) == STEP_PAUSE:
        steps += 1
    lines = amy.lines()
    assert steps == 4  # 2,000 members, 500 a step (the PING after comes in the last)
    assert lines[0].startswith("@label=w1 :irc.test BATCH +")
    assert lines[-3].endswith(":End of WHO list") and lines[-2].startswith(":irc.test BATCH -")
    assert len([line for line in lines if " 352 amy " in line]) == 1111  # user1, user1N...
    assert lines[-1] == ":irc.test PONG irc.test after"
