"""The reactor engine: one thread, one selector, non-blocking sockets.

The theory of operation is the docstring of :mod:`chatd.engines.reactor.loop`; the TLS
layer's is that of :mod:`chatd.engines.reactor.tls_connection`. The package is split by
job (loop and timers, handler base, plain connection, TLS connection, accepting,
lingering); the names below stay importable from ``chatd.engines.reactor`` as they were
when it was one module.
"""

from chatd.engines.reactor.accepting import ACCEPTS_PER_TURN, Acceptor
from chatd.engines.reactor.connection import (
    BACKSTOP_FACTOR,
    IOV_LIMIT,
    SMALL_WRITE,
    TAIL_LIMIT,
    WRITE_BUDGET,
    Connection,
)
from chatd.engines.reactor.connection import _consume as _consume
from chatd.engines.reactor.connection import _gather as _gather
from chatd.engines.reactor.handler import EVENT_READ, EVENT_WRITE, READ_SIZE, Handler
from chatd.engines.reactor.lingering import MAX_LINGERING, Lingering
from chatd.engines.reactor.loop import SHUTDOWN_FLUSH_SECONDS, Reactor, Wakeup, serve
from chatd.engines.reactor.tls_connection import HANDSHAKES_PER_TURN, TLSConnection

__all__ = [
    "ACCEPTS_PER_TURN",
    "BACKSTOP_FACTOR",
    "EVENT_READ",
    "EVENT_WRITE",
    "HANDSHAKES_PER_TURN",
    "IOV_LIMIT",
    "MAX_LINGERING",
    "READ_SIZE",
    "SHUTDOWN_FLUSH_SECONDS",
    "SMALL_WRITE",
    "TAIL_LIMIT",
    "WRITE_BUDGET",
    "Acceptor",
    "Connection",
    "Handler",
    "Lingering",
    "Reactor",
    "TLSConnection",
    "Wakeup",
    "serve",
]
