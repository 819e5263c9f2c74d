"""Resolve a published event's target to local members and write it, encoded once.

The hub publishes ``(event, target, actor, subject)``; the router finds the recipients on
this node and, for each distinct encoder among them (one per dialect, or per set of IRC
capabilities that changes the bytes), encodes the event once and appends the **same**
``bytes`` object to every recipient's output. The per-recipient work in a room broadcast
is a dict lookup and an append.

``actor`` and ``subject`` matter only to encoders that render an event differently for
the member who did it or had it done to them (the line dialect's ``* you joined ...``,
IRC's KICK seen by the kicked member is the same bytes, so it does not care). When both
are ``None`` no role is computed at all.

A later backplane fits here: it would forward ``(event, target)`` to other nodes, which
run their own router; targets are names, not live views, for that reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import OP, Hub, Member
from chatd.core.targets import (
    Target,
    ToEveryone,
    ToMember,
    ToRoom,
    ToRoomOperators,
    ToRooms,
    ToUserMode,
)


class Encoder(Protocol):
    """What a dialect supplies for each group of members that share one rendering."""

    def encode(self, event: ev.Event, role: Role) -> bytes:
        """The bytes for a recipient in ``role``; ``b""`` means this recipient gets nothing."""


class Router:
    """Delivers the hub's events to the members of this node."""

    def __init__(self, stats: Counter[str]) -> None:
        self.hub: Hub = None  # type: ignore[assignment]  # attach() sets it
        self.stats = stats

    def attach(self, hub: Hub) -> None:
        self.hub = hub

    def deliver(
        self,
        event: ev.Event,
        target: Target,
        actor: Member | None = None,
        subject: Member | None = None,
    ) -> None:
        hub = self.hub
        skip_key = getattr(target, "skip", None)
        skip = hub.nicks.get(skip_key) if skip_key is not None else None
        roles = actor is not None or subject is not None
        cache: dict[Any, bytes] = {}
        last_encoder: Any = None
        last_data = b""
        count = 0
        total = 0
        for member in self._resolve(target):
            if member is skip:
                continue
            encoder = member.encoder
            if roles:
                role = (
                    Role.ACTOR
                    if member is actor
                    else Role.SUBJECT
                    if member is subject
                    else Role.OTHER
                )
                key: Any = (encoder, role)
                data = cache.get(key)
                if data is None:
                    data = cache[key] = encoder.encode(event, role)
            elif encoder is last_encoder:
                data = last_data
            else:
                data = cache.get(encoder)
                if data is None:
                    data = cache[encoder] = encoder.encode(event, Role.OTHER)
                last_encoder, last_data = encoder, data
            if data:
                member.out.write(data)
                count += 1
                total += len(data)
        if count:
            stats = self.stats
            stats["writes_out"] += count
            stats["bytes_out"] += total

    def _resolve(self, target: Target) -> Iterable[Member]:
        hub = self.hub
        match target:
            case ToRoom(room=key):
                room = hub.rooms.get(key)
                return room.members if room is not None else ()
            case ToMember(key=key):
                member = hub.nicks.get(key)
                return (member,) if member is not None else ()
            case ToRooms(rooms=keys, also=also):
                if len(keys) == 1 and also is None:
                    room = hub.rooms.get(keys[0])
                    return room.members if room is not None else ()
                seen: dict[Member, None] = {}
                for key in keys:
                    room = hub.rooms.get(key)
                    if room is not None:
                        seen.update(dict.fromkeys(room.members))
                if also is not None and (extra := hub.nicks.get(also)) is not None:
                    seen[extra] = None
                return seen
            case ToRoomOperators(room=key):
                room = hub.rooms.get(key)
                if room is None:
                    return ()
                return [m for m, flags in room.members.items() if flags & OP]
            case ToUserMode(mode=mode):
                return [m for m in hub.nicks.values() if mode in m.modes]
            case ToEveryone():
                return list(hub.members)
        raise TypeError(f"unknown target {target!r}")
