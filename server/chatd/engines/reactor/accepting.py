"""Accepting: a listener's :class:`Acceptor` takes new sockets and starts their connections."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, cast

from chatd.engines.reactor.connection import Connection
from chatd.engines.reactor.handler import Handler
from chatd.engines.reactor.tls_connection import TLSConnection
from chatd.net.accepting import refuse
from chatd.net.listeners import Listener, peer_host
from chatd.net.sockopts import configure_socket

if TYPE_CHECKING:
    from chatd.dialects.base import Dialect
    from chatd.engines.reactor.loop import Reactor

#: New connections taken per listener per turn, so a connect storm cannot starve chat.
ACCEPTS_PER_TURN = 64


class Acceptor(Handler):
    """Selector data of a listening socket: accepts, and gives each socket its kind of
    connection (:class:`TLSConnection` on a TLS listener, else :class:`Connection`).

    The reactor registers and unregisters acceptors together (it stops accepting for a
    while when descriptors or memory run out, and for good at shutdown).
    """

    __slots__ = ("reactor", "listener")

    def __init__(self, reactor: Reactor, listener: Listener) -> None:
        self.reactor = reactor
        self.listener = listener

    def on_ready(self, mask: int) -> None:
        """Accept up to :data:`ACCEPTS_PER_TURN` connections from the listener."""
        reactor = self.reactor
        listener = self.listener
        for _ in range(ACCEPTS_PER_TURN):
            try:
                sock, addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                pause = reactor.accept_guard.failed(exc)
                if pause is not None:
                    reactor.pause_accepting(pause)
                    return
                continue
            reactor.accept_guard.accepted()
            self.add_connection(sock, peer_host(addr))

    def add_connection(self, sock: socket.socket, host: str) -> None:
        """Admit the socket (or refuse it), then start its connection."""
        reactor = self.reactor
        listener = self.listener
        sock.setblocking(False)
        # net knows no dialect, so a listener's dialect is only an ``object`` to it.
        dialect = cast("Dialect", listener.dialect)
        session = reactor.service.accept(dialect, host, reactor.now)
        if isinstance(session, bytes):
            # A TLS client could not read a plain refusal before its handshake.
            refuse(sock, session if listener.tls is None else b"")
            return
        configure_socket(sock)
        if listener.tls is not None:
            conn: Connection = TLSConnection(reactor, sock, session, listener.tls.stream())
        else:
            conn = Connection(reactor, sock, session)
        conn.start()
