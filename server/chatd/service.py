"""The line-protocol service: turns decoded lines into hub calls and hub events into bytes.

This is the only place where the line dialect meets the hub, and the only code that
calls :meth:`Conn.write`. Every engine drives it the same way:

* :meth:`ChatService.open` when a connection is accepted (it queues the greeting);
* :meth:`ChatService.handle_items` with the items a :class:`~chatd.protocol.LineDecoder`
  produced from one read; it returns ``False`` once the client asked to quit;
* :meth:`ChatService.close` exactly once when the connection is gone, with the reason.

Fan-out (:meth:`ChatService.deliver`) encodes each event once and hands the *same*
``bytes`` object to every recipient's ``write``. ``write`` must only queue or send:
it must never re-enter the service or change the hub, because the recipients being
iterated are a live view of a room.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

from chatd import events as ev
from chatd.config import Config
from chatd.hub import Delivery, Hub, Member
from chatd.protocol import Command, DecodeError, Item, Say, encode, parse_command

log = logging.getLogger("chatd")


class Conn(Protocol):
    """What the service needs from an engine's connection object."""

    def write(self, data: bytes) -> None:
        """Queue (or send) ``data``; never block the caller on a slow peer."""

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """Flush what is queued, then close and call :meth:`ChatService.close`."""


class DisconnectReason(enum.Enum):
    """Why a connection ended; each has a counter (``/stats``) and a text for the room."""

    #: The client sent /quit.
    QUIT = "quit"
    #: The client closed its side of the connection.
    EOF = "eof"
    #: The connection was reset or failed with a socket error.
    RESET = "reset"
    #: Output passed the hard limit --max-sendq.
    SENDQ = "sendq"
    #: Output stayed above --sendq-soft for --sendq-soft-seconds.
    SOFT_SENDQ = "soft_sendq"
    #: No nickname within --register-timeout.
    REGISTER_TIMEOUT = "register_timeout"
    #: Silent for longer than --idle-timeout.
    IDLE = "idle"
    #: Refused at accept: --max-clients reached.
    SERVER_FULL = "server_full"
    #: threaded engine: one blocking send took longer than --send-timeout.
    SEND_TIMEOUT = "send_timeout"
    #: The server is shutting down.
    SHUTDOWN = "shutdown"


#: What the room is told when a member goes for a reason other than /quit.
QUIT_TEXT = {
    DisconnectReason.EOF: "connection closed",
    DisconnectReason.RESET: "connection reset",
    DisconnectReason.SENDQ: "output buffer full",
    DisconnectReason.SOFT_SENDQ: "output buffer over its soft limit for too long",
    DisconnectReason.REGISTER_TIMEOUT: "registration timeout",
    DisconnectReason.IDLE: "idle timeout",
    DisconnectReason.SEND_TIMEOUT: "send timeout",
    DisconnectReason.SHUTDOWN: "server shutting down",
}

#: Commands an unregistered client may use; anything else waits for a nickname.
_BEFORE_REGISTRATION = frozenset({"quit", "help", "ping", "nick"})

_USAGE = {
    "nick": "usage: /nick NEW",
    "join": "usage: /join ROOM",
    "msg": "usage: /msg NICK TEXT",
    "me": "usage: /me TEXT",
}


class ChatService:
    """One server's chat state plus its counters, shared by all connections."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.hub = Hub(config.room, config.server_name)
        #: Event counters shown by /stats and logged at shutdown.
        self.stats: Counter[str] = Counter()

    # ----------------------------------------------------------------- life cycle

    def open(self, conn: Conn) -> Member:
        """Register a new connection with the hub and queue its greeting."""
        self.stats["connections"] += 1
        member, deliveries = self.hub.connect(conn)
        self.deliver(deliveries)
        return member

    def close(self, member: Member, reason: DisconnectReason, detail: str = "") -> None:
        """The connection is gone: count why and tell its room. Call once per member."""
        self.stats["disconnect_" + reason.value] += 1
        if reason is DisconnectReason.SHUTDOWN:
            # Everyone was told already; N quit notices to N closing members is N².
            self.hub.disconnect(member)
            return
        text = detail if reason is DisconnectReason.QUIT else QUIT_TEXT.get(reason, reason.value)
        self.deliver(self.hub.disconnect(member, text))

    def refuse_full(self) -> None:
        """Count a connection turned away because the server is full."""
        self.stats["disconnect_" + DisconnectReason.SERVER_FULL.value] += 1

    def time_out(self, member: Member, reason: DisconnectReason) -> None:
        """Tell a client it timed out (registration or idle) and close it after flushing."""
        text = QUIT_TEXT[reason]
        self._reply(member, ev.Error(text))
        member.conn.close_soon(reason)

    def log_stats(self) -> None:
        """Log every counter on one line (at shutdown)."""
        log.info("stats: %s", " ".join(f"{k}={v}" for k, v in sorted(self.snapshot().items())))

    def shutdown(self) -> None:
        """Tell every connected client that the server is going away."""
        self.deliver([(ev.ServerShutdown(), tuple(self.hub.everyone()), None)])

    # ----------------------------------------------------------------- input

    def handle_items(self, member: Member, items: Iterable[Item], coalesce: bool = True) -> bool:
        """Act on the items of one read, in order; ``False`` once the client quit.

        With ``coalesce`` (the reactor), consecutive chat lines are sent to the room as
        one batch event, so K lines that arrived in one read cost one append per
        recipient instead of K; every recipient still gets every line, in order. The
        baseline engines pass ``False`` and fan out each line on its own, as their
        classic designs do. Items after a /quit are ignored.
        """
        if not coalesce:
            for item in items:
                if not self._handle_one(member, item):
                    return False
            return True
        batch: list[str] = []
        registered = member.nick is not None
        for item in items:
            if registered and type(item) is str and not item.startswith("/"):
                batch.append(item)
                continue
            if batch:
                self._say_batch(member, batch)
                batch = []
            if not self._handle_one(member, item):
                return False
            registered = member.nick is not None
        if batch:
            self._say_batch(member, batch)
        return True

    def _say_batch(self, member: Member, texts: list[str]) -> None:
        self.stats["lines_in"] += len(texts)  # _handle_one counts the lines it sees
        self._say(member, texts)

    def _say(self, member: Member, texts: list[str]) -> None:
        self.stats["messages_in"] += len(texts)
        self.deliver(self.hub.say_many(member, texts))

    def _handle_one(self, member: Member, item: Item) -> bool:
        if isinstance(item, DecodeError):
            self.stats["bad_lines"] += 1
            self._error(member, item.value)
            return True
        self.stats["lines_in"] += 1
        parsed = parse_command(item)
        if member.nick is None:
            return self._before_registration(member, parsed)
        if isinstance(parsed, Say):
            self._say(member, [parsed.text])
            return True
        return self._command(member, parsed)

    def _before_registration(self, member: Member, parsed: Say | Command) -> bool:
        if isinstance(parsed, Say):
            self.deliver(self.hub.register(member, parsed.text))
            return True
        if parsed.name not in _BEFORE_REGISTRATION:
            self._error(member, "choose a nickname first")
            return True
        if parsed.name == "nick":
            if not parsed.args:
                self._error(member, _USAGE["nick"])
            else:
                self.deliver(self.hub.register(member, parsed.args))
            return True
        return self._command(member, parsed)

    def _command(self, member: Member, cmd: Command) -> bool:
        name, args = cmd.name, cmd.args
        hub = self.hub
        if name in _USAGE and not args:
            self._error(member, _USAGE[name])
        elif name == "nick":
            self.deliver(hub.change_nick(member, args))
        elif name == "join":
            if " " in args:
                self._error(member, _USAGE["join"])
            else:
                self.deliver(hub.join(member, args))
        elif name == "msg":
            target, _, text = args.partition(" ")
            text = text.strip()
            if not text:
                self._error(member, _USAGE["msg"])
            else:
                self.stats["private_in"] += 1
                self.deliver(hub.private(member, target, text))
        elif name == "me":
            self.stats["messages_in"] += 1
            self.deliver(hub.act(member, args))
        elif name == "who":
            self.deliver(hub.who(member))
        elif name == "rooms":
            self.deliver(hub.list_rooms(member))
        elif name == "help":
            self._reply(member, ev.HelpReply())
        elif name == "ping":
            self._reply(member, ev.Pong(args))
        elif name == "stats":
            self._reply(member, ev.StatsReply(tuple(sorted(self.snapshot().items()))))
        elif name == "quit":
            self._reply(member, ev.Bye(args))
            member.conn.close_soon(DisconnectReason.QUIT, args)
            return False
        else:
            self._error(member, f"unknown command: /{name} (try /help)")
        return True

    # ----------------------------------------------------------------- output

    def deliver(self, deliveries: list[Delivery]) -> None:
        """Encode each event once and write the same bytes to each recipient."""
        stats = self.stats
        for event, recipients, skip in deliveries:
            data = encode(event)
            sent = 0
            for member in recipients:
                if member is not skip:
                    member.conn.write(data)
                    sent += 1
            if sent:
                stats["writes_out"] += sent
                stats["bytes_out"] += sent * len(data)

    def _reply(self, member: Member, event: ev.Event) -> None:
        self.deliver([(event, (member,), None)])

    def _error(self, member: Member, text: str) -> None:
        self.stats["errors_sent"] += 1
        self._reply(member, ev.Error(text))

    def snapshot(self) -> dict[str, int]:
        """Counters plus current gauges, for /stats and the shutdown log."""
        out = dict(self.stats)
        out["clients"] = len(self.hub.members)
        out["registered"] = len(self.hub.nicks)
        out["rooms"] = len(self.hub.rooms)
        return out
