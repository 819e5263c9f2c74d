"""WebSocket (RFC 6455) from a load client's side, sans-IO: ``--chat-transport ws``.

chatd's HTTP listener (``--http-port``) carries both dialects over WebSocket, one line per
message and no terminator, in both directions: the line dialect at ``/line`` (text
frames) and IRC at ``/`` (IRCv3's ``text.ircv3.net`` or ``binary.ircv3.net``
subprotocol). This module turns that back into what the dialects already speak -- lines
-- so ``chatload.line`` and ``chatload.irc`` parse WebSocket traffic unchanged:

* :class:`ClientHandshake` is the opening handshake, wsproto's (``H11Handshake`` as a
  client: the request, then the server's ``101`` checked, its accept token included). It
  hands back the bytes that followed the ``101`` in the same read: frames already.
* :class:`LineFramer` turns a dialect's output (whole lines, ``\\n``-terminated) into
  client frames, one message per line, each masked with a fresh random key (RFC 6455
  §5.3: a client masks every frame).
* :class:`ServerFrames` reads the server's frames (unmasked) and returns the payloads of
  its data messages, which are lines; it answers pings and the server's Close
  (:attr:`ServerFrames.replies`) and records the Close (:attr:`ServerFrames.close`).

Theory of operation: the receive path
-------------------------------------
Receivers parse many frames per second (a room of 1000 at 100 msg/s is 100,000 a
second), so the reader is a small hand-rolled loop over the buffer, not wsproto's
``Connection``: its per-frame work is a few index operations and one slice, and a whole
unfragmented data frame (``FIN`` + text or binary, what chatd always sends) never leaves
the fast path. wsproto's ``Connection.receive_data`` + ``events()`` builds a frame object,
an event object and a decoded ``str`` per message (measured by ``python -m bench.websocket
--parse-only``; the figures are in the report). Everything rarer -- fragments, control
frames, errors -- takes :meth:`ServerFrames._slow`. A counting receiver does not even
slice: :meth:`ServerFrames.count` walks the headers and counts.

What the reader does not do, on purpose: text messages are not checked for UTF-8 (the
dialects decode with replacement, and a load generator would pay for the check on every
frame), and no extension is offered, so a frame with an RSV bit set is an error.

Errors split by fault, as in the dialects: a server that breaks the protocol raises
:class:`WebSocketError` (the client reports it and closes); misusing this API (framing a
partial line) is our bug and raises ``ValueError``.

wsproto and the standard library only: the Locust user and bench's lean driver both use it.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wsproto import ConnectionType
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

#: Opcodes (RFC 6455 §5.2).
CONTINUATION = 0x0
TEXT = 0x1
BINARY = 0x2
CLOSE = 0x8
PING = 0x9
PONG = 0xA

#: chatd's WebSocket endpoints per dialect (``--host`` may name another path).
PATHS = {"line": "/line", "irc": "/"}
#: The subprotocols offered per dialect, in order of preference (the server takes the
#: first it knows). IRC: text frames first, as browser IRC clients ask; chatd's reply says
#: which one it took, and the client's frames follow it.
SUBPROTOCOLS: dict[str, tuple[str, ...]] = {
    "line": (),
    "irc": ("text.ircv3.net", "binary.ircv3.net"),
}
#: The frames each IRCv3 subprotocol carries (no subprotocol: text).
SUBPROTOCOL_OPCODES = {"text.ircv3.net": TEXT, "binary.ircv3.net": BINARY}

#: Longest response head (status line and headers) accepted: a real server's ``101`` is
#: a few hundred bytes; more means we are not talking to a WebSocket server.
MAX_HEAD = 16 * 1024
#: Largest message accepted, and so the most a half-received frame can make us hold: the
#: same bound as ``chatload.MAX_PARTIAL_LINE`` (a server line is at most ``--max-line``
#: plus a nick).
MAX_MESSAGE = 64 * 1024
#: Fragments one message may arrive in (chatd never fragments; a server that sends more
#: is not finishing its message).
MAX_FRAGMENTS = 64
#: A control frame's payload limit (RFC 6455 §5.5).
MAX_CONTROL = 125
#: Close codes (RFC 6455 §7.4.1) this client sends.
NORMAL = 1000
PROTOCOL_ERROR = 1002

#: First header byte of a whole text or binary message (FIN set, no RSV bits).
_WHOLE = frozenset({0x80 | TEXT, 0x80 | BINARY})


class WebSocketError(Exception):
    """The server broke the WebSocket protocol (a peer fault)."""


class HandshakeRefused(WebSocketError):
    """The server answered the upgrade with something other than a valid ``101``."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        #: The HTTP status, when the server sent one (403: an Origin it does not allow).
        self.status = status


# --------------------------------------------------------------------------- handshake


def host_header(address: str, port: int, secure: bool = False) -> str:
    """The ``Host`` header for ``address:port``: the port is left out when it is the
    scheme's default, an IPv6 address goes in brackets."""
    host = f"[{address}]" if ":" in address else address
    return host if port == (443 if secure else 80) else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class Accepted:
    """The server switched protocols: chat frames follow."""

    #: The subprotocol the server chose (None: none).
    subprotocol: str | None
    #: Bytes that arrived after the ``101`` in the same reads: frames, for the reader.
    trailing: bytes

    @property
    def opcode(self) -> int:
        """The frames our messages go in: binary for ``binary.ircv3.net``, else text."""
        return SUBPROTOCOL_OPCODES.get(self.subprotocol or "", TEXT)


class ClientHandshake:
    """The opening handshake (RFC 6455 §4.1) as a client: :attr:`request`, then
    :meth:`receive_data` until it returns :class:`Accepted`.

    wsproto writes the request (a fresh ``Sec-WebSocket-Key``) and checks the response:
    the ``101``, ``Upgrade``, ``Connection`` and the accept token, and that a chosen
    subprotocol is one we offered. No ``Origin`` is sent unless given: a load generator is
    no browser, and chatd lets a request without one in.
    """

    __slots__ = ("request", "_handshake", "_head")

    def __init__(
        self,
        host: str,
        path: str = "/",
        subprotocols: Sequence[str] = (),
        origin: str | None = None,
    ) -> None:
        self._handshake = H11Handshake(ConnectionType.CLIENT)
        headers = [(b"Origin", origin.encode("ascii"))] if origin else []
        #: What to send first.
        self.request: bytes = self._handshake.send(
            Request(host=host, target=path, subprotocols=list(subprotocols), extra_headers=headers)
        )
        self._head = b""

    def receive_data(self, data: bytes) -> Accepted | None:
        """Feed the server's bytes: None until its response head is complete, then
        :class:`Accepted`; raises :class:`HandshakeRefused` for any other answer, or
        :class:`WebSocketError` for a head over :data:`MAX_HEAD` or an empty read (EOF)."""
        if not data:
            raise WebSocketError("the server closed the connection during the handshake")
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                raise WebSocketError(f"response head over {MAX_HEAD} bytes")
            return None
        head, trailing = self._head[: end + 4], self._head[end + 4 :]
        try:
            # Only the head: h11 would keep what follows a 101 to itself.
            self._handshake.receive_data(head)
            events = list(self._handshake.events())
        except RemoteProtocolError as exc:
            raise HandshakeRefused(f"bad handshake response: {exc}") from None
        for event in events:
            if isinstance(event, AcceptConnection):
                return Accepted(event.subprotocol, trailing)
            if isinstance(event, RejectConnection):
                status = event.status_code
                text = trailing.decode("utf-8", "replace").strip()[:200]
                raise HandshakeRefused(f"HTTP {status} {text}".rstrip(), status)
        raise HandshakeRefused(f"no WebSocket upgrade in {head[:120]!r}")


# --------------------------------------------------------------------------- client frames


def mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``key`` repeated (one big-integer XOR, in C)."""
    size = len(payload)
    if not size:
        return payload
    repeated = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        size, "little"
    )


def client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One whole, masked client frame; ``key`` (4 bytes) defaults to a fresh random one."""
    if key is None:
        key = os.urandom(4)
    elif len(key) != 4:
        raise ValueError("a masking key is 4 bytes")
    size = len(payload)
    first = 0x80 | opcode
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + key + mask(payload, key)


def close_frame(code: int = NORMAL, reason: str = "", key: bytes | None = None) -> bytes:
    """A client Close frame with ``code`` and a reason cut to fit a control frame."""
    text = reason.encode()[: MAX_CONTROL - 2].decode("utf-8", "ignore").encode()
    return client_frame(CLOSE, struct.pack("!H", code) + text, key)


class LineFramer:
    """A dialect's output (whole lines) as client frames: one message per line, no
    terminator (``\\r\\n`` or ``\\n`` dropped), each frame masked with its own key."""

    __slots__ = ("opcode",)

    def __init__(self, opcode: int = TEXT) -> None:
        if opcode not in (TEXT, BINARY):
            raise ValueError(f"messages are text or binary frames, not opcode {opcode}")
        self.opcode = opcode

    def frames(self, data: bytes) -> bytes:
        """The frames of every line in ``data``; ``ValueError`` for a partial last line
        (the dialects write whole lines: a partial one would be our bug)."""
        lines = data.split(b"\n")
        if lines.pop():
            raise ValueError(f"not whole lines: {data[-60:]!r}")
        opcode = self.opcode
        return b"".join(
            client_frame(opcode, line[:-1] if line.endswith(b"\r") else line) for line in lines
        )


# --------------------------------------------------------------------------- server frames


class ServerFrames:
    """The server's frames, sans-IO: :meth:`feed` bytes, get the lines they completed.

    A line is the payload of one data message (text or binary, whole or reassembled
    from fragments). Control frames are handled here: a ping's pong and the answer to the
    server's Close are queued in :attr:`replies` (already framed: the caller writes them
    as they are, then clears the list); the server's Close is kept in :attr:`close`, and
    nothing after it is read. :meth:`count` is the counting receivers' cheaper walk.
    """

    __slots__ = ("replies", "close", "messages", "max_message", "_buf", "_message", "_opcode",
                 "_fragments")  # fmt: skip

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        #: Frames to write back (pongs, the Close answer), in order.
        self.replies: list[bytes] = []
        #: The server's Close once received: (status code, reason); 1005 when it had none.
        self.close: tuple[int, str] | None = None
        #: Data messages completed so far (both paths).
        self.messages = 0
        self.max_message = max_message
        #: Bytes of a frame not complete yet.
        self._buf = b""
        #: The fragments of a message so far (None: no fragmented message in progress).
        self._message: bytearray | None = None
        self._opcode = 0
        self._fragments = 0

    @property
    def pending(self) -> int:
        """Bytes held back: a partial frame and a partial fragmented message."""
        return len(self._buf) + (len(self._message) if self._message is not None else 0)

    def take_replies(self) -> bytes:
        """The queued replies as one write (and the queue emptied)."""
        out = b"".join(self.replies)
        self.replies.clear()
        return out

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data``; return the payload of every data message it completed, in order."""
        out: list[bytes] = []
        self._walk(data, out, None)
        return out

    def count(self, data: bytes, needle: bytes | None = None) -> tuple[int, list[bytes]]:
        """Add ``data``; return (data messages it completed, those whose payload holds
        ``needle``). The payloads are not copied out unless they match, so a counting
        receiver pays a header walk per frame; with ``needle`` (IRC: ``b"PING"``) the match
        is only looked for when the needle occurs in this read or in a partial frame."""
        before = self.messages
        matched: list[bytes] = []
        if (
            needle is not None
            and self._message is None
            and needle not in data
            and needle not in self._buf + data[: len(needle)]
        ):
            needle = None
        self._walk(data, None, needle, matched)
        return self.messages - before, matched

    def _walk(
        self,
        data: bytes,
        out: list[bytes] | None,
        needle: bytes | None,
        matched: list[bytes] | None = None,
    ) -> None:
        """The loop over whole frames in the buffer (see the module's theory)."""
        if self.close is not None:
            return  # nothing is read after the server's Close
        buf = self._buf + data if self._buf else data
        end = len(buf)
        pos = 0
        done = 0
        whole = _WHOLE
        limit = self.max_message
        fragmenting = self._message is not None
        while end - pos >= 2:
            first = buf[pos]
            size = buf[pos + 1]
            at = pos + 2
            if size >= 126:
                if size & 0x80:
                    raise WebSocketError("a server frame is masked")
                if size == 126:
                    if end - pos < 4:
                        break
                    size = (buf[pos + 2] << 8) | buf[pos + 3]
                    at = pos + 4
                else:
                    if end - pos < 10:
                        break
                    (size,) = struct.unpack_from("!Q", buf, pos + 2)
                    at = pos + 10
                if size > limit:
                    raise WebSocketError(f"a frame of {size} bytes (limit {limit})")
            stop = at + size
            if stop > end:
                break
            if first in whole and not fragmenting:
                done += 1
                if out is not None:
                    out.append(buf[at:stop])
                elif needle is not None and buf.find(needle, at, stop) >= 0:
                    assert matched is not None
                    matched.append(buf[at:stop])
            else:
                line = self._slow(first, buf[at:stop])
                fragmenting = self._message is not None
                if line is not None:
                    done += 1
                    if out is not None:
                        out.append(line)
                    elif needle is not None and needle in line:
                        assert matched is not None
                        matched.append(line)
                if self.close is not None:
                    pos = end  # nothing after a Close is read
                    break
            pos = stop
        self.messages += done
        self._buf = buf[pos:] if pos < end else b""

    def _slow(self, first: int, payload: bytes) -> bytes | None:
        """Everything but a whole data frame: fragments, control frames, errors. Returns
        the line a final fragment completed, else None."""
        if first & 0x70:
            raise WebSocketError("reserved bits set (no extension was negotiated)")
        opcode = first & 0x0F
        fin = bool(first & 0x80)
        if opcode >= CLOSE:
            if not fin or len(payload) > MAX_CONTROL:
                raise WebSocketError("a fragmented or oversized control frame")
            if opcode == PING:
                self.replies.append(client_frame(PONG, payload))
            elif opcode == CLOSE:
                self._closed(payload)
            elif opcode != PONG:
                raise WebSocketError(f"unknown opcode {opcode}")
            return None
        if opcode not in (CONTINUATION, TEXT, BINARY):
            raise WebSocketError(f"unknown opcode {opcode}")
        if opcode == CONTINUATION:
            if self._message is None:
                raise WebSocketError("a continuation frame without a message")
        elif self._message is not None:
            raise WebSocketError("a new message inside a fragmented one")
        else:
            self._message = bytearray()
            self._opcode = opcode
            self._fragments = 0
        self._fragments += 1
        if self._fragments > MAX_FRAGMENTS:
            raise WebSocketError(f"a message in more than {MAX_FRAGMENTS} fragments")
        if len(self._message) + len(payload) > self.max_message:
            raise WebSocketError(f"a message over {self.max_message} bytes")
        self._message += payload
        if not fin:
            return None
        line = bytes(self._message)
        self._message = None
        return line

    def _closed(self, payload: bytes) -> None:
        """The server's Close: remember it and answer it (RFC 6455 §5.5.1)."""
        if len(payload) == 1:
            raise WebSocketError("a Close frame with a one-byte body")
        if len(payload) >= 2:
            (code,) = struct.unpack_from("!H", payload)
            reason = payload[2:].decode("utf-8", "replace")
        else:
            code, reason = 1005, ""  # "no status code was actually present"
        self.close = (code, reason)
        self.replies.append(close_frame(code if 1000 <= code < 5000 and code != 1005 else NORMAL))
        self._buf = b""


class MessageCounter:
    """A counting receiver's read handler over WebSocket (``chatload.Counter``): the data
    messages of each read, counted with :meth:`ServerFrames.count`, and the replies the
    dialect owes for them: every message holding ``needle`` (IRC: ``b"PING"``; None: the
    dialect has no keep-alive) goes to ``answer``, whose non-None results (``PONG`` lines)
    are returned. WebSocket's own replies stay in the reader's :attr:`ServerFrames.replies`.
    """

    __slots__ = ("frames", "needle", "answer")

    def __init__(
        self,
        frames: ServerFrames,
        needle: bytes | None = None,
        answer: Callable[[bytes], bytes | None] | None = None,
    ) -> None:
        self.frames = frames
        self.needle = needle if answer is not None else None
        self.answer = answer

    def feed(self, data: bytes) -> tuple[int, list[bytes]]:
        """(messages completed by ``data``, dialect lines to send back)."""
        count, matched = self.frames.count(data, self.needle)
        if not matched or self.answer is None:
            return count, []
        replies = [reply for line in matched if (reply := self.answer(line)) is not None]
        return count, replies


def frames_starting(data: bytes, prefix: bytes, mark: int) -> list[bytes]:
    """Payloads of the whole, short server frames in ``data`` whose payload starts with
    ``prefix`` (IRC ``PING``s over WebSocket), found without parsing the chunk: a chunk
    of lazily read bytes may start anywhere in a frame, so each occurrence of ``prefix``
    counts when the two bytes before it are a frame header (``mark``, then a length
    under 126) and the frame ends inside ``data``. A frame split across two reads is
    missed, as a split line is over TCP (bench's driver answers ``PING``s this way)."""
    out = []
    at = data.find(prefix)
    while at >= 0:
        if at >= 2 and data[at - 2] == mark and data[at - 1] < 126:
            end = at + data[at - 1]
            if end <= len(data):
                out.append(data[at:end])
        at = data.find(prefix, at + 1)
    return out
