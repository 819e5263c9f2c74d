"""RESP, sans-IO: commands in, bytes out; bytes in, replies to their callbacks.

:class:`RedisProtocol` never touches a socket (h11's shape): :meth:`~RedisProtocol.call`
queues a command's bytes (hiredis' ``pack_command``) and remembers its callback;
:meth:`~RedisProtocol.receive_data` feeds what the socket read to hiredis' ``Reader``
and hands each complete reply to the oldest waiting callback, since Redis answers a
connection's commands in order. On a subscriber connection (``subscriber=True``) nothing
waits: every reply (``ssubscribe`` acknowledgements, ``smessage`` pushes, the answer to a
PING) goes to ``on_push``.

An error reply is a value (``hiredis.ReplyError``), handed to the callback like any
other; a corrupt stream raises ``hiredis.ProtocolError`` from ``receive_data``, and the
owner then drops the connection. When a connection is lost, :meth:`fail` answers every
waiting callback with a ``ConnectionError`` so that nothing waits forever.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import hiredis

#: ``Reader.gets()`` returns this while a reply is incomplete.
_MORE = Ellipsis

Reply = object
Callback = Callable[[Reply], None]


_REDIRECTS = ("MOVED ", "ASK ")


def is_redirect(reply: Reply) -> bool:
    """``reply`` is a Redis Cluster redirection: ``MOVED`` or ``ASK``."""
    return isinstance(reply, hiredis.ReplyError) and str(reply).startswith(_REDIRECTS)


def _ignore(reply: Reply) -> None:
    pass


class RedisProtocol:
    """One Redis connection's commands and replies, with no I/O."""

    __slots__ = ("reader", "out", "waiting", "subscriber", "on_push", "on_redirect")

    def __init__(
        self,
        *,
        subscriber: bool = False,
        on_push: Callback = _ignore,
        on_redirect: Callback = _ignore,
    ) -> None:
        """``on_redirect(error)``: a Redis Cluster answered ``MOVED`` or ``ASK`` (the
        command's own callback gets the error too)."""
        self.reader = hiredis.Reader(notEnoughData=_MORE)
        #: Bytes to send, oldest first.
        self.out = bytearray()
        #: Callbacks of the commands sent and not answered yet, oldest first.
        self.waiting: deque[Callback] = deque()
        self.subscriber = subscriber
        self.on_push = on_push
        self.on_redirect = on_redirect

    def call(self, callback: Callback | None, *args: str | bytes | int | float) -> None:
        """Queue one command; ``callback(reply)`` runs when its reply arrives."""
        self.out += hiredis.pack_command(args)  # type: ignore[arg-type]
        if not self.subscriber:
            self.waiting.append(callback or _ignore)

    def data_to_send(self) -> bytes:
        """What to write to the socket now (and forget)."""
        data = bytes(self.out)
        self.out.clear()
        return data

    def receive_data(self, data: bytes) -> None:
        """Feed bytes read from the socket; answer every complete reply."""
        reader = self.reader
        reader.feed(data)
        while (reply := reader.gets()) is not _MORE:
            if self.subscriber:
                self.on_push(reply)
            elif self.waiting:
                self.waiting.popleft()(reply)
                if is_redirect(reply):
                    self.on_redirect(reply)
            else:  # a reply nobody asked for: the stream is not what we think it is
                raise hiredis.ProtocolError(f"unexpected reply {reply!r}"[:200])

    def fail(self) -> None:
        """The connection is gone: every waiting callback gets a ``ConnectionError``."""
        waiting, self.waiting = self.waiting, deque()
        self.out.clear()
        self.reader = hiredis.Reader(notEnoughData=_MORE)
        for callback in waiting:
            callback(ConnectionError("redis connection lost"))


def client_tls(ca: str | None, cert: str | None) -> ssl.SSLContext:
    """The context of a ``rediss://`` link: Redis' certificate checked against ``ca`` (or
    the system's CAs) and its name; ``cert``: a client certificate and key (PEM)."""
    context = ssl.create_default_context(cafile=ca)
    if cert is not None:
        context.load_cert_chain(cert)
    return context


class RedisURLError(ValueError):
    """A ``--redis`` URL chatd cannot use (the message says why)."""


def redact_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (for errors and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hostpart}"


def parse_url(url: str) -> tuple[str, int, int, str | None, str | None, bool]:
    """``redis://[user:password@]host[:port][/db]`` → (host, port, db, user, password, tls).

    A host name is resolved once, at start
    (:func:`chatd.engines.reactor.cluster_link.resolve`): a reactor never waits on DNS, so
    a name that later points elsewhere is not followed until chatd restarts.
    """
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise RedisURLError(f"{shown!r}: {exc}") from None
    if parts.scheme not in ("redis", "rediss"):
        raise RedisURLError(f"{shown!r}: the URL must start with redis:// or rediss://")
    if not parts.hostname:
        raise RedisURLError(f"{shown!r}: no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise RedisURLError(f"{shown!r}: the port is not a number from 1 to 65535") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise RedisURLError(f"{shown!r}: the database is a number (/0 ... /15)")
    if parts.query or parts.fragment:
        raise RedisURLError(f"{shown!r}: chatd takes no URL options")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, int(path or 0), user, password, parts.scheme == "rediss"
