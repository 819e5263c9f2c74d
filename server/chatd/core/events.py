"""What happened, free of any wire format: the one door through which the hub's state changes.

Every change to the hub's state is an event. A hub operation validates a request, builds
the event that names who and what (nicknames, member ids, room names, structured mode
changes; never a live object), **applies** it (:meth:`Hub.apply
<chatd.core.hub.Hub.apply>` is the only code that changes state), then **publishes** it
with a :mod:`target <chatd.core.targets>`. An event replayed from history or received
from another node enters through the same ``apply``. So each event carries everything
applying it needs: the member's id (``Source.uid``), the time the hub accepted it
(``at``), the flags a joiner gets, the mode changes as data.

The router encodes one event once per dialect (and per recipient :class:`Role` where it
matters) and hands the same ``bytes`` to every recipient of that dialect. Events are
frozen so one object can be shared by all of them and by a later backplane.

Time and identity are the hub's: every event has ``at`` (wall time, seconds) and every
chat line its own ``msgid``, minted by the hub (:mod:`chatd.core.ids`); encoders only
render them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Source:
    """Who did it: a nickname with the user and host IRC shows as ``nick!user@host``."""

    nick: str
    user: str
    host: str
    #: The member has user mode ``+B`` (IRCv3 bot mode): IRC shows a ``bot`` tag.
    bot: bool = False
    #: The member's id (:meth:`chatd.core.ids.Mint.uid`): stable across nick changes.
    uid: str = ""

    @property
    def mask(self) -> str:
        return f"{self.nick}!{self.user}@{self.host}"


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
    """The kinds of text a member can send to a room or a member."""

    #: A plain chat line (IRC PRIVMSG).
    SAY = "say"
    #: ``/me``, IRC CTCP ACTION: the same event in both dialects.
    ACTION = "action"
    #: IRC NOTICE (never answered automatically).
    NOTICE = "notice"
    #: IRCv3 TAGMSG: client-only tags and no text (only tag-aware clients see it).
    TAGMSG = "tagmsg"


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One line of chat, with the id and time the hub gave it."""

    text: str
    msgid: str
    at: float
    #: This piece continues the line before it: a line too long for the narrowest
    #: dialect's frame was cut (each piece has its own id); a dialect that can show the
    #: whole line joins the pieces back (:func:`joined`).
    concat: bool = False


def joined(lines: tuple[ChatLine, ...]) -> list[str]:
    """The texts as they were sent: continuation pieces joined to the line they continue."""
    texts: list[str] = []
    for line in lines:
        if line.concat and texts:
            texts[-1] += line.text
        else:
            texts.append(line.text)
    return texts


@dataclass(frozen=True, slots=True)
class Chat:
    """Lines from ``source`` to ``room``, in order (one or more that arrived together).

    A batch lets one read of K lines cost one append per recipient instead of K.
    """

    source: Source
    room: str
    lines: tuple[ChatLine, ...]
    kind: ChatKind = ChatKind.SAY
    #: IRCv3 client-only tags (``+typing``...), relayed to clients that understand them.
    tags: tuple[tuple[str, str], ...] = ()
    #: Who in the room gets it: everyone (``""``), operators only (``"o"``), or voiced
    #: members and operators (``"v"``): IRC's STATUSMSG ``PRIVMSG @#room``.
    audience: str = ""

    @property
    def texts(self) -> list[str]:
        return joined(self.lines)


@dataclass(frozen=True, slots=True)
class PrivateChat:
    """A private message (or action, notice, TAGMSG) from ``source`` to ``target``."""

    source: Source
    #: The recipient's nickname and id.
    target: str
    target_uid: str
    lines: tuple[ChatLine, ...]
    kind: ChatKind = ChatKind.SAY
    tags: tuple[tuple[str, str], ...] = ()

    @property
    def texts(self) -> list[str]:
        return joined(self.lines)


@dataclass(frozen=True, slots=True)
class Registered:
    """``source`` claimed its nickname: it is a member of the chat from now on."""

    source: Source
    realname: str = ""
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Joined:
    """``source`` entered ``room``, which now has ``members`` members."""

    source: Source
    room: str
    members: int
    realname: str = ""
    #: The joiner's away message (IRCv3 away-notify tells the room at once).
    away: str | None = None
    #: The joiner's flags in the room (:data:`~chatd.core.model.OP` for a room's founder).
    flags: int = 0
    #: The join created the room.
    created: bool = False
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Parted:
    """``source`` left ``room`` (PART, or the line dialect's ``/join`` elsewhere)."""

    source: Source
    room: str
    reason: str = ""
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Quit:
    """``source`` left the chat. ``by_user``: the reason is the member's own words."""

    source: Source
    reason: str = ""
    by_user: bool = False
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Killed:
    """A server operator, ``source``, disconnected ``victim`` (IRC KILL).

    Sent to the victim only; a :class:`Quit` tells everyone else (and changes the state).
    The victim's node closes its connection after delivering this.
    """

    source: Source
    victim: Source
    reason: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class NickChanged:
    source: Source
    new: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Kicked:
    """``source`` removed ``victim`` from ``room``."""

    source: Source
    room: str
    victim: Source
    reason: str = ""
    at: float = field(default=0.0, kw_only=True)

    @property
    def nick(self) -> str:
        return self.victim.nick


@dataclass(frozen=True, slots=True)
class TopicChanged:
    source: Source
    room: str
    topic: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One room mode change: ``ModeChange("+", "o", "bob")``, ``("-", "k", None)``."""

    sign: str
    char: str
    arg: str | None = None
    #: For ``o`` and ``v``: the member's id (``arg`` is its nick, as shown), so that a
    #: nick changed meanwhile on another node cannot make it name someone else.
    uid: str = ""


@dataclass(frozen=True, slots=True)
class ModeChanged:
    """Room modes changed, each change validated and normalised (a nick as the room has
    it, a mask completed); list entries are set by ``source`` at ``at``."""

    source: Source
    room: str
    changes: tuple[ModeChange, ...]
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class UserModeChanged:
    """``source``'s own user modes changed, e.g. ``"+iw"`` or ``"-o"`` (OPER gives ``+o``)."""

    source: Source
    changes: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Invited:
    """``source`` invited ``victim`` to ``room`` (to the invitee, and ops with invite-notify)."""

    source: Source
    victim: Source
    room: str
    at: float = field(default=0.0, kw_only=True)

    @property
    def nick(self) -> str:
        return self.victim.nick


@dataclass(frozen=True, slots=True)
class AwayChanged:
    """``source`` went away (``text``) or came back (``None``): IRCv3 away-notify."""

    source: Source
    text: str | None
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class RealnameChanged:
    """``source`` changed its realname (IRCv3 setname)."""

    source: Source
    realname: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class CameOnline:
    """A nickname someone monitors is now in use, by ``source`` (IRCv3 MONITOR).

    Published to the watchers of the nick (:class:`~chatd.core.targets.ToWatchers`) on
    registration and on a change to it. Its rendering names the recipient (IRC's
    ``730 <you> :nick!user@host``), so the router encodes it once per watcher.
    """

    source: Source
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class WentOffline:
    """A monitored nickname is free again: ``nick`` quit or changed to another nick."""

    nick: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class Wallops:
    source: Source
    text: str
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class RoomRestored:
    """A room saved when chatd last stopped comes back, empty, with its state
    (:mod:`chatd.history`). List entries are ``(mask, set by, when)``."""

    room: str
    created: float
    topic: str = ""
    topic_by: str = ""
    topic_at: float = 0.0
    modes: str = ""
    password: str | None = None
    limit: int | None = None
    bans: tuple[tuple[str, str, float], ...] = ()
    excepts: tuple[tuple[str, str, float], ...] = ()
    invexes: tuple[tuple[str, str, float], ...] = ()
    at: float = field(default=0.0, kw_only=True)


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    at: float = field(default=0.0, kw_only=True)


#: Everything the hub can publish.
Event = (
    Chat
    | PrivateChat
    | Registered
    | Joined
    | Parted
    | Quit
    | Killed
    | NickChanged
    | Kicked
    | TopicChanged
    | ModeChanged
    | UserModeChanged
    | Invited
    | AwayChanged
    | RealnameChanged
    | CameOnline
    | WentOffline
    | Wallops
    | RoomRestored
    | ServerShutdown
)

#: Events rendered once per recipient (they name the recipient): the router calls
#: ``encoder.encode_for(event, recipient)`` for these instead of sharing one encoding.
PERSONAL = (CameOnline, WentOffline)


def roles(event: Event) -> tuple[str | None, str | None]:
    """The member ids of ``event``'s actor and subject, for the events whose rendering
    depends on them (the joiner of a JOIN, the kicked one of a KICK); ``(None, None)``
    for the rest, so that the router computes no role in a chat fan-out."""
    match event:
        case Joined(source=source) | Parted(source=source) | UserModeChanged(source=source):
            return source.uid, None
        case Kicked(source=source, victim=victim) | Invited(source=source, victim=victim):
            return source.uid, victim.uid
        case Killed(source=source, victim=victim):
            return source.uid, victim.uid
    return None, None
