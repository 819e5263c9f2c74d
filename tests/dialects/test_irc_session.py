"""The IRC dialect through the real service, hub and router, with an engine stand-in.

Golden transcripts pin the exact bytes of registration, JOIN/NAMES and the error
numerics; the rest checks each command and what crosses to the line dialect.
"""

from __future__ import annotations

import pytest

from chatd.net.transport import DisconnectReason
from engine_double import World

REGISTRATION = """\
:irc.test CAP * LS :cap-notify multi-prefix echo-message server-time message-tags \
away-notify invite-notify userhost-in-names batch labeled-response setname extended-monitor \
draft/chathistory
:irc.test CAP * ACK :multi-prefix
:irc.test 001 amy :Welcome to the chatd Network, amy!~amy@10.0.0.1
:irc.test 002 amy :Your host is irc.test, running version chatd-0.2.0
:irc.test 003 amy :This server was created 2027-01-15 08:00:00 UTC
:irc.test 004 amy irc.test chatd-0.2.0 Biow CIbeiklmnostv Ibeklov
:irc.test 005 amy AWAYLEN=390 BOT=B CASEMAPPING=ascii CHANMODES=beI,k,l,Cimnst CHANNELLEN=50 \
CHANTYPES=# CHATHISTORY=100 ELIST=MNU EXCEPTS=e INVEX=I KICKLEN=390 MAXLIST=b:100,e:100,I:100 \
MODES=6 :are supported by this server
:irc.test 005 amy MONITOR=100 MSGREFTYPES=timestamp,msgid NETWORK=chatd NICKLEN=30 \
PREFIX=(ov)@+ STATUSMSG=@+ TARGMAX=JOIN:10,KICK:4,NAMES:4,NOTICE:4,PART:10,PRIVMSG:4,WHOIS:1 \
TOPICLEN=390 USERLEN=10 UTF8ONLY WHOX CHANLIMIT=#:50 :are supported by this server
:irc.test 251 amy :There are 1 users and 0 invisible on 1 servers
:irc.test 254 amy 0 :channels formed
:irc.test 255 amy :I have 1 clients and 0 servers
:irc.test 265 amy 1 1 :Current local users 1, max 1
:irc.test 266 amy 1 1 :Current global users 1, max 1
:irc.test 375 amy :- irc.test Message of the day -\x20
:irc.test 372 amy :- Be nice.
:irc.test 376 amy :End of /MOTD command.
"""


def test_registration_transcript_waits_for_cap_end() -> None:
    w = World(motd=("Be nice.",))
    amy = w.connect()
    amy.send("CAP LS 302\r\nNICK amy\r\nUSER amy 0 * :Amy Pond\r\nCAP REQ :multi-prefix")
    before_end = amy.lines()
    assert not any(" 001 " in line for line in before_end)  # CAP negotiation suspends it
    amy.send("CAP END")
    assert before_end + amy.lines() == REGISTRATION.splitlines()


JOIN_NAMES = """\
:bob!~bob@10.0.0.1 JOIN #tardis
:irc.test 332 bob #tardis :Bigger on the inside
:irc.test 333 bob #tardis amy 1800000000
:irc.test 353 bob = #tardis :@amy bob
:irc.test 366 bob #tardis :End of /NAMES list
"""


def test_join_transcript_gives_the_topic_and_names_and_the_first_member_is_op() -> None:
    w = World()
    amy, bob = w.irc("amy"), w.irc("bob")
    amy.send("JOIN #tardis\r\nTOPIC #tardis :Bigger on the inside")
    assert amy.lines() == [
        ":amy!~amy@10.0.0.1 JOIN #tardis",
        ":irc.test 353 amy = #tardis :@amy",
        ":irc.test 366 amy #tardis :End of /NAMES list",
        ":amy!~amy@10.0.0.1 TOPIC #tardis :Bigger on the inside",
    ]
    bob.send("JOIN #tardis")
    assert bob.lines() == JOIN_NAMES.splitlines()
    assert amy.lines() == [":bob!~bob@10.0.0.1 JOIN #tardis"]


ERRORS = """\
:irc.test 433 bob amy :Nickname is already in use
:irc.test 432 bob 9x :Erroneus nickname
:irc.test 431 bob :No nickname given
:irc.test 401 bob nobody :No such nick/channel
:irc.test 403 bob #nowhere :No such channel
:irc.test 442 bob #tardis :You're not on that channel
:irc.test 421 bob FROB :Unknown command
:irc.test 403 bob tardis :No such channel
:irc.test 479 bob #bad\u200bname :Illegal channel name: U+200B ZERO WIDTH SPACE \
(invisible format character) is not allowed
:irc.test 411 bob :No recipient given (PRIVMSG)
:irc.test 461 bob KICK :Not enough parameters
:irc.test 462 bob :You may not reregister
:irc.test 482 bob #tardis :You're not channel operator
:irc.test 412 bob :No text to send
:irc.test 441 bob cid #tardis :They aren't on that channel
:irc.test 401 bob nobody :No such nick/channel
:irc.test 472 bob z :is unknown mode char to me
"""


def test_error_numerics_transcript() -> None:
    w = World()
    amy, bob, cid = w.irc("amy"), w.irc("bob"), w.irc("cid")
    amy.send("JOIN #tardis")
    amy.lines()
    bob.send(
        "NICK amy\r\nNICK 9x\r\nNICK\r\nPRIVMSG nobody :hi\r\nPART #nowhere\r\n"
        "PART #tardis\r\nFROB\r\nJOIN tardis\r\nJOIN #bad\u200bname\r\nPRIVMSG\r\n"
        "KICK #tardis\r\nUSER a b c :d\r\n"
    )
    bob.send("JOIN #tardis\r\nKICK #tardis amy\r\nPRIVMSG #tardis :")
    got = [line for line in bob.lines() if " 353 " not in line and " 366 " not in line]
    got = [line for line in got if " JOIN " not in line]
    amy.send("KICK #tardis cid\r\nKICK #tardis nobody\r\nMODE #tardis +z")
    got += [line.replace(" amy ", " bob ", 1) for line in amy.lines() if " JOIN " not in line]
    assert got == ERRORS.splitlines()
    assert cid.lines() == []


def test_unregistered_commands_get_451_and_quit_gets_error() -> None:
    w = World()
    c = w.connect()
    c.send("JOIN #x\r\nPING tok\r\nQUIT :bye")
    assert c.lines() == [
        ":irc.test 451 * :You have not registered",
        ":irc.test PONG irc.test tok",
        "ERROR :Closing Link: 10.0.0.1 (Quit: bye)",
    ]
    assert c.transport.closed == (DisconnectReason.QUIT, "bye")


def test_the_same_nick_cannot_be_claimed_by_two_unregistered_clients() -> None:
    w = World()
    a, b = w.connect(), w.connect()
    a.send("NICK same")
    b.send("NICK same")
    a.send("USER a 0 * :A")
    b.send("USER b 0 * :B")
    assert any(" 001 same " in line for line in a.lines())
    assert b.lines() == [":irc.test 433 * same :Nickname is already in use"]
    b.send("NICK other")
    assert any(" 001 other " in line for line in b.lines())


@pytest.mark.parametrize(("first", "second"), [("irc", "line"), ("line", "irc")])
def test_nicknames_are_unique_across_dialects(first: str, second: str) -> None:
    w = World()
    (w.irc if first == "irc" else w.line)("Sam")
    late = w.connect(second)
    if second == "irc":
        late.send("NICK sam\r\nUSER s 0 * :S")
        assert late.lines() == [":irc.test 433 * sam :Nickname is already in use"]
    else:
        late.lines()
        late.send("SAM")
        assert late.lines() == ["! nickname is taken: SAM"]


def test_line_and_irc_users_share_a_room_both_ways() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #lobby")
    amy.lines()
    cid = w.line("cid")
    assert amy.lines() == [":cid!line@10.0.0.2 JOIN #lobby"]
    cid.send("hello from the line")
    assert amy.lines() == [":cid!line@10.0.0.2 PRIVMSG #lobby :hello from the line"]
    amy.send("PRIVMSG #lobby :hello from irc\r\nPRIVMSG #lobby :\x01ACTION waves\x01")
    assert cid.lines() == ["amy: hello from irc", "* amy waves"]
    cid.send("/me nods")
    assert amy.lines() == [":cid!line@10.0.0.2 PRIVMSG #lobby :\x01ACTION nods\x01"]
    amy.send("NOTICE #lobby :a notice")
    assert cid.lines() == ["amy: a notice"]
    # Private messages cross both ways.
    amy.send("PRIVMSG cid :psst")
    assert cid.lines() == ["amy (private): psst"]
    cid.send("/msg amy hush")
    assert cid.lines() == ["* -> amy: hush"]
    assert amy.lines() == [":cid!line@10.0.0.2 PRIVMSG amy :hush"]
    # Nick changes and quits are seen by both.
    amy.send("NICK rory")
    assert cid.lines() == ["* amy is now known as rory"]
    assert amy.lines() == [":amy!~amy@10.0.0.1 NICK rory"]
    cid.send("/nick river")
    assert amy.lines() == [":cid!line@10.0.0.2 NICK river"]
    cid.send("/quit spoilers")
    assert amy.lines() == [":river!line@10.0.0.2 QUIT :Quit: spoilers"]
    bob = w.line("bob")
    amy.lines()
    amy.send("QUIT :gone")
    assert bob.lines() == ["* rory quit (gone)"]


def test_who_and_rooms_on_the_line_side_list_irc_users_and_channels() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #lobby\r\nJOIN #irc-only")
    cid = w.line("cid")
    cid.send("/who")
    assert cid.lines() == ["* #lobby (2): amy cid"]
    cid.send("/rooms")
    assert cid.lines() == ["* rooms (2): #lobby (2), #irc-only (1)"]


def test_a_long_line_message_reaches_irc_split_at_character_boundaries_in_order() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #lobby")
    amy.lines()
    cid = w.line("cid")
    amy.lines()
    text = "".join(f"{i:04d}é€😃 " for i in range(250))  # 3,500 bytes, mixed widths
    cid.send(text)
    lines = amy.lines()
    assert len(lines) > 1
    head = ":cid!line@10.0.0.2 PRIVMSG #lobby :"
    assert all(line.startswith(head) for line in lines)
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    assert "".join(line[len(head) :] for line in lines) == text


def test_a_long_action_is_split_into_actions() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #lobby")
    cid = w.line("cid")
    amy.lines()
    cid.send("/me " + "x" * 1200)
    lines = amy.lines()
    assert len(lines) == 3
    assert all(line.endswith("\x01") and "\x01ACTION x" in line for line in lines)


def test_channel_operator_commands_reach_line_users_in_their_words() -> None:
    w = World()
    amy = w.irc("amy")
    amy.send("JOIN #lobby")
    cid = w.line("cid")
    amy.send("TOPIC #lobby :tea time\r\nMODE #lobby +m\r\nMODE #lobby +v cid")
    assert cid.lines() == [
        "* amy set the topic of #lobby to: tea time",
        "* amy set mode +m on #lobby",
        "* amy set mode +v cid on #lobby",
    ]
    amy.send("KICK #lobby cid :enough")
    assert cid.lines() == ["* you were kicked from #lobby by amy (enough)"]
    cid.send("anyone?")
    assert cid.lines() == ["! you are not in a room; /join ROOM"]


def test_echo_message_and_server_time_and_message_tags() -> None:
    w = World()
    amy = w.irc("amy", caps="echo-message server-time message-tags")
    bob = w.irc("bob")
    amy.send("JOIN #c")
    bob.send("JOIN #c")
    amy.lines(), bob.lines()
    amy.send("@+draft/react=x PRIVMSG #c :hi")
    (echo,) = amy.lines()
    (relay,) = bob.lines()
    assert echo.startswith("@time=2027-01-15T08:00:00.000Z;msgid=")
    assert "+draft/react=x" in echo and echo.endswith(" PRIVMSG #c :hi")
    assert relay == ":amy!~amy@10.0.0.1 PRIVMSG #c :hi"  # bob has no tags capability


def test_away_whois_userhost_ison() -> None:
    w = World()
    amy, bob = w.irc("amy"), w.irc("bob")
    amy.send("AWAY :lunch")
    assert amy.lines() == [":irc.test 306 amy :You have been marked as being away"]
    bob.send("PRIVMSG amy :there?\r\nUSERHOST amy bob\r\nISON amy nobody bob")
    assert bob.lines() == [
        ":irc.test 301 bob amy :lunch",
        ":irc.test 302 bob :amy=-~amy@10.0.0.1 bob=+~bob@10.0.0.1",
        ":irc.test 303 bob :amy bob",
    ]
    bob.send("WHOIS amy")
    whois = bob.lines()
    assert whois[0] == ":irc.test 311 bob amy ~amy 10.0.0.1 * :Amy Realname"
    assert ":irc.test 301 bob amy :lunch" in whois
    assert whois[-1] == ":irc.test 318 bob amy :End of /WHOIS list"


def test_whowas_keeps_past_nicks_newest_first() -> None:
    w = World()
    bob = w.irc("bob")
    old = w.irc("gone")
    old.send("QUIT")
    bob.send("WHOWAS gone\r\nWHOWAS never")
    assert bob.lines() == [
        ":irc.test 314 bob gone ~gone 10.0.0.1 * :Gone Realname",
        ":irc.test 312 bob gone irc.test :chatd",
        ":irc.test 369 bob gone :End of WHOWAS",
        ":irc.test 406 bob never :There was no such nickname",
        ":irc.test 369 bob never :End of WHOWAS",
    ]


def test_oper_kill_and_wallops() -> None:
    w = World(opers={"root": "hunter2"})
    amy, bob = w.irc("amy"), w.irc("bob")
    bob.send("KILL amy :x\r\nOPER root wrong")
    assert bob.lines() == [
        ":irc.test 481 bob :Permission Denied- You're not an IRC operator",
        ":irc.test 464 bob :Password incorrect",
    ]
    bob.send("OPER root hunter2\r\nMODE bob +w\r\nWALLOPS :hello opers")
    assert bob.lines() == [
        ":irc.test 381 bob :You are now an IRC operator",
        ":bob MODE bob +o",
        ":bob MODE bob +w",
        ":bob!~bob@10.0.0.1 WALLOPS :hello opers",
    ]
    bob.send("KILL amy :spam")
    assert amy.lines() == ["ERROR :Closing Link: 10.0.0.1 (Killed (bob (spam)))"]
    assert amy.transport.closed == (DisconnectReason.KILLED, "Killed (bob (spam))")


def test_password_is_checked_before_registration() -> None:
    w = World(password="sesame")
    bad = w.connect()
    bad.send("PASS wrong")
    assert bad.lines() == [
        ":irc.test 464 * :Password incorrect",
        "ERROR :Closing Link: 10.0.0.1 (Bad password)",
    ]
    assert bad.transport.closed is not None
    none = w.connect()
    none.send("NICK n\r\nUSER n 0 * :N")
    assert none.lines()[0] == ":irc.test 464 * :Password incorrect"
    good = w.connect()
    good.send("PASS sesame\r\nNICK g\r\nUSER g 0 * :G")
    assert any(" 001 g " in line for line in good.lines())


def test_keepalive_pings_a_silent_client_and_drops_one_that_never_answers() -> None:
    w = World(ping_interval=60.0)
    amy = w.irc("amy")
    w.now = amy.transport.timer  # the registration deadline, asked for at connect
    amy.timer()
    assert amy.lines() == []
    assert amy.transport.timer == pytest.approx(1060.0)  # now a minute of silence
    w.now = 1060.0
    amy.timer()
    assert amy.lines() == ["PING irc.test"]
    w.now = 1119.0
    amy.timer()
    assert amy.transport.closed is None
    w.now = 1120.0
    amy.timer()
    assert amy.lines() == ["ERROR :Closing Link: 10.0.0.1 (Ping timeout)"]
    assert amy.transport.closed == (DisconnectReason.IDLE, "Ping timeout")


def test_flood_control_charges_irc_lines_and_blank_lines() -> None:
    w = World(flood_rate=10.0, flood_burst=7)
    amy = w.irc("amy")  # NICK and USER: 2 tokens
    delay = amy.send("\r\n" * 3 + "PING a\r\nPING b\r\nPING c")
    assert delay == pytest.approx(0.1)  # 3 blank lines and 2 PINGs spent the other 5
    assert amy.lines() == [":irc.test PONG irc.test a", ":irc.test PONG irc.test b"]
