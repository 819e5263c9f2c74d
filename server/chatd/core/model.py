"""The hub's state as plain data: members, rooms, WHOWAS entries.

Nothing here knows a connection, a dialect or a wire format, and nothing here changes
by itself: :meth:`Hub.apply <chatd.core.hub.Hub.apply>` is the only code that writes
these objects. Every field is a string, a number or a container of them, so a room or a
member can be stored (history, restart) or described to another node as it is.

Members are named by their id (``uid``, :mod:`chatd.core.ids`), which a connection keeps
through nick changes and which is never reused: a room's member list, its invitations
and its cached ban verdicts refer to the person, not to whoever holds a nickname.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chatd.core.events import Source
from chatd.core.masks import Matcher, compile_mask
from chatd.core.modes import DEFAULT_ROOM_MODES

#: Member flags in a room.
OP = 1
VOICE = 2


@dataclass(slots=True, init=False)
class Member:
    """A registered member of the chat: who it is and what it has set.

    Its id, nickname, user and host are read from :attr:`source`, which holds them
    already, rather than kept twice: four slots less per member (issue 20's idle-memory
    goal, 10,000 idle connections). Setting :attr:`nick` rebuilds the source; the hub
    rebuilds it anyway when the nick or the bot mode changes.
    """

    #: The folded nickname (:func:`chatd.core.names.fold`): the key of ``Hub.nicks``.
    key: str
    realname: str
    #: User modes, sorted (``B`` bot, ``i`` invisible, ``o`` operator, ``w`` wallops).
    modes: str
    away: str | None
    #: Wall time of registration.
    signon: float
    #: Keys of the rooms the member is in, in join order.
    rooms: dict[str, None]
    #: Keys of rooms that hold an invitation for this member (cleared when it leaves).
    invited: set[str] | None
    #: What events name it as (and where its id, nick, user and host are kept).
    source: Source

    def __init__(
        self,
        uid: str,
        nick: str,
        key: str,
        user: str,
        host: str,
        realname: str = "",
        modes: str = "",
        away: str | None = None,
        signon: float = 0.0,
        rooms: dict[str, None] | None = None,
        invited: set[str] | None = None,
    ) -> None:
        # Most nicknames are folded already: then the key is the nick's own string, not
        # a second one (56 bytes per member).
        self.key = nick if key == nick else key
        self.realname = realname
        self.modes = modes
        self.away = away
        self.signon = signon
        self.rooms = {} if rooms is None else rooms
        self.invited = invited
        self.source = Source(nick, user, host, "B" in modes, uid)

    @property
    def uid(self) -> str:
        return self.source.uid

    @property
    def nick(self) -> str:
        return self.source.nick

    @nick.setter
    def nick(self, nick: str) -> None:
        source = self.source
        self.source = Source(nick, source.user, source.host, source.bot, source.uid)

    @property
    def user(self) -> str:
        return self.source.user

    @property
    def host(self) -> str:
        return self.source.host

    @property
    def mask(self) -> str:
        return self.source.mask


@dataclass(slots=True)
class MaskEntry:
    """One entry of a room's ban, exception or invite-exception list."""

    mask: str
    set_by: str
    at: float
    #: The mask compiled once, when it is set: a JOIN or a chat line then only matches.
    matcher: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.matcher = compile_mask(self.mask)


@dataclass(slots=True)
class Room:
    """A named set of members, in join order, with a topic and modes."""

    name: str
    key: str
    created: float
    #: Member id → flags (:data:`OP`, :data:`VOICE`); iteration order is join order.
    members: dict[str, int] = field(default_factory=dict)
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    #: Flag modes, sorted (``C i m n s t``).
    modes: str = DEFAULT_ROOM_MODES
    password: str | None = None
    limit: int | None = None
    #: The ``b``, ``e`` and ``I`` lists.
    bans: list[MaskEntry] = field(default_factory=list)
    excepts: list[MaskEntry] = field(default_factory=list)
    invexes: list[MaskEntry] = field(default_factory=list)
    #: Ids of members invited since the room became invite-only, oldest first.
    invites: dict[str, None] = field(default_factory=dict)
    #: Member id → whether a ban (and no exception) matches it: worked out once per
    #: member and list change, not per chat line (see ``Hub.is_banned``).
    banned: dict[str, bool] = field(default_factory=dict)

    def mask_list(self, char: str) -> list[MaskEntry]:
        """The list of list mode ``char`` (``b``, ``e`` or ``I``)."""
        if char == "b":
            return self.bans
        if char == "e":
            return self.excepts
        if char == "I":
            return self.invexes
        raise ValueError(f"not a list mode: {char!r}")


@dataclass(frozen=True, slots=True)
class WhowasEntry:
    nick: str
    user: str
    host: str
    realname: str
    when: float
