"""Rooms, nicknames and membership: the chat itself, with no I/O and no clock.

The hub changes state and answers with :data:`Delivery` tuples: an event, who gets
it, and one member to skip (the sender, for a room broadcast). It never encodes, never
writes, and never learns what a socket is: a :class:`Member` carries an opaque
``conn`` that only the engine understands. That keeps it testable by plain calls and
shareable by every engine and, later, every dialect.

Recipients are often a *live view* of a room's member dict, so a caller must deliver a
result before calling the hub again, and delivering must not change the hub (engines
mark a connection to close and close it after the fan-out, never during it).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from typing import Any

from chatd import events as ev

#: Nickname rule of PROTOCOL.md: 1 to 30 of ASCII letters, digits and _-[]\^{}|`,
#: not starting with a digit or "-".
_NICK = re.compile(r"[A-Za-z_\[\]\\^{}|`][A-Za-z0-9_\-\[\]\\^{}|`]{0,29}")

#: A room name is "#" and 1 to 49 characters that are not white space, "," or ":"
#: (the characters IRC reserves in channel names, so rooms map onto IRC channels).
_ROOM = re.compile(r"#?[^\s,:#]{1,49}")

#: (event, recipients, member to skip or None)
Delivery = tuple[ev.Event, Iterable["Member"], "Member | None"]


def nick_key(nick: str) -> str:
    """Case-folded form used to compare nicknames (ASCII, as nicks are ASCII)."""
    return nick.lower()


def normalize_room(name: str) -> str | None:
    """``lobby`` or ``#lobby`` → ``#lobby``; ``None`` for an invalid name."""
    if not _ROOM.fullmatch(name):
        return None
    return name if name.startswith("#") else "#" + name


def valid_nick(nick: str) -> bool:
    return _NICK.fullmatch(nick) is not None


class Member:
    """One connection as the hub sees it. ``nick`` and ``room`` are None until registered."""

    __slots__ = ("conn", "nick", "room", "__weakref__")

    def __init__(self, conn: Any) -> None:
        #: The engine's connection object; the hub never looks inside.
        self.conn = conn
        self.nick: str | None = None
        self.room: Room | None = None

    def __repr__(self) -> str:
        return f"<Member {self.nick or '(unregistered)'}>"


class Room:
    """A named set of members, in join order."""

    __slots__ = ("name", "members")

    def __init__(self, name: str) -> None:
        self.name = name
        #: dict used as an ordered set: iteration order is join order.
        self.members: dict[Member, None] = {}


class Hub:
    """All rooms and nicknames of one server."""

    def __init__(self, default_room: str = "#lobby", server_name: str = "chatd") -> None:
        room = normalize_room(default_room)
        if room is None:
            raise ValueError(f"invalid default room {default_room!r}")
        self.default_room = room
        self.server_name = server_name
        self.rooms: dict[str, Room] = {}
        self.nicks: dict[str, Member] = {}
        self.members: dict[Member, None] = {}

    # ----------------------------------------------------------------- life cycle

    def connect(self, conn: Any) -> tuple[Member, list[Delivery]]:
        """A new connection: an unregistered member and its greeting."""
        member = Member(conn)
        self.members[member] = None
        return member, [(ev.Greeting(self.server_name), (member,), None)]

    def register(self, member: Member, nick: str) -> list[Delivery]:
        """Give an unregistered member its nickname and put it in the default room."""
        if member.nick is not None:
            raise RuntimeError("member is already registered")
        problem = self._nick_problem(nick)
        if problem:
            return [(ev.Error(problem), (member,), None)]
        member.nick = nick
        self.nicks[nick_key(nick)] = member
        room = self._room(self.default_room)
        room.members[member] = None
        member.room = room
        return [
            (ev.Registered(nick, room.name, len(room.members)), (member,), None),
            (ev.Joined(nick, room.name), room.members, member),
        ]

    def disconnect(self, member: Member, reason: str = "") -> list[Delivery]:
        """Forget a member; its room is told it quit. Safe to call twice."""
        self.members.pop(member, None)
        nick, room = member.nick, member.room
        if nick is None or room is None:
            return []
        del self.nicks[nick_key(nick)]
        self._leave_room(member)
        return [(ev.Quit(nick, room.name, reason), room.members, None)]

    # ----------------------------------------------------------------- chat

    def say(self, member: Member, text: str) -> list[Delivery]:
        room = self._registered_room(member)
        return [(ev.Message(member.nick, room.name, text), room.members, member)]  # type: ignore[arg-type]

    def say_many(self, member: Member, texts: Collection[str]) -> list[Delivery]:
        """Several chat lines from one member at once: one event, one fan-out."""
        room = self._registered_room(member)
        nick: str = member.nick  # type: ignore[assignment]
        if len(texts) == 1:
            (text,) = texts
            return [(ev.Message(nick, room.name, text), room.members, member)]
        return [(ev.Messages(nick, room.name, tuple(texts)), room.members, member)]

    def act(self, member: Member, text: str) -> list[Delivery]:
        room = self._registered_room(member)
        return [(ev.Action(member.nick, room.name, text), room.members, member)]  # type: ignore[arg-type]

    def private(self, member: Member, target: str, text: str) -> list[Delivery]:
        recipient = self.nicks.get(nick_key(target))
        if recipient is None:
            return [(ev.Error(f"no such nick: {target}"), (member,), None)]
        sender: str = member.nick  # type: ignore[assignment]
        return [
            (ev.PrivateMessage(sender, recipient.nick, text), (recipient,), None),  # type: ignore[arg-type]
            (ev.PrivateSent(recipient.nick, text), (member,), None),  # type: ignore[arg-type]
        ]

    def change_nick(self, member: Member, new: str) -> list[Delivery]:
        old = member.nick
        if old is None or member.room is None:
            raise RuntimeError("member is not registered")
        if new == old:
            return [(ev.Error(f"you are already {new}"), (member,), None)]
        if nick_key(new) != nick_key(old):  # a change of case only keeps the same key
            problem = self._nick_problem(new)
            if problem:
                return [(ev.Error(problem), (member,), None)]
        elif not valid_nick(new):
            return [(ev.Error(f"invalid nickname: {new}"), (member,), None)]
        del self.nicks[nick_key(old)]
        self.nicks[nick_key(new)] = member
        member.nick = new
        # The room hears it, and so does the member (it is in the room).
        return [(ev.NickChanged(old, new), member.room.members, None)]

    def join(self, member: Member, name: str) -> list[Delivery]:
        old = self._registered_room(member)
        room_name = normalize_room(name)
        if room_name is None:
            return [(ev.Error(f"invalid room name: {name}"), (member,), None)]
        if room_name.lower() == old.name.lower():
            return [(ev.Error(f"you are already in {old.name}"), (member,), None)]
        nick: str = member.nick  # type: ignore[assignment]
        self._leave_room(member)
        room = self._room(room_name)
        room.members[member] = None
        member.room = room
        return [
            (ev.Left(nick, old.name), old.members, None),
            (ev.YouJoined(room.name, len(room.members)), (member,), None),
            (ev.Joined(nick, room.name), room.members, member),
        ]

    def who(self, member: Member) -> list[Delivery]:
        room = self._registered_room(member)
        nicks = tuple(sorted((m.nick for m in room.members), key=str.lower))  # type: ignore[arg-type]
        return [(ev.WhoReply(room.name, nicks), (member,), None)]

    def list_rooms(self, member: Member) -> list[Delivery]:
        rooms = tuple(
            sorted(((r.name, len(r.members)) for r in self.rooms.values()), key=_room_order)
        )
        return [(ev.RoomsReply(rooms), (member,), None)]

    def everyone(self) -> Iterable[Member]:
        """Every connected member, registered or not (for server-wide notices)."""
        return self.members

    # ----------------------------------------------------------------- helpers

    def _nick_problem(self, nick: str) -> str | None:
        if not valid_nick(nick):
            return (
                f"invalid nickname: {nick} (1-30 of letters, digits and _-[]\\^{{}}|`, "
                "not starting with a digit or -)"
            )
        if nick_key(nick) in self.nicks:
            return f"nickname is taken: {nick}"
        return None

    def _registered_room(self, member: Member) -> Room:
        if member.room is None:
            raise RuntimeError("member is not registered")
        return member.room

    def _room(self, name: str) -> Room:
        key = name.lower()
        room = self.rooms.get(key)
        if room is None:
            room = self.rooms[key] = Room(name)
        return room

    def _leave_room(self, member: Member) -> None:
        room = member.room
        if room is None:
            return
        room.members.pop(member, None)
        member.room = None
        if not room.members and room.name.lower() != self.default_room.lower():
            del self.rooms[room.name.lower()]


def _room_order(item: tuple[str, int]) -> tuple[int, str]:
    """Busiest rooms first, then by name."""
    return (-item[1], item[0].lower())
