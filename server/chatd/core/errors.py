"""Typed refusals from the hub: data only; each dialect renders them (``! ...`` or a numeric).

The hub raises one of these *before* it changes anything, so a refused request leaves no
trace. They are the peer's fault, not ours: a dialect catches :class:`HubError`, answers
its client in its own words (:mod:`chatd.dialects.line.errors`, the IRC session's
``hub_error``) and goes on. Each carries the names the rendering needs and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


class HubError(Exception):
    """Base class: a request the hub refused."""


@dataclass(eq=False)
class ErroneousNick(HubError):
    nick: str
    why: str


@dataclass(eq=False)
class NickInUse(HubError):
    nick: str


@dataclass(eq=False)
class NickReserved(HubError):
    """A nickname that would let its owner's lines read as the server's."""

    nick: str


@dataclass(eq=False)
class NickUnavailable(HubError):
    """A cluster node cannot reach Redis, so it cannot take a nickname's lease now."""

    nick: str


@dataclass(eq=False)
class SameNick(HubError):
    nick: str


@dataclass(eq=False)
class NoSuchNick(HubError):
    nick: str


@dataclass(eq=False)
class BadRoomName(HubError):
    room: str
    why: str


@dataclass(eq=False)
class NoSuchRoom(HubError):
    room: str


@dataclass(eq=False)
class NotInRoom(HubError):
    """The member itself is not in ``room``."""

    room: str


@dataclass(eq=False)
class NoRoom(HubError):
    """A line-dialect member with no current room (it was kicked) tried to chat."""


@dataclass(eq=False)
class AlreadyInRoom(HubError):
    room: str


@dataclass(eq=False)
class UserNotInRoom(HubError):
    """Another member, ``nick``, is not in ``room`` (KICK, MODE +o)."""

    nick: str
    room: str


@dataclass(eq=False)
class UserInRoom(HubError):
    """INVITE of someone already there."""

    nick: str
    room: str


@dataclass(eq=False)
class NotRoomOperator(HubError):
    room: str


@dataclass(eq=False)
class CannotJoin(HubError):
    """Base of the reasons a room keeps someone out; ``mode`` is the mode responsible."""

    room: str

    mode = ""


@dataclass(eq=False)
class InviteOnly(CannotJoin):
    mode = "i"


@dataclass(eq=False)
class BadKey(CannotJoin):
    mode = "k"


@dataclass(eq=False)
class RoomFull(CannotJoin):
    mode = "l"


@dataclass(eq=False)
class Banned(CannotJoin):
    mode = "b"


@dataclass(eq=False)
class TooManyRooms(HubError):
    """The member is in ``limit`` rooms already (or, ``by_address``, its address is)."""

    room: str
    limit: int
    by_address: bool = False


@dataclass(eq=False)
class CannotSend(HubError):
    """Speaking in ``room`` is refused; ``why`` names the mode: ``n`` (not a member),
    ``m`` (moderated), ``b`` (banned) or ``C`` (a CTCP request)."""

    room: str
    why: str


@dataclass(eq=False)
class ForgedNotice(HubError):
    """An action whose text would be byte-identical to a server notice for some dialect."""


@dataclass(eq=False)
class InvalidText(HubError):
    """A text breaks the one text policy (:mod:`chatd.core.text`).

    ``what`` names the text: ``chat``, ``topic``, ``reason``, ``away``, ``realname``,
    ``mask``, ``key``.
    """

    what: str
    why: str


@dataclass(eq=False)
class RecipientBusy(HubError):
    """``nick`` has been sent more than its per-second private budget; nothing was sent."""

    nick: str


@dataclass(eq=False)
class UnknownMode(HubError):
    char: str
    room: str = ""


@dataclass(eq=False)
class InvalidModeParam(HubError):
    """A room mode's argument is not acceptable (a key with a space, a limit of 0)."""

    room: str
    char: str
    arg: str
    why: str


@dataclass(eq=False)
class NeedMoreParams(HubError):
    what: str


@dataclass(eq=False)
class NoPrivileges(HubError):
    """A server-operator command from someone who is not one."""


@dataclass(eq=False)
class BanListFull(HubError):
    room: str
    char: str
