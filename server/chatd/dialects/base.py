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
* **A chat batch is the service's policy, not an engine's.** Consecutive chat lines to
  the same place are collected by the dialect and published as one event when something
  else arrives or :meth:`process` returns, so K lines that arrived together cost one
  append per recipient, in every engine.
* **Timers are the session's.** It asks its transport for one callback at the earliest
  deadline it has (registration, idle, a dialect's ping) and re-arms from
  :meth:`on_timer`. Engines only know "call me back at t".
* **Closing breaks every cycle.** :meth:`connection_lost` tells the hub, releases the
  address slot, then drops the references between session, member and transport and the
  decoder's buffer, so a closed connection's memory is freed by reference counting at
  once rather than by a later cycle collection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from chatd.core.hub import Member
from chatd.core.limits import TokenBucket
from chatd.net.transport import QUIT_TEXT, DisconnectReason, Transport

if TYPE_CHECKING:
    from chatd.service import ChatService


class _Blank:
    """A blank line: it costs a flood token and does nothing else."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BLANK"


#: Decoders yield this for every empty (or all-white-space) line they skip.
BLANK: Any = _Blank()

#: Longest single wait :meth:`Session.process` asks for; it asks again if need be.
PAUSE_SLICE = 0.5


class Decoder:
    """What a session needs from its dialect's decoder (h11-style: store, then pull)."""

    def feed(self, data: bytes) -> None: ...
    def feed_eof(self) -> None: ...
    def next_item(self) -> Any | None: ...
    @property
    def buffered(self) -> int: ...


@dataclass(frozen=True)
class Dialect:
    """A wire format: its name, its session class and what the hub must know of it."""

    #: ``line``, ``irc``: shown in the listening line and in ``/stats``.
    name: str
    #: Builds the session of one accepted connection: ``factory(service, host, now)``.
    session: Callable[..., Session]
    #: Bytes sent to a connection refused at accept (``text`` says why), before closing.
    refusal: Callable[[str], bytes]
    #: Nicknames that would let their owner's lines read as this dialect's notices.
    reserved_nicks: frozenset[str] = field(default_factory=frozenset)
    #: ``(nick, text) -> True`` if an action by ``nick`` would render as a notice.
    action_forgeable: Callable[[str, str], bool] | None = None


class Session:
    """One connection's chat state; subclasses implement a dialect."""

    #: Set by subclasses: the shared :class:`Dialect` description.
    dialect: ClassVar[Dialect]

    __slots__ = (
        "service",
        "transport",
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
        "__weakref__",
    )

    def __init__(self, service: ChatService, host: str, now: float, delay: float = 0.0) -> None:
        """``delay``: seconds before the first input is read (the address' connect rate)."""
        cfg = service.config
        self.service = service
        self.transport: Transport = None  # type: ignore[assignment]  # connection_made
        self.member: Member = None  # type: ignore[assignment]
        self.decoder: Decoder = self.make_decoder()
        self.bucket = TokenBucket(cfg.flood_rate, cfg.flood_burst, now) if cfg.flood_rate else None
        self.held: Any = None
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

    # ----------------------------------------------------------------- for subclasses

    def make_decoder(self) -> Decoder:
        raise NotImplementedError

    @property
    def encoder(self) -> Any:
        """The router encodes once per distinct encoder object."""
        raise NotImplementedError

    def greet(self) -> None:
        """Queue what a client sees on connect."""

    def handle(self, item: Any) -> int:
        """Act on one decoded item; return extra flood tokens it costs (0 for most)."""
        raise NotImplementedError

    def flush_batch(self) -> None:
        """Publish chat lines collected by :meth:`handle` (called before every pause)."""

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

    # ----------------------------------------------------------------- engine side

    def connection_made(self, transport: Transport, now: float) -> None:
        self.transport = transport
        self.member = self.service.hub.connect(self, transport, self.encoder, self.host)
        self.greet()
        self.arm_timer(now)

    def data_received(self, data: bytes) -> None:
        self.service.stats["bytes_in"] += len(data)
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
        if self.hold_until:
            if now < self.hold_until:
                return self.hold_until - now
            self.hold_until = 0.0
        bucket = self.bucket
        decoder = self.decoder
        try:
            while not self.closing:
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
                        self.service.stats["flood_pauses"] += 1
                    # In slices: between them the engine checks that the peer is still
                    # there, so a reset is noticed even behind a long debt.
                    return min(max(bucket.wait(now), 0.001), PAUSE_SLICE)
                if item is BLANK:
                    continue
                extra = self.handle(item)
                if extra and bucket is not None:
                    bucket.charge(now, extra)
        finally:
            if self.transport is not None:
                self.flush_batch()
        self.paused = False
        if self.eof and not self.closing:
            self.close(DisconnectReason.EOF)
        elif not self.closing:
            self.arm_timer(now)  # registration may have moved the deadline to idleness
        return None

    def on_timer(self, now: float) -> None:
        self.timer_at = 0.0
        if self.closing or self.transport is None:
            return
        cfg = self.service.config
        if self.member.nick is None:
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

    def arm_timer(self, now: float) -> None:
        """Ask the transport for a callback at the earliest deadline this session has."""
        cfg = self.service.config
        when: float | None = None
        if self.member.nick is None:
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
        service = self.service
        if service is None:
            return
        service.stats["disconnect_" + reason.value] += 1
        member = self.member
        if member is None:
            # Never made (a TLS handshake that failed): the hub never knew it.
            service.admission.release(self.host)
            self.decoder = None  # type: ignore[assignment]
            self.service = None  # type: ignore[assignment]
            return
        if reason is DisconnectReason.SHUTDOWN:
            # Everyone was told already; N quit notices to N closing members is N².
            service.hub.disconnect(member, quiet=True)
        elif reason is DisconnectReason.QUIT:
            service.hub.disconnect(member, detail, by_user=True)
        else:
            service.hub.disconnect(member, detail or QUIT_TEXT.get(reason, reason.value))
        service.admission.release(self.host)
        self.on_close()
        # Break the session ⇄ member ⇄ transport cycle and free the buffers now.
        member.session = None
        member.out = None
        self.member = None  # type: ignore[assignment]
        self.transport = None  # type: ignore[assignment]
        self.decoder = None  # type: ignore[assignment]
        self.held = None
        self.service = None  # type: ignore[assignment]

    # ----------------------------------------------------------------- helpers

    def write(self, data: bytes) -> None:
        """Queue a reply to this client (counted like every delivery)."""
        stats = self.service.stats
        stats["writes_out"] += 1
        stats["bytes_out"] += len(data)
        self.transport.write(data)

    def close(self, reason: DisconnectReason, detail: str = "") -> None:
        """Handle no more input; flush and close."""
        if self.closing:
            return
        self.closing = True
        self.held = None
        self.flush_batch()
        self.transport.close_soon(reason, detail)
