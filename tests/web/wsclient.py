"""A blocking WebSocket client for the tests: wsproto's client side over a plain socket.

wsproto does the handshake and parses the server's frames (strictly: a server frame that
breaks RFC 6455, a text message that is not UTF-8, shows up as the client's own Close
1002/1007, which the tests then see as a wrong close code). The client's frames are
wsproto's too, except what a well-behaved client never sends, which :func:`client_frame`
builds by hand (bad UTF-8 in a text frame, reserved bits, unmasked frames, a length that
lies). Every read waits with a deadline and fails with ``TimeoutError``, never a sleep.

Also here: :func:`http_port` (the port of ``--http-port`` / ``--https-port`` of a
:class:`chatwire.Server`) and :func:`http_request` / :func:`read_response`, a small
HTTP/1.1 client that reads what the server answers byte for byte, so a test can send
a request no library would (a slow one, a huge one, garbage).
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from chatwire import TIMEOUT, LineReading, Server, open_socket, stderr_problems

#: The IRCv3 WebSocket subprotocols.
BINARY_IRC = "binary.ircv3.net"
TEXT_IRC = "text.ircv3.net"

#: Opcodes of RFC 6455 §5.2, for frames built by hand.
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: The mask of the frames built by hand (any value will do; not zero, so masking shows).
MASK = b"\x5a\xc3\x0f\x91"


# --------------------------------------------------------------------------- the ports


def http_port(server: Server, tls: bool = False) -> int:
    """The port of ``server``'s HTTP listener (``tls``: of ``--https-port``), read from
    its ``listening on`` line when it started (:data:`chatwire.LISTENER_OPTIONS`)."""
    return server.ports["http tls" if tls else "http"]


def stderr_size(server: Server) -> int:
    """How much the server has written to stderr so far (see :func:`problems_since`)."""
    try:
        return server.stderr_path.stat().st_size
    except FileNotFoundError:
        return 0


def problems_since(server: Server, offset: int) -> list[str]:
    """What a server shared by several tests wrote since ``offset`` that fails a test (a
    traceback, an ERROR record: :func:`chatwire.stderr_problems`), and whether it died."""
    with open(server.stderr_path, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    problems = stderr_problems(text, server.allow)
    if server.proc.poll() is not None:
        problems.append(f"the server exited with status {server.proc.returncode}")
    return problems


# --------------------------------------------------------------------------- HTTP


@dataclass
class Response:
    """An HTTP response as read off the socket."""

    status: int
    reason: str
    #: Header names in lower case; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    #: Bytes read after this response (a second response, or nothing).
    rest: bytes = b""
    #: The server closed the connection after it (known only when asked to wait for it).
    closed: bool = False
    raw: bytes = field(default=b"", repr=False)


def recv_some(sock: socket.socket, deadline: float) -> bytes:
    """One ``recv`` with what is left of the deadline: b"" at EOF (a reset counts as EOF);
    TimeoutError when nothing came in time."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("nothing from the server within the deadline")
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""
    except TimeoutError as exc:
        raise TimeoutError("nothing from the server within the deadline") from exc


def read_response(
    sock: socket.socket,
    *,
    head: bool = False,
    buf: bytes = b"",
    wait_close: bool = False,
    timeout: float = TIMEOUT,
) -> Response:
    """Read one response (``head``: to a HEAD request, so no body whatever the
    Content-Length); ``wait_close``: then read on until the server closes (TimeoutError
    if it does not)."""
    deadline = time.monotonic() + timeout
    closed = False
    while b"\r\n\r\n" not in buf:
        chunk = recv_some(sock, deadline)
        if not chunk:
            raise EOFError(f"the server closed before a whole response head: {buf[:300]!r}")
        buf += chunk
    head_bytes, _, rest = buf.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    version, status, *reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = recv_some(sock, deadline)
        if not chunk:
            raise EOFError(f"the server closed inside a body: {rest[:300]!r}")
        rest += chunk
    body, rest = rest[:length], rest[length:]
    if wait_close:
        while True:
            chunk = recv_some(sock, deadline)
            if not chunk:
                closed = True
                break
            rest += chunk
    return Response(
        int(status),
        reason[0] if reason else "",
        headers,
        body,
        rest=rest,
        closed=closed,
        raw=head_bytes,
    )


def request_bytes(
    method: str = "GET",
    path: str = "/",
    *,
    host: str | None,
    headers: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A request head (``host`` None: no Host header)."""
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http_request(
    port: int,
    method: str = "GET",
    path: str = "/",
    *,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    tls: ssl.SSLContext | None = None,
    wait_close: bool = False,
    timeout: float = TIMEOUT,
) -> Response:
    """One request on a new connection, and its response."""
    sock = open_socket("127.0.0.1", port, timeout, tls)
    try:
        sock.sendall(request_bytes(method, path, host=f"127.0.0.1:{port}", headers=headers) + body)
        return read_response(sock, head=method == "HEAD", wait_close=wait_close, timeout=timeout)
    finally:
        sock.close()


def wait_closed(sock: socket.socket, timeout: float = TIMEOUT) -> bytes:
    """Everything the server sends until it closes (TimeoutError if it does not)."""
    deadline = time.monotonic() + timeout
    data = b""
    while chunk := recv_some(sock, deadline):
        data += chunk
    return data


# --------------------------------------------------------------------------- frames by hand


def client_frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """A client frame as a well-behaved client would never send it, if asked: ``rsv``
    (the three reserved bits, 0..7), ``mask`` None (unmasked), ``length`` (the length
    the header claims, whatever the payload)."""
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode
    size = len(payload) if length is None else length
    masked = 0x80 if mask is not None else 0
    if size < 126:
        head = bytes((first, masked | size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, masked | 126, size)
    else:
        head = struct.pack("!BBQ", first, masked | 127, size)
    if mask is None:
        return head + payload
    masked_payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked_payload


def server_frames(data: bytes) -> list[tuple[int, bool, bytes]]:
    """The server's (unmasked) frames in ``data``: (opcode, fin, payload) each; the bytes
    must end on a frame's end."""
    out = []
    at = 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert not second & 0x80, "a server frame is never masked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,), at = struct.unpack_from("!H", data, at), at + 2
        elif size == 127:
            (size,), at = struct.unpack_from("!Q", data, at), at + 8
        assert at + size <= len(data), "a frame cut short"
        out.append((first & 0x0F, bool(first & 0x80), data[at : at + size]))
        at += size
    return out


# --------------------------------------------------------------------------- the client


class Refused(Exception):
    """The server answered the upgrade with an HTTP error."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {body[:200]!r}")
        self.status = status
        self.headers = {name.decode().lower(): value.decode() for name, value in headers}
        self.body = body


class WsClient(LineReading):
    """A WebSocket chat client with deadlines.

    ``path``: ``/line`` (the line dialect) or ``/`` and ``/irc`` (IRC, with
    ``subprotocols``). Messages are kept whole (their fragments joined) with their kind;
    pings from the server are answered, pongs are kept in :attr:`pongs`, the server's
    Close is kept in :attr:`close_event` (and answered, as a client should). ``irc``:
    answer IRC ``PING`` lines in :meth:`read_line` (default: not ``/line``).
    """

    def __init__(
        self,
        port: int,
        path: str = "/line",
        *,
        subprotocols: Iterable[str] = (),
        origin: str | None = None,
        host_header: str | None = None,
        headers: Iterable[tuple[bytes, bytes]] = (),
        tls: ssl.SSLContext | None = None,
        timeout: float = TIMEOUT,
        irc: bool | None = None,
    ) -> None:
        self.timeout = timeout
        self.irc = path != "/line" if irc is None else irc
        self.sock = open_socket("127.0.0.1", port, timeout, tls)
        self.ws = WSConnection(ConnectionType.CLIENT)
        extra = list(headers)
        if origin is not None:
            extra.append((b"Origin", origin.encode()))
        #: Whole messages received and not yet read: (kind, data), kind "text" or "binary".
        self.messages: deque[tuple[str, str | bytes]] = deque()
        #: The kind of every message received so far, read or not.
        self.kinds_seen: list[str] = []
        self._partial: list[str | bytes] = []
        self._partial_kind = ""
        #: Payloads of the pongs received, oldest first.
        self.pongs: deque[bytes] = deque()
        #: Pings the server sent (each was answered).
        self.pings = 0
        #: The server's Close (None until one came).
        self.close_event: CloseConnection | None = None
        #: The server closed the TCP connection.
        self.eof = False
        #: A frame of the server that wsproto refused (a server bug), if any.
        self.bad_frame: str | None = None
        self._sent_close: CloseConnection | None = None
        self._accepted: AcceptConnection | None = None
        self._refused: RejectConnection | None = None
        self._refused_body = b""
        self._refused_done = False
        try:
            self.sock.sendall(
                self.ws.send(
                    Request(
                        host=host_header or f"127.0.0.1:{port}",
                        target=path,
                        subprotocols=list(subprotocols),
                        extra_headers=extra,
                    )
                )
            )
            deadline = time.monotonic() + timeout
            while self._accepted is None and not self._refused_done:
                self._pump(deadline)
                if self.eof and self._accepted is None and not self._refused_done:
                    raise EOFError("the server closed during the handshake")
        except BaseException:
            self.sock.close()
            raise
        if self._refused is not None:
            self.sock.close()
            raise Refused(self._refused.status_code, self._refused.headers, self._refused_body)
        assert self._accepted is not None
        #: The subprotocol the server chose (None: none).
        self.subprotocol: str | None = self._accepted.subprotocol
        #: The 101's headers besides the handshake's own.
        self.accept_headers = {
            name.decode().lower(): value.decode() for name, value in self._accepted.extra_headers
        }

    # ------------------------------------------------------------------ reading

    def _pump(self, deadline: float) -> None:
        """One read (until ``deadline``) and the events it made."""
        chunk = recv_some(self.sock, deadline)
        if not chunk:
            self.eof = True  # with or without a Close before it (close_event says)
            return
        if self.ws.state in (ConnectionState.CLOSED, ConnectionState.REMOTE_CLOSING):
            return  # after the server's Close: nothing more is read (RFC 6455 §5.5.1)
        self.ws.receive_data(chunk)
        for event in self.ws.events():
            self._on_event(event)

    def _on_event(self, event: object) -> None:
        if isinstance(event, AcceptConnection):
            self._accepted = event
        elif isinstance(event, RejectConnection):
            self._refused = event
            self._refused_done = not event.has_body
        elif isinstance(event, RejectData):
            self._refused_body += event.data
            self._refused_done = event.body_finished
        elif isinstance(event, TextMessage | BytesMessage):
            kind = "text" if isinstance(event, TextMessage) else "binary"
            if self._partial and kind != self._partial_kind:
                raise AssertionError("a message's fragments changed kind")
            self._partial_kind = kind
            piece = event.data
            self._partial.append(piece if isinstance(piece, str) else bytes(piece))
            if event.message_finished:
                data: str | bytes = (
                    "".join(p for p in self._partial if isinstance(p, str))
                    if kind == "text"
                    else b"".join(p for p in self._partial if isinstance(p, bytes))
                )
                self._partial = []
                self.messages.append((kind, data))
                self.kinds_seen.append(kind)
        elif isinstance(event, Ping):
            self.pings += 1
            self._send(self.ws.send(event.response()))
        elif isinstance(event, Pong):
            self.pongs.append(bytes(event.payload))
        elif isinstance(event, CloseConnection):
            state = self.ws.state
            if state is ConnectionState.REMOTE_CLOSING:  # the server's, answered
                self.close_event = event
                self._send(self.ws.send(event.response()))
            elif state is ConnectionState.CLOSED and self._sent_close is not None:
                self.close_event = event  # the server's answer to ours
            else:  # wsproto refused the server's frames and closes on its own
                self.bad_frame = f"{event.code} {event.reason}"
                raise AssertionError(f"the server sent a bad frame: {self.bad_frame}")

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server is gone already; what it said before is still read

    def next_message(self, timeout: float | None = None) -> tuple[str, str | bytes]:
        """The next whole message (kind, data); EOFError once the server closed."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.messages:
            if self.close_event is not None or self.eof:
                raise EOFError(f"the server closed ({self.close_description()})")
            self._pump(deadline)
        return self.messages.popleft()

    def read_line(self, timeout: float | None = None) -> str:
        """The next message as a line (binary decoded as UTF-8); IRC ``PING`` answered."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            kind, data = self.next_message(max(0.0, deadline - time.monotonic()))
            line = data if isinstance(data, str) else data.decode()
            assert not line.endswith("\n"), f"a message holds its line without CR LF: {line!r}"
            if self.irc and line.startswith("PING "):
                self.send_line("PONG " + line[5:])
                continue
            return line

    def wait_pong(self, timeout: float | None = None) -> bytes:
        """The payload of the next pong (messages that come first are kept)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.pongs:
            if self.close_event is not None or self.eof:
                raise EOFError(f"the server closed ({self.close_description()})")
            self._pump(deadline)
        return self.pongs.popleft()

    def wait_close(self, timeout: float | None = None) -> CloseConnection:
        """Read (keeping messages) until the server's Close and then its EOF; the Close.

        AssertionError when the server closed the TCP connection without a Close."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.eof:
            self._pump(deadline)
        if self.close_event is None:
            raise AssertionError("the server closed the connection without a Close frame")
        return self.close_event

    def lines_until_close(self, timeout: float | None = None) -> tuple[list[str], CloseConnection]:
        """Every line the server sent before its Close, and the Close."""
        close = self.wait_close(timeout)
        lines = []
        for _, data in self.messages:
            lines.append(data if isinstance(data, str) else data.decode())
        self.messages.clear()
        return lines, close

    def close_description(self) -> str:
        if self.close_event is not None:
            return f"Close {self.close_event.code} {self.close_event.reason!r}"
        return "EOF without a Close" if self.eof else "still open"

    # ------------------------------------------------------------------ writing

    @property
    def binary(self) -> bool:
        return self.subprotocol == BINARY_IRC

    def send_line(self, line: str) -> None:
        """One line as one message, binary or text as the subprotocol says."""
        if self.binary:
            self.send_bytes(line.encode())
        else:
            self.send_text(line)

    def send_text(self, text: str, *, finished: bool = True) -> None:
        self.sock.sendall(self.ws.send(TextMessage(data=text, message_finished=finished)))

    def send_bytes(self, data: bytes, *, finished: bool = True) -> None:
        self.sock.sendall(self.ws.send(BytesMessage(data=data, message_finished=finished)))

    def ping(self, payload: bytes = b"") -> None:
        self.sock.sendall(self.ws.send(Ping(payload=payload)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self, code: int = 1000, reason: str = "") -> CloseConnection:
        """Send a Close and wait for the server's answer and its EOF; the answer."""
        event = CloseConnection(code=code, reason=reason)
        self._sent_close = event
        self.sock.sendall(self.ws.send(event))
        try:
            return self.wait_close()
        finally:
            self.sock.close()

    def abort(self) -> None:
        """Close the socket, no Close frame."""
        self.sock.close()

    # ------------------------------------------------------------------ chat

    def register_line(self, nick: str) -> list[str]:
        """The line dialect's greeting, the nickname, and its confirmation."""
        self.read_until(lambda line: "nickname" in line)
        self.send_line(nick)
        return self.expect(rf"^\* .*\b{re.escape(nick)}\b.*#")

    def register_irc(self, nick: str) -> list[str]:
        self.send_line(f"NICK {nick}")
        self.send_line(f"USER {nick} 0 * :{nick} real name")
        return self.expect(rf"^:\S+ (376|422) {re.escape(nick)} ")

    def sync(self, token: str = "sync") -> list[str]:
        """A round trip in either dialect: every line the server sent before the answer."""
        if self.irc:
            self.send_line(f"PING {token}")
            return self.expect(rf"^:\S+ PONG \S+ :?{re.escape(token)}$")[:-1]
        self.send_line(f"/ping {token}")
        return self.expect(rf"^\* pong {re.escape(token)}$")[:-1]
