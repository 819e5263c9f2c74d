"""One chatd process as a node of a cluster joined through Redis, with no I/O.

Theory of operation
-------------------
Every node keeps **the whole chat's state**: every member, every room, every membership
and mode, as IRC servers in a network do. It gets there by applying the other nodes'
events (:mod:`chatd.core.events`) with the same :meth:`Hub.apply
<chatd.core.hub.Hub.apply>` as its own, so NAMES, WHO, WHOIS, LIST and MONITOR are
answered from memory, at once, in both dialects. What crosses Redis:

* **The state channel** (``{chatd:g}:ch``, with its stream ``{chatd:g}:log``): every
  event but room chat: registrations, nick changes, joins, parts, quits, kicks, topics,
  modes, invitations, private messages, KILL. One channel, so every node applies them
  in one order. Every node subscribes to it.
* **A channel per room** (``{chatd:r:<room>}:ch``, stream ``...:log``): the room's chat,
  the bulk of the traffic. A node subscribes (``SSUBSCRIBE``) only while it has local
  members in the room, and each room hashes to its own slot, so on a Redis Cluster the
  chat is spread over the shards.

**Pub/sub is at-most-once; loss is detected, then repaired.** A publish is one script
(:data:`~chatd.cluster.scripts.PUBLISH`): the payload goes into the channel's stream,
and the message names the stream entry before it. A receiver that sees a message whose
predecessor is not the last one it applied has lost something: it buffers the channel,
reads the missing entries from the stream (``XRANGE``), applies them, then the buffer.
If the stream no longer holds them (trimmed, or Redis restarted empty), a room channel
counts the loss and goes on; the state channel **resyncs**: the node asks every node for
a burst.

**A burst** (IRC's netjoin) is a node's own members as they are (nick, modes, away,
rooms with their flags) and its rooms' settings. A receiver reconciles what it knew of
that node with it: members it did not know register and join, members no longer there
quit as in a netsplit, rooms left are parted. Each node bursts when it connects to Redis
(first start, or after any lost connection, since what it published meanwhile is lost)
and asks the others to burst back.

**Nicknames are leases** (``SET NX EX``): a nickname is claimed in Redis before the hub
registers it or changes to it, so two members racing for one nick on two nodes cannot
both win; a node renews its members' leases with its heartbeat
(:data:`~chatd.cluster.scripts.REFRESH`) and releases one by compare-and-delete when the
nick is changed or its member quits. If a renewal finds the lease held by someone else
(two nodes took it while Redis was gone), the local member is renamed to a guest nick.

**A dead node is reaped.** Each node's heartbeat renews an alive key (TTL ``lease``).
Every heartbeat a node checks the alive keys of the nodes whose members it knows; the
first to find one gone publishes that node's departure (:data:`~chatd.cluster.scripts.REAP`
does it once), and every node shows that node's members quitting (``*.net *.split``).

**A node being stopped drains** rather than waiting to be reaped. At shutdown, once its
clients were told to reconnect, :meth:`ClusterNode.drain` has each local member quit
(``server shutting down``), each quit published with its nickname's release in one
script: the other nodes show the members leaving as soon as they read it, and a client
reconnecting through another node gets its nickname back at once. The engine keeps
reading until Redis has answered all of it (:attr:`ClusterNode.settled`), within its
shutdown bound, then closes. A node that crashes, or stops while Redis is out of reach,
is reaped as above.

**Joining a room, in order.** A node that starts following a room asks for the room
stream's last entry *before* it publishes the JOIN, and reads the stream from there once
its subscription is in place; so a line sent by someone who saw the JOIN reaches the
joiner even if it was published before the subscription took effect. On one Redis both
commands go down one connection in that order; on a Redis Cluster the room and the state
live on different shards, so the order holds by timing (a round trip through another
node and its client) rather than by construction.

**Shards.** On a Redis Cluster each master has its own pair of connections
(:class:`Shard`), and every command goes to the shard of its key's slot
(:mod:`chatd.cluster.slots`). An ``ASK`` (a key moved, its slot still migrating) sends
that one command on to the importing master; a ``MOVED`` rebuilds the link from the new
slots once every command sent has been answered (within ``REBUILD_WAIT``, 2 s, of the
reactor's link: what is still unanswered then is dropped with the old connections):
publishes that met ``MOVED`` are sent again, publishes made meanwhile wait for the new
link, and a read that met it is not taken for lost entries (the reconnect reads the
stream again). A command with several keys sent on after ``ASK`` can still meet
``TRYAGAIN`` (Redis Cluster refuses it while its keys are split between the masters).

Rules the code keeps:

* **The loop never waits on Redis.** Commands are queued bytes (:mod:`chatd.cluster.resp`);
  replies come back as callbacks on the loop. A nickname claim returns a ``Future`` the
  session polls between turns, as a history query does.
* **A node's own events are applied first, locally**, then published; its echo is
  dropped by node id (but still advances the channel's position), except a room's topic
  or mode change, which is applied again at its place in the channel's order: two nodes
  changing one room at once end with the same room.
* **A bad payload costs that payload**, never the node: it is counted and logged.
* **Known limits.** A catch-up after a long outage applies what the stream gives back
  in one callback (bounded by the stream's length). Two nodes' members holding one
  nickname (possible only after Redis lost its data within one lease) stay both listed
  under it until the heartbeat renames the loser; a burst settles member flags and the
  topic, not the other room modes.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import hiredis

from chatd.cluster import codec, scripts
from chatd.cluster.resp import RedisProtocol, Reply, is_redirect
from chatd.cluster.slots import keyslot
from chatd.core import events as ev
from chatd.core.hub import Hub
from chatd.core.ids import NODE_LEN
from chatd.core.model import OP, VOICE, Member, Room
from chatd.core.names import fold
from chatd.core.router import Router
from chatd.core.targets import (
    Target,
    ToMember,
    ToNobody,
    ToRoom,
    ToRooms,
    ToWatchers,
)
from chatd.history import restored_event, room_record

log = logging.getLogger("chatd.cluster")

#: The quit reason of a member whose node is gone (the IRC convention for a netsplit).
SPLIT_REASON = "*.net *.split"
#: Entries a stream keeps, about (``XADD MAXLEN ~``).
STATE_STREAM_LEN = 10000
#: Milliseconds the state stream outlives its last entry.
STATE_TTL_MS = 86400 * 1000
#: Heartbeats in a row without an answer after which Redis is taken for gone (also at
#: least 30 s' worth).
SILENT_TICKS = 20
#: Publishes refused by a moved slot kept to send again (more are counted lost).
MAX_RESEND = 10000
#: Members per burst message.
BURST_CHUNK = 200
#: Leases renewed per heartbeat script call.
REFRESH_CHUNK = 500
#: Events never published: they are each node's own (MONITOR's notices are made by
#: each node for its own watchers, see ClusterNode.receive).
_LOCAL_ONLY = (ev.ServerShutdown, ev.RoomRestored, ev.CameOnline, ev.WentOffline)

Deliver = Callable[[ev.Event, Target], None]


@dataclass(slots=True)
class Channel:
    """One channel this node follows, and where it is in the channel's stream."""

    name: str
    stream: str
    #: The room's key, or ``None`` for the state channel.
    room: str | None
    #: Id of the last entry applied (``None``: none yet; the first message sets it).
    last: str | None = None
    #: Messages held while the channel is being caught up or repaired.
    held: list[tuple[str, str, str]] | None = None
    subscribed: bool = False
    #: Answers still awaited before the catch-up read: the subscription's, and the
    #: stream's last entry for a channel followed afresh.
    waiting: int = 0
    #: ``ssubscribe`` acknowledgements that belong to an earlier subscription.
    stale_acks: int = 0
    #: ``last`` as the previous heartbeat saw it, and the ``last`` whose stream tail was
    #: already checked (see :meth:`ClusterNode._check_tails`).
    seen_at_tick: str | None = None
    tail_checked: str | None = None


@dataclass(slots=True)
class Shard:
    """One Redis master's two connections: commands, and the shard channels it serves."""

    cmd: RedisProtocol
    sub: RedisProtocol


@dataclass(slots=True)
class _Incoming:
    """A burst being received in parts."""

    members: list[list[Any]] = field(default_factory=list)
    rooms: list[str] = field(default_factory=list)


class ClusterNode:
    """This process's side of the cluster: publishes its events, applies the others'."""

    def __init__(
        self,
        hub: Hub,
        router: Router,
        deliver: Deliver,
        stats: Counter[str],
        *,
        node: str,
        lease: float = 15.0,
        room_stream_len: int = 10000,
        room_days: float = 0.0,
        prefix: str = "chatd",
    ) -> None:
        """``deliver(event, target)``: the local side of publishing (router, history),
        used for events from other nodes. ``lease``: seconds a nickname lease and the
        alive key last without renewal. ``room_stream_len``, ``room_days``: entries a room's
        stream keeps, and days it outlives its last entry (0: forever): its history."""
        self.hub = hub
        self.router = router
        self.deliver = deliver
        self.stats = stats
        self.node = node
        self.lease = lease
        self.room_stream_len = room_stream_len
        self.room_ttl_ms = int(room_days * 86400 * 1000)
        self.prefix = prefix
        tag = "{" + prefix + ":g}"
        self.state = Channel(tag + ":ch", tag + ":log", None)
        self._tag = tag
        #: Room key → its channel, for the rooms with local members.
        self.rooms: dict[str, Channel] = {}
        #: Channel name → channel (the state channel and the rooms').
        self._by_name: dict[str, Channel] = {self.state.name: self.state}
        #: The Redis masters' connections: one shard on a standalone Redis; on a Redis
        #: Cluster one per master, each key and channel on its slot's (:meth:`shard`).
        self.shards: list[Shard] = [self.new_shard()]
        #: Slot → index in ``shards`` (Redis Cluster), or None (standalone).
        self.owner: list[int] | None = None
        #: Each shard's master as ``host:port`` (Redis Cluster).
        self.addresses: list[str] = []
        #: The last ASK was answered by sending the command on (not a topology change).
        self._asked = False
        #: Every connection is up and greeted.
        self.up = False
        #: A heartbeat was answered since the link came up (the engine's backoff starts
        #: over only then: a Redis that accepts connections and refuses us is not up).
        self.answered = False
        #: Heartbeats sent and not answered yet (a Redis gone silent: see tick).
        self.unanswered = 0
        self._sha = {script: scripts.sha(script) for script in scripts.ALL}
        self._incoming: dict[str, _Incoming] = {}
        #: Members of other nodes listed here as guests, by id → the nick their node says
        #: they have, which a member of ours holds here (see _reconcile).
        self._parked: dict[str, str] = {}
        #: Subscribe and unsubscribe acknowledgements due, by channel name (so that the
        #: answer to our own SUNSUBSCRIBE is not taken for a slot that moved).
        self._acks_due: Counter[str] = Counter()
        self._unsubscribes_due: Counter[str] = Counter()
        #: Publishes a moved slot refused: sent again after the reconnect; then those made
        #: while the link waited to be rebuilt (see :attr:`moved`).
        self._resend: list[tuple[str, tuple[str | int, ...]]] = []
        self._deferred: list[tuple[str, tuple[str | int, ...]]] = []
        #: The rooms saved in Redis have been read back (once, at the first connect).
        self._restored = False
        #: Claims asked while the link was down: sent when it is up.
        self._claims: list[tuple[Future[bool], str, str]] = []
        #: Asked to drop the connections (a protocol error): the engine checks it.
        self.broken: str | None = None
        #: A slot moved (``MOVED``): the engine rebuilds the link once Redis has answered
        #: every command sent (:attr:`settled`), so that no answer is lost with the old
        #: connections (a publish that met ``MOVED`` is sent again; one that did not was
        #: applied). Publishes made meanwhile wait for the new link.
        self.moved: str | None = None
        #: The events being applied now are this node's doing (it reaped a dead node), so
        #: what they change in Redis is this node's to write (see the service's history).
        self.acting = False
        #: Set when the link is lost; the engine's reconnect clears it.
        self.on_change: Callable[[], None] = lambda: None
        #: The node is stopping (:meth:`drain`): it receives and bursts nothing more.
        self.draining = False

    # ================================================================= keys

    def nick_key(self, nick: str) -> str:
        return f"{self._tag}:nick:{fold(nick)}"

    @property
    def rooms_key(self) -> str:
        """The hash of the rooms' saved state: room key → :func:`room_record` JSON."""
        return f"{self._tag}:rooms"

    def _alive_key(self, node: str) -> str:
        return f"{self._tag}:alive:{node}"

    def _reaped_key(self, node: str) -> str:
        return f"{self._tag}:reaped:{node}"

    @property
    def cmd(self) -> RedisProtocol:
        """The first shard's command connection (the only one on a standalone Redis)."""
        return self.shards[0].cmd

    @property
    def sub(self) -> RedisProtocol:
        return self.shards[0].sub

    def new_shard(self) -> Shard:
        """A master's pair of connections (the engine gives them sockets)."""
        return Shard(
            RedisProtocol(on_redirect=self._redirected),
            RedisProtocol(subscriber=True, on_push=self._on_push),
        )

    def use_topology(
        self, count: int, owner: list[int] | None, addresses: list[str] | None = None
    ) -> list[Shard]:
        """``count`` masters, slot ``s`` on ``owner[s]`` (None: one standalone Redis);
        ``addresses``: each master's ``host:port``, as ``ASK`` names them."""
        self.shards = [self.new_shard() for _ in range(count)]
        self.owner = owner
        self.addresses = addresses or []
        return self.shards

    def shard(self, key: str) -> Shard:
        """The shard that holds ``key`` (or the shard channel ``key``)."""
        owner = self.owner
        return self.shards[0] if owner is None else self.shards[owner[keyslot(key)]]

    def _redirected(self, reply: Reply) -> None:
        # MOVED (or an ASK nobody could follow): a slot moved (resharding, failover). The
        # link is rebuilt from the new topology once every command sent has its answer
        # (see moved); the reconnect catches every channel up from its stream. An ASK (a
        # slot in the middle of a migration) was sent on to the importing master by the
        # command's own callback instead (see _command).
        if self._asked:
            self._asked = False
            return
        if self.moved is None and self.up and not self.draining:
            self.stats["cluster_redirects"] += 1
            self.moved = f"the cluster's slots moved ({reply})"
            log.info("cluster: %s; rebuilding the link once redis has answered", self.moved)
            self.on_change()

    def stream_of(self, key: str) -> str:
        """The stream that holds room ``key``'s lines (its history)."""
        return self._room_channel(key).stream

    def call(self, callback: Callable[[Reply], None] | None, *args: str | int) -> bool:
        """Send a command (its key is ``args[1]``) on the command connection of the shard
        that holds the key; False while the link is down."""
        if not self.up:
            return False
        self._command(str(args[1]), callback, *args)
        return True

    def _command(
        self, key: str, callback: Callable[[Reply], None] | None, *args: str | int
    ) -> None:
        """Send a command on the command connection of ``key``'s shard. An ``ASK`` answer
        (``ASK <slot> <host:port>``: the key is on that master already, its slot not yet)
        is followed: the command is sent there after ``ASKING`` (the Redis Cluster rule
        for one command on an importing slot), and ``callback`` gets that answer. Any
        other answer, ``MOVED`` included, is ``callback``'s."""

        def answered(reply: Reply) -> None:
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("ASK "):
                parts = str(reply).split()
                if len(parts) == 3 and parts[2] in self.addresses:
                    shard = self.shards[self.addresses.index(parts[2])]
                    self._asked = True  # not a topology change: see _redirected
                    self.stats["cluster_asks"] += 1
                    shard.cmd.call(None, "ASKING")
                    shard.cmd.call(callback, *args)
                    return
            if callback is not None:
                callback(reply)

        self.shard(key).cmd.call(answered, *args)

    def _room_channel(self, key: str) -> Channel:
        tag = "{" + f"{self.prefix}:r:{key}" + "}"
        return Channel(tag + ":ch", tag + ":log", key)

    # ================================================================= the link

    def connected(self, password: str | None, user: str | None, db: int) -> None:
        """Every connection is open: greet, subscribe, heartbeat, burst."""
        for shard in self.shards:
            for proto in (shard.cmd, shard.sub):
                if password is not None:
                    args = (user, password) if user else (password,)
                    proto.call(self._checked("AUTH"), "AUTH", *args)
                if db:
                    proto.call(self._checked("SELECT"), "SELECT", db)
            shard.cmd.call(None, "CLIENT", "SETNAME", f"chatd-{self.node}")
            for script in scripts.ALL:
                shard.cmd.call(self._checked("SCRIPT LOAD"), "SCRIPT", "LOAD", script)
        self.up = True
        self.stats["cluster_connects"] += 1
        self._heartbeat()
        if not self._restored:
            # The rooms the cluster had (a restart of every node, or of this one alone)
            # come back, empty, with their state, as they do from a single node's disk.
            self._command(self.rooms_key, self._restore, "HGETALL", self.rooms_key)
        for channel in (self.state, *self.rooms.values()):
            self._subscribe(channel)
        for key, command in self._take_kept():
            self._publish_command(key, command)
        self._burst(want=True)
        claims, self._claims = self._claims, []
        for future, uid, nick in claims:
            if not future.done():
                self._claim(future, uid, nick)

    def _restore(self, reply: Reply) -> None:
        if not isinstance(reply, list):
            return  # the link is gone: asked again at the next connect
        self._restored = True
        for i in range(1, len(reply), 2):
            raw = reply[i]
            self._room_settings(raw.decode() if isinstance(raw, bytes) else str(raw))

    def lost(self) -> None:
        """Either connection is gone: answer what waits, forget the subscriptions."""
        was_up = self.up
        self.up = False
        self.moved = None
        self.answered = False
        self.unanswered = 0
        self._acks_due.clear()
        self._unsubscribes_due.clear()
        for shard in self.shards:
            shard.cmd.fail()
            shard.sub.fail()
        for channel in (self.state, *self.rooms.values()):
            channel.subscribed = False
            channel.held = None
            channel.waiting = 0
        if was_up:
            self.stats["cluster_disconnects"] += 1

    def _checked(self, what: str) -> Callable[[Reply], None]:
        def check(reply: Reply) -> None:
            if isinstance(reply, hiredis.ReplyError):
                self._break(f"redis refused {what}: {reply}")

        return check

    def _break(self, why: str, level: int = logging.ERROR) -> None:
        if self.broken is None:
            log.log(level, "cluster: %s", why)
            self.broken = why
            self.on_change()

    # ================================================================= publishing

    def publish(self, event: ev.Event, target: Target) -> None:
        """A local event: send it to the other nodes (after the local delivery)."""
        if isinstance(event, _LOCAL_ONLY):
            return
        if isinstance(event, ev.Chat):
            key = fold(event.room)
            channel = self.rooms.get(key) or self._room_channel(key)
            self._send(channel, codec.encode(self.node, event, target), self.room_stream_len)
            return
        release: list[tuple[str, str]] = []
        if isinstance(event, ev.NickChanged) and fold(event.new) != fold(event.source.nick):
            release.append((self.nick_key(event.source.nick), event.source.uid))
        elif isinstance(event, ev.Quit):
            release.append((self.nick_key(event.source.nick), event.source.uid))
        if isinstance(event, ev.Joined):
            self._follow_rooms(event, target)  # the room's position first (_subscribe)
        self._send(self.state, codec.encode(self.node, event, target), STATE_STREAM_LEN, release)
        if not isinstance(event, ev.Joined):
            self._follow_rooms(event, target)

    def _send(
        self, channel: Channel, payload: str, maxlen: int, release: Iterable[tuple[str, str]] = ()
    ) -> None:
        if not self.up:
            self.stats["cluster_unsent"] += 1
            return
        release = list(release)
        keys = [channel.stream, *(key for key, _ in release)]
        ttl = self.room_ttl_ms if channel.room is not None else STATE_TTL_MS
        args: list[str | int] = [channel.name, payload, maxlen, ttl, *(uid for _, uid in release)]
        command = ("EVALSHA", self._sha[scripts.PUBLISH], len(keys), *keys, *args)
        self._publish_command(channel.stream, command)
        self.stats["cluster_published"] += 1

    def _publish_command(self, key: str, command: tuple[str | int, ...]) -> None:
        if self.moved is not None:
            # The link is about to be rebuilt: sent then, after the publishes in flight
            # that meet MOVED (they were made first), in the order they were made. Past
            # the bound it is dropped, not sent ahead of those.
            if self._may_keep:
                self._deferred.append((key, command))
            else:
                self.stats["cluster_unsent"] += 1
            return
        self._command(key, partial(self._published, key=key, command=command), *command)

    @property
    def _may_keep(self) -> bool:
        """There is room for one more publish kept for the next link (MAX_RESEND)."""
        return len(self._resend) + len(self._deferred) < MAX_RESEND

    def _take_kept(self) -> list[tuple[str, tuple[str | int, ...]]]:
        """The publishes kept for the next link, in order (those that met MOVED, then
        those made while it was awaited), no longer kept."""
        kept, self._resend, self._deferred = self._resend + self._deferred, [], []
        return kept

    def _published(self, reply: Reply, *, key: str, command: tuple[str | int, ...]) -> None:
        if not isinstance(reply, hiredis.ReplyError):
            return
        if is_redirect(reply) and self.draining:
            self.stats["cluster_unsent"] += 1  # no new link is coming: see drain
            return
        if is_redirect(reply) and self._may_keep:
            # The slot moved: sent again, to its new shard, once the link is rebuilt. (A
            # publish that met ASK was sent on by _command; its subscribers are told once
            # the slot moves: the server ends their subscription, they catch up from the
            # stream.)
            self._resend.append((key, command))
            return
        self.stats["cluster_publish_errors"] += 1
        log.warning("cluster: a publish failed: %s", reply)

    def _follow_rooms(self, event: ev.Event, target: Target) -> None:
        """Subscribe to the rooms that have local members now, leave the others."""
        keys: tuple[str, ...]
        match event:
            case ev.Joined(room=name) | ev.Parted(room=name) | ev.Kicked(room=name):
                keys = (fold(name),)
            case ev.Quit():
                keys = target.rooms if isinstance(target, ToRooms) else ()
            case _:
                return
        for key in keys:
            self.follow(key)

    def follow(self, key: str) -> None:
        """Subscribe to room ``key``'s channel if it has local members, else leave it."""
        wanted = key in self.router.rooms
        channel = self.rooms.get(key)
        if wanted and channel is None:
            channel = self.rooms[key] = self._room_channel(key)
            self._by_name[channel.name] = channel
            if self.up:
                self._subscribe(channel)
        elif not wanted and channel is not None:
            del self.rooms[key]
            del self._by_name[channel.name]
            if self.up and channel.subscribed:
                self._unsubscribes_due[channel.name] += 1
                self.shard(channel.name).sub.call(None, "SUNSUBSCRIBE", channel.name)

    def _subscribe(self, channel: Channel) -> None:
        """Subscribe, holding what arrives until the channel has caught up.

        A channel followed afresh first asks for its stream's last entry, on the command
        connection, *before* anything this node publishes next (the JOIN that made it
        follow the room, the burst): whatever is published after that point is read from
        the stream once the subscription is in place, so a line sent by someone who saw
        the JOIN is never lost in the gap between the two connections.
        """
        channel.subscribed = True
        channel.held = []
        channel.waiting = 1
        # Acknowledgements still due for an earlier subscription of this name (a PART
        # and a JOIN in one turn) are not this one's.
        channel.stale_acks = self._acks_due[channel.name]
        self._acks_due[channel.name] += 1
        if channel.last is None:
            channel.waiting += 1
            self._command(
                channel.stream,
                lambda reply: self._baseline(channel, reply),
                "XREVRANGE",
                channel.stream,
                "+",
                "-",
                "COUNT",
                1,
            )
        self.shard(channel.name).sub.call(None, "SSUBSCRIBE", channel.name)

    def _baseline(self, channel: Channel, reply: Reply) -> None:
        log.debug("cluster: %s starts after %r", channel.name, reply)
        if not isinstance(reply, list):
            return  # the link is gone (the reconnect subscribes again) or refused
        channel.last = reply[0][0].decode() if reply else "0-0"
        self._ready(channel)

    def _ready(self, channel: Channel) -> None:
        channel.waiting -= 1
        if channel.waiting == 0:
            self._catch_up(channel)

    # ================================================================= nicknames

    def claim(self, uid: str, nick: str) -> Future[bool]:
        """Take ``nick``'s lease for member ``uid``; the future says whether it holds it.

        While Redis cannot be reached, or the link waits to be rebuilt after ``MOVED``,
        the claim waits for the link (the session gives up after
        :data:`~chatd.dialects.base.CLAIM_WAIT`); a link lost while it is asked fails it
        with ``ConnectionError``: a nickname is not given out without its lease.
        """
        future: Future[bool] = Future()
        if self.up and self.moved is None:
            self._claim(future, uid, nick)
        else:  # asked again when the link is up; the session gives up after a while
            self._claims.append((future, uid, nick))
        return future

    def _claim(self, future: Future[bool], uid: str, nick: str) -> None:
        def done(reply: Reply) -> None:
            if future.done():
                return
            if is_redirect(reply) and not self.draining:
                # The nick's slot moved: asked again on the rebuilt link (see moved).
                self._claims.append((future, uid, nick))
            elif isinstance(reply, Exception):
                future.set_exception(ConnectionError(str(reply)))
            else:
                future.set_result(reply == 1)

        self._command(
            self.state.stream,
            done,
            "EVALSHA",
            self._sha[scripts.CLAIM],
            1,
            self.nick_key(nick),
            uid,
            self._ttl,
        )

    @property
    def _ttl(self) -> int:
        return max(1, round(self.lease))

    # ================================================================= heartbeat

    def tick(self) -> None:
        """Every ``lease / 5`` seconds: renew the leases and alive key, reap dead nodes.

        A Redis that has answered none of :data:`SILENT_TICKS` heartbeats in a row (and
        at least 30 s) is taken for gone (a silent partition: no reset ever comes), and
        the link is rebuilt; a shorter pause (SIGSTOP) keeps the link and what it queued.
        """
        if not self.up:
            return
        self.unanswered += 1
        if self.unanswered > max(SILENT_TICKS, round(30 / max(self.lease / 5, 0.2))):
            self._break("redis answered no heartbeat for too long; reconnecting", logging.WARNING)
            return
        self._heartbeat()
        self._check_tails()
        mine = self.node
        others = {uid[:NODE_LEN] for uid in self.hub.members} - {mine}
        for node in sorted(others):
            payload = json.dumps([mine, "!gone", node])
            keys = (self.state.stream, self._alive_key(node), self._reaped_key(node))
            self._command(
                self.state.stream,
                partial(self._reaped, node=node),
                "EVALSHA",
                self._sha[scripts.REAP],
                len(keys),
                *keys,
                self.state.name,
                payload,
                STATE_STREAM_LEN,
                STATE_TTL_MS,
            )

    def _check_tails(self) -> None:
        """A channel quiet since the previous heartbeat is compared, once, with its
        stream's last entry.

        A gap is otherwise found only by the next message, whose predecessor is not the
        last one applied. A message lost with nothing after it waits for one: a publish
        sent again after ``MOVED`` reaches the room's new master before this node has
        subscribed there, and the room says nothing more. Its entry is in the stream,
        so a quiet channel asks for the stream's tail; if it is past ``last``, the
        channel is repaired as for a gap. Asked once per quiet ``last``: an idle room
        costs one ``XREVRANGE`` after its last message, not one per heartbeat.

        A message published just as the check is answered may be read from the stream
        before its push arrives: counted as a gap (``cluster_gaps_at_tail``), then its
        push as a duplicate, and applied once. After a reconnect every followed room is
        checked at the same heartbeat: one command per room, once.
        """
        for channel in (self.state, *self.rooms.values()):
            last = channel.last
            if last is None or channel.held is not None or channel.waiting:
                continue
            if channel.room is not None and not channel.subscribed:
                continue
            if channel.seen_at_tick != last:  # it moved: look again at the next heartbeat
                channel.seen_at_tick = last
                continue
            if channel.tail_checked == last:
                continue
            channel.tail_checked = last
            self._command(
                channel.stream,
                partial(self._tail, channel, last),
                "XREVRANGE",
                channel.stream,
                "+",
                "-",
                "COUNT",
                1,
            )

    def _tail(self, channel: Channel, asked_at: str, reply: Reply) -> None:
        if not isinstance(reply, list) or not reply:
            return  # the link is gone (a reconnect catches up), or an empty stream
        tail = reply[0][0].decode()
        if channel.held is not None or channel.last != asked_at:
            return  # it moved meanwhile: its own messages say whether anything is missing
        if _order(tail) <= _order(asked_at):
            return
        if channel.room is not None and self.rooms.get(channel.room) is not channel:
            return  # no longer followed
        self.stats["cluster_gaps"] += 1
        self.stats["cluster_gaps_at_tail"] += 1
        channel.held = []  # what arrives meanwhile waits for the repair
        self._catch_up(channel)  # the stream after ``last``, as after a subscription

    def _reaped(self, reply: Reply, *, node: str) -> None:
        if reply == 1:  # this node declared it gone: the others apply our notice
            self.stats["cluster_nodes_reaped"] += 1
            # The rooms the dead node's members leave empty are this node's to forget in
            # Redis (their saved state; a guarded one's lines): nobody else will.
            self.acting = True
            try:
                self._split(node)
            finally:
                self.acting = False

    def _heartbeat(self) -> None:
        # The state stream outlives a quiet day: its expiry is renewed here.
        self._command(self.state.stream, None, "PEXPIRE", self.state.stream, STATE_TTL_MS)
        members = self.hub.members
        local = [m for uid in self.router.local if (m := members.get(uid)) is not None]
        for start in range(0, max(len(local), 1), REFRESH_CHUNK):
            chunk = local[start : start + REFRESH_CHUNK]
            keys = [self._alive_key(self.node), self._reaped_key(self.node)]
            keys += [self.nick_key(m.nick) for m in chunk]
            args: list[str | int] = [self.node, self._ttl, *(m.uid for m in chunk)]
            self._command(
                self.state.stream,
                self._refreshed if start == 0 else self._refreshed_more,
                "EVALSHA",
                self._sha[scripts.REFRESH],
                len(keys),
                *keys,
                *args,
            )

    def _refreshed_more(self, reply: Reply) -> None:
        if isinstance(reply, list):
            self._refreshed([0, reply[1]])

    def _refreshed(self, reply: Reply) -> None:
        if not isinstance(reply, ConnectionError):
            self.unanswered = 0
        if not isinstance(reply, list):
            if not isinstance(reply, ConnectionError) and not is_redirect(reply):
                log.warning("cluster: heartbeat failed: %s", reply)
            return
        reaped, lost = reply
        self.answered = True
        if reaped:
            # The others declared this node gone (Redis was out of reach too long):
            # come back as after a reconnect.
            log.warning("cluster: this node was declared gone; bursting again")
            self.stats["cluster_rejoins"] += 1
            self._burst(want=True)
        for raw in lost:
            self._lease_lost(raw.decode() if isinstance(raw, bytes) else str(raw))

    def _lease_lost(self, uid: str) -> None:
        """Another member holds our member's nick now: rename ours to a guest nick."""
        member = self.hub.members.get(uid)
        if member is None:
            return
        self.stats["cluster_nick_collisions"] += 1
        guest = guest_nick(uid)
        log.info("cluster: %s lost its nickname to another node; now %s", member.nick, guest)
        future = self.claim(uid, guest)

        def renamed(_: object) -> None:
            if future.cancelled() or future.exception() is not None or not future.result():
                return
            if uid in self.hub.members:
                if self.hub.members[uid].nick != guest and fold(guest) not in self.hub.nicks:
                    self.hub.change_nick(uid, guest)
            self._unpark()

        future.add_done_callback(renamed)

    # ================================================================= receiving

    def _on_push(self, reply: Reply) -> None:
        if self.draining:
            return  # stopping: what the others say now reaches nobody here
        if isinstance(reply, hiredis.ReplyError):
            if str(reply).startswith(("MOVED ", "ASK ")):
                self._redirected(reply)
            else:
                self._break(f"redis refused a subscription: {reply}")
            return
        if not isinstance(reply, list) or not reply:
            return  # +OK of AUTH/SELECT on the subscriber connection
        kind = reply[0]
        if kind == b"smessage" and len(reply) == 3:
            channel = self._channel(reply[1])
            if channel is None:
                return
            try:
                entry_id, prev, payload = reply[2].decode().split(" ", 2)
            except (UnicodeDecodeError, ValueError):
                self.stats["cluster_bad_payloads"] += 1
                return
            if channel.held is not None:
                channel.held.append((entry_id, prev, payload))
            else:
                self._take(channel, entry_id, prev, payload)
        elif kind == b"ssubscribe" and len(reply) >= 2:
            name = _text(reply[1])
            if self._acks_due[name] > 0:
                self._acks_due[name] -= 1
            channel = self._by_name.get(name)
            if channel is None:
                return
            if channel.stale_acks > 0:
                channel.stale_acks -= 1
            elif channel.waiting > 0:
                self._ready(channel)
        elif kind == b"sunsubscribe" and len(reply) >= 2:
            name = _text(reply[1])
            if self._unsubscribes_due[name] > 0:
                self._unsubscribes_due[name] -= 1  # the answer to our own SUNSUBSCRIBE
                return
            channel = self._by_name.get(name)
            if channel is not None and channel.subscribed and self.up:
                # Pushed by the server (a slot moved to another shard): subscribe again
                # and catch up from the stream.
                self.stats["cluster_resubscribes"] += 1
                self._subscribe(channel)

    def _channel(self, raw: object) -> Channel | None:
        return self._by_name.get(_text(raw))

    def _catch_up(self, channel: Channel) -> None:
        """Just subscribed: read what was missed since the last entry applied, if any."""
        if channel.last is None:
            self._release(channel)
            return
        self._command(
            channel.stream,
            lambda reply: self._repaired(channel, reply, None),
            "XRANGE",
            channel.stream,
            "(" + channel.last,
            "+",
        )

    def _take(self, channel: Channel, entry_id: str, prev: str, payload: str) -> None:
        last = channel.last
        if last is None or prev == last:
            channel.last = entry_id
            self._apply(channel, payload)
        elif _order(entry_id) <= _order(last):
            self.stats["cluster_duplicates"] += 1
        else:
            self.stats["cluster_gaps"] += 1
            channel.held = [(entry_id, prev, payload)]
            self._command(
                channel.stream,
                lambda reply: self._repaired(channel, reply, prev),
                "XRANGE",
                channel.stream,
                "(" + last,
                "(" + entry_id,
            )

    def _repaired(self, channel: Channel, reply: Reply, until: str | None) -> None:
        log.debug(
            "cluster: %s read %d entries from the stream",
            channel.name,
            len(reply) if isinstance(reply, list) else -1,
        )
        """Apply the stream's entries after ``channel.last`` (up to the held message whose
        predecessor is ``until``), then what was held."""
        if isinstance(reply, ConnectionError) or is_redirect(reply):
            # The link is gone, or is rebuilt for a slot that moved (the read met MOVED):
            # nothing is known lost; the reconnect catches up again from ``last``.
            return
        intact = isinstance(reply, list)
        expected = channel.last
        if intact:
            assert isinstance(reply, list)
            for entry in reply:
                entry_id, fields = entry[0].decode(), entry[1]
                data = dict(zip(fields[::2], fields[1::2], strict=False))
                if data.get(b"v", b"").decode() != expected:
                    intact = False
                    break
                channel.last = expected = entry_id
                self._apply(channel, data.get(b"p", b"").decode())
        if intact and until is not None and expected != until:
            intact = False
        if not intact:
            self._unrepaired(channel)
        self._release(channel)

    def _unrepaired(self, channel: Channel) -> None:
        self.stats["cluster_gaps_lost"] += 1
        held = channel.held or []
        if channel.room is not None:
            log.warning("cluster: lines of %s were lost between nodes", channel.room)
        else:
            log.warning("cluster: state events were lost; asking every node for a burst")
            self._burst(want=True)
        # Go on from the first held message: what came before it is gone.
        channel.last = held[0][1] if held else None

    def _release(self, channel: Channel) -> None:
        """Take the held messages in order (one may start a new repair, which holds the rest)."""
        held, channel.held = channel.held or [], None
        while held:
            message = held.pop(0)
            if channel.held is not None:
                channel.held.append(message)
                channel.held.extend(held)
                return
            self._take(channel, *message)

    def _apply(self, channel: Channel, payload: str) -> None:
        if codec.origin(payload) == self.node:
            # Our own echo: applied when it happened. A room's topic or modes are the
            # exception: applied again at their place in the channel's order, they leave
            # every node with the same last word when two nodes changed the room at once.
            if channel.room is None and ('"TopicChanged"' in payload or '"ModeChanged"' in payload):
                self._settle_own(payload)
            return
        try:
            if payload.startswith('["') and '"!' in payload[: NODE_LEN + 8]:
                self._control(json.loads(payload))
                return
            _, event, target = codec.decode(payload)
            self.receive(event, target)
        except Exception as exc:  # another node's damage costs that payload only
            self.stats["cluster_bad_payloads"] += 1
            log.warning("cluster: an event from another node was not applied: %r", exc)

    def _settle_own(self, payload: str) -> None:
        """Apply our own topic or mode change again, in the order every node applies it;
        if that changes the room here (another node's change came in between), this
        node's members are shown the result."""
        try:
            _, event, target = codec.decode(payload)
        except codec.CodecError:
            return
        assert isinstance(event, ev.TopicChanged | ev.ModeChanged)
        room = self.hub.rooms.get(fold(event.room))
        if room is None:
            return
        before = _settings(room)
        if isinstance(event, ev.ModeChanged):
            # Member flags follow nicks, which may have moved on since: only the room's
            # own settings are settled here.
            changes = tuple(c for c in event.changes if c.char not in "ov")
            if not changes:
                return
            event = ev.ModeChanged(event.source, event.room, changes, at=event.at)
        self.hub.apply(event)
        if _settings(room) != before:
            self.stats["cluster_settled"] += 1
            self.deliver(event, target)

    def receive(self, event: ev.Event, target: Target) -> None:
        """An event from another node: apply it, deliver it here, follow its rooms.

        MONITOR is each node's own (its watchers are its members), so the online and
        offline notices a registration, a nick change or a quit means are made here,
        for this node's watchers, rather than sent between nodes.
        """
        hub = self.hub
        before = (
            event.source.nick
            if isinstance(event, ev.NickChanged | ev.Quit) and event.source.uid in hub.members
            else None
        )
        match event:
            case ev.Registered(source=source):
                self._make_room(source.nick, source.uid)
            case ev.NickChanged(source=source, new=new):
                self._make_room(new, source.uid)
        hub.apply(event)
        self.deliver(event, target)
        self.stats["cluster_received"] += 1
        self._follow_rooms(event, target)
        if self._parked and isinstance(event, ev.NickChanged | ev.Quit):
            self._unpark()
        watchers = hub.monitor.watchers
        if not watchers:
            return
        match event:
            case ev.Registered(source=source, at=at):
                self._online(source, at)
            case ev.NickChanged(source=source, new=new, at=at) if before is not None:
                if fold(new) != fold(before):
                    self._offline(before, at)
                    member = hub.members.get(source.uid)
                    if member is not None:
                        self._online(member.source, at)
            case ev.Quit(at=at) if before is not None:
                self._offline(before, at)

    def _online(self, source: ev.Source, at: float) -> None:
        key = fold(source.nick)
        if key in self.hub.monitor.watchers:
            self.deliver(ev.CameOnline(source, at=at), ToWatchers(key))

    def _make_room(self, nick: str, uid: str) -> None:
        """Member ``uid`` of another node takes ``nick``, which its node holds the lease of
        (it claimed it before publishing): whoever holds ``nick`` here lost its lease
        while Redis was out of reach, and becomes a guest. Ours is renamed for everyone;
        another node's only here (its own node renames it, and says so)."""
        hub = self.hub
        holder = hub.nicks.get(fold(nick))
        if holder is None or holder == uid:
            return
        member = hub.members[holder]
        guest = guest_nick(holder)
        self.stats["cluster_nick_collisions"] += 1
        if holder.startswith(self.node):
            log.info("cluster: %s lost its nickname to another node; now %s", nick, guest)
            hub.change_nick(holder, guest)
        else:
            target = ToRooms(tuple(member.rooms))
            self.receive(ev.NickChanged(member.source, guest, at=hub.clock()), target)

    def _unpark(self) -> None:
        """Members of other nodes listed as guests get their nicks back once free here."""
        hub = self.hub
        for uid, nick in list(self._parked.items()):
            member = hub.members.get(uid)
            if member is None or member.nick != guest_nick(uid):
                del self._parked[uid]
            elif fold(nick) not in hub.nicks:
                del self._parked[uid]
                target = ToRooms(tuple(member.rooms))
                self.receive(ev.NickChanged(member.source, nick, at=hub.clock()), target)

    def _offline(self, nick: str, at: float) -> None:
        key = fold(nick)
        if key in self.hub.monitor.watchers:
            self.deliver(ev.WentOffline(nick, at=at), ToWatchers(key))

    # ================================================================= bursts

    def _control(self, message: list[Any]) -> None:
        node, kind = str(message[0]), message[1]
        if kind == "!gone":
            gone = str(message[2])
            if gone == self.node:
                self._burst(want=True)  # declared gone while we were away: come back
            else:
                self._split(gone)
        elif kind == "!burst":
            body = message[2]
            assert isinstance(body, dict)
            incoming = self._incoming.setdefault(node, _Incoming())
            incoming.members.extend(body.get("members", []))
            incoming.rooms.extend(body.get("rooms", []))
            if body.get("final"):
                del self._incoming[node]
                self._reconcile(node, incoming)
                if body.get("want"):
                    self._burst(want=False)

    def _burst(self, want: bool) -> None:
        """Publish this node's members and their rooms' settings, in parts."""
        if not self.up or self.draining:
            return
        hub = self.hub
        members = [m for uid in self.router.local if (m := hub.members.get(uid)) is not None]
        rooms = {key for m in members for key in m.rooms}
        records = [room_record(hub.rooms[key]) for key in sorted(rooms) if key in hub.rooms]
        parts = [members[i : i + BURST_CHUNK] for i in range(0, len(members), BURST_CHUNK)]
        parts = parts or [[]]
        for i, part in enumerate(parts):
            body: dict[str, object] = {
                "members": [
                    [
                        m.uid,
                        m.nick,
                        m.user,
                        m.host,
                        m.realname,
                        m.modes,
                        m.away,
                        m.signon,
                        [[hub.rooms[k].name, hub.rooms[k].members.get(m.uid, 0)] for k in m.rooms],
                    ]
                    for m in part
                ],
            }
            if i == 0:
                body["rooms"] = records
            if i == len(parts) - 1:
                body["final"] = True
                body["want"] = want
            payload = json.dumps([self.node, "!burst", body], ensure_ascii=False)
            self._send(self.state, payload, STATE_STREAM_LEN)
        self.stats["cluster_bursts"] += 1

    def _reconcile(self, node: str, burst: _Incoming) -> None:
        """Make what this node knows of ``node``'s members what its burst says."""
        hub = self.hub
        for record in burst.rooms:
            self._room_settings(record)
        seen: set[str] = set()
        for entry in burst.members:
            uid, nick, user, host, realname, modes, away, signon, rooms = entry
            uid, nick = str(uid), str(nick)
            if not uid.startswith(node):
                continue
            seen.add(uid)
            member = hub.members.get(uid)
            holder = hub.nicks.get(fold(nick))
            if holder is not None and holder != uid:
                self.stats["cluster_nick_conflicts"] += 1
                if holder.startswith(self.node):
                    # Ours holds it here; the lease says who keeps it. Until one of the
                    # two nodes renames its member, the other's is listed as a guest.
                    self._parked[uid] = nick
                    nick = guest_nick(uid)
                else:
                    self._make_room(nick, uid)
            if member is None:
                source = ev.Source(nick, str(user), str(host), False, uid)
                self.receive(ev.Registered(source, str(realname), at=float(signon)), ToNobody())
                member = hub.members[uid]
            elif member.nick != nick:
                target = ToRooms(tuple(member.rooms))
                self.receive(ev.NickChanged(member.source, nick, at=hub.clock()), target)
            if member.modes != modes:
                changes = _mode_diff(member.modes, str(modes))
                if changes:
                    self.receive(
                        ev.UserModeChanged(member.source, changes, at=hub.clock()), ToNobody()
                    )
            if member.away != away:
                text = str(away) if away is not None else None
                target = ToRooms(tuple(member.rooms), skip=uid, watched=member.key)
                self.receive(ev.AwayChanged(member.source, text, at=hub.clock()), target)
            wanted = {fold(str(name)): (str(name), int(flags)) for name, flags in rooms}
            for key in [k for k in member.rooms if k not in wanted]:
                name = hub.rooms[key].name
                self.receive(
                    ev.Parted(member.source, name, SPLIT_REASON, at=hub.clock()), ToRoom(key)
                )
            for key, (name, flags) in wanted.items():
                if key in member.rooms:
                    self._settle_flags(member, hub.rooms[key], flags)
                    continue
                existing = hub.rooms.get(key)
                count = (len(existing.members) if existing else 0) + 1
                joined = ev.Joined(
                    member.source,
                    existing.name if existing else name,
                    count,
                    member.realname,
                    member.away,
                    flags,
                    existing is None,
                    at=hub.clock(),
                )
                self.receive(joined, ToRoom(key))
        for uid in [u for u in hub.members if u.startswith(node) and u not in seen]:
            self._quit(uid, SPLIT_REASON)

    def _settle_flags(self, member: Member, room: Room, flags: int) -> None:
        """Give ``member`` the flags its node says it has in ``room``, quietly (a netjoin's
        modes are not news)."""
        old = room.members.get(member.uid, 0)
        changes = tuple(
            ev.ModeChange("+" if flags & bit else "-", char, member.nick, member.uid)
            for bit, char in ((OP, "o"), (VOICE, "v"))
            if (old ^ flags) & bit
        )
        if changes:
            self.receive(
                ev.ModeChanged(member.source, room.name, changes, at=self.hub.clock()), ToNobody()
            )

    def _room_settings(self, record: str) -> None:
        """A room as a burst describes it: made if unknown, its newer topic taken."""
        try:
            restored = restored_event(record)
        except (ValueError, KeyError, TypeError):
            self.stats["cluster_bad_payloads"] += 1
            return
        key = fold(restored.room)
        room = self.hub.rooms.get(key)
        if room is None:
            self.receive(restored, ToNobody())
        elif restored.topic_at > room.topic_at and restored.topic != room.topic:
            source = ev.Source(restored.topic_by or "*", "", "")
            changed = ev.TopicChanged(source, room.name, restored.topic, at=restored.topic_at)
            self.receive(changed, ToRoom(key))

    def _split(self, node: str) -> None:
        """``node`` is gone: its members quit, as in a netsplit."""
        log.info("cluster: node %s is gone; its members quit", node)
        self._incoming.pop(node, None)
        for uid in [u for u in self.hub.members if u.startswith(node)]:
            self._quit(uid, SPLIT_REASON)

    def _quit(self, uid: str, reason: str) -> None:
        hub = self.hub
        member = hub.members.get(uid)
        if member is None:
            return
        gone = ev.Quit(member.source, reason, at=hub.clock())
        self.receive(gone, ToRooms(tuple(member.rooms), skip=uid))

    # ================================================================= draining

    def drain(self, reason: str) -> int:
        """This node is stopping: each local member quits now, for the other nodes.

        Called at shutdown once the local clients were told and the router delivers
        nothing more (so the quits reach no local member: N quit notices to N closing
        members would be N²). Each quit is published with its nickname's lease to
        release, in the same script (:data:`~chatd.cluster.scripts.PUBLISH`): the other
        nodes show the member quitting with ``reason`` as soon as they read it, and a
        client reconnecting through another node gets its nickname back at once, not
        when the lease expires and the dead node is reaped. From here on the node
        applies nothing it receives and bursts nothing; the engine waits, within its
        shutdown bound, until Redis has answered every command (:attr:`settled`) before
        it closes the connections. With the link down the quits are not sent (counted in
        ``cluster_unsent``): the other nodes reap this node once its alive key expires,
        as after a crash. A link waiting to be rebuilt after ``MOVED`` is not rebuilt
        now: what waited for it goes out on it as it is, before the quits, and a publish
        whose slot moved meets ``MOVED`` again and is counted in ``cluster_unsent``.
        Returns the number of members that quit.
        """
        self.draining = True
        if self.moved is not None:
            self.moved = None
            for key, command in self._take_kept():
                self._publish_command(key, command)
        hub = self.hub
        quits = 0
        for uid in list(self.router.local):
            if uid in hub.members:
                hub.disconnect(uid, reason, quiet=True)
                quits += 1
        if quits:
            if self.up:
                log.info("cluster: draining: %d members quit for the other nodes", quits)
            else:
                log.warning(
                    "cluster: draining with redis out of reach: the other nodes see this "
                    "node's %d members quit within --redis-lease (%g s)",
                    quits,
                    self.lease,
                )
        return quits

    @property
    def settled(self) -> bool:
        """Redis has answered every command sent on every shard (a command connection
        keeps each command's callback until its reply: none left means Redis applied all
        of them), or the link is down and nothing more can reach it. The engine waits
        for it before it closes the connections: at shutdown, and to rebuild the link
        after ``MOVED`` (:attr:`moved`)."""
        return not self.up or not any(shard.cmd.waiting for shard in self.shards)

    # ================================================================= gauges

    def counters(self) -> dict[str, int]:
        return {
            "cluster_up": int(self.up),
            "cluster_rooms_followed": len(self.rooms),
            "cluster_remote_members": sum(
                1 for uid in self.hub.members if not uid.startswith(self.node)
            ),
        }


def _settings(room: Room) -> tuple[object, ...]:
    """What a topic or mode change can change in a room, to compare."""
    return (
        room.topic,
        room.modes,
        room.password,
        room.limit,
        sorted(e.mask for e in room.bans),
        sorted(e.mask for e in room.excepts),
        sorted(e.mask for e in room.invexes),
    )


def guest_nick(uid: str) -> str:
    """The nickname a member that lost its nick's lease gets: ``Guest`` and its id."""
    return f"Guest{uid}"


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return 0, 0


def _mode_diff(old: str, new: str) -> str:
    added = "".join(c for c in new if c not in old)
    removed = "".join(c for c in old if c not in new)
    return (f"+{added}" if added else "") + (f"-{removed}" if removed else "")


__all__ = ["ClusterNode", "ToMember"]
