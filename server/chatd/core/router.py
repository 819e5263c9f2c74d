"""Resolve a published event's target to local connections and write it, encoded once.

The hub publishes ``(event, target)``; the router finds the recipients on this node and,
for each distinct encoder among them (one per dialect, or per set of IRC capabilities
that changes the bytes), encodes the event once and appends the **same** ``bytes``
object to every recipient's output. The per-recipient work in a room broadcast is a
dict iteration, an identity check and an append.

What the router keeps
---------------------
The router knows the connections of this node as **handles** (:class:`Handle`: a member
id, an output, an encoder; the dialect session is one), never the hub's state objects:

* :attr:`Router.local`: every local connection by member id, registered or not;
* :attr:`Router.rooms`: for each room with local members, their handles in join order.

The room index is kept from the membership events the router delivers, so it is exactly
the hub's membership restricted to this node without a lookup per recipient:
:class:`~chatd.core.events.Joined` adds the joiner *before* delivery (an IRC joiner sees
its own JOIN), :class:`~chatd.core.events.Parted` and :class:`~chatd.core.events.Kicked`
remove the leaver *after* delivery (it sees its own PART or KICK), and
:class:`~chatd.core.events.Quit` removes the quitter from the rooms its target names.
A later node learns which rooms to subscribe to from the same index.

Roles. ``actor`` and ``subject`` (:func:`chatd.core.events.roles`) matter only to the
events whose rendering depends on them (the line dialect's ``* you joined ...``, the
kicked member's ``* you were kicked ...``); for the rest, chat included, no role is
computed at all.

Two rarer paths sit beside the broadcast loop and leave it as it was. Events in
:data:`~chatd.core.events.PERSONAL` (MONITOR's online/offline notices, which name their
recipient) go to :class:`~chatd.core.targets.ToWatchers` and are encoded once per
recipient with ``encode_for``. A :class:`~chatd.core.targets.ToRooms` with ``watched``
reaches, after the rooms, the watchers of that nickname who share none of them, in
:attr:`Role.WATCHER <chatd.core.events.Role.WATCHER>`.

A :class:`~chatd.core.events.Killed` event is delivered to its victim, whose handle is
then asked to disconnect: a KILL works on any node and any dialect the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from chatd.core import events as ev
from chatd.core.events import Role
from chatd.core.measures import Measures
from chatd.core.model import OP, VOICE
from chatd.core.names import fold
from chatd.core.targets import (
    Target,
    ToEveryone,
    ToMember,
    ToNobody,
    ToRoom,
    ToRoomOperators,
    ToRooms,
    ToUserMode,
    ToWatchers,
)

if TYPE_CHECKING:
    from chatd.core.hub import Hub


class Writer(Protocol):
    def write(self, data: bytes) -> None: ...


class Encoder(Protocol):
    """What a dialect supplies for each group of connections that share one rendering."""

    def encode(self, event: ev.Event, role: Role) -> bytes:
        """The bytes for a recipient in ``role``; ``b""`` means this recipient gets nothing."""
        ...

    def encode_for(self, event: ev.Event, recipient: Handle) -> bytes:
        """The bytes of a :data:`~chatd.core.events.PERSONAL` event for ``recipient``."""
        ...


class Handle(Protocol):
    """A local connection as the router sees it (a dialect session implements it)."""

    #: The connection's member id (minted at accept, kept through registration).
    uid: str
    #: Where its bytes go (the transport, or a labeled-response capture).
    out: Writer

    @property
    def encoder(self) -> Encoder: ...

    def disconnect(self, detail: str) -> None:
        """Close the connection after what was written to it (it was killed)."""
        ...


class Router:
    """Delivers the hub's events to the connections of this node."""

    def __init__(self, stats: Counter[str], measures: Measures | None = None) -> None:
        self.hub: Hub | None = None
        self.stats = stats
        #: Where the delivery latency of chat lines is observed (``/metrics``).
        self.measures = measures if measures is not None else Measures()
        #: Every local connection by member id.
        self.local: dict[str, Handle] = {}
        #: Room key → the local members' handles, in join order.
        self.rooms: dict[str, dict[Handle, None]] = {}
        #: After the shutdown notice, nothing more is delivered (state still follows).
        self.muted = False

    def attach(self, hub: Hub) -> None:
        self.hub = hub

    def connect(self, handle: Handle) -> None:
        """A new local connection: it can be reached by its id from now on."""
        self.local[handle.uid] = handle

    def disconnect(self, uid: str) -> None:
        """A local connection ended (the hub has been told: its rooms are left already)."""
        self.local.pop(uid, None)

    # ----------------------------------------------------------------- delivery

    def deliver(self, event: ev.Event, target: Target) -> None:
        kind = type(event)
        if kind is ev.Joined:
            assert isinstance(event, ev.Joined)
            self._entered(event)
        if self.muted:
            pass
        elif type(target) is ToWatchers:
            self._personal(event, target.key)
        else:
            self._fan_out(event, target)
            if (kind is ev.Chat or kind is ev.PrivateChat) and self.hub is not None:
                assert isinstance(event, ev.Chat | ev.PrivateChat)
                if not event.lines:
                    return
                latency = self.hub.clock() - event.lines[0].at
                self.measures.delivery.observe(latency if latency > 0 else 0.0)
        after = _AFTER.get(kind)
        if after is not None:
            after(self, event, target)

    def _fan_out(self, event: ev.Event, target: Target) -> None:
        local = self.local
        skip_uid = getattr(target, "skip", None)
        skip = local.get(skip_uid) if skip_uid is not None else None
        actor_uid, subject_uid = ev.roles(event)
        roles = actor_uid is not None or subject_uid is not None
        actor = local.get(actor_uid) if actor_uid is not None else None
        subject = local.get(subject_uid) if subject_uid is not None else None
        cache: dict[object, bytes] = {}
        last_encoder: Encoder | None = None
        last_data = b""
        count = 0
        total = 0
        handles = self._resolve(target)
        for handle in handles:
            if handle is skip:
                continue
            encoder = handle.encoder
            if roles:
                role = (
                    Role.ACTOR
                    if handle is actor
                    else Role.SUBJECT
                    if handle is subject
                    else Role.OTHER
                )
                key = (encoder, role)
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
                handle.out.write(data)
                count += 1
                total += len(data)
        if count:
            stats = self.stats
            stats["writes_out"] += count
            stats["bytes_out"] += total
        if type(target) is ToRooms and target.watched is not None:
            self._watchers_outside(event, target.watched, handles, skip)

    def _personal(self, event: ev.Event, key: str) -> None:
        """Encode ``event`` for each local watcher of ``key`` on its own (it names them)."""
        assert self.hub is not None
        watchers = self.hub.monitor.watchers.get(key)
        if not watchers:
            return
        stats = self.stats
        local = self.local
        for uid in list(watchers):
            handle = local.get(uid)
            if handle is None:
                continue
            data = handle.encoder.encode_for(event, handle)
            if data:
                handle.out.write(data)
                stats["writes_out"] += 1
                stats["bytes_out"] += len(data)

    def _watchers_outside(
        self, event: ev.Event, key: str, reached: Iterable[Handle], skip: Handle | None
    ) -> None:
        """The local watchers of ``key`` that ``reached`` left out get ``event`` as WATCHER."""
        assert self.hub is not None
        watchers = self.hub.monitor.watchers.get(key)
        if not watchers:
            return
        seen = reached if isinstance(reached, dict) else dict.fromkeys(reached)
        cache: dict[Encoder, bytes] = {}
        stats = self.stats
        for uid in list(watchers):
            handle = self.local.get(uid)
            if handle is None or handle is skip or handle in seen:
                continue
            encoder = handle.encoder
            data = cache.get(encoder)
            if data is None:
                data = cache[encoder] = encoder.encode(event, Role.WATCHER)
            if data:
                handle.out.write(data)
                stats["writes_out"] += 1
                stats["bytes_out"] += len(data)

    def _resolve(self, target: Target) -> Iterable[Handle]:
        match target:
            case ToRoom(room=key):
                return self.rooms.get(key, ())
            case ToMember(uid=uid):
                handle = self.local.get(uid)
                return (handle,) if handle is not None else ()
            case ToRooms(rooms=keys, also=also):
                if len(keys) == 1 and also is None:
                    return self.rooms.get(keys[0], ())
                seen: dict[Handle, None] = {}
                for key in keys:
                    handles = self.rooms.get(key)
                    if handles:
                        seen.update(handles)
                if also is not None and (extra := self.local.get(also)) is not None:
                    seen[extra] = None
                return seen
            case ToRoomOperators(room=key, voiced=voiced):
                assert self.hub is not None
                room = self.hub.rooms.get(key)
                if room is None:
                    return ()
                wanted = OP | VOICE if voiced else OP
                flags = room.members
                return [h for h in self.rooms.get(key, ()) if flags.get(h.uid, 0) & wanted]
            case ToUserMode(mode=mode):
                assert self.hub is not None
                members = self.hub.members
                return [
                    h
                    for uid, h in self.local.items()
                    if (m := members.get(uid)) is not None and mode in m.modes
                ]
            case ToEveryone():
                return list(self.local.values())
            case ToNobody():
                return ()
        raise TypeError(f"unknown target {target!r}")

    # ----------------------------------------------------------------- the room index

    def _entered(self, event: ev.Joined) -> None:
        handle = self.local.get(event.source.uid)
        if handle is not None:
            self.rooms.setdefault(fold(event.room), {})[handle] = None

    def _left(self, uid: str, key: str) -> None:
        handle = self.local.get(uid)
        handles = self.rooms.get(key)
        if handle is None or handles is None:
            return
        handles.pop(handle, None)
        if not handles:
            del self.rooms[key]

    def _parted(self, event: ev.Event, target: Target) -> None:
        assert isinstance(event, ev.Parted)
        self._left(event.source.uid, fold(event.room))

    def _kicked(self, event: ev.Event, target: Target) -> None:
        assert isinstance(event, ev.Kicked)
        self._left(event.victim.uid, fold(event.room))

    def _quit(self, event: ev.Event, target: Target) -> None:
        assert isinstance(event, ev.Quit) and isinstance(target, ToRooms)
        for key in target.rooms:
            self._left(event.source.uid, key)

    def _killed(self, event: ev.Event, target: Target) -> None:
        assert isinstance(event, ev.Killed)
        handle = self.local.get(event.victim.uid)
        if handle is not None:
            handle.disconnect(f"Killed ({event.source.nick} ({event.reason}))")


#: What the router does after delivering an event of each kind that changes its index
#: (or, for a KILL, the victim's connection).
_AFTER = {
    ev.Parted: Router._parted,
    ev.Kicked: Router._kicked,
    ev.Quit: Router._quit,
    ev.Killed: Router._killed,
}
