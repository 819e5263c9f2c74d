"""The contract between an engine's connection and a dialect's session.

An engine owns sockets and knows no dialect; a session owns the chat side of one
connection and knows no socket. They meet here, in the shape of asyncio's transport and
protocol pair:

* the engine calls the session's :class:`SessionProtocol` methods when bytes arrive, at
  end of input, when a timer the session asked for is due, and once when the
  connection is gone;
* the session calls the engine's :class:`Transport` to queue output, to ask for a close,
  and to ask for a timer.

Flood control lives on the session side: :meth:`SessionProtocol.process` handles what
the flood budget allows and returns how long the engine must stop reading. Every engine
therefore applies exactly the same service policy, and differs only in how it waits.
"""

from __future__ import annotations

import enum
from typing import Protocol


class DisconnectReason(enum.Enum):
    """Why a connection ended; each has a counter (``/stats``) and a text for the room."""

    #: The client asked to leave (/quit, IRC QUIT).
    QUIT = "quit"
    #: The client closed its side of the connection.
    EOF = "eof"
    #: The connection was reset or failed with a socket error.
    RESET = "reset"
    #: Output the kernel refused passed the hard limit --max-sendq.
    SENDQ = "sendq"
    #: Output stayed above --sendq-soft for --sendq-soft-seconds.
    SOFT_SENDQ = "soft_sendq"
    #: No nickname within --register-timeout.
    REGISTER_TIMEOUT = "register_timeout"
    #: Silent for longer than --idle-timeout (or no answer to the server's PING).
    IDLE = "idle"
    #: Refused at accept: --max-clients reached.
    SERVER_FULL = "server_full"
    #: Refused at accept: --max-per-address or the connection rate of its address.
    ADDRESS_LIMIT = "address_limit"
    #: Wrong server password.
    BAD_PASSWORD = "bad_password"
    #: threaded engine: one blocking send took longer than --send-timeout.
    SEND_TIMEOUT = "send_timeout"
    #: Disconnected by a server operator (IRC KILL).
    KILLED = "killed"
    #: The client sent something that ends the session (IRC ERROR-worthy input).
    PROTOCOL = "protocol"
    #: The server is shutting down.
    SHUTDOWN = "shutdown"
    #: TLS: no handshake within --tls-handshake-timeout (the session was never made).
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    #: TLS: the handshake failed: not TLS, refused, or the peer left in the middle.
    HANDSHAKE_FAILED = "handshake_failed"


#: What the other members are told when someone goes for a reason other than their own.
QUIT_TEXT = {
    DisconnectReason.EOF: "connection closed",
    DisconnectReason.RESET: "connection reset",
    DisconnectReason.SENDQ: "output buffer full",
    DisconnectReason.SOFT_SENDQ: "output buffer over its soft limit for too long",
    DisconnectReason.REGISTER_TIMEOUT: "registration timeout",
    DisconnectReason.IDLE: "idle timeout",
    DisconnectReason.SEND_TIMEOUT: "send timeout",
    DisconnectReason.BAD_PASSWORD: "bad password",
    DisconnectReason.KILLED: "killed",
    DisconnectReason.PROTOCOL: "protocol error",
    DisconnectReason.SHUTDOWN: "server shutting down",
}


class Transport(Protocol):
    """What a session needs from its engine's connection."""

    def write(self, data: bytes) -> None:
        """Queue (or send) ``data``; never block the caller on a slow peer.

        Must not call back into the session or the hub: it runs inside fan-outs.
        """

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """Flush what is queued, then close and call ``connection_lost``.

        The first reason given wins: a later failure to flush (the peer reset after its
        /quit) does not turn a clean quit into a reset.
        """

    def call_at(self, when: float) -> None:
        """Call the session's ``on_timer`` at monotonic time ``when`` (or soon after).

        Only the earliest pending request counts; the session re-arms from ``on_timer``.
        """


class SessionProtocol(Protocol):
    """What an engine calls on the session of each connection."""

    def connection_made(self, transport: Transport, now: float) -> None:
        """The connection is ready for chat; the session queues its greeting.

        On a TLS listener that is after the handshake, so the session is created at
        accept (its address holds a slot) but may be lost before it is ever made.
        """

    def data_received(self, data: bytes) -> None:
        """Store bytes read from the peer (handled by :meth:`process`)."""

    def eof_received(self) -> None:
        """The peer closed its side; a last unterminated line still counts."""

    def process(self, now: float) -> float | None:
        """Handle buffered input as far as flood control allows.

        Returns ``None`` when everything buffered was handled (read more), or the
        seconds to wait before calling again without reading (the flood budget or the
        address' registration rate is spent).
        """

    def on_timer(self, now: float) -> None:
        """A timer asked for with :meth:`Transport.call_at` is due."""

    def connection_lost(self, reason: DisconnectReason, detail: str = "") -> None:
        """The connection is gone; called exactly once. Drops every reference it holds.

        Also called, once, for a session that was never made (its TLS handshake failed
        or timed out): it releases what accept gave it.
        """
