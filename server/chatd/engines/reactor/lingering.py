"""Lingering: a gracefully closed socket is read and discarded until its peer's EOF."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from chatd.engines.reactor.handler import EVENT_READ, READ_SIZE, Handler
from chatd.net.sockopts import LINGER_BYTES, LINGER_SECONDS

if TYPE_CHECKING:
    from chatd.engines.reactor.loop import Reactor

#: Closed connections lingering at most; past this a graceful close closes at once.
MAX_LINGERING = 4096


class Lingering(Handler):
    """Selector data of a socket shut for writing, read and discarded until EOF.

    It belongs to no session and no ``--max-clients`` slot: the hub has already been told
    the connection is gone. See :data:`~chatd.net.sockopts.LINGER_SECONDS` for why.
    """

    __slots__ = ("reactor", "sock", "left", "done")

    def __init__(self, reactor: Reactor, sock: socket.socket) -> None:
        self.reactor = reactor
        self.sock = sock
        #: Bytes we are still willing to read away.
        self.left = LINGER_BYTES
        self.done = False

    def on_ready(self, mask: int) -> None:
        """Read and discard; stop at the peer's EOF, a reset or LINGER_BYTES."""
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        self.left -= len(data)
        if not data or self.left <= 0:
            self.end()

    def end(self) -> None:
        """Stop waiting: unregister and close (the peer's EOF, the deadline, shutdown)."""
        if self.done:
            return
        self.done = True
        reactor = self.reactor
        reactor.lingering.discard(self)
        reactor.selector.unregister(self.sock)
        self.sock.close()


def linger(reactor: Reactor, sock: socket.socket) -> None:
    """Shut our side of a gracefully closed socket and wait for the peer's EOF."""
    try:
        sock.shutdown(socket.SHUT_WR)
        data = sock.recv(READ_SIZE)
    except BlockingIOError:
        data = None
    except OSError:
        data = b""  # reset or not connected: nothing to wait for
    if data == b"" or reactor.stopping or len(reactor.lingering) >= MAX_LINGERING:
        sock.close()
        return
    entry = Lingering(reactor, sock)
    if data:
        entry.left -= len(data)
    reactor.lingering.add(entry)
    reactor.selector.register(sock, EVENT_READ, entry)
    reactor.call_at(reactor.now + LINGER_SECONDS, Lingering.end, entry)
