"""Where a published event goes, by name, never as a live view of members.

A target names rooms by their folded keys (:func:`chatd.core.names.fold`) and members by
their ids (:meth:`chatd.core.ids.Mint.uid`), so it means the same thing on every node of
a later cluster; the :class:`~chatd.core.router.Router` resolves it against what is
local at delivery time. ``skip`` names a member that must not receive it (the sender of
a chat line).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ToMember:
    uid: str


@dataclass(frozen=True, slots=True)
class ToRoom:
    room: str
    skip: str | None = None


@dataclass(frozen=True, slots=True)
class ToRooms:
    """Everyone in any of ``rooms``, once each, plus ``also`` (a member in none of them).

    A quit or a nick change goes to everyone who shares a room with the member.
    """

    rooms: tuple[str, ...]
    skip: str | None = None
    #: A member id.
    also: str | None = None
    #: Also the members who monitor this folded nickname and share none of the rooms;
    #: they receive the event in :attr:`~chatd.core.events.Role.WATCHER` (extended-monitor).
    watched: str | None = None


@dataclass(frozen=True, slots=True)
class ToRoomOperators:
    """The operators of ``room`` (IRCv3 invite-notify, STATUSMSG ``@#room``).

    ``voiced``: voiced members too (STATUSMSG ``+#room``).
    """

    room: str
    skip: str | None = None
    voiced: bool = False


@dataclass(frozen=True, slots=True)
class ToWatchers:
    """The members who monitor the nickname whose folded form is ``key`` (IRCv3 MONITOR)."""

    key: str


@dataclass(frozen=True, slots=True)
class ToUserMode:
    """Every registered member with user mode ``mode`` (``w`` for WALLOPS)."""

    mode: str


@dataclass(frozen=True, slots=True)
class ToEveryone:
    """Every connection, registered or not (server shutdown)."""


@dataclass(frozen=True, slots=True)
class ToNobody:
    """An event that changes state and is shown to no one (a registration)."""


Target = (
    ToMember | ToRoom | ToRooms | ToRoomOperators | ToWatchers | ToUserMode | ToEveryone | ToNobody
)
