"""What every dialect's session shares: flood control, timeouts, output and the close path.

A dialect subclasses :class:`Session` and supplies a decoder, an encoder, a greeting and
:meth:`Session.handle` for one decoded item. The engine sees only the
:class:`~chatd.net.transport.SessionProtocol` methods.

Theory of operation
-------------------
* **Input is pulled, one item at a time, through the flood bucket.** :meth:`process`
  takes one token per item, blank lines included (they cost the server a scan too), and
  stops when the bucket is empty: the item in hand is *held*, the engine is told how long
  to wait, and it stops reading. What the client sends meanwhile waits in its own TCP
  buffers, so the bytes the server scans per turn are bounded by the tokens it grants
  and one read. An expensive command returns extra cost from :meth:`handle`, charged
  after it ran (the bucket may go into debt), so the next item waits longer.
* **No command holds the loop long.** A command whose work grows with the server (a
  WHO mask over every member, a LIST over every room) runs as *work*: a generator
  (:attr:`Session.work`) that does a bounded step per ``next()`` and yields what the
  step cost in flood tokens. :meth:`process` runs one step, then returns
  :data:`STEP_PAUSE` so the engine serves every other connection before the next step;
  the client's later input waits behind it, so replies stay in order. An expensive
  command that is not split (its extra cost is above zero) also ends the turn for its
  connection.
* **A chat batch is the service's policy, not an engine's.** Consecutive chat lines to
  the same place are collected by the dialect and published as one event when something
  else arrives or :meth:`process` returns, so K lines that arrived together cost one
  append per recipient, in every engine.
* **Timers are the session's.** It asks its transport for one callback at the earliest
  deadline it has (registration, idle, a dialect's ping) and re-arms from
  :meth:`on_timer`. Engines only know "call me back at t".
* **A session sees a narrow context** (:class:`Context`): the hub, the settings, the
  counters and a few calls into the service, never the service itself. The service owns
  the connection's life cycle: :meth:`connection_made` and :meth:`connection_lost` tell
  it (``Context.opened``/``Context.ended``), and it registers the session with the
  router, tells the hub and releases the address slot.
* **A session is the router's handle** of its connection (:class:`chatd.core.router.Handle`):
  it has a member id from accept on (``uid``), an output (``out``: the transport, or a
  labeled-response capture) and an ``encoder`` attribute (not a property: the router
  reads it once per recipient of every broadcast).
* **Closing breaks every cycle.** :meth:`connection_lost` tells the service, then drops
  the references between session, member state and transport and the decoder's buffer,
  so a closed connection's memory is freed by reference counting at once rather than by
  a later cycle collection.
"""

from __future__ import annotations

import hmac
import time
from collections import Counter
from collections.abc import Callable, Generator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from chatd.config import Config
from chatd.core import errors as err
from chatd.core.events import ChatKind, Source
from chatd.core.limits import TokenBucket
from chatd.core.measures import Measures
from chatd.core.model import Member
from chatd.core.router import Encoder, Writer
from chatd.net.transport import QUIT_TEXT, DisconnectReason, Transport

if TYPE_CHECKING:
    from chatd.core.hub import Hub
    from chatd.history import History


class _Blank:
    """A blank line: it costs a flood token and does nothing else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BLANK"


#: Decoders yield this for every empty (or all-white-space) line they skip.
BLANK = _Blank()

#: Longest single wait :meth:`Session.process` asks for; it asks again if need be.
PAUSE_SLICE = 0.5
#: The wait after a step of long work or an expensive command: long enough that the
#: engine runs a loop turn for everyone else first, short enough to be unnoticeable.
STEP_PAUSE = 0.001

#: Seconds a nickname waits for its cluster lease before the client is told to try again.
CLAIM_WAIT = 5.0

#: Long work (see :attr:`Session.work`): each ``next()`` does a bounded step and yields
#: its flood cost; the generator's return value is the last step's cost.
Work = Generator[int, None, int]


class Decoder(Protocol):
    """What a session needs from its dialect's decoder (h11-style: store, then pull)."""

    def feed(self, data: bytes) -> None: ...
    def feed_eof(self) -> None: ...
    def next_item(self) -> object | None: ...
    @property
    def buffered(self) -> int: ...


@dataclass(eq=False)
class Context:
    """What a session may use of its server (built once by the service)."""

    hub: Hub
    config: Config
    #: Event counters shown by /stats.
    stats: Counter[str]
    #: A new member id for a connection.
    new_uid: Callable[[], str]
    #: Counters plus gauges, for /stats.
    snapshot: Callable[[], dict[str, int]]
    #: The local session of a member id (idle times), or ``None``.
    connection: Callable[[str], Session | None]
    #: Local connections, registered or not (LUSERS' unknown connections).
    connections: Callable[[], int]
    #: A session was made / has ended: the service's side of the life cycle.
    opened: Callable[[Session], None]
    ended: Callable[[Session, DisconnectReason, str], None]
    #: Rooms' history (queries complete between loop turns: see chatd.history).
    history: History
    #: A cluster node's nickname lease: ``claim(uid, nick)`` is done with whether the
    #: member holds ``nick``'s lease (``None``: one process, the hub alone decides).
    claim: Callable[[str, str], Future[bool]] | None = None
    #: Give back the address slot of a connection that never had a chat session (an
    #: HTTP request that was not a WebSocket upgrade).
    release: Callable[[str], None] = lambda host: None
    #: The server's histograms (``/metrics``).
    measures: Measures = field(default_factory=Measures)
    #: Deliver what this turn's room batches hold for a session, before it writes its
    #: own replies (:meth:`chatd.core.router.Router.catch_up`).
    catch_up: Callable[[Session], None] = lambda session: None


def password_ok(ctx: Context, given: str | None) -> bool:
    """Whether ``given`` (what the client's PASS or ``/pass`` said, if anything) is what
    the server asks for now: no password is set, or it is the one in force, compared in
    constant time. Asked at registration too, so a password a reload set or dropped
    applies to connections already open."""
    expected = ctx.config.password
    return expected is None or (
        given is not None and hmac.compare_digest(given.encode(), expected.encode())
    )


@dataclass(frozen=True)
class Dialect:
    """A wire format: its name, its session class and what the hub must know of it."""

    #: ``line``, ``irc``: shown in the listening line and in ``/stats``.
    name: str
    #: Builds the session of one accepted connection: ``factory(context, host, now, delay)``.
    session: Callable[[Context, str, float, float], Session]
    #: Bytes sent to a connection refused at accept (``text`` says why), before closing.
    refusal: Callable[[str], bytes]
    #: Nicknames that would let their owner's lines read as this dialect's notices.
    reserved_nicks: frozenset[str] = field(default_factory=frozenset)
    #: ``(nick, text) -> True`` if an action by ``nick`` would render as a notice.
    action_forgeable: Callable[[str, str], bool] | None = None
    #: ``(source, target, kind) -> bytes``: the longest piece of chat text this dialect
    #: can carry in one frame from ``source`` to ``target`` (``None``: no limit).
    piece_budget: Callable[[Source, str, ChatKind], int | None] | None = None


class Session:
    """One connection's chat state; subclasses implement a dialect."""

    #: Set by subclasses: the shared :class:`Dialect` description.
    dialect: ClassVar[Dialect]

    __slots__ = (
        "ctx",
        "transport",
        "uid",
        "out",
        "encoder",
        "member",
        "decoder",
        "bucket",
        "held",
        "paused",
        "closing",
        "eof",
        "active",
        "accepted_at",
        "last_active",
        "timer_at",
        "hold_until",
        "host",
        "lost",
        "work",
        "__weakref__",
    )

    def __init__(self, ctx: Context, host: str, now: float, delay: float = 0.0) -> None:
        """``delay``: seconds before the first input is read (the address' connect rate)."""
        cfg = ctx.config
        self.ctx: Context = ctx
        self.transport: Transport = _NOT_MADE
        #: This connection's member id: the router's key now, the hub's once registered.
        self.uid = ctx.new_uid()
        #: Where the router and the session write (see :class:`chatd.core.router.Handle`).
        self.out: Writer = _NOT_MADE
        #: The dialect's encoder for this connection (subclasses set it).
        self.encoder: Encoder = _NO_ENCODER
        #: The hub's state of this member once registered (read it, never write it).
        self.member: Member | None = None
        self.decoder: Decoder = self.make_decoder()
        self.bucket = TokenBucket(cfg.flood_rate, cfg.flood_burst, now) if cfg.flood_rate else None
        self.held: object | None = None
        self.paused = False
        #: A close was asked for: handle no more input.
        self.closing = False
        self.eof = False
        #: Bytes arrived since the last process(): the idle clock restarts.
        self.active = False
        self.accepted_at = now
        self.last_active = now
        self.timer_at = 0.0
        self.hold_until = now + delay if delay > 0 else 0.0
        self.host = host
        #: ``connection_lost`` has run: the session holds nothing any more.
        self.lost = False
        #: A long command in progress, run a bounded step per loop turn (see Work).
        self.work: Work | None = None

    # ----------------------------------------------------------------- for subclasses

    def make_decoder(self) -> Decoder:
        raise NotImplementedError

    def greet(self) -> None:
        """Queue what a client sees on connect."""

    def handle(self, item: object) -> int:
        """Act on one decoded item; return extra flood tokens it costs (0 for most)."""
        raise NotImplementedError

    def flush_batch(self) -> None:
        """Publish chat lines collected by :meth:`handle` (called before every pause)."""

    def drop_batch(self) -> None:
        """Forget chat lines collected by :meth:`handle` (the connection is being killed)."""

    def step_work(self, work: Work) -> int:
        """Run one step of ``work`` and return its cost (a dialect may wrap it: IRC
        directs the step's output to a labeled response); raises StopIteration at the end."""
        return next(work)

    def work_done(self) -> None:
        """The long command has finished (IRC sends its labeled response now)."""

    def next_deadline(self, now: float) -> float | None:
        """The dialect's own next deadline (IRC's keepalive PING), or ``None``."""
        return None

    def on_deadline(self, now: float) -> None:
        """Called from :meth:`on_timer` when the dialect's deadline has passed."""

    def timed_out(self, reason: DisconnectReason) -> None:
        """Tell the client it timed out, then close after flushing."""
        self.close(reason)

    def on_close(self) -> None:
        """The connection is gone and the hub knows; drop dialect state."""

    @property
    def registered(self) -> bool:
        return self.member is not None

    @property
    def nick(self) -> str | None:
        member = self.member
        return member.nick if member is not None else None

    def claimed(
        self,
        nick: str,
        then: Callable[[], object],
        refused: Callable[[err.HubError], None],
    ) -> None:
        """Run ``then()`` once this member holds ``nick`` (at once on a single node).

        On a cluster node the nickname's lease is taken in Redis first
        (:meth:`chatd.cluster.node.ClusterNode.claim`); meanwhile the session waits as
        for any long command, so its later input stays behind the answer. A lease held
        by another member is :class:`~chatd.core.errors.NickInUse`; no answer from
        Redis within :data:`CLAIM_WAIT` is :class:`~chatd.core.errors.NickUnavailable`.
        """
        claim = self.ctx.claim
        if claim is None:
            then()
            return
        self.work = self._claiming(claim(self.uid, nick), nick, then, refused)

    def _claiming(
        self,
        future: Future[bool],
        nick: str,
        then: Callable[[], object],
        refused: Callable[[err.HubError], None],
    ) -> Work:
        deadline = time.monotonic() + CLAIM_WAIT
        while not future.done():
            if time.monotonic() >= deadline or self.closing:
                future.cancel()  # a claim not sent yet is not sent at all
                refused(err.NickUnavailable(nick))
                return 0
            yield 0
        if future.exception() is not None:
            refused(err.NickUnavailable(nick))
        elif not future.result():
            refused(err.NickInUse(nick))
        else:
            then()
        return 0

    # ----------------------------------------------------------------- engine side

    def connection_made(self, transport: Transport, now: float) -> None:
        self.transport = transport
        self.out = transport
        self.ctx.opened(self)
        self.greet()
        self.arm_timer(now)

    def data_received(self, data: bytes) -> None:
        self.ctx.stats["bytes_in"] += len(data)
        self.active = True
        self.decoder.feed(data)

    def eof_received(self) -> None:
        self.eof = True
        self.decoder.feed_eof()

    def process(self, now: float) -> float | None:
        if self.active:
            self.active = False
            self.last_active = now
        if self.closing:
            return None
        self.ctx.catch_up(self)  # what others said this turn comes before our replies
        if self.hold_until:
            if now < self.hold_until:
                return self.hold_until - now
            self.hold_until = 0.0
        bucket = self.bucket
        decoder = self.decoder
        try:
            while not self.closing:
                if self.work is not None:
                    if not self._run_step(now):
                        return STEP_PAUSE  # more steps: everyone else first
                    continue
                item = self.held
                if item is None:
                    item = decoder.next_item()
                    if item is None:
                        break
                else:
                    self.held = None
                if bucket is not None and not bucket.take(now):
                    self.held = item
                    if not self.paused:
                        self.paused = True
                        self.ctx.stats["flood_pauses"] += 1
                    # In slices: between them the engine checks that the peer is still
                    # there, so a reset is noticed even behind a long debt.
                    return min(max(bucket.wait(now), 0.001), PAUSE_SLICE)
                if item is BLANK:
                    continue
                extra = self.handle(item)
                if extra and bucket is not None:
                    bucket.charge(now, extra)
                if self.work is not None or (extra and not self.closing):
                    # Long work starts at once; an expensive command ends the turn.
                    if self.work is None or not self._run_step(now):
                        return STEP_PAUSE
        finally:
            if self.transport is not _NOT_MADE:
                self.flush_batch()
        self.paused = False
        if self.eof and not self.closing:
            self.close(DisconnectReason.EOF)
        elif not self.closing:
            self.arm_timer(now)  # registration may have moved the deadline to idleness
        return None

    def _run_step(self, now: float) -> bool:
        """One step of :attr:`work`, charged to the flood budget; True once it is done."""
        work = self.work
        assert work is not None
        finished = False
        try:
            cost = self.step_work(work)
        except StopIteration as end:
            cost = end.value or 0
            finished = True
        if cost and self.bucket is not None:
            self.bucket.charge(now, cost)
        if finished:
            self.work = None
            self.work_done()
        return finished

    def on_timer(self, now: float) -> None:
        self.timer_at = 0.0
        if self.closing or self.transport is _NOT_MADE:
            return
        self.ctx.catch_up(self)
        cfg = self.ctx.config
        if self.member is None:
            if cfg.register_timeout > 0 and now >= self.accepted_at + cfg.register_timeout:
                self.timed_out(DisconnectReason.REGISTER_TIMEOUT)
                return
        elif cfg.idle_timeout > 0 and now >= self.last_active + cfg.idle_timeout:
            self.timed_out(DisconnectReason.IDLE)
            return
        own = self.next_deadline(now)
        if own is not None and now >= own:
            self.on_deadline(now)
            if self.closing:
                return
        self.arm_timer(now)

    def reconfigured(self, now: float) -> None:
        """The settings were reloaded: a timeout set, or shortened, applies from now."""
        if not self.closing and not self.lost and self.transport is not _NOT_MADE:
            self.arm_timer(now)

    def arm_timer(self, now: float) -> None:
        """Ask the transport for a callback at the earliest deadline this session has."""
        cfg = self.ctx.config
        when: float | None = None
        if self.member is None:
            if cfg.register_timeout > 0:
                when = self.accepted_at + cfg.register_timeout
        elif cfg.idle_timeout > 0:
            when = self.last_active + cfg.idle_timeout
        own = self.next_deadline(now)
        if own is not None and (when is None or own < when):
            when = own
        if when is None:
            return
        when = max(when, now + 0.001)
        if self.timer_at and self.timer_at <= when:
            return  # an earlier callback is pending; it re-arms
        self.timer_at = when
        self.transport.call_at(when)

    def connection_lost(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.lost:
            return
        self.lost = True
        self.ctx.ended(self, reason, detail)
        self.work = None
        self.on_close()
        # Break the session ⇄ transport cycle and free the buffers now.
        self.member = None
        self.transport = _NOT_MADE
        self.out = _NOT_MADE
        self.decoder = _NO_DECODER
        self.held = None

    # ----------------------------------------------------------------- helpers

    def write(self, data: bytes) -> None:
        """Queue a reply to this client (counted like every delivery)."""
        stats = self.ctx.stats
        stats["writes_out"] += 1
        stats["bytes_out"] += len(data)
        self.out.write(data)

    def close(self, reason: DisconnectReason, detail: str = "") -> None:
        """Handle no more input; flush and close."""
        if self.closing:
            return
        self.closing = True
        self.held = None
        self.work = None
        self.flush_batch()
        self.transport.close_soon(reason, detail)

    def disconnect(self, detail: str) -> None:
        """The router's call after delivering a KILL of this member: close after it.

        Runs inside a fan-out, so it publishes nothing: chat lines collected and not yet
        sent are dropped (their sender is gone).
        """
        if self.closing or self.transport is _NOT_MADE:
            return
        self.closing = True
        self.held = None
        self.work = None
        self.drop_batch()
        self.transport.close_soon(DisconnectReason.KILLED, detail)


class _NotMade:
    """The transport and output of a session not made yet, or lost: writes go nowhere."""

    __slots__ = ()

    def write(self, data: bytes) -> None:
        pass

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        pass

    def call_at(self, when: float) -> None:
        pass


class _NoEncoder:
    __slots__ = ()

    def encode(self, event: object, role: object) -> bytes:
        return b""

    def encode_for(self, event: object, recipient: object) -> bytes:
        return b""


class _NoDecoder:
    __slots__ = ()
    buffered = 0

    def feed(self, data: bytes) -> None:
        pass

    def feed_eof(self) -> None:
        pass

    def next_item(self) -> object | None:
        return None


_NOT_MADE = _NotMade()
_NO_ENCODER: Encoder = _NoEncoder()
_NO_DECODER = _NoDecoder()
__all__ = ["BLANK", "Context", "Decoder", "Dialect", "QUIT_TEXT", "Session"]
