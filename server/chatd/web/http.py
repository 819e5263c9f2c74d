"""The HTTP listener's session: the page, ``/health``, ``/metrics``, and WebSocket chat.

Engines drive an :class:`HttpSession` like any dialect session
(:class:`~chatd.net.transport.SessionProtocol`): bytes in, ``process``, timers. It knows
no socket, and the engines know no HTTP or WebSocket: the listener of ``--http-port`` is
bound to this session's factory the way the IRC port is bound to the IRC session's.

Theory of operation
-------------------
* **HTTP is h11's.** Requests are parsed by an ``h11.Connection`` (sans-IO), one at a
  time, keep-alive allowed up to :data:`MAX_REQUESTS`, pipelined ones answered
  :data:`REQUESTS_PER_TURN` per turn (then the others go first). A request's head is
  bounded (:data:`MAX_HEAD`) and must arrive within :data:`REQUEST_SECONDS` (or
  ``--register-timeout`` if shorter: it is a connection that has not named itself yet),
  as must the next request on a kept-alive connection: a slow client costs a slot for
  that long, never more. Only ``GET`` and ``HEAD`` are served, and no request may carry a body.
* **An upgrade becomes a chat session.** ``GET /`` or ``/irc`` with ``Upgrade:
  websocket`` speaks IRC (IRCv3 WebSocket: ``binary.ircv3.net`` or ``text.ircv3.net``,
  the client's first choice); ``/line`` speaks the line dialect (text frames). wsproto
  checks the handshake and writes the 101; the Origin must be allowed
  (``--allowed-origin``; by default only the page's own, i.e. the request's ``Host``; a
  request without Origin comes from no browser and is let in), else 403: that is what
  stops another site's page from chatting as its visitors (cross-site WebSocket
  hijacking). Then the h11 state is dropped, and this object becomes the bridge between
  the engine's transport and the dialect session, in both directions:

  - for the engine it stays the :class:`SessionProtocol`: bytes go to a
    :class:`~chatd.web.frames.FrameReader`; each message becomes one line for the
    dialect session (``payload + "\\n"``), a ping is answered with a pong, a close ends
    input (the session then closes as at end of input);
  - for the dialect session it is the :class:`~chatd.net.transport.Transport`: what
    the session (or the router) writes is whole lines, framed one message per line by a
    :class:`~chatd.web.frames.Framer` shared by every connection, so a broadcast is
    framed once; a close sends a Close frame after what is queued.

* **Limits are the lines' limits.** A message holds at most what a line may (the
  dialect's decoder then applies its own rule, as for TCP: ``! line too long``, 417);
  past :attr:`HttpSession.max_message`, or past the fragment limit, the connection is
  closed with 1009 or 1008. Every message and every ping costs a flood token: a ping
  reaches the dialect as an empty line, which flood control charges and ignores.
* **One object, few fields.** An idle WebSocket connection is this object, its reader's
  three fields and the dialect session: the 4 KB goal of the bench report.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import h11
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from chatd import __version__
from chatd.dialects.base import STEP_PAUSE
from chatd.net.transport import DisconnectReason, Transport
from chatd.web import frames
from chatd.web.assets import StaticFiles
from chatd.web.frames import BINARY, CLOSE, PING, TEXT, CloseCode, FrameError, Framer, FrameReader
from chatd.web.metrics import CONTENT_TYPE as METRICS_TYPE
from chatd.web.metrics import render

if TYPE_CHECKING:
    from chatd.dialects.base import Context, Dialect, Session

#: Largest request head (request line and headers) accepted, in bytes.
MAX_HEAD = 8192
#: Seconds a request may take to arrive, and a kept-alive connection may stay idle.
REQUEST_SECONDS = 10.0
#: Requests served on one connection before it is closed.
MAX_REQUESTS = 100
#: Pipelined requests answered per turn of one connection: 100 in one read took 25 ms
#: of the loop on the 2-core test machine (a /metrics page, h11), the others waiting.
REQUESTS_PER_TURN = 8
#: Seconds the server waits for the client's Close after sending its own.
CLOSE_SECONDS = 5.0
#: How early a timer callback may come and still count as the one asked for.
TIMER_SLACK = 0.001

#: The subprotocols of IRC over WebSocket (IRCv3), and the frames each uses.
IRC_SUBPROTOCOLS = {"binary.ircv3.net": BINARY, "text.ircv3.net": TEXT}
#: Frames are built once per opcode for every connection (see :class:`Framer`).
FRAMERS = {TEXT: Framer(TEXT), BINARY: Framer(BINARY)}

#: The page's Content-Security-Policy: scripts, styles and sockets from this origin
#: only, nothing inline, no frames, no forms, no plugins.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"Content-Security-Policy", CSP.encode()),
    (b"X-Content-Type-Options", b"nosniff"),
    (b"Referrer-Policy", b"no-referrer"),
    (b"X-Frame-Options", b"DENY"),
    (b"Cross-Origin-Opener-Policy", b"same-origin"),
]

#: How a dialect session's close reason is told in the Close frame.
#:
#: A shutdown is 1012 (Service Restart), not RFC 6455's 1001 (Going Away): 1001 says the
#: server goes, not that it comes back, and clients may take it as final (a browser
#: uses it for a page left behind); 1012 is the registered "reconnect" signal, which is
#: what a stopping node of a cluster, or a server being restarted, wants its clients to
#: do. Every WebSocket library in use accepts it (wsproto, browsers: 1012-1014 are in
#: IANA's registry); the page reconnects after any close it did not ask for anyway.
CLOSE_CODES = {
    DisconnectReason.SHUTDOWN: CloseCode.SERVICE_RESTART,
    DisconnectReason.PROTOCOL: CloseCode.PROTOCOL_ERROR,
    DisconnectReason.SENDQ: CloseCode.POLICY,
    DisconnectReason.SOFT_SENDQ: CloseCode.POLICY,
}


class Web:
    """What every HTTP session of one server shares: the chat dialects, the page, the
    allowed origins (built once, from the context's settings)."""

    __slots__ = (
        "dialects",
        "static",
        "ctx",
        "allowed",
        "origins",
        "any_origin",
        "engine",
    )

    def __init__(self, dialects: dict[str, Dialect], ctx: Context) -> None:
        self.dialects = dialects
        self.static = StaticFiles()
        self.ctx = ctx
        #: The list the sets below were built from: a reload (SIGHUP) may replace it.
        self.allowed: tuple[str, ...] = ()
        self.any_origin = False
        self.origins: frozenset[str] = frozenset()
        self._use(ctx.config.allowed_origins)
        self.engine = ctx.config.engine

    @property
    def request_seconds(self) -> float:
        """Seconds a request may take to arrive (see the module's docstring); follows
        ``register-timeout`` across reloads."""
        register = self.ctx.config.register_timeout
        return min(REQUEST_SECONDS, register) if register > 0 else REQUEST_SECONDS

    def _use(self, allowed: tuple[str, ...]) -> None:
        # ``allowed`` last: a reader thread (threaded engine) that sees it new sees the
        # sets new too.
        self.any_origin = "*" in allowed
        self.origins = frozenset(_origin(o) for o in allowed if o != "*")
        self.allowed = allowed

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """A browser's Origin against the list, or by default against the page's host."""
        if origin is None:
            return True  # no browser: nobody's visitor is being used
        allowed = self.ctx.config.allowed_origins
        if allowed is not self.allowed:  # reloaded
            self._use(allowed)
        if self.any_origin:
            return True
        wanted = _origin(origin)
        if self.origins:
            return wanted in self.origins
        if host is None:
            return False
        try:
            netloc = urlsplit(wanted).netloc
        except ValueError:  # "http://[::1": no origin a browser sends
            return False
        return netloc == host.lower()


def _origin(value: str) -> str:
    return value.strip().lower().rstrip("/")


class HttpSession:
    """One connection to the HTTP listener (see the module's theory of operation)."""

    __slots__ = (
        "ctx",
        "web",
        "host",
        "delay",
        "accepted_at",
        "transport",
        "http",
        "requests",
        "inner",
        "reader",
        "framer",
        "own_at",
        "inner_at",
        "armed",
        "eof",
        "closing",
        "close_sent",
        "lost",
        "max_message",
    )

    def __init__(self, ctx: Context, web: Web, host: str, now: float, delay: float) -> None:
        self.ctx = ctx
        self.web = web
        self.host = host
        self.delay = delay
        self.accepted_at = now
        self.transport: Transport | None = None
        self.http: h11.Connection | None = h11.Connection(
            h11.SERVER, max_incomplete_event_size=MAX_HEAD
        )
        self.requests = 0
        #: The chat session once upgraded.
        self.inner: Session | None = None
        self.reader: FrameReader | None = None
        self.framer: Framer | None = None
        #: This layer's own deadline (request, close handshake), and the session's.
        self.own_at = 0.0
        self.inner_at = 0.0
        #: The earliest callback asked of the transport and not come yet (0: none). The
        #: reactor keeps every request it gets, so asking again for one already pending
        #: would add a callback per timer cycle, each of which asks again.
        self.armed = 0.0
        self.eof = False
        self.closing = False
        self.close_sent = False
        self.lost = False
        self.max_message = 0

    # ============================================================ engine side (SessionProtocol)

    def connection_made(self, transport: Transport, now: float) -> None:
        self.transport = transport
        self._deadline(now + self.web.request_seconds)

    def data_received(self, data: bytes) -> None:
        if self.reader is not None:
            # The dialect session counts the lines the frames carry (as bytes_out counts
            # the lines it writes): counting the frames too counted each byte twice.
            self.reader.feed(data)
        elif self.http is not None:
            self.ctx.stats["bytes_in"] += len(data)
            self.http.receive_data(data)

    def eof_received(self) -> None:
        self.eof = True
        if self.http is not None:
            self.http.receive_data(b"")

    def process(self, now: float) -> float | None:
        if self.closing and self.inner is None:
            return None
        if self.inner is not None:
            return self._process_websocket(now)
        return self._process_http(now)

    def on_timer(self, now: float) -> None:
        if self.armed and now >= self.armed - TIMER_SLACK:
            self.armed = 0.0  # that callback has come (asyncio may run it a hair early)
        if self.own_at and now >= self.own_at:
            self.own_at = 0.0
            self._own_deadline()
        inner = self.inner
        if inner is not None and self.inner_at and now >= self.inner_at:
            self.inner_at = 0.0
            inner.on_timer(now)
        self._rearm()

    def connection_lost(self, reason: DisconnectReason, detail: str = "") -> None:
        if self.lost:
            return
        self.lost = True
        inner = self.inner
        if inner is not None:
            self.ctx.stats["websocket_clients"] -= 1
            inner.connection_lost(reason, detail)
        else:
            self.ctx.release(self.host)
        self.inner = None
        self.http = None
        self.reader = None
        self.transport = None

    # ============================================================ session side (Transport)

    def write(self, data: bytes) -> None:
        """The dialect session's (or the router's) whole lines: one message each."""
        transport = self.transport
        framer = self.framer
        if transport is None or framer is None or self.close_sent:
            return
        transport.write(framer.frames(data))

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """The dialect session closes: a Close frame after its last lines, then the socket."""
        transport = self.transport
        if transport is None:
            return
        if not self.close_sent:
            self.close_sent = True
            code = CLOSE_CODES.get(reason, CloseCode.NORMAL)
            transport.write(frames.close_frame(code, detail or reason.value))
        self.closing = True
        transport.close_soon(reason, detail)

    def call_at(self, when: float) -> None:
        if not self.inner_at or when < self.inner_at:
            self.inner_at = when
            self._rearm()

    # ============================================================ HTTP

    def _process_http(self, now: float) -> float | None:
        http = self.http
        assert http is not None
        answered = 0
        while not self.closing:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                self._refuse(status, str(exc) or "bad request")
                return None
            if event is h11.NEED_DATA:
                if self.eof:
                    self._close(DisconnectReason.EOF)
                return None
            if isinstance(event, h11.Request):
                self._deadline(now + self.web.request_seconds)
                if not self._request(event, now):
                    return None
                if self.inner is not None:
                    return self._process_websocket(now)
            elif isinstance(event, h11.Data):
                self._refuse(413, "requests carry no body here")
                return None
            elif isinstance(event, h11.EndOfMessage):
                if http.our_state is h11.MUST_CLOSE or self.requests >= MAX_REQUESTS:
                    self._close(DisconnectReason.EOF)
                    return None
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                    self._deadline(now + self.web.request_seconds)
                    answered += 1
                    if answered >= REQUESTS_PER_TURN and http.trailing_data[0]:
                        # More pipelined requests: everyone else first (the engine stops
                        # reading this connection until then).
                        return STEP_PAUSE
            elif isinstance(event, h11.ConnectionClosed):
                self._close(DisconnectReason.EOF)
                return None
            else:  # PAUSED: a request we answered without reading its end
                self._close(DisconnectReason.EOF)
                return None
        return None

    def _request(self, request: h11.Request, now: float) -> bool:
        """Answer one request (True: go on reading this connection)."""
        self.requests += 1
        self.ctx.stats["http_requests"] += 1
        headers = {name.lower(): value for name, value in request.headers}
        method = request.method.upper()
        target = request.target.decode("ascii", "replace")
        path = target.split("?", 1)[0]
        # A response to HEAD has no body (h11 refuses to send one).
        head = method == b"HEAD"
        if _head_size(request) > MAX_HEAD:
            # h11 bounds a head still arriving; one that came whole in a read is measured.
            self._refuse(431, "request head too large", head=head)
            return False
        has_body = headers.get(b"content-length", b"0") != b"0" or b"transfer-encoding" in headers
        upgrade = b"websocket" in headers.get(b"upgrade", b"").lower()
        if upgrade:
            if has_body:  # it would be read as frames
                self._refuse(413, "requests carry no body here", head=head)
                return False
            if method != b"GET":  # RFC 6455 §4.1 (wsproto does not check it)
                self.ctx.stats["websocket_refused"] += 1
                self._refuse(400, "bad WebSocket handshake: the method must be GET", head=head)
                return False
            return self._upgrade(request, headers, path, now)
        if method not in (b"GET", b"HEAD"):
            self._respond(405, b"only GET and HEAD\n", extra=[(b"Allow", b"GET, HEAD")])
            return not self.closing  # its end (or its body: 413) is read next
        if has_body:
            self._refuse(413, "requests carry no body here", head=head)
            return False
        if path in ("/irc", "/line"):
            upgrade_header = [(b"Upgrade", b"websocket")]
            self._respond(426, b"a WebSocket endpoint\n", head=head, extra=upgrade_header)
        elif path == "/health":
            body = json.dumps(self._health()).encode() + b"\n"
            self._respond(200, body, b"application/json", head=head)
        elif path == "/metrics":
            snapshot = self.ctx.snapshot()
            page = render(snapshot, self.ctx.measures, self.web.engine, __version__)
            self._respond(200, page, METRICS_TYPE.encode(), head=head)
        else:
            found = self.web.static.get(path)
            if found is None:
                self._respond(404, b"not found\n", head=head)
            else:
                body, content_type = found
                self._respond(200, body, content_type, head=head, cache=b"no-cache")
        return not self.closing

    def _health(self) -> dict[str, object]:
        snapshot = self.ctx.snapshot()
        health: dict[str, object] = {
            "status": "ok",
            "engine": self.web.engine,
            "version": __version__,
            "clients": snapshot.get("clients", 0),
            "rooms": snapshot.get("rooms", 0),
        }
        if "cluster_up" in snapshot:
            health["redis"] = "up" if snapshot["cluster_up"] else "down"
        return health

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        *,
        head: bool = False,
        extra: list[tuple[bytes, bytes]] | None = None,
        cache: bytes = b"no-store",
        close: bool = False,
    ) -> None:
        http = self.http
        transport = self.transport
        if http is None or transport is None:
            return
        headers = [
            (b"Content-Type", content_type),
            (b"Content-Length", str(len(body)).encode()),
            (b"Cache-Control", cache),
            *SECURITY_HEADERS,
            *(extra or ()),
        ]
        if close:
            headers.append((b"Connection", b"close"))
        # The body goes to the transport as it is, not joined to the head: a page file is
        # then one shared bytes object in every queue that holds it (100 pipelined
        # requests for app.js queue 100 references, not 100 copies).
        pieces: list[bytes] = []
        try:
            response = h11.Response(status_code=status, headers=headers, reason=_phrase(status))
            pieces.append(http.send(response) or b"")
            if body and not head:
                pieces.extend(http.send_with_data_passthrough(h11.Data(data=body)) or ())
            pieces.append(http.send(h11.EndOfMessage()) or b"")
        except h11.LocalProtocolError:
            pieces = [_raw_response(status, body)]
            close = True
        for piece in pieces:
            if piece:
                self.ctx.stats["bytes_out"] += len(piece)
                transport.write(piece)
        if close:
            self._close(DisconnectReason.PROTOCOL)

    def _refuse(self, status: int, text: str, *, head: bool = False) -> None:
        """An error response, then close (the connection's state is not to be trusted);
        ``head``: it answers a HEAD request, so without its body."""
        if self.http is not None and self.http.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            self._respond(status, text.encode() + b"\n", head=head, close=True)
        else:
            self._close(DisconnectReason.PROTOCOL)

    def _close(self, reason: DisconnectReason) -> None:
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.transport.close_soon(reason)

    def _deadline(self, when: float) -> None:
        self.own_at = when
        self._rearm(moved=True)

    def _rearm(self, moved: bool = False) -> None:
        """Ask the transport for a callback at the earliest deadline, unless one at least
        as early is coming (:attr:`armed`); ``moved``: this layer's own deadline has just
        moved (a request, a Close), and the transport is told even if it moved later
        (a few times per HTTP connection, never per timer cycle)."""
        transport = self.transport
        if transport is None:
            return
        times = [t for t in (self.own_at, self.inner_at) if t]
        if not times:
            return
        when = min(times)
        armed = self.armed
        if armed and armed <= when and not moved:
            return  # a callback that early is coming; on_timer asks for the next one
        self.armed = min(armed, when) if armed else when
        transport.call_at(when)

    def _own_deadline(self) -> None:
        if self.inner is not None:
            # Our Close went out and the client never answered it.
            if self.transport is not None:
                self.transport.close_soon(DisconnectReason.EOF)
            return
        if self.closing:
            return
        http = self.http
        if http is not None and http.their_state is h11.IDLE and self.requests:
            self._close(DisconnectReason.IDLE)  # a kept-alive connection went quiet
        else:
            self._refuse(408, "request timeout")

    # ============================================================ the upgrade

    def _upgrade(
        self, request: h11.Request, headers: dict[bytes, bytes], path: str, now: float
    ) -> bool:
        stats = self.ctx.stats
        origin = headers.get(b"origin")
        host = headers.get(b"host")
        if not self.web.origin_allowed(
            origin.decode("latin-1") if origin is not None else None,
            host.decode("latin-1").lower() if host is not None else None,
        ):
            stats["websocket_refused"] += 1
            self._refuse(403, "this origin may not open a chat here (--allowed-origin)")
            return False
        if path in ("/", "/irc"):
            dialect = self.web.dialects["irc"]
            offered = [
                p.strip().decode("latin-1")
                for value in _all(request.headers, b"sec-websocket-protocol")
                for p in value.split(b",")
            ]
            chosen = next((p for p in offered if p in IRC_SUBPROTOCOLS), None)
            opcode = IRC_SUBPROTOCOLS[chosen] if chosen else TEXT
        elif path == "/line":
            dialect = self.web.dialects["line"]
            chosen, opcode = None, TEXT
        else:
            stats["websocket_refused"] += 1
            self._refuse(404, "no WebSocket endpoint here (/irc, /line)")
            return False
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.initiate_upgrade_connection(list(request.headers), request.target)
            events = list(handshake.events())
            if not events or not isinstance(events[0], Request):
                raise RemoteProtocolError("not a WebSocket request", event_hint=None)
            accept = handshake.send(AcceptConnection(subprotocol=chosen))
        except (RemoteProtocolError, h11.ProtocolError, ValueError) as exc:
            # wsproto lets h11's errors (an HTTP/1.0 request without Host) and a header
            # that is not ASCII (UnicodeDecodeError) through: the client's fault all the same.
            stats["websocket_refused"] += 1
            self._refuse(400, f"bad WebSocket handshake: {exc}")
            return False
        http = self.http
        assert http is not None and self.transport is not None
        trailing, _ = http.trailing_data
        self.http = None  # h11's state is not needed any more
        stats["websocket_upgrades"] += 1
        stats["websocket_clients"] += 1
        stats["bytes_out"] += len(accept)
        self.transport.write(accept)
        cfg = self.ctx.config
        self.max_message = max(cfg.max_line, 4608) + 2
        self.reader = FrameReader(self.max_message)
        self.framer = FRAMERS[opcode]
        self.own_at = 0.0
        hold = max(0.0, self.accepted_at + self.delay - now)
        inner = dialect.session(self.ctx, self.host, now, hold)
        self.inner = inner
        inner.connection_made(self, now)
        if trailing:
            self.reader.feed(bytes(trailing))
        return True

    # ============================================================ WebSocket

    def _process_websocket(self, now: float) -> float | None:
        """Messages become lines for the dialect session, pings pongs; then it runs.

        Data messages are all handed over before the session runs (the lines of one read
        are one batch, as on TCP). A ping or pong first lets the session handle what is
        before it, as an empty line that costs a flood token: while the budget is spent
        the session holds that line, no further frame is taken from the reader, and so
        no further pong is written (the engine stops reading meanwhile, as for lines).
        """
        inner = self.inner
        reader = self.reader
        transport = self.transport
        assert inner is not None and transport is not None
        if reader is not None and not inner.closing:
            try:
                while (got := reader.next_message()) is not None:
                    opcode, payload = got
                    if opcode == TEXT or opcode == BINARY:
                        if opcode == TEXT and not _utf8(payload):
                            raise FrameError(CloseCode.INVALID_DATA, "text message not UTF-8")
                        inner.data_received(_one_line(payload))
                        continue
                    # What this turn's batches hold for the member goes before any
                    # control frame we send (a Close ends what can still be written).
                    self.ctx.catch_up(inner)
                    if opcode == CLOSE:
                        self._peer_closed(payload, now)
                        break
                    inner.data_received(b"\n")  # a flood token, like an empty line
                    if opcode == PING:
                        transport.write(frames.frame(frames.PONG, payload))
                    # (an unsolicited pong is allowed and ignored, but not free)
                    delay = inner.process(now)
                    if delay is not None or inner.closing:
                        return delay
            except FrameError as exc:
                self._protocol_error(exc)
                return None
        if self.eof and not inner.eof:
            inner.eof_received()
        return inner.process(now)

    def _peer_closed(self, payload: bytes, now: float) -> None:
        """The client's Close: answer it (unless ours went first), then end input."""
        assert self.inner is not None and self.transport is not None
        if not self.close_sent:
            self.close_sent = True
            self.transport.write(frames.close_frame(_close_code(payload)))
        self.eof = True
        self.reader = None  # nothing more is read after a Close
        self._deadline(now + CLOSE_SECONDS)

    def _protocol_error(self, exc: FrameError) -> None:
        inner = self.inner
        transport = self.transport
        assert inner is not None and transport is not None
        self.ctx.stats["websocket_errors"] += 1
        self.ctx.catch_up(inner)
        if not self.close_sent:
            self.close_sent = True
            transport.write(frames.close_frame(exc.code, exc.reason))
        self.reader = None
        inner.close(DisconnectReason.PROTOCOL, exc.reason)


def _one_line(payload: bytes) -> bytes:
    """A message as one line for the dialect's decoder: a trailing CR LF (or LF) is
    dropped, and a CR or LF inside becomes NUL, which every dialect refuses in a line
    (``! line contains a control character``; IRC drops the line): one message is never
    two commands."""
    if payload.endswith(b"\n"):
        payload = payload[:-1]
    if payload.endswith(b"\r"):
        payload = payload[:-1]
    if b"\n" in payload or b"\r" in payload:
        payload = payload.replace(b"\r", b"\0").replace(b"\n", b"\0")
    return payload + b"\n"


def _close_code(payload: bytes) -> CloseCode:
    """The code to echo in answer to a client's Close (RFC 6455 §5.5.1)."""
    if len(payload) < 2:
        return CloseCode.NORMAL
    try:
        return CloseCode(int.from_bytes(payload[:2], "big"))
    except ValueError:
        return CloseCode.NORMAL


def _phrase(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _head_size(request: h11.Request) -> int:
    """The size of a request's head as sent, near enough (h11 has dropped the raw bytes)."""
    line = len(request.method) + len(request.target) + len(b" HTTP/1.1\r\n") + 1
    return line + sum(len(name) + len(value) + 4 for name, value in request.headers) + 2


def _all(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for key, value in headers if key.lower() == name]


def _raw_response(status: int, body: bytes) -> bytes:
    """A response written without h11 (h11 refused: its state was already past one)."""
    head = f"HTTP/1.1 {status} {_phrase(status).decode()}\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def refusal(text: str) -> bytes:
    """What a connection refused at accept gets (server full, address over its limits)."""
    body = text.encode() + b"\n"
    return (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
    )


def session_factory(dialects: dict[str, Dialect]) -> Callable[..., HttpSession]:
    """The listener's factory: ``(context, host, now, delay) -> HttpSession``."""
    shared: weakref.WeakKeyDictionary[Context, Web] = weakref.WeakKeyDictionary()

    def make(ctx: Context, host: str, now: float, delay: float = 0.0) -> HttpSession:
        web = shared.get(ctx)
        if web is None:
            web = shared[ctx] = Web(dialects, ctx)
        return HttpSession(ctx, web, host, now, delay)

    return make


__all__ = ["HttpSession", "refusal", "session_factory"]
