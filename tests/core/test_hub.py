"""The hub alone, through a real router: plain calls, no sockets, a fake clock."""

from __future__ import annotations

from collections import Counter

import pytest

from chatd.core import errors as err
from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import MAX_WATCH, OP, VOICE, Hub, Member, ModeChange, parse_mode_changes
from chatd.core.router import Router


class Inbox:
    """Stands for a member's transport and encoder: records the events it is sent."""

    def __init__(self) -> None:
        self.events: list[tuple[ev.Event, Role]] = []
        self.pending: ev.Event | None = None

    def encode(self, event: ev.Event, role: Role) -> bytes:
        self.events.append((event, role))
        return b"x"

    def encode_for(self, event: ev.Event, member: Member) -> bytes:
        self.events.append((event, Role.OTHER))
        return b"x"

    def write(self, data: bytes) -> None:
        pass

    def take(self) -> list[ev.Event]:
        out = [e for e, _ in self.events]
        self.events.clear()
        return out


class World:
    def __init__(self, **hub_options: object) -> None:
        self.now = 1000.0
        self.stats: Counter[str] = Counter()
        self.router = Router(self.stats)
        self.hub = Hub(
            self.router.deliver,
            clock=lambda: self.now,
            monotonic=lambda: self.now,
            **hub_options,  # type: ignore[arg-type]
        )
        self.router.attach(self.hub)
        self.inbox: dict[Member, Inbox] = {}

    def member(self, nick: str, host: str = "10.0.0.1", join: str | None = "#lobby") -> Member:
        # Each member gets its own encoder, so the router calls it once per recipient.
        box = Inbox()
        member = self.hub.connect(None, box, box, host)
        self.inbox[member] = box
        self.hub.register(member, nick)
        if join:
            self.hub.join(member, join)
        for other in self.inbox.values():  # setting up the room is not what tests look at
            other.take()
        return member

    def got(self, member: Member) -> list[ev.Event]:
        return self.inbox[member].take()

    def roles(self, member: Member) -> list[Role]:
        return [r for _, r in self.inbox[member].events]


def test_the_first_member_of_a_room_is_its_operator_and_the_room_hears_each_join() -> None:
    w = World()
    amy = w.member("amy")
    bob = w.member("bob", join=None)
    w.hub.join(bob, "#lobby")
    room = w.hub.rooms["#lobby"]
    assert room.members == {amy: OP, bob: 0}
    assert w.got(amy) == [ev.Joined(bob.source, "#lobby", 2)]
    assert w.roles(bob) == [Role.ACTOR]  # an IRC joiner sees its own JOIN


def test_join_without_echo_spares_the_joiner() -> None:
    w = World()
    amy = w.member("amy")
    bob = w.member("bob", join=None)
    w.hub.join(bob, "#lobby", echo=False)
    assert w.got(bob) == []
    assert len(w.got(amy)) == 1


def test_nicknames_are_unique_in_ascii_case_and_validated() -> None:
    w = World(reserved_nicks={"server"})
    w.member("Amy")
    m = w.hub.connect(None, Inbox(), Inbox(), "h")
    for bad in ("1abc", "-x", "a b", "x" * 31, "é"):
        with pytest.raises(err.ErroneousNick):
            w.hub.register(m, bad)
    for taken in ("amy", "AMY"):
        with pytest.raises(err.NickInUse):
            w.hub.register(m, taken)
    with pytest.raises(err.NickReserved):
        w.hub.register(m, "SERVER")
    assert m.nick is None
    w.hub.register(m, "x" * 30)
    assert w.hub.find("X" * 30) is m


def test_say_reaches_everyone_in_the_room_but_the_sender_once_per_batch() -> None:
    w = World()
    amy, bob, cid = w.member("amy"), w.member("bob"), w.member("cid")
    before = w.stats["writes_out"]
    event = w.hub.say(amy, "#lobby", ("hi", "there"))
    assert (event.source, event.room, event.texts, event.at) == (
        amy.source,
        "#lobby",
        ("hi", "there"),
        1000.0,
    )
    assert w.got(amy) == []
    assert w.got(bob) == w.got(cid) == [event]
    assert w.stats["writes_out"] - before == 2


def test_rooms_are_compared_in_ascii_case_and_look_alikes_are_refused() -> None:
    w = World()
    amy, bob = w.member("amy", join="#Kitchen"), w.member("bob", join=None)
    w.hub.join(bob, "#KITCHEN")
    assert set(w.hub.rooms["#kitchen"].members) == {amy, bob}
    for name in ("#\u212aitchen", "#l\u043ebby", "#lobby\u200b", "#lo\u202ebby", "#a,b", "#a b"):
        with pytest.raises(err.BadRoomName):
            w.hub.join(bob, name)
    w.hub.join(bob, "#лобби")


def test_part_tells_the_room_and_empty_rooms_vanish_but_the_default_one() -> None:
    w = World()
    amy, bob = w.member("amy"), w.member("bob")
    w.hub.join(amy, "#dev")
    w.hub.part(amy, "#dev", "done")
    assert "#dev" not in w.hub.rooms
    w.hub.part(amy, "#lobby")
    w.hub.part(bob, "#lobby")
    assert "#lobby" in w.hub.rooms
    with pytest.raises(err.NotInRoom):
        w.hub.part(amy, "#lobby")
    with pytest.raises(err.NoSuchRoom):
        w.hub.part(amy, "#nowhere")


def test_nick_change_reaches_every_room_shared_and_the_member_itself() -> None:
    w = World()
    amy, bob, cid = w.member("amy"), w.member("bob"), w.member("cid", join="#dev")
    w.hub.join(amy, "#dev")
    w.got(cid), w.got(amy)
    lonely = w.member("lonely", join=None)
    w.hub.change_nick(amy, "ann")
    event = ev.NickChanged(ev.Source("amy", "line", "10.0.0.1"), "ann")
    assert w.got(bob) == w.got(cid) == w.got(amy) == [event]  # each once
    assert w.got(lonely) == []
    with pytest.raises(err.NickInUse):
        w.hub.change_nick(bob, "ANN")
    w.hub.change_nick(amy, "Ann")  # a change of case only
    with pytest.raises(err.SameNick):
        w.hub.change_nick(amy, "Ann")
    w.member("amy")  # the old nick is free


def test_disconnect_tells_every_shared_room_once_and_not_the_quitter() -> None:
    w = World()
    amy, bob = w.member("amy"), w.member("bob")
    w.hub.join(amy, "#dev")
    w.hub.join(bob, "#dev")
    w.got(amy), w.got(bob)
    w.hub.disconnect(amy, "bye", by_user=True)
    assert w.got(bob) == [ev.Quit(amy.source, "bye", True)]
    assert "#dev" in w.hub.rooms and amy not in w.hub.rooms["#dev"].members
    w.hub.disconnect(amy)  # twice is harmless
    assert w.got(bob) == []
    assert list(w.hub.whowas_entries("AMY"))[0].nick == "amy"


def test_private_messages_are_bounded_per_recipient_per_second() -> None:
    w = World(private_rate=1000, private_burst=3000)
    amy, bob, victim = w.member("amy"), w.member("bob"), w.member("victim")
    for _ in range(3):
        w.hub.private(amy, "VICTIM", "x" * 900)  # cost: text + 64 of overhead
    with pytest.raises(err.RecipientBusy):
        w.hub.private(bob, "victim", "x" * 900)  # the budget is the victim's, not amy's
    assert len(w.got(victim)) == 3
    w.now += 1.0
    w.hub.private(bob, "victim", "x" * 900)
    with pytest.raises(err.NoSuchNick):
        w.hub.private(amy, "nobody", "x")


def test_actions_that_would_read_as_notices_are_refused() -> None:
    w = World(action_forgeable=lambda nick, text: text.startswith("quit"))
    amy, bob = w.member("amy"), w.member("bob")
    with pytest.raises(err.ForgedNotice):
        w.hub.say(amy, "#lobby", ("quit (connection reset)",), ev.ChatKind.ACTION)
    with pytest.raises(err.ForgedNotice):
        w.hub.private(amy, "bob", "quit", ev.ChatKind.ACTION)
    w.hub.say(amy, "#lobby", ("quit (connection reset)",))  # a plain line is not a notice
    assert len(w.got(bob)) == 1


def test_invite_only_key_limit_and_bans_keep_people_out_until_invited() -> None:
    w = World()
    op = w.member("op", join="#club")
    guest = w.member("guest", host="10.9.9.9", join=None)
    changes, _ = parse_mode_changes("+ikl", ["secret", "2"])
    applied, refused = w.hub.change_room_modes(op, "#club", changes)
    assert [c.char for c in applied] == ["i", "k", "l"] and refused == []
    with pytest.raises(err.InviteOnly):
        w.hub.join(guest, "#club", "secret")
    w.hub.invite(op, "guest", "#club")
    assert w.got(guest) == [ev.Invited(op.source, "guest", "#club")]
    with pytest.raises(err.BadKey):
        w.hub.join(guest, "#club")
    w.hub.join(guest, "#club", "secret")
    w.hub.change_room_modes(op, "#club", [ModeChange("-", "i")])
    third = w.member("third", join=None)
    with pytest.raises(err.RoomFull):
        w.hub.join(third, "#club", "secret")
    w.hub.invite(op, "third", "#club")  # an invitation lets one past the limit too
    w.hub.join(third, "#club", "secret")
    w.hub.change_room_modes(op, "#club", [ModeChange("-", "l")])
    w.hub.change_room_modes(op, "#club", [ModeChange("+", "b", "*!*@10.9.9.9")])
    w.hub.part(guest, "#club")
    with pytest.raises(err.Banned):
        w.hub.join(guest, "#club", "secret")


def test_only_operators_change_modes_and_each_bad_change_is_refused_alone() -> None:
    w = World()
    op, bob = w.member("op"), w.member("bob")
    with pytest.raises(err.NotRoomOperator):
        w.hub.change_room_modes(bob, "#lobby", [ModeChange("+", "m")])
    changes, _ = parse_mode_changes("+mzo-t", ["nobody"])
    applied, refused = w.hub.change_room_modes(op, "#lobby", changes)
    assert [c.char for c in applied] == ["m", "t"]
    assert [type(e) for e in refused] == [err.UnknownMode, err.NoSuchNick]
    assert w.got(bob) == [ev.ModeChanged(op.source, "#lobby", "+m-t", ())]
    with pytest.raises(err.CannotSend):
        w.hub.say(bob, "#lobby", ("hello?",))
    w.hub.change_room_modes(op, "#lobby", [ModeChange("+", "v", "BOB")])
    assert w.hub.rooms["#lobby"].members[bob] == VOICE
    w.hub.say(bob, "#lobby", ("now I may",))


def test_kick_reaches_the_room_and_the_kicked_with_its_role() -> None:
    w = World()
    op, bob, cid = w.member("op"), w.member("bob"), w.member("cid")
    with pytest.raises(err.NotRoomOperator):
        w.hub.kick(bob, "#lobby", "cid")
    w.hub.kick(op, "#lobby", "bob", "bye")
    assert w.roles(bob) == [Role.SUBJECT] and w.roles(op) == [Role.ACTOR]
    assert w.got(cid) == [ev.Kicked(op.source, "#lobby", "bob", "bye")]
    assert bob not in w.hub.rooms["#lobby"].members
    with pytest.raises(err.UserNotInRoom):
        w.hub.kick(op, "#lobby", "bob")


def test_topic_needs_an_operator_under_plus_t() -> None:
    w = World()
    op, bob = w.member("op"), w.member("bob")
    with pytest.raises(err.NotRoomOperator):
        w.hub.topic(bob, "#lobby", "mine")
    w.hub.topic(op, "#lobby", "welcome")
    room = w.hub.rooms["#lobby"]
    assert (room.topic, room.topic_by, room.topic_at) == ("welcome", "op", 1000.0)
    assert w.got(bob) == [ev.TopicChanged(op.source, "#lobby", "welcome")]


def test_exceptions_unban_and_invite_exceptions_open_invite_only_rooms() -> None:
    w = World()
    op = w.member("op", join="#club")
    guest = w.member("guest", host="10.9.9.9", join=None)
    changes, _ = parse_mode_changes("+beI", ["*!*@10.9.9.9", "guest", "friend!*@*"])
    applied, _ = w.hub.change_room_modes(op, "#club", changes)
    assert [(c.char, c.arg) for c in applied] == [
        ("b", "*!*@10.9.9.9"),
        ("e", "guest!*@*"),
        ("I", "friend!*@*"),
    ]
    room = w.hub.rooms["#club"]
    assert not w.hub.is_banned(guest, room)
    w.hub.join(guest, "#club")
    w.hub.part(guest, "#club")
    w.hub.change_room_modes(op, "#club", [ModeChange("-", "e", "GUEST!*@*"), ModeChange("+", "i")])
    assert room.excepts == [] and w.hub.is_banned(guest, room)
    friend = w.member("friend", join=None)
    w.hub.join(friend, "#club")  # +I lets it past +i without an invitation
    with pytest.raises(err.InviteOnly):
        w.hub.join(w.member("stranger", join=None), "#club")


def test_no_ctcp_rooms_and_statusmsg_audiences() -> None:
    w = World()
    op, voiced, bob = w.member("op"), w.member("voiced"), w.member("bob")
    w.hub.change_room_modes(op, "#lobby", [ModeChange("+", "v", "voiced"), ModeChange("+", "C")])
    for m in (op, voiced, bob):
        w.got(m)
    with pytest.raises(err.CannotSend):
        w.hub.say(bob, "#lobby", ("\x01VERSION\x01",), ctcp=True)
    w.hub.say(op, "#lobby", ("\x01PING 1\x01",), ctcp=True)  # operators are exempt
    assert len(w.got(bob)) == len(w.got(voiced)) == 1
    event = w.hub.say(bob, "#lobby", ("ops only",), audience="o")
    assert event.audience == "o"
    assert w.got(op) == [event] and w.got(voiced) == []
    event = w.hub.say(op, "#lobby", ("voiced and up",), audience="v")
    assert w.got(voiced) == [event] and w.got(bob) == [] and w.got(op) == []


def test_watchers_are_told_of_sign_on_nick_changes_and_quits() -> None:
    w = World()
    watcher = w.member("watcher", join=None)
    added, refused = w.hub.watch(watcher, ["Amy", "*!*@*", "amy", "zed"])
    assert (added, refused) == (["Amy", "amy", "zed"], [])
    assert watcher.watching == {"amy": "Amy", "zed": "zed"}
    amy = w.hub.connect(None, Inbox(), Inbox(), "10.0.0.1")
    w.hub.register(amy, "amy")  # World.member() would clear what the watcher got
    assert w.got(watcher) == [ev.CameOnline(amy.source)]
    w.hub.change_nick(amy, "AMY")
    assert w.got(watcher) == []  # the same nickname
    w.hub.change_nick(amy, "zed")
    assert w.got(watcher) == [ev.WentOffline("AMY"), ev.CameOnline(amy.source)]
    w.hub.disconnect(amy)
    assert w.got(watcher) == [ev.WentOffline("zed")]
    w.hub.unwatch(watcher, ["ZED"])
    assert set(w.hub.watchers) == {"amy"}
    w.hub.disconnect(watcher)
    assert w.hub.watchers == {}


def test_a_watch_list_is_bounded() -> None:
    w = World()
    watcher = w.member("watcher", join=None)
    nicks = [f"n{i}" for i in range(MAX_WATCH + 3)]
    added, refused = w.hub.watch(watcher, nicks)
    assert added == nicks[:MAX_WATCH] and refused == nicks[MAX_WATCH:]
    w.hub.unwatch_all(watcher)
    assert w.hub.watchers == {} and watcher.watching == {}


def test_away_and_realname_reach_watchers_outside_the_rooms_once_as_watchers() -> None:
    w = World()
    amy, mate = w.member("amy"), w.member("mate")
    outsider = w.member("outsider", join=None)
    w.hub.watch(mate, ["amy"])
    w.hub.watch(outsider, ["amy"])
    w.hub.set_away(amy, "lunch")
    assert w.roles(mate) == [Role.OTHER] and w.roles(outsider) == [Role.WATCHER]
    assert w.got(mate) == w.got(outsider) == [ev.AwayChanged(amy.source, "lunch")]
    w.hub.set_realname(amy, "Amy Pond")
    assert w.roles(amy) == [Role.ACTOR] and w.roles(outsider) == [Role.WATCHER]
    assert w.got(outsider) == [ev.RealnameChanged(amy.source, "Amy Pond")]
    assert amy.realname == "Amy Pond"
    with pytest.raises(err.NeedMoreParams):
        w.hub.set_realname(amy, "")


def test_bot_mode_is_carried_by_the_source_across_nick_changes() -> None:
    w = World()
    amy, bob = w.member("amy"), w.member("bob")
    assert w.hub.change_user_modes(amy, [ModeChange("+", "B")]) == "+B"
    assert amy.source.bot
    w.hub.change_nick(amy, "robo")
    assert amy.source.bot and amy.source.nick == "robo"
    event = w.hub.say(amy, "#lobby", ("beep",))
    assert event.source.bot and w.got(bob)[-1] == event
    w.hub.change_user_modes(amy, [ModeChange("-", "B")])
    assert not amy.source.bot


def test_invitations_are_listed_until_used() -> None:
    w = World()
    op, bob = w.member("op", join="#a"), w.member("bob", join=None)
    w.hub.join(op, "#b")
    w.hub.invite(op, "bob", "#a")
    w.hub.invite(op, "bob", "#b")
    w.hub.join(bob, "#b")
    assert [room.name for room in w.hub.invitations(bob)] == ["#a"]
