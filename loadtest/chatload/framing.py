"""Lines out of a byte stream: the splitter timing receivers parse with, and the newline
counter counting receivers use instead (no per-line Python work).

Errors split by fault: a peer that sends a partial line longer than
:data:`MAX_PARTIAL_LINE` is not speaking the protocol (:class:`ProtocolError`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

#: A server line is at most ``--max-line`` (4096 by default) plus the sender's nick. A partial
#: line longer than this means the peer is not speaking the protocol; refusing it bounds the
#: memory one misbehaving connection can make a receiver hold.
MAX_PARTIAL_LINE = 64 * 1024


class ProtocolError(Exception):
    """The server sent something the wire contract does not allow (a peer fault)."""


class LineSplitter:
    """Reassemble ``\\n``-terminated lines from arbitrarily split TCP reads.

    ``feed`` returns the complete lines (a ``\\r`` before the ``\\n`` stripped) and keeps
    the tail. The work per read is C-level (``split``, and ``replace`` only when the read
    holds a ``\\r``): no Python loop per line.
    """

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        self._tail = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return every line it completed, in order."""
        if b"\n" not in data:
            self._tail += data
            if len(self._tail) > MAX_PARTIAL_LINE:
                raise ProtocolError(f"line longer than {MAX_PARTIAL_LINE} bytes")
            return []
        buf = self._tail + data if self._tail else data
        if b"\r" in buf:
            # CRLF to LF over the whole buffer: a "\r" kept at the end of the tail meets
            # its "\n" here on the next read.
            buf = buf.replace(b"\r\n", b"\n")
        lines = buf.split(b"\n")
        self._tail = lines.pop()
        if len(self._tail) > MAX_PARTIAL_LINE:
            raise ProtocolError(f"line longer than {MAX_PARTIAL_LINE} bytes")
        return lines

    @property
    def pending(self) -> int:
        """Bytes of an incomplete line held back."""
        return len(self._tail)

    @property
    def tail(self) -> bytes:
        """The incomplete line held back (a counting receiver continues from it)."""
        return self._tail


class Counter(Protocol):
    """A counting receiver's per-connection state (see :class:`NewlineCounter`)."""

    def feed(self, data: bytes) -> tuple[int, Sequence[bytes]]: ...


class NewlineCounter:
    """What a counting (non-timing) receiver does with a read: count its newlines.

    The line dialect needs nothing else; ``chatload.irc.IrcCounter`` also finds ``PING``s.
    """

    __slots__ = ()

    def feed(self, data: bytes) -> tuple[int, Sequence[bytes]]:
        """(lines completed by ``data``, replies to send back: never any)."""
        return data.count(b"\n"), ()
