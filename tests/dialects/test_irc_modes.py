"""Ban and invite exceptions (+e, +I), no-CTCP rooms (+C), STATUSMSG and invitations past
+l: hub rules, so they hold for line users too, whichever dialect sets them."""

from __future__ import annotations

from engine_double import World

LISTS = """\
:irc.test 367 amy #c ba*!*@* amy 1800000000
:irc.test 368 amy #c :End of channel ban list
:irc.test 348 amy #c *ar!*@* amy 1800000000
:irc.test 349 amy #c :End of channel exception list
:irc.test 346 amy #c friend!*@* amy 1800000000
:irc.test 347 amy #c :End of Channel Invite Exception List
"""


def test_a_ban_exception_lets_a_banned_user_in_and_the_lists_are_shown() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #c\r\nMODE #c +b ba*!*@*")
    amy.lines()
    bar = w.irc("Bar")
    bar.send("JOIN #c")
    assert bar.lines() == [":irc.test 474 Bar #c :Cannot join channel (+b)"]
    amy.send("MODE #c +e *ar!*@*\r\nMODE #c +I friend")
    assert amy.lines() == [
        ":amy!~amy@10.0.0.1 MODE #c +e *ar!*@*",
        ":amy!~amy@10.0.0.1 MODE #c +I friend!*@*",
    ]
    bar.send("JOIN #c")
    assert bar.lines()[0] == ":Bar!~Bar@10.0.0.1 JOIN #c"
    amy.lines()
    amy.send("MODE #c +beI")
    assert amy.lines() == LISTS.splitlines()


def test_an_invite_exception_opens_an_invite_only_room_until_it_is_removed() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #c\r\nMODE #c +i\r\nMODE #c +I bar!*@*")
    amy.lines()
    bar, baz = w.irc("bar"), w.irc("baz")
    baz.send("JOIN #c")
    assert baz.lines() == [":irc.test 473 baz #c :Cannot join channel (+i)"]
    bar.send("JOIN #c\r\nPART #c")
    assert bar.lines()[0] == ":bar!~bar@10.0.0.1 JOIN #c"
    amy.send("MODE #c -I bar!*@*")
    assert amy.lines()[-1] == ":amy!~amy@10.0.0.1 MODE #c -I bar!*@*"
    bar.send("JOIN #c")
    assert bar.lines() == [":irc.test 473 bar #c :Cannot join channel (+i)"]


def test_masks_match_line_users_and_line_users_manage_the_lists() -> None:
    w = World()
    cid = w.line("cid")  # in #lobby, its first member: operator
    cid.send("/mode +b *!*@10.0.0.3\r\n/mode +e dan!line@*")
    cid.lines()
    dan = w.connect("line", "10.0.0.3")  # banned by host, excepted by nick!user
    dan.lines()
    dan.send("dan")
    assert dan.lines()[0].startswith("* you are dan, in #lobby (2 here)")
    eve = w.irc("eve", host="10.0.0.3")  # banned by host, no exception
    eve.send("JOIN #lobby")
    assert eve.lines() == [":irc.test 474 eve #lobby :Cannot join channel (+b)"]
    cid.send("/mode +i\r\n/mode +I eve!*@*\r\n/mode +I amy")
    cid.lines()
    eve.send("JOIN #lobby")  # +I opens +i, not a ban
    assert eve.lines() == [":irc.test 474 eve #lobby :Cannot join channel (+b)"]
    bob = w.irc("bob")
    bob.send("JOIN #lobby")
    assert bob.lines() == [":irc.test 473 bob #lobby :Cannot join channel (+i)"]
    amy = w.irc("amy")
    amy.send("JOIN #lobby")
    assert amy.lines()[0] == ":amy!~amy@10.0.0.1 JOIN #lobby"
    cid.send("/mode +e\r\n/mode +I\r\n/mode +b")
    assert cid.lines()[-3:] == [
        "* #lobby ban exceptions: dan!line@*",
        "* #lobby invite exceptions: eve!*@* amy!*@*",
        "* bans of #lobby: *!*@10.0.0.3",
    ]


def test_a_line_user_matched_by_an_exception_enters_a_banned_room() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #c\r\nMODE #c +b *!*@10.0.0.2\r\nMODE #c +e cid!line@*")
    amy.lines()
    cid, dan = w.line("cid"), w.line("dan")
    cid.lines()
    dan.send("/join #c")
    assert dan.lines() == ["! cannot join #c: you are banned (+b)"]
    cid.send("/join #c")
    assert cid.lines() == ["* you joined #c (2 here)"]
    assert amy.lines() == [":cid!line@10.0.0.2 JOIN #c"]


def test_no_ctcp_rooms_refuse_requests_but_not_actions_and_not_from_operators() -> None:
    w = World()
    amy, bob = w.irc("amy"), w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.send("MODE #c +C")
    amy.lines(), bob.lines()
    bob.send("PRIVMSG #c :\x01ACTION waves\x01\r\nPRIVMSG #c :\x01VERSION\x01")
    assert bob.lines() == [
        ":irc.test 404 bob #c :Cannot send to channel (CTCP requests are blocked (+C))"
    ]
    assert amy.lines() == [":bob!~bob@10.0.0.1 PRIVMSG #c :\x01ACTION waves\x01"]
    amy.send("PRIVMSG #c :\x01PING 1\x01")
    assert bob.lines() == [":amy!~amy@10.0.0.1 PRIVMSG #c :\x01PING 1\x01"]


STATUS = """\
* amy to the operators of #lobby: ops only
* amy to the voiced members of #lobby: voiced and up
* amy to the voiced members of #lobby: * amy nods
"""


def test_statusmsg_reaches_the_operators_in_both_dialects() -> None:
    w = World()
    cid = w.line("cid")  # operator of #lobby
    amy, bob, dan = w.irc("amy"), w.irc("bob"), w.irc("dan")
    for peer in (amy, bob, dan):
        peer.send("JOIN #lobby")
    cid.send("/mode +o amy\r\n/mode +v dan")
    for peer in (amy, bob, dan, cid):
        peer.lines()
    amy.send(
        "PRIVMSG @#lobby :ops only\r\nPRIVMSG +#lobby :voiced and up\r\n"
        "PRIVMSG +@#lobby :\x01ACTION nods\x01"
    )
    assert amy.lines() == []
    assert cid.lines() == STATUS.splitlines()
    assert bob.lines() == []
    assert dan.lines() == [
        ":amy!~amy@10.0.0.1 PRIVMSG +#lobby :voiced and up",
        ":amy!~amy@10.0.0.1 PRIVMSG +#lobby :\x01ACTION nods\x01",
    ]
    bob.send("PRIVMSG @#lobby :from a regular")  # any member who may speak may send it
    assert amy.lines() == [":bob!~bob@10.0.0.1 PRIVMSG @#lobby :from a regular"]
    assert cid.lines() == ["* bob to the operators of #lobby: from a regular"]
    cid.send("/msg @#lobby line ops")
    assert cid.lines() == ["* -> @#lobby: line ops"]
    assert amy.lines() == [":cid!line@10.0.0.2 PRIVMSG @#lobby :line ops"]
    assert bob.lines() == dan.lines() == []


def test_an_invitation_lets_one_past_the_limit() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #c\r\nMODE #c +l 1")
    amy.lines()
    bob = w.irc("bob")
    bob.send("JOIN #c")
    assert bob.lines() == [":irc.test 471 bob #c :Cannot join channel (+l)"]
    amy.send("INVITE bob #c")
    bob.lines()
    bob.send("JOIN #c")
    assert bob.lines()[0] == ":bob!~bob@10.0.0.1 JOIN #c"
