"""What the hub says happened, free of any wire format.

The hub publishes these with a :mod:`target <chatd.core.targets>`; the router encodes
one event once per dialect (and per recipient role, see :class:`Role`) and hands the same
``bytes`` to every recipient of that dialect. Events are frozen so that one object can
be shared by all of them, and by a later backplane that forwards them to other nodes.

Only what more than one connection may see is an event. Replies to one client
(``/who``, WHOIS, numerics) are rendered by its dialect from hub queries.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Source:
    """Who did it: a nickname with the user and host IRC shows as ``nick!user@host``."""

    nick: str
    user: str
    host: str
    #: The member has user mode ``+B`` (IRCv3 bot mode): IRC shows a ``bot`` tag.
    bot: bool = False


class Role(enum.IntEnum):
    """How a recipient relates to an event; an encoder may render each differently."""

    #: Anyone else who sees it.
    OTHER = 0
    #: The member who did it (the joiner of a JOIN, the renamed one of a NICK).
    ACTOR = 1
    #: The member it was done to (the kicked one of a KICK, the invited one).
    SUBJECT = 2
    #: Someone who shares no room with the actor and sees it only because it monitors
    #: the actor's nickname (IRCv3 extended-monitor: AWAY and SETNAME of a watched nick).
    WATCHER = 3


class ChatKind(enum.Enum):
    """The three kinds of text a member can send to a room or a member."""

    #: A plain chat line (IRC PRIVMSG).
    SAY = "say"
    #: ``/me``, IRC CTCP ACTION: the same event in both dialects.
    ACTION = "action"
    #: IRC NOTICE (never answered automatically).
    NOTICE = "notice"
    #: IRCv3 TAGMSG: client-only tags and no text (only tag-aware clients see it).
    TAGMSG = "tagmsg"


@dataclass(frozen=True, slots=True)
class Chat:
    """Lines from ``source`` to ``room``, in order (one or more that arrived together).

    A batch lets one read of K lines cost one append per recipient instead of K.
    """

    source: Source
    room: str
    texts: tuple[str, ...]
    kind: ChatKind = ChatKind.SAY
    #: IRCv3 client-only tags (``+typing``...), relayed to clients that understand them.
    tags: tuple[tuple[str, str], ...] = ()
    #: When the hub accepted it (wall time) and its id: the same in an echo and the relay.
    at: float = 0.0
    msgid: str = ""
    #: Who in the room gets it: everyone (``""``), operators only (``"o"``), or voiced
    #: members and operators (``"v"``): IRC's STATUSMSG ``PRIVMSG @#room``.
    audience: str = ""


@dataclass(frozen=True, slots=True)
class PrivateChat:
    """A private message (or action, or notice) from ``source`` to ``target``."""

    source: Source
    target: str
    text: str
    kind: ChatKind = ChatKind.SAY
    tags: tuple[tuple[str, str], ...] = ()
    at: float = 0.0
    msgid: str = ""


@dataclass(frozen=True, slots=True)
class Joined:
    """``source`` entered ``room``, which now has ``members`` members."""

    source: Source
    room: str
    members: int
    realname: str = ""
    #: The joiner's away message (IRCv3 away-notify tells the room at once).
    away: str | None = None


@dataclass(frozen=True, slots=True)
class Parted:
    """``source`` left ``room`` (PART, or the line dialect's ``/join`` elsewhere)."""

    source: Source
    room: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Quit:
    """``source`` disconnected. ``by_user``: the reason is the member's own words."""

    source: Source
    reason: str = ""
    by_user: bool = False


@dataclass(frozen=True, slots=True)
class NickChanged:
    source: Source
    new: str


@dataclass(frozen=True, slots=True)
class Kicked:
    """``source`` removed ``nick`` from ``room``."""

    source: Source
    room: str
    nick: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TopicChanged:
    source: Source
    room: str
    topic: str


@dataclass(frozen=True, slots=True)
class ModeChanged:
    """Room modes changed, e.g. ``changes="+o-v"``, ``args=("bob", "amy")``."""

    source: Source
    room: str
    changes: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Invited:
    """``source`` invited ``nick`` to ``room`` (to the invitee, and ops with invite-notify)."""

    source: Source
    nick: str
    room: str


@dataclass(frozen=True, slots=True)
class AwayChanged:
    """``source`` went away (``text``) or came back (``None``): IRCv3 away-notify."""

    source: Source
    text: str | None


@dataclass(frozen=True, slots=True)
class RealnameChanged:
    """``source`` changed its realname (IRCv3 setname)."""

    source: Source
    realname: str


@dataclass(frozen=True, slots=True)
class CameOnline:
    """A nickname someone monitors is now in use, by ``source`` (IRCv3 MONITOR).

    Published to the watchers of the nick (:class:`~chatd.core.targets.ToWatchers`) on
    registration and on a change to it. Its rendering names the recipient (IRC's
    ``730 <you> :nick!user@host``), so the router encodes it once per watcher.
    """

    source: Source


@dataclass(frozen=True, slots=True)
class WentOffline:
    """A monitored nickname is free again: ``nick`` quit or changed to another nick."""

    nick: str


@dataclass(frozen=True, slots=True)
class Wallops:
    source: Source
    text: str


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    pass


#: Everything the hub can publish.
Event = (
    Chat
    | PrivateChat
    | Joined
    | Parted
    | Quit
    | NickChanged
    | Kicked
    | TopicChanged
    | ModeChanged
    | Invited
    | AwayChanged
    | RealnameChanged
    | CameOnline
    | WentOffline
    | Wallops
    | ServerShutdown
)

#: Events rendered once per recipient (they name the recipient): the router calls
#: ``encoder.encode_for(event, member)`` for these instead of sharing one encoding.
PERSONAL = (CameOnline, WentOffline)
