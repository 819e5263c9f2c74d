"""Who you are, where you are and who is there, learnt from the lines the server sends.

The prompt shows the nick and room, Tab completes the room's nicks, and a reconnect
rejoins the last room: all three read a :class:`Tracker` that is fed every server line
and every line the client sends. It has no I/O, so tests feed it text directly.

Trust. Any member can make the server send ``* <their nick> <any text>`` with ``/me``,
and ``you`` is a valid nick, so ``* you joined #elsewhere (1 here)`` may be an action
by a user called ``you``. The tracker therefore accepts the lines that change *your*
state only when it expects them: ``* you are NICK, in ROOM`` only before registration
(before it you are in no room, so no action reaches you), and ``* you joined ROOM`` only
naming a room it saw you ``/join``. ``* OLD is now known as NEW`` about
you cannot be forged: an action line starts with its sender's nick, never with yours.
Lines about *other* members (joined, left, quit) only steer completion, where a forged
one costs at most a missing or extra candidate.
"""

from __future__ import annotations

import enum
import re

from chatd.client.lines import NICK, ROOM, Chat, Notice, Private, Replayed, classify


class Change(enum.Enum):
    """What a line changed, for the session to act on (it acts only on some)."""

    #: ``* you are NICK, in ROOM``: registered on this connection.
    REGISTERED = "registered"
    #: ``* you joined ROOM``: you are in a new room now.
    JOINED = "joined"
    #: Your nick changed.
    NICK = "nick"
    #: The room's member list changed.
    MEMBERS = "members"


_REGISTERED = re.compile(rf"you are ({NICK}), in ({ROOM}) \((\d+) here\)(?:;.*)?")
_YOU_JOINED = re.compile(rf"you joined ({ROOM}) \((\d+) here\)")
_RENAMED = re.compile(rf"({NICK}) is now known as ({NICK})")
_JOINED = re.compile(rf"({NICK}) joined ({ROOM})")
_LEFT = re.compile(rf"({NICK}) left ({ROOM})(?: \(.*\))?")
_QUIT = re.compile(rf"({NICK}) quit(?: \(.*\))?")
#: A /who reply; a big room's reply may come as several lines with the same header.
_WHO = re.compile(rf"({ROOM}) \((\d+)\): ?(.*)")
_ROOMS = re.compile(r"rooms \(\d+\): (.*)")
_ROOM_IN_LIST = re.compile(rf"({ROOM}) \(\d+\)")


def key(name: str) -> str:
    """Nicks and rooms compare case-insensitively (ASCII), as the server compares them."""
    return name.lower()


class Tracker:
    """Your nick and room and the room's members, kept from the lines of one session.

    ``nick`` and ``room`` survive a lost connection (they are what a reconnect asks
    for again); ``registered`` says whether they hold on the current connection.
    """

    def __init__(self) -> None:
        self.nick: str | None = None
        self.room: str | None = None
        self.registered = False
        #: The current room's members: key → nick as spelt by its owner.
        self.members: dict[str, str] = {}
        #: Nicks you exchanged private messages with (``/msg`` completion).
        self.correspondents: dict[str, str] = {}
        #: Room names seen in ``/rooms`` replies and joins (``/join`` completion).
        self.rooms: dict[str, str] = {}
        #: Rooms you sent /join for and have not yet been told you joined (keys).
        self._joins_pending: list[str] = []
        #: A /who reply being collected: (room key, total, nicks so far).
        self._who: tuple[str, int, list[str]] | None = None

    # ----------------------------------------------------------------- connection

    def connection_lost(self) -> None:
        """The connection went: nothing holds on the next one until the server says so."""
        self.registered = False
        self.members.clear()
        self._joins_pending.clear()
        self._who = None

    # ----------------------------------------------------------------- what we send

    def sent(self, line: str) -> None:
        """Note one line the client sent (without its newline)."""
        words = line.split()
        if len(words) > 1 and words[0].lower() == "/join":
            room = words[1] if words[1].startswith("#") else "#" + words[1]
            # A refused /join is never answered with "you joined": keep the last few only.
            self._joins_pending = [*self._joins_pending[-7:], key(room)]

    # ----------------------------------------------------------------- what we get

    def feed(self, line: str) -> Change | None:
        """Learn from one decoded server line; what it changed, if anything."""
        kind = classify(line)
        if isinstance(kind, Replayed):
            # A /history line: said before, perhaps by someone long gone. Nothing in it
            # is news: no member, no mention, no change.
            return None
        if isinstance(kind, Notice):
            return self._notice(kind.text)
        if isinstance(kind, Chat) and self.registered:
            # The server stamps the sender, and chat reaches only its room's members.
            if key(kind.nick) not in self.members:
                self.members[key(kind.nick)] = kind.nick
                return Change.MEMBERS
            return None
        if isinstance(kind, Private):
            self.correspondents[key(kind.nick)] = kind.nick
        return None

    def _notice(self, text: str) -> Change | None:
        if not self.registered:
            if m := _REGISTERED.fullmatch(text):
                self.nick, room = m.group(1), m.group(2)
                self.registered = True
                self._enter(room)
                return Change.REGISTERED
            return None
        m = _YOU_JOINED.fullmatch(text)
        if m and key(m.group(1)) in self._joins_pending:
            self._joins_pending.clear()
            self._enter(m.group(1))
            return Change.JOINED
        if m := _WHO.fullmatch(text):
            return self._who_line(m.group(1), int(m.group(2)), m.group(3).split())
        if m := _ROOMS.fullmatch(text):
            for room in _ROOM_IN_LIST.findall(m.group(1)):
                self.rooms[key(room)] = room
            return None
        if m := _RENAMED.fullmatch(text):
            return self._renamed(m.group(1), m.group(2))
        if (m := _JOINED.fullmatch(text)) and self._here(m.group(2)):
            self.members[key(m.group(1))] = m.group(1)
            return Change.MEMBERS
        if (m := _LEFT.fullmatch(text)) and self._here(m.group(2)):
            return self._gone(m.group(1))
        if m := _QUIT.fullmatch(text):
            return self._gone(m.group(1))
        return None

    def _enter(self, room: str) -> None:
        self.room = room
        self.rooms[key(room)] = room
        assert self.nick is not None
        self.members = {key(self.nick): self.nick}
        self._who = None

    def _here(self, room: str) -> bool:
        return self.room is not None and key(room) == key(self.room)

    def _renamed(self, old: str, new: str) -> Change | None:
        if self.nick is not None and key(old) == key(self.nick):
            self.nick = new
            self.members.pop(key(old), None)
            self.members[key(new)] = new
            return Change.NICK
        if self.members.pop(key(old), None) is None:
            return None
        self.members[key(new)] = new
        return Change.MEMBERS

    def _gone(self, nick: str) -> Change | None:
        if self.nick is not None and key(nick) == key(self.nick):
            return None  # about you: an action, or the server's farewell
        if self.members.pop(key(nick), None) is None:
            return None
        return Change.MEMBERS

    def _who_line(self, room: str, total: int, nicks: list[str]) -> Change | None:
        """Collect a /who reply; replace the member list once the reply is complete."""
        rkey = key(room)
        if self._who is not None and self._who[0] == rkey and self._who[1] == total:
            self._who[2].extend(nicks)
        else:
            self._who = (rkey, total, list(nicks))
        _, _, collected = self._who
        if len(collected) < total:
            return None
        self._who = None
        if not self._here(room):
            return None
        self.members = {key(n): n for n in collected}
        if self.nick is not None:
            self.members.setdefault(key(self.nick), self.nick)
        return Change.MEMBERS

    # ----------------------------------------------------------------- views

    def others(self) -> list[str]:
        """The current room's members other than you, sorted case-insensitively."""
        me = key(self.nick) if self.nick else None
        return sorted((n for k, n in self.members.items() if k != me), key=key)
