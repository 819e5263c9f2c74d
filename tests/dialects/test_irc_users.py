"""Bot mode (IRCv3 ``BOT=B``) and SETNAME (IRCv3 setname), beside line users."""

from __future__ import annotations

from engine_double import World


def test_bot_mode_shows_in_whois_who_and_as_a_tag_to_tag_aware_clients() -> None:
    w = World()
    bot = w.irc("robo", caps="echo-message message-tags")
    user = w.irc("user", caps="message-tags")
    plain = w.irc("plain")
    bot.send("MODE robo +B")
    assert bot.lines() == [":robo MODE robo +B"]
    for peer in (bot, user, plain):
        peer.send("JOIN #c")
    cid = w.line("cid")
    cid.send("/join #c")
    for peer in (bot, user, plain, cid):
        peer.lines()
    bot.send("PRIVMSG #c :beep\r\nPRIVMSG user :boop")
    assert bot.lines() == [
        f"@msgid={w.msgid(0)};bot :robo!~robo@10.0.0.1 PRIVMSG #c :beep",
        f"@msgid={w.msgid(1)};bot :robo!~robo@10.0.0.1 PRIVMSG user :boop",
    ]
    assert user.lines() == [
        f"@msgid={w.msgid(0)};bot :robo!~robo@10.0.0.1 PRIVMSG #c :beep",
        f"@msgid={w.msgid(1)};bot :robo!~robo@10.0.0.1 PRIVMSG user :boop",
    ]
    assert plain.lines() == [":robo!~robo@10.0.0.1 PRIVMSG #c :beep"]
    assert cid.lines() == ["robo: beep"]  # line users see a bot like anyone else
    plain.send("WHOIS robo\r\nWHO #c")
    lines = plain.lines()
    assert ":irc.test 335 plain robo :is a bot" in lines
    assert ":irc.test 352 plain #c ~robo 10.0.0.1 irc.test robo HB@ :0 Robo Realname" in lines
    bot.send("NICK robot\r\nMODE robot -B")
    bot.lines()
    bot.send("PRIVMSG #c :human now")
    assert user.lines()[-1] == f"@msgid={w.msgid(2)} :robot!~robo@10.0.0.1 PRIVMSG #c :human now"


def test_bot_mode_survives_a_nick_change() -> None:
    w = World()
    bot, user = w.irc("robo"), w.irc("user", caps="message-tags")
    bot.send("MODE robo +B\r\nNICK robot\r\nPRIVMSG user :hi")
    assert user.lines() == [f"@msgid={w.msgid(0)};bot :robot!~robo@10.0.0.1 PRIVMSG user :hi"]


def test_setname_goes_to_the_sender_and_capable_peers_and_whois_shows_it() -> None:
    w = World()
    foo = w.irc("foo", caps="setname")
    bar = w.irc("bar", caps="setname")
    baz = w.irc("baz")
    for peer in (foo, bar, baz):
        peer.send("JOIN #c")
    cid = w.line("cid")
    cid.send("/join #c")
    for peer in (foo, bar, baz, cid):
        peer.lines()
    foo.send("SETNAME :Foo Fighter")
    assert foo.lines() == [":foo!~foo@10.0.0.1 SETNAME :Foo Fighter"]
    assert bar.lines() == [":foo!~foo@10.0.0.1 SETNAME :Foo Fighter"]
    assert baz.lines() == cid.lines() == []
    baz.send("WHOIS foo")
    assert baz.lines()[0] == ":irc.test 311 baz foo ~foo 10.0.0.1 * :Foo Fighter"


def test_setname_refuses_an_empty_or_overlong_realname() -> None:
    w = World()
    foo = w.irc("foo", caps="setname")
    foo.send("SETNAME :\r\nSETNAME :" + "x" * 391)
    assert foo.lines() == [
        ":irc.test FAIL SETNAME INVALID_REALNAME :Realname is empty",
        ":irc.test FAIL SETNAME INVALID_REALNAME :Realname is longer than 390 characters",
    ]
    assert w.service.hub.find("foo").realname == "Foo Realname"
