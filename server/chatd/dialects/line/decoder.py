"""Line framing, sans-IO like h11: :class:`LineDecoder` stores what it is fed and hands out
one item at a time (a line, a :class:`DecodeError`, or :data:`~chatd.dialects.base.BLANK`).

A line that holds a character the one text policy forbids (:mod:`chatd.core.text`) is
refused whole, commands and nicknames included, and so is the CTCP delimiter ``\\x01``:
a line user cannot send a CTCP request to IRC users.
"""

from __future__ import annotations

import enum

from chatd.core.text import FORBIDDEN
from chatd.dialects.base import BLANK, _Blank

#: Longest accepted line, not counting the terminator (PROTOCOL.md, ``--max-line``).
DEFAULT_MAX_LINE = 4096


class DecodeError(enum.Enum):
    """A fault in the peer's bytes; the line is dropped and the peer gets an error."""

    #: The line exceeded the configured limit; it is discarded up to its end.
    TOO_LONG = "line too long"
    #: The line is not valid UTF-8.
    BAD_UTF8 = "line is not valid UTF-8"
    #: The line holds a control character that could act on a terminal.
    CONTROL_CHAR = "line contains a control character"


#: What :meth:`LineDecoder.next_item` yields: a line, an error, or :data:`BLANK`.
Item = str | DecodeError | _Blank


class LineDecoder:
    """Split a byte stream into lines, whatever the segmentation.

    The buffer never holds more than ``max_line + 1`` bytes of an unterminated line
    (the ``+ 1`` leaves room for the ``\\r`` of a ``\\r\\n`` that has not arrived
    yet): past that the line is reported as too long at once and the rest of it is
    skipped as it arrives, so a peer that never sends ``\\n`` costs a bounded amount
    of memory however much it sends. Empty lines come out as :data:`BLANK`, so flood
    control charges for them like for any other line.
    """

    __slots__ = ("_buf", "_pos", "_max", "_discarding")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        if max_line < 1:
            raise ValueError("max_line must be positive")
        self._buf = bytearray()
        self._pos = 0
        self._max = max_line
        self._discarding = False

    def feed(self, data: bytes) -> None:
        """Store bytes received from the peer; call :meth:`next_item` to use them."""
        self._buf += data

    def feed_eof(self) -> None:
        """The peer closed its side: an unterminated last line still counts, once."""
        if self.buffered and not self._discarding:
            self._buf += b"\n"
        elif self._discarding:
            self._buf.clear()
            self._pos = 0
            self._discarding = False

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as items."""
        return len(self._buf) - self._pos

    def next_item(self) -> Item | None:
        """Return the next line, error or :data:`BLANK`; ``None`` when a line is missing."""
        buf = self._buf
        while True:
            end = buf.find(b"\n", self._pos)
            if end < 0:
                return self._need_data()
            start = self._pos
            self._pos = end + 1
            if self._discarding:
                # The end of an overlong line whose error was already reported.
                self._discarding = False
                continue
            if end > start and buf[end - 1] == 13:  # strip one "\r" before "\n"
                end -= 1
            if end - start > self._max:
                return DecodeError.TOO_LONG
            raw = bytes(buf[start:end])
            if not raw or raw.isspace():
                return BLANK
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return DecodeError.BAD_UTF8
            if FORBIDDEN.search(line) or "\x01" in line:
                return DecodeError.CONTROL_CHAR
            return line

    def _need_data(self) -> DecodeError | None:
        """Compact the buffer; report an unterminated line that is already too long."""
        buf = self._buf
        if self._pos:
            del buf[: self._pos]
            self._pos = 0
        if self._discarding:
            buf.clear()
            return None
        if len(buf) > self._max + 1 or (len(buf) == self._max + 1 and buf[-1] != 13):
            buf.clear()
            self._discarding = True
            return DecodeError.TOO_LONG
        return None

    def items(self) -> list[str | DecodeError]:
        """Every complete item buffered now, blanks left out (for tests and tools)."""
        out: list[str | DecodeError] = []
        while (item := self.next_item()) is not None:
            if not isinstance(item, _Blank):
                out.append(item)
        return out
