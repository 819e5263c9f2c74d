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

Batches: one append per member per loop turn
--------------------------------------------
With :attr:`Router.batching` on (the reactor and asyncio engines turn it on; the threaded
engine has no loop turn), an event for exactly one room (a :class:`ToRoom`, or a
:class:`ToRooms` naming one room and nobody else) is not written at once: it joins that
room's :class:`Batch`. The engine calls :meth:`Router.flush_pending` once per loop turn,
before it flushes connections (Redis' ``beforeSleep``), and each room's events of the
turn then reach each member as **one** write: per encoder, every event is encoded once and
the rendering joined once, and the same ``bytes`` object is appended to every member that
shares the encoder. K joins into a room of N cost N appends per turn, not K·N; ten senders'
lines in one turn cost each member one append, not ten.

What a member receives is exactly what immediate delivery would have given it, in the
same order; the invariants that make it so:

* **Per room, one order.** A batch keeps its room's events in publication order, and every
  member gets a contiguous part of it: its *window*. A member present for the whole turn
  gets all of it. One who joined during the turn starts at its own JOIN; one who left
  (PART, KICK, QUIT) ends with its own leaving. The room index still changes at once, so
  the hub's and the router's views of membership never differ.
* **The source is served at once.** The member whose command made the event (its source,
  and the session whose input is being handled: :attr:`Router.acting`, set by
  :meth:`Router.catch_up`) gets its own copy immediately, preceded by what of the batch it
  had not received yet, and its window moves past it. So an IRC client sees its JOIN
  before the NAMES its session writes next, and an echo (or the QUIT of a member it
  KILLed) lands inside its labeled response (what it had not received goes to the
  transport, never into the capture).
* **Roles and skips are per member.** The few members that are the skip, actor or
  subject of an event in the batch get their window rendered one by one; everybody else
  shares the block.
* **Per sender, one order.** A sender's events are pending in at most one room: when a
  source publishes to another room, its previous room's batch goes out first. Any event
  not batched (private messages, MONITOR notices, several rooms at once, KILL, the
  shutdown notice) flushes every pending batch before it is delivered, so it never
  overtakes what was published before it.
* **Nothing but writes.** Flushing only appends to outputs: it never calls back into the
  hub, so the engine may run it wherever a turn ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
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
    def transport(self) -> Writer:
        """The connection's own output, whatever ``out`` is at the moment."""
        ...

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
        #: Collect each room's events and deliver them once per loop turn (see "Batches").
        self.batching = False
        #: Called when the first batch of a turn opens (asyncio schedules the flush).
        self.on_pending: Callable[[], None] | None = None
        #: Room key → the batch of this turn, in the order the batches opened.
        self.pending: dict[str, Batch] = {}
        #: Member id → the room its events of this turn are pending in.
        self._source_room: dict[str, str] = {}
        #: The session handling input or a timer now (set by :meth:`catch_up`): what its
        #: command publishes reaches it at once, even under another member's name (a
        #: KILL's QUIT belongs in the operator's labeled response).
        self.acting: Handle | None = None

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
            if self.pending:
                self._rejoining(event)
            self._entered(event)
        if self.muted:
            pass
        elif type(target) is ToWatchers:
            if self.pending and self._has_watchers(target.key):
                self.flush_pending()
            self._personal(event, target.key)
        else:
            key = self._batch_key(target) if self.batching else None
            if key is not None:
                self._enqueue(key, event, target)
            else:
                if self.pending and self._reaches_someone(target):
                    self.flush_pending()
                self._fan_out(event, target)
                if kind is ev.Chat or kind is ev.PrivateChat:
                    self._observe(event)
        after = _AFTER.get(kind)
        if after is not None:
            after(self, event, target)

    def _observe(self, event: ev.Event) -> None:
        """Time a chat line's way from the hub to its local recipients (``/metrics``)."""
        assert isinstance(event, ev.Chat | ev.PrivateChat)
        if event.lines and self.hub is not None:
            latency = self.hub.clock() - event.lines[0].at
            self.measures.delivery.observe(latency if latency > 0 else 0.0)

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
        local = self.local
        for uid in list(watchers):
            handle = local.get(uid)
            if handle is None:
                continue
            data = handle.encoder.encode_for(event, handle)
            if data:
                self._write(handle.out, data)

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
        for uid in list(watchers):
            handle = self.local.get(uid)
            if handle is None or handle is skip or handle in seen:
                continue
            encoder = handle.encoder
            data = cache.get(encoder)
            if data is None:
                data = cache[encoder] = encoder.encode(event, Role.WATCHER)
            if data:
                self._write(handle.out, data)

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

    # ----------------------------------------------------------------- batches

    def _batch_key(self, target: Target) -> str | None:
        """The room ``target`` is, if it is exactly one room's members (else ``None``)."""
        kind = type(target)
        if kind is ToRoom:
            assert isinstance(target, ToRoom)
            return target.room
        if kind is ToRooms:
            assert isinstance(target, ToRooms)
            if len(target.rooms) != 1 or target.also is not None:
                return None
            if target.watched is not None and self._has_watchers(target.watched):
                return None
            return target.rooms[0]
        return None

    def _has_watchers(self, key: str) -> bool:
        return self.hub is not None and bool(self.hub.monitor.watchers.get(key))

    def _reaches_someone(self, target: Target) -> bool:
        """Whether delivering to ``target`` now could overtake a pending batch."""
        kind = type(target)
        if kind is ToNobody:
            return False
        if kind is ToMember:
            assert isinstance(target, ToMember)
            return target.uid in self.local
        return True

    def _enqueue(self, key: str, event: ev.Event, target: Target) -> None:
        """Add ``event`` to ``key``'s batch; serve its source at once (see "Batches")."""
        source = getattr(event, "source", None)
        src_uid: str | None = source.uid if isinstance(source, ev.Source) else None
        if src_uid is not None:
            before = self._source_room.get(src_uid)
            if before is not None and before != key:
                self._flush_room(before)  # this source's earlier events go out first
            self._source_room[src_uid] = key
        batch = self.pending.get(key)
        if batch is None:
            if not self.pending and self.on_pending is not None:
                self.on_pending()
            batch = self.pending[key] = Batch()
        index = len(batch.events)
        local = self.local
        skip_uid = getattr(target, "skip", None)
        skip = local.get(skip_uid) if skip_uid is not None else None
        actor_uid, subject_uid = ev.roles(event)
        actor = local.get(actor_uid) if actor_uid is not None else None
        subject = local.get(subject_uid) if subject_uid is not None else None
        batch.events.append((event, skip, actor, subject))
        windows = batch.windows
        involved = batch.involved
        for handle in (skip, actor, subject):
            if handle is not None:
                marks = involved.get(handle)
                if marks is None:
                    involved[handle] = [index]
                elif marks[-1] != index:
                    marks.append(index)
                if handle not in windows:
                    windows[handle] = [0, _OPEN]
        if type(event) is ev.Joined and actor is not None:
            windows[actor] = [index, _OPEN]  # the joiner gets the room from its JOIN on
        src = local.get(src_uid) if src_uid is not None else None
        members = self.rooms.get(key, ())
        acting = self.acting
        for handle in (src,) if acting is None or acting is src else (src, acting):
            if handle is not None and handle is not skip and handle in members:
                self._serve_now(batch, index, handle, actor, subject)

    def _serve_now(
        self,
        batch: Batch,
        index: int,
        handle: Handle,
        actor: Handle | None,
        subject: Handle | None,
    ) -> None:
        """Write event ``index`` to ``handle`` now, after what of the batch it lacks."""
        role = Role.ACTOR if handle is actor else Role.SUBJECT if handle is subject else Role.OTHER
        data = handle.encoder.encode(batch.events[index][0], role)
        if not data:
            return
        windows = batch.windows
        window = windows.get(handle)
        start, end = (window[0], window[1]) if window is not None else (0, _OPEN)
        if start < index:
            before_data = self._render(batch, handle, start, index)
            if before_data:
                self._write(handle.transport, before_data)
        self._write(handle.out, data)
        windows[handle] = [index + 1, end]

    def flush_pending(self) -> None:
        """Deliver every room's batch of this turn (the engine calls it once per turn)."""
        pending = self.pending
        while pending:
            self._flush_room(next(iter(pending)))
        self._source_room.clear()
        self.acting = None

    def _flush_room(self, key: str) -> None:
        batch = self.pending.pop(key, None)
        if batch is None:
            return
        events = batch.events
        count = 0
        total = 0
        windows = batch.windows
        blocks: dict[Encoder, bytes] = {}
        last_encoder: Encoder | None = None
        last_data = b""
        for handle in self.rooms.get(key, ()):
            if handle in windows:
                continue
            encoder = handle.encoder
            if encoder is last_encoder:
                data = last_data
            else:
                block = blocks.get(encoder)
                if block is None:
                    block = blocks[encoder] = b"".join(batch.parts(encoder, len(events)))
                data = last_data = block
                last_encoder = encoder
            if data:
                handle.out.write(data)
                count += 1
                total += len(data)
        local = self.local
        for handle, (start, end) in windows.items():
            if start >= end or start >= len(events) or local.get(handle.uid) is not handle:
                continue  # nothing left for it, or it is gone (its quit is in this batch)
            data = self._render(batch, handle, start, min(end, len(events)))
            if data:
                handle.out.write(data)
                count += 1
                total += len(data)
        stats = self.stats
        stats["fanout_batches"] += 1
        stats["fanout_events"] += len(events)
        if count:
            stats["writes_out"] += count
            stats["bytes_out"] += total
        for event, _skip, _actor, _subject in events:
            if type(event) is ev.Chat:
                self._observe(event)

    def catch_up(self, handle: Handle) -> None:
        """Give ``handle`` now what the pending batches hold for it.

        A session calls it before it handles input or a timer, so that its own replies
        come after everything published before them, as with immediate delivery.
        """
        self.acting = handle
        if not self.pending:
            return
        rooms = self.rooms
        for key, batch in self.pending.items():
            window = batch.windows.get(handle)
            if window is None:
                if handle not in rooms.get(key, ()):
                    continue
                window = batch.windows[handle] = [0, _OPEN]
            start, end = window
            stop = min(end, len(batch.events))
            if start >= stop:
                continue
            window[0] = stop
            data = self._render(batch, handle, start, stop)
            if data:
                self._write(handle.transport, data)

    def _write(self, writer: Writer, data: bytes) -> None:
        """One write outside a room's fan-out, counted (``writes_out``, ``bytes_out``)."""
        writer.write(data)
        stats = self.stats
        stats["writes_out"] += 1
        stats["bytes_out"] += len(data)

    def _render(self, batch: Batch, handle: Handle, start: int, end: int) -> bytes:
        """What ``handle`` gets of events ``start`` to ``end`` of ``batch``, as one ``bytes``.

        The shared renderings, sliced, except at the events where ``handle`` is the skip,
        the actor or the subject: the work in Python is per such event, not per event in
        the window (a join storm's joiners, each skipped by its own JOIN, stay linear).
        """
        encoder = handle.encoder
        parts = batch.parts(encoder, end)
        marks = batch.involved.get(handle)
        if marks is None or marks[-1] < start:
            return b"".join(parts[start:end])
        chunks: list[bytes] = []
        events = batch.events
        at = start
        for index in marks:
            if index < start:
                continue
            if index >= end:
                break
            chunks.extend(parts[at:index])
            _event, skip, actor, subject = events[index]
            if handle is skip:
                pass
            elif handle is actor:
                chunks.append(batch.cast(encoder, index, Role.ACTOR))
            elif handle is subject:
                chunks.append(batch.cast(encoder, index, Role.SUBJECT))
            at = index + 1
        chunks.extend(parts[at:end])
        return b"".join(chunks)

    def _rejoining(self, event: ev.Joined) -> None:
        """A member joining a room it left earlier in this turn: that batch goes out first
        (a window is one stretch of the batch)."""
        key = fold(event.room)
        batch = self.pending.get(key)
        handle = self.local.get(event.source.uid)
        if batch is not None and handle is not None:
            window = batch.windows.get(handle)
            if window is not None and window[1] != _OPEN:
                self._flush_room(key)

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
        batch = self.pending.get(key)
        if batch is not None and handle in handles:
            # It gets the batch up to its own leaving, which is the last event in it.
            window = batch.windows.get(handle)
            if window is None:
                batch.windows[handle] = [0, len(batch.events)]
            else:
                window[1] = len(batch.events)
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


#: The end of a window still open (the member is in the room).
_OPEN = 1 << 62


class Batch:
    """One room's events of one loop turn, and who gets which part of them."""

    __slots__ = ("events", "windows", "involved", "_parts", "_cast")

    def __init__(self) -> None:
        #: ``(event, skip, actor, subject)`` in publication order (local handles or None).
        self.events: list[tuple[ev.Event, Handle | None, Handle | None, Handle | None]] = []
        #: Members whose part is not the whole batch, or who are rendered one by one:
        #: handle → ``[start, end)``.
        self.windows: dict[Handle, list[int]] = {}
        #: Handle → the events (indices, ascending) in which it is the skip, the actor
        #: or the subject.
        self.involved: dict[Handle, list[int]] = {}
        self._parts: dict[Encoder, list[bytes]] = {}
        self._cast: dict[tuple[Encoder, int, Role], bytes] = {}

    def parts(self, encoder: Encoder, upto: int) -> list[bytes]:
        """``encoder``'s rendering (as OTHER) of at least the first ``upto`` events."""
        parts = self._parts.get(encoder)
        if parts is None:
            parts = self._parts[encoder] = []
        if len(parts) < upto:
            events = self.events
            parts.extend(encoder.encode(events[i][0], Role.OTHER) for i in range(len(parts), upto))
        return parts

    def cast(self, encoder: Encoder, index: int, role: Role) -> bytes:
        """Event ``index`` rendered by ``encoder`` for its actor or subject."""
        key = (encoder, index, role)
        cached = self._cast.get(key)
        if cached is None:
            cached = self._cast[key] = encoder.encode(self.events[index][0], role)
        return cached
