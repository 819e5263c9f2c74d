"""What the hub says happened, free of any wire format.

The hub produces these; each dialect (today the line protocol in
:mod:`chatd.protocol`, later IRC) encodes one event once and hands the same bytes to
every recipient. Events are frozen so one object can be shared by all of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Greeting:
    """Sent on connect; the dialect's rendering ends by asking for a nickname."""

    server: str


@dataclass(frozen=True, slots=True)
class Registered:
    """The connection now has a nickname and is in ``room``."""

    nick: str
    room: str
    members: int


@dataclass(frozen=True, slots=True)
class Message:
    """A chat line from ``nick`` to ``room``."""

    nick: str
    room: str
    text: str


@dataclass(frozen=True, slots=True)
class Messages:
    """Several chat lines from ``nick`` to ``room`` that arrived together.

    One event instead of several lets an engine fan the whole batch out with one
    append per recipient; every recipient still sees each line, in order.
    """

    nick: str
    room: str
    texts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Action:
    """``/me``: ``nick`` does ``text`` in ``room``."""

    nick: str
    room: str
    text: str


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """A private message, as its recipient sees it."""

    sender: str
    target: str
    text: str


@dataclass(frozen=True, slots=True)
class PrivateSent:
    """Confirmation to the sender of a private message."""

    target: str
    text: str


@dataclass(frozen=True, slots=True)
class Joined:
    """``nick`` entered ``room`` (sent to the others in it)."""

    nick: str
    room: str


@dataclass(frozen=True, slots=True)
class YouJoined:
    """Confirmation to a member that moved to ``room``."""

    room: str
    members: int


@dataclass(frozen=True, slots=True)
class Left:
    """``nick`` moved out of ``room`` to another room."""

    nick: str
    room: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Quit:
    """``nick`` disconnected; ``reason`` says why (their words, or the server's)."""

    nick: str
    room: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NickChanged:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class WhoReply:
    room: str
    nicks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoomsReply:
    rooms: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class HelpReply:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    token: str = ""


@dataclass(frozen=True, slots=True)
class StatsReply:
    counters: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Bye:
    """Last words to a client that asked to leave."""

    reason: str = ""


@dataclass(frozen=True, slots=True)
class ServerShutdown:
    pass


@dataclass(frozen=True, slots=True)
class Error:
    """A complaint about the recipient's last line; nobody else sees it."""

    text: str


#: Everything the hub can report.
Event = (
    Greeting
    | Registered
    | Message
    | Messages
    | Action
    | PrivateMessage
    | PrivateSent
    | Joined
    | YouJoined
    | Left
    | Quit
    | NickChanged
    | WhoReply
    | RoomsReply
    | HelpReply
    | Pong
    | StatsReply
    | Bye
    | ServerShutdown
    | Error
)
