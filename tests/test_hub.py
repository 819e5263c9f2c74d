"""The hub alone: plain calls, no sockets, no clock."""

from __future__ import annotations

from chatd import events as ev
from chatd.hub import Hub, Member


def received(deliveries, member: Member) -> list[object]:
    """The events ``member`` gets from a hub call's deliveries."""
    return [
        e for e, recipients, skip in deliveries if member is not skip and member in list(recipients)
    ]


def join(hub: Hub, nick: str) -> Member:
    member, greeting = hub.connect(object())
    assert isinstance(greeting[0][0], ev.Greeting)
    out = hub.register(member, nick)
    assert isinstance(out[0][0], ev.Registered)
    return member


def test_register_announces_to_the_room_but_not_the_newcomer() -> None:
    hub = Hub()
    amy = join(hub, "amy")
    bob, _ = hub.connect(object())
    out = hub.register(bob, "bob")
    assert received(out, amy) == [ev.Joined("bob", "#lobby")]
    assert received(out, bob) == [ev.Registered("bob", "#lobby", 2)]


def test_nicknames_are_unique_case_insensitively_and_validated() -> None:
    hub = Hub()
    join(hub, "Amy")
    m, _ = hub.connect(object())
    for bad in ("amy", "AMY", "1abc", "-x", "a b", "x" * 31, "é"):
        ((event, _, _),) = hub.register(m, bad)
        assert isinstance(event, ev.Error), bad
    assert m.nick is None
    out = hub.register(m, "x" * 30)
    assert isinstance(out[0][0], ev.Registered)


def test_say_reaches_everyone_in_the_room_but_the_sender() -> None:
    hub = Hub()
    amy, bob, cid = join(hub, "amy"), join(hub, "bob"), join(hub, "cid")
    out = hub.say(amy, "hi")
    assert received(out, amy) == []
    assert received(out, bob) == received(out, cid) == [ev.Message("amy", "#lobby", "hi")]


def test_join_moves_between_rooms_and_empty_rooms_vanish() -> None:
    hub = Hub()
    amy, bob = join(hub, "amy"), join(hub, "bob")
    out = hub.join(amy, "dev")
    assert received(out, bob) == [ev.Left("amy", "#lobby")]
    assert received(out, amy) == [ev.YouJoined("#dev", 1)]
    assert received(hub.say(bob, "x"), amy) == []
    hub.join(amy, "#lobby")
    assert "#dev" not in hub.rooms and "#lobby" in hub.rooms
    assert isinstance(hub.join(amy, "#LOBBY")[0][0], ev.Error)
    assert isinstance(hub.join(amy, "bad,room")[0][0], ev.Error)


def test_nick_change_is_told_to_the_room_and_frees_the_old_nick() -> None:
    hub = Hub()
    amy, bob = join(hub, "amy"), join(hub, "bob")
    out = hub.change_nick(amy, "ann")
    assert received(out, bob) == [ev.NickChanged("amy", "ann")]
    assert isinstance(hub.change_nick(bob, "ANN")[0][0], ev.Error)
    join(hub, "amy")
    assert hub.change_nick(amy, "Ann")[0][0] == ev.NickChanged("ann", "Ann")


def test_private_message_goes_to_one_member_only() -> None:
    hub = Hub()
    amy, bob, cid = join(hub, "amy"), join(hub, "bob"), join(hub, "cid")
    hub.join(bob, "#elsewhere")
    out = hub.private(amy, "BOB", "psst")
    assert received(out, bob) == [ev.PrivateMessage("amy", "bob", "psst")]
    assert received(out, cid) == []
    assert received(out, amy) == [ev.PrivateSent("bob", "psst")]
    assert isinstance(hub.private(amy, "nobody", "x")[0][0], ev.Error)


def test_who_and_rooms() -> None:
    hub = Hub()
    amy, bob = join(hub, "amy"), join(hub, "Bob")
    join(hub, "cid")
    hub.join(bob, "#dev")
    assert hub.who(amy)[0][0] == ev.WhoReply("#lobby", ("amy", "cid"))
    assert hub.list_rooms(amy)[0][0] == ev.RoomsReply((("#lobby", 2), ("#dev", 1)))


def test_disconnect_tells_the_room_and_frees_the_nick() -> None:
    hub = Hub()
    amy, bob = join(hub, "amy"), join(hub, "bob")
    out = hub.disconnect(amy, "bye")
    assert received(out, bob) == [ev.Quit("amy", "#lobby", "bye")]
    assert hub.disconnect(amy) == []
    join(hub, "amy")
    unregistered, _ = hub.connect(object())
    assert hub.disconnect(unregistered) == []
    assert len(hub.members) == 2


def test_batched_say_is_one_event() -> None:
    hub = Hub()
    amy, bob = join(hub, "amy"), join(hub, "bob")
    assert received(hub.say_many(amy, ["a", "b"]), bob) == [
        ev.Messages("amy", "#lobby", ("a", "b"))
    ]
