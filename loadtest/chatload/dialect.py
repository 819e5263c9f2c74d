"""What a client dialect is: the kinds of server line, the handshake events, and the
:class:`Dialect` protocol that :class:`chatload.line.LineDialect` and
:class:`chatload.irc.IrcDialect` implement (Redis pub/sub has no registration:
:mod:`chatload.resp`).

Sans-IO like h11: a dialect returns the bytes to send and turns each received line
(terminator stripped) into an event; the caller owns the socket.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, Protocol

from chatload.framing import Counter
from chatload.stamp import Message


class LineKind(enum.Enum):
    """What a server line is, as far as a load client cares."""

    #: A stamped chat message (``<nick>: LT ...``; IRC: a ``PRIVMSG`` to the channel).
    MESSAGE = "message"
    #: A notice from the server: ``* `` lines; IRC numerics, ``NOTICE``, ``JOIN``, ``MODE``...
    NOTICE = "notice"
    #: An error caused by something we sent (``! ``; IRC 4xx/5xx numerics): we never send
    #: anything that should cause one.
    ERROR = "error"
    #: A keep-alive the client must answer at once (IRC ``PING``).
    PING = "ping"
    #: The server announces that it closes the connection (IRC ``ERROR``).
    CLOSING = "closing"
    #: Anything else: chat from a non-load-test client, private messages.
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class Registered:
    """The server accepted our nick and is ready for a join (IRC: after the MOTD)."""

    nick: str


@dataclass(frozen=True, slots=True)
class RegisterRefused:
    """The server refused our nick (or us)."""

    reason: str
    #: Another nick may work (it was taken); False: retrying is pointless.
    retry: bool


@dataclass(frozen=True, slots=True)
class Joined:
    """We are in ``room`` now."""

    room: str


@dataclass(frozen=True, slots=True)
class JoinRefused:
    """The server refused the join (a full, closed or invalid room)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes the client must send back at once (an IRC ``PONG``)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Closing:
    """The server announced that it closes the connection (IRC ``ERROR``)."""

    reason: str


HandshakeEvent = Registered | RegisterRefused | Joined | JoinRefused | Reply | Closing


class Dialect(Protocol):
    """A client-side wire dialect, sans-IO: what to send, and what the server's lines mean.

    One instance per connection. The caller writes the bytes these methods return and
    feeds every line it reads (terminator stripped) to ``handshake_event`` until it is
    joined, then to ``classify`` (a timing receiver) or a ``counter`` (a counting one).
    """

    #: ``--chat-dialect`` value.
    name: ClassVar[str]
    #: Port a ``--host`` without one means.
    default_port: ClassVar[int]
    #: Largest payload the dialect can carry in one line.
    max_payload: ClassVar[int]
    #: Bytes every keep-alive line the client must answer holds (IRC: ``b"PING"``), so a
    #: counting receiver looks at no other line; None: the dialect has none.
    ping_marker: ClassVar[bytes | None]
    #: Our nick as the server knows it (set by ``register``, updated by the server's reply).
    nick: str

    def register(self, nick: str) -> bytes: ...
    def renick(self, nick: str) -> bytes: ...
    def join(self, room: str) -> bytes: ...
    def chat(self, text: bytes) -> bytes: ...
    def quit(self) -> bytes: ...
    def handshake_event(self, line: bytes) -> HandshakeEvent | None: ...
    def classify(self, line: bytes) -> tuple[LineKind, Message | None]: ...
    def pong(self, line: bytes) -> bytes: ...
    def counter(self, tail: bytes = b"") -> Counter: ...
