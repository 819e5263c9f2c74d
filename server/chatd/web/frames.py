"""WebSocket frames (RFC 6455 §5) after the handshake: the server's, and the client's.

The handshake is wsproto's (:mod:`chatd.web.http`); the frames that follow are read and
written here, for two reasons measured on this project's machine (the bench report
``bench/reports/2026-12-07-websocket`` has the harness):

* **Memory.** An idle connection must stay small (the goal is 4 KB of RSS for a whole
  idle WebSocket connection, session included). wsproto's post-handshake ``Connection``
  keeps a frame protocol, a decoder, a buffer and their dictionaries per connection,
  about as much again as the rest of an idle chat connection. :class:`FrameReader`
  holds three small fields and no buffer while no frame is half received.
* **Encode-once.** A broadcast is framed once for all its WebSocket recipients
  (:class:`Framer`), not through each recipient's protocol object.

The subset is what a chat needs and nothing more: no extensions (none is offered, so
RSV bits are an error), text and binary messages, fragmentation, ping, pong and close.
Limits follow the line limits (:class:`FrameReader`'s ``max_message``) and bound the
fragments of one message, so that neither a huge nor an endless message costs memory.
"""

from __future__ import annotations

import enum
import struct

#: Opcodes (RFC 6455 §5.2).
CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

#: Fragments one message may arrive in (more is a client that never finishes).
MAX_FRAGMENTS = 64
#: A control frame's payload limit (RFC 6455 §5.5).
MAX_CONTROL = 125
#: Recent broadcasts a :class:`Framer` remembers (encoders that alternate in one room).
FRAMED_KEPT = 4


class CloseCode(enum.IntEnum):
    """Status codes of a Close frame (RFC 6455 §7.4.1)."""

    #: A normal closure.
    NORMAL = 1000
    #: The endpoint is going away (RFC 6455: a server going down, a browser leaving).
    GOING_AWAY = 1001
    #: A frame broke the protocol.
    PROTOCOL_ERROR = 1002
    #: A text message was not UTF-8.
    INVALID_DATA = 1007
    #: A policy was broken (a limit, a flood).
    POLICY = 1008
    #: A message was too big.
    TOO_BIG = 1009
    #: The service is restarting: reconnect, after a randomized delay (registered with
    #: IANA, from the HyBi list's "Additional WebSocket Close Error Codes"). What a
    #: shutdown sends: see ``chatd.web.http.CLOSE_CODES``.
    SERVICE_RESTART = 1012


class FrameError(Exception):
    """The client broke the protocol; the connection closes with ``code``."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def header(opcode: int, size: int) -> bytes:
    """A server frame's header (FIN set, unmasked) for a payload of ``size`` bytes."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def frame(opcode: int, payload: bytes) -> bytes:
    """One whole server frame."""
    return header(opcode, len(payload)) + payload


def close_frame(code: CloseCode, reason: str = "") -> bytes:
    """A Close frame with ``code`` and a reason cut to fit a control frame."""
    text = reason.encode()[: MAX_CONTROL - 2].decode("utf-8", "ignore").encode()
    return frame(CLOSE, struct.pack("!H", code) + text)


class Framer:
    """Turns a dialect's output (whole lines) into frames: one message per line.

    One framer per opcode is shared by every connection, and it remembers the last
    few bytes objects it framed (:data:`FRAMED_KEPT`): the router writes a broadcast as
    the **same** ``bytes`` object to every recipient of one encoder, so the broadcast is
    framed once and every WebSocket recipient gets the same frame bytes, even when
    members of two encoders (two IRC capability sets) alternate in the room. Holding a
    reference to what it remembers, identity cannot be fooled by a reused address.
    """

    __slots__ = ("opcode", "recent")

    def __init__(self, opcode: int) -> None:
        self.opcode = opcode
        #: (input, frames), most recent last.
        self.recent: list[tuple[bytes, bytes]] = []

    def frames(self, data: bytes) -> bytes:
        for seen, framed in self.recent:
            if seen is data:
                return framed
        out = []
        text = self.opcode == TEXT
        for line in data.split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue  # the piece after the last terminator
            if text:
                try:
                    line.decode()
                except UnicodeDecodeError:  # text frames must be UTF-8 (RFC 6455 §5.6)
                    line = line.decode("utf-8", "replace").encode()
            out.append(header(self.opcode, len(line)))
            out.append(line)
        framed = b"".join(out)
        recent = self.recent
        if len(recent) >= FRAMED_KEPT:
            del recent[0]
        recent.append((data, framed))
        return framed


#: What :meth:`FrameReader.next_frame` yields: (opcode, payload, final fragment).
Frame = tuple[int, bytes, bool]


class FrameReader:
    """Reads client frames from bytes (sans-IO: :meth:`feed`, then :meth:`next_message`).

    Yields whole messages (``(TEXT|BINARY, payload)``) and control frames
    (``(PING|PONG|CLOSE, payload)``); raises :class:`FrameError` for a protocol breach
    or a message over ``max_message`` bytes or :data:`MAX_FRAGMENTS` fragments. A
    message's fragments are joined as they arrive, bounded by those limits.
    """

    __slots__ = ("buf", "message", "opcode", "fragments", "max_message")

    def __init__(self, max_message: int) -> None:
        self.buf: bytearray | None = None
        #: The fragments of a message so far (None: no message in progress).
        self.message: bytearray | None = None
        self.opcode = 0
        self.fragments = 0
        self.max_message = max_message

    @property
    def buffered(self) -> int:
        return (len(self.buf) if self.buf else 0) + (len(self.message) if self.message else 0)

    def feed(self, data: bytes) -> None:
        if self.buf is None:
            self.buf = bytearray(data)
        else:
            self.buf += data

    def next_message(self) -> tuple[int, bytes] | None:
        """The next message or control frame, or None until more bytes arrive."""
        while True:
            got = self._next_frame()
            if got is None:
                return None
            opcode, payload, fin = got
            if opcode >= CLOSE:
                return opcode, payload
            if opcode == CONTINUATION:
                if self.message is None:
                    raise FrameError(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            elif self.message is not None:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "a new message inside a message")
            else:
                if fin:
                    self._check_size(len(payload))
                    return opcode, payload
                self.opcode = opcode
                self.message = bytearray()
                self.fragments = 0
            self.fragments += 1
            if self.fragments > MAX_FRAGMENTS:
                raise FrameError(CloseCode.POLICY, "too many fragments in one message")
            self._check_size(len(self.message) + len(payload))
            self.message += payload
            if fin:
                whole = bytes(self.message)
                self.message = None
                return self.opcode, whole

    def _check_size(self, size: int) -> None:
        if size > self.max_message:
            raise FrameError(CloseCode.TOO_BIG, f"message over {self.max_message} bytes")

    def _next_frame(self) -> Frame | None:
        buf = self.buf
        if not buf or len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        if first & 0x70:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "reserved bits set (no extension)")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if opcode not in (CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG):
            raise FrameError(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode}")
        if not second & 0x80:
            raise FrameError(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        size = second & 0x7F
        at = 2
        if size == 126:
            if len(buf) < 4:
                return None
            (size,) = struct.unpack_from("!H", buf, 2)
            at = 4
        elif size == 127:
            if len(buf) < 10:
                return None
            (size,) = struct.unpack_from("!Q", buf, 2)
            at = 10
        if opcode >= CLOSE:
            if not fin or size > MAX_CONTROL:
                raise FrameError(CloseCode.PROTOCOL_ERROR, "bad control frame")
        else:
            # Refuse before buffering it: a frame over the message limit never fits.
            current = len(self.message) if self.message is not None else 0
            self._check_size(current + size)
        end = at + 4 + size
        if len(buf) < end:
            return None
        mask = bytes(buf[at : at + 4])
        payload = unmask(bytes(buf[at + 4 : end]), mask)
        if end == len(buf):
            self.buf = None  # idle connections keep no buffer
        else:
            del buf[:end]
        return opcode, payload, fin


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (one big-integer XOR)."""
    size = len(payload)
    if not size:
        return payload
    key = (mask * (size // 4 + 1))[:size]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(size, "little")
