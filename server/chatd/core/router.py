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

Two rarer paths sit beside the broadcast loop and leave it as it was. Events in
:data:`~chatd.core.events.PERSONAL` (MONITOR's online/offline notices, which name their
recipient) go to :class:`~chatd.core.targets.ToWatchers` and are encoded once per
recipient with ``encode_for``. A :class:`~chatd.core.targets.ToRooms` with ``watched``
reaches, after the rooms, the watchers of that member who share none of them, in
:attr:`Role.WATCHER <chatd.core.events.Role.WATCHER>`.

A later backplane fits here: it would forward ``(event, target)`` to other nodes, which
run their own router; targets are names, not live views, for that reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.hub import OP, VOICE, Hub, Member
from chatd.core.targets import (
    Target,
    ToEveryone,
    ToMember,
    ToRoom,
    ToRoomOperators,
    ToRooms,
    ToUserMode,
    ToWatchers,
)


class Encoder(Protocol):
    """What a dialect supplies for each group of members that share one rendering."""

    def encode(self, event: ev.Event, role: Role) -> bytes:
        """The bytes for a recipient in ``role``; ``b""`` means this recipient gets nothing."""

    def encode_for(self, event: ev.Event, member: Member) -> bytes:
        """The bytes of a :data:`~chatd.core.events.PERSONAL` event for ``member``."""


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
        if type(target) is ToWatchers:
            self._personal(event, target.key)
            return
        hub = self.hub
        skip_key = getattr(target, "skip", None)
        skip = hub.nicks.get(skip_key) if skip_key is not None else None
        roles = actor is not None or subject is not None
        cache: dict[Any, bytes] = {}
        last_encoder: Any = None
        last_data = b""
        count = 0
        total = 0
        members = self._resolve(target)
        for member in members:
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
        if type(target) is ToRooms and target.watched is not None:
            self._watchers_outside(event, target.watched, members, skip)

    def _personal(self, event: ev.Event, key: str) -> None:
        """Encode ``event`` for each watcher of ``key`` on its own (it names them)."""
        watchers = self.hub.watchers.get(key)
        if not watchers:
            return
        stats = self.stats
        for member in list(watchers):
            data = member.encoder.encode_for(event, member)
            if data:
                member.out.write(data)
                stats["writes_out"] += 1
                stats["bytes_out"] += len(data)

    def _watchers_outside(
        self, event: ev.Event, key: str, reached: Iterable[Member], skip: Member | None
    ) -> None:
        """The watchers of ``key`` that ``reached`` left out get ``event`` as WATCHER."""
        watchers = self.hub.watchers.get(key)
        if not watchers:
            return
        seen = reached if isinstance(reached, dict) else dict.fromkeys(reached)
        cache: dict[Any, bytes] = {}
        stats = self.stats
        for member in list(watchers):
            if member is skip or member in seen:
                continue
            encoder = member.encoder
            data = cache.get(encoder)
            if data is None:
                data = cache[encoder] = encoder.encode(event, Role.WATCHER)
            if data:
                member.out.write(data)
                stats["writes_out"] += 1
                stats["bytes_out"] += len(data)

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
            case ToRoomOperators(room=key, voiced=voiced):
                room = hub.rooms.get(key)
                if room is None:
                    return ()
                wanted = OP | VOICE if voiced else OP
                return [m for m, flags in room.members.items() if flags & wanted]
            case ToUserMode(mode=mode):
                return [m for m in hub.nicks.values() if mode in m.modes]
            case ToEveryone():
                return list(hub.members)
        raise TypeError(f"unknown target {target!r}")
