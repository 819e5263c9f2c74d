"""Typed refusals from the hub; each dialect renders them (``! ...`` or a numeric).

The hub raises one of these *before* it changes anything, so a refused request leaves no
trace. They are the peer's fault, not ours: a dialect catches :class:`HubError`, answers
its client and goes on. Each carries the names the rendering needs and a default English
text (``str(err)``) that the line dialect uses as is.
"""

from __future__ import annotations


class HubError(Exception):
    """Base class: a request the hub refused."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class ErroneousNick(HubError):
    def __init__(self, nick: str, why: str) -> None:
        super().__init__(why)
        self.nick = nick


class NickInUse(HubError):
    def __init__(self, nick: str) -> None:
        super().__init__(f"nickname is taken: {nick}")
        self.nick = nick


class NickReserved(HubError):
    """A nickname that would let its owner's lines read as the server's."""

    def __init__(self, nick: str) -> None:
        super().__init__(f"nickname is reserved: {nick}")
        self.nick = nick


class SameNick(HubError):
    def __init__(self, nick: str) -> None:
        super().__init__(f"you are already {nick}")
        self.nick = nick


class NoSuchNick(HubError):
    def __init__(self, nick: str) -> None:
        super().__init__(f"no such nick: {nick}")
        self.nick = nick


class BadRoomName(HubError):
    def __init__(self, room: str, why: str) -> None:
        super().__init__(f"invalid room name: {room} ({why})")
        self.room = room
        self.why = why


class NoSuchRoom(HubError):
    def __init__(self, room: str) -> None:
        super().__init__(f"no such room: {room}")
        self.room = room


class NotInRoom(HubError):
    """The member itself is not in ``room``."""

    def __init__(self, room: str) -> None:
        super().__init__(f"you are not in {room}")
        self.room = room


class NoRoom(HubError):
    """A line-dialect member with no current room (it was kicked) tried to chat."""

    def __init__(self) -> None:
        super().__init__("you are not in a room; /join ROOM")


class AlreadyInRoom(HubError):
    def __init__(self, room: str) -> None:
        super().__init__(f"you are already in {room}")
        self.room = room


class UserNotInRoom(HubError):
    """Another member, ``nick``, is not in ``room`` (KICK, MODE +o)."""

    def __init__(self, nick: str, room: str) -> None:
        super().__init__(f"{nick} is not in {room}")
        self.nick = nick
        self.room = room


class UserInRoom(HubError):
    """INVITE of someone already there."""

    def __init__(self, nick: str, room: str) -> None:
        super().__init__(f"{nick} is already in {room}")
        self.nick = nick
        self.room = room


class NotRoomOperator(HubError):
    def __init__(self, room: str) -> None:
        super().__init__(f"you are not an operator of {room}")
        self.room = room


class CannotJoin(HubError):
    """Base of the reasons a room keeps someone out; ``mode`` is the mode responsible."""

    mode = ""

    def __init__(self, room: str, why: str) -> None:
        super().__init__(f"cannot join {room}: {why}")
        self.room = room


class InviteOnly(CannotJoin):
    mode = "i"

    def __init__(self, room: str) -> None:
        super().__init__(room, "it is invite-only (+i)")


class BadKey(CannotJoin):
    mode = "k"

    def __init__(self, room: str) -> None:
        super().__init__(room, "wrong or missing key (+k)")


class RoomFull(CannotJoin):
    mode = "l"

    def __init__(self, room: str) -> None:
        super().__init__(room, "it is full (+l)")


class Banned(CannotJoin):
    mode = "b"

    def __init__(self, room: str) -> None:
        super().__init__(room, "you are banned (+b)")


class TooManyRooms(HubError):
    def __init__(self, room: str, limit: int) -> None:
        super().__init__(f"cannot join {room}: you are in {limit} rooms already")
        self.room = room


class CannotSend(HubError):
    """Speaking in ``room`` is refused: moderated, not a member under +n, or banned."""

    def __init__(self, room: str, why: str) -> None:
        super().__init__(f"cannot send to {room}: {why}")
        self.room = room
        self.why = why


class ForgedNotice(HubError):
    """An action whose text would be byte-identical to a server notice for some dialect."""

    def __init__(self) -> None:
        super().__init__("that action would read as a server notice")


class RecipientBusy(HubError):
    """``nick`` has been sent more than its per-second private budget; nothing was sent."""

    def __init__(self, nick: str) -> None:
        super().__init__(f"{nick} is receiving too much; message not sent, try again later")
        self.nick = nick


class UnknownMode(HubError):
    def __init__(self, char: str, room: str = "") -> None:
        super().__init__(f"unknown mode: {char}")
        self.char = char
        self.room = room


class InvalidModeParam(HubError):
    """A room mode's argument is not acceptable (a key with a space, a limit of 0)."""

    def __init__(self, room: str, char: str, arg: str, why: str) -> None:
        super().__init__(f"{room}: invalid +{char} {arg or '(nothing)'}: {why}")
        self.room = room
        self.char = char
        self.arg = arg
        self.why = why


class NeedMoreParams(HubError):
    def __init__(self, what: str) -> None:
        super().__init__(f"missing parameter: {what}")
        self.what = what


class NoPrivileges(HubError):
    """A server-operator command from someone who is not one."""

    def __init__(self) -> None:
        super().__init__("permission denied: you are not a server operator")


class BanListFull(HubError):
    def __init__(self, room: str, char: str) -> None:
        super().__init__(f"{room}: the +{char} list is full")
        self.room = room
        self.char = char


class KeySet(HubError):
    def __init__(self, room: str) -> None:
        super().__init__(f"{room} already has a key")
        self.room = room
