"""Listening sockets: bind each :class:`~chatd.config.ListenerSpec` and announce it."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from chatd.config import ListenerSpec

if TYPE_CHECKING:
    from chatd.net.tls import ServerTLS


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv4 or IPv6 by the address given);
    ``reuse_port``: with ``SO_REUSEPORT``, beside other workers' (``--workers``)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, address = infos[0]
    return socket.create_server(address, family=family, backlog=1024, reuse_port=reuse_port)


class Listener:
    """A bound socket and the dialect its connections speak (asyncio binds a listener to
    a protocol factory the same way), and for a TLS listener the context to use."""

    __slots__ = ("spec", "sock", "dialect", "tls")

    def __init__(
        self,
        spec: ListenerSpec,
        sock: socket.socket,
        dialect: object,
        tls: ServerTLS | None = None,
    ) -> None:
        self.spec = spec
        self.sock = sock
        self.dialect = dialect
        #: Set for a TLS listener: engines put a TLS layer under every session.
        self.tls = tls

    def address(self) -> str:
        host, port = self.sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{shown}:{port}"

    def announcement(self, engine: str) -> str:
        """``chatd reactor line: listening on 127.0.0.1:4040`` (PROTOCOL.md's line)."""
        tls = " tls" if self.spec.tls else ""
        return f"chatd {engine} {self.spec.dialect}{tls}: listening on {self.address()}"


def peer_host(address: object) -> str:
    """The IP address of an accepted socket's peer, as text (no DNS: never blocks)."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return "unknown"
