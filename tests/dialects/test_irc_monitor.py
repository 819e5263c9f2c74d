"""IRCv3 MONITOR and extended-monitor, and the line dialect's /monitor, through the hub.

The hub keeps the watch lists and tells the watchers of a nick when it signs on, quits
or changes; each dialect renders that its own way (730/731, ``* amy is online``).
"""

from __future__ import annotations

from chatd.core.monitor import MAX_WATCH
from engine_double import World

MONITOR = """\
:irc.test 432 bob *!*@x :Erroneus nickname
:irc.test 730 bob :amy!~amy@10.0.0.1
:irc.test 731 bob :zed,Cid
:irc.test 732 bob :amy,zed,Cid
:irc.test 733 bob :End of MONITOR list
"""


def test_monitor_add_answers_online_and_offline_and_masks_are_refused() -> None:
    w = World()
    w.irc("amy")
    bob = w.irc("bob")
    bob.send("MONITOR + amy,zed,*!*@x,Cid\r\nMONITOR L")
    assert bob.lines() == MONITOR.splitlines()
    assert set(w.service.hub.monitor.watchers) == {"amy", "zed", "cid"}


def test_watchers_hear_sign_on_nick_changes_and_quits_but_not_a_change_of_case() -> None:
    w = World()
    bob = w.irc("bob")
    bob.send("MONITOR + qux")
    assert bob.lines() == [":irc.test 731 bob :qux"]
    baz = w.irc("baz")
    assert bob.lines() == []
    baz.send("NICK qux")
    assert bob.lines() == [":irc.test 730 bob :qux!~baz@10.0.0.1"]
    baz.send("NICK QUX")
    assert bob.lines() == []  # the same nickname to a watcher
    baz.send("NICK other")
    assert bob.lines() == [":irc.test 731 bob :QUX"]  # the nick as it was, unfolded
    qux = w.irc("qux")
    assert bob.lines() == [":irc.test 730 bob :qux!~qux@10.0.0.1"]
    qux.send("QUIT :bye")
    assert bob.lines() == [":irc.test 731 bob :qux"]


def test_remove_clear_and_status_and_the_removed_nick_is_no_longer_watched() -> None:
    w = World()
    w.irc("amy")
    bob = w.irc("bob")
    bob.send("MONITOR + amy,zed")
    bob.lines()
    bob.send("MONITOR S")
    assert bob.lines() == [":irc.test 730 bob :amy!~amy@10.0.0.1", ":irc.test 731 bob :zed"]
    bob.send("MONITOR - zed")
    assert bob.lines() == []
    w.irc("zed")
    assert bob.lines() == []
    bob.send("MONITOR C\r\nMONITOR L")
    assert bob.lines() == [":irc.test 733 bob :End of MONITOR list"]
    assert w.service.hub.monitor.watchers == {}


def test_the_list_is_bounded_and_the_rest_is_refused_with_734() -> None:
    w = World()
    bob = w.irc("bob")
    nicks = [f"n{i}" for i in range(MAX_WATCH + 2)]
    bob.send("MONITOR + " + ",".join(nicks))
    lines = bob.lines()
    assert lines[-1] == f":irc.test 734 bob {MAX_WATCH} n{MAX_WATCH},n{MAX_WATCH + 1} :" + (
        "Monitor list is full."
    )
    offline = ",".join(line.rsplit(":", 1)[1] for line in lines if " 731 " in line)
    assert offline.split(",") == nicks[:MAX_WATCH]
    assert all(len(line.encode()) + 2 <= 512 for line in lines)
    assert w.service.hub.monitor.size(bob.session.uid) == MAX_WATCH


def test_a_disconnected_watcher_leaves_no_watch_behind() -> None:
    w = World()
    bob = w.irc("bob")
    bob.send("MONITOR + amy")
    bob.close()
    assert w.service.hub.monitor.watchers == {}
    w.irc("amy")  # nobody to tell, and nothing breaks


def test_an_irc_user_monitors_a_line_users_nick() -> None:
    w = World()
    bob = w.irc("bob")
    bob.send("MONITOR + cid")
    bob.lines()
    cid = w.line("cid")
    assert bob.lines() == [":irc.test 730 bob :cid!line@10.0.0.2"]
    cid.send("/nick river")
    assert bob.lines() == [":irc.test 731 bob :cid"]
    cid.send("/quit")
    assert bob.lines() == []


def test_a_line_user_monitors_with_slash_monitor() -> None:
    w = World()
    w.irc("amy")
    cid = w.line("cid")
    cid.send("/monitor amy, zed *!*@x")
    assert cid.lines() == [
        "! invalid nickname: *!*@x",
        "* amy is online",
        "* zed is offline",
    ]
    zed = w.irc("zed")
    assert cid.lines() == ["* zed is online"]
    cid.send("/monitor")
    assert cid.lines() == ["* you monitor (2): amy (online), zed (online)"]
    zed.send("QUIT")
    assert cid.lines() == ["* zed is offline"]
    cid.send("/unmonitor zed nobody")
    assert cid.lines() == ["* you no longer monitor: zed"]
    cid.send("/unmonitor *\r\n/monitor")
    assert cid.lines() == ["* you no longer monitor: amy", "* you monitor (0): nobody"]
    cid.send("/me is online")  # it would read as the notice
    assert cid.lines() == ["! that action would read as a server notice"]


def test_extended_monitor_tells_watchers_outside_the_rooms_of_away_and_setname() -> None:
    w = World()
    caps = "extended-monitor away-notify setname"
    watcher = w.irc("foo", caps=caps)
    plain = w.irc("plain", caps="away-notify setname")  # monitors, no extended-monitor
    mate = w.irc("mate", caps=caps)  # monitors and shares a room: told once
    bar = w.irc("bar")
    for peer in (watcher, plain, mate):
        peer.send("MONITOR + bar")
    bar.send("JOIN #c")
    mate.send("JOIN #c")
    for peer in (watcher, plain, mate, bar):
        peer.lines()
    bar.send("AWAY :afk\r\nSETNAME :Bar Baz\r\nAWAY")
    expected = [
        ":bar!~bar@10.0.0.1 AWAY :afk",
        ":bar!~bar@10.0.0.1 SETNAME :Bar Baz",
        ":bar!~bar@10.0.0.1 AWAY",
    ]
    assert watcher.lines() == expected
    assert mate.lines() == expected
    assert plain.lines() == []


def test_extended_monitor_needs_the_notify_caps_too() -> None:
    w = World()
    watcher = w.irc("foo", caps="extended-monitor")
    bar = w.irc("bar")
    watcher.send("MONITOR + bar")
    watcher.lines()
    bar.send("AWAY :afk\r\nSETNAME :x")
    assert watcher.lines() == []
