"""A TLS connection: the plain connection's queue and rules, with a TLS stream under them.

TLS
---
A TLS listener's connections are :class:`TLSConnection`: the same plaintext queue and
the same rules, with a :class:`~chatd.net.tls.TLSStream` (an ``SSLObject`` over two
``MemoryBIO``) between that queue and the socket, as asyncio's ``sslproto`` does. The
session never knows; plain connections never pay for it: the TLS connection is a
subclass that overrides the read (:meth:`TLSConnection.on_readable`) and the flush
(:meth:`TLSConnection.flush`), and the loop makes the same bound-method call on either.

* **Handshake first, session after.** The session is created at accept, so the
  connection holds its ``--max-clients`` slot from the start, but ``connection_made`` is
  called only once the handshake is done. A handshake that fails (garbage, an EOF or a
  reset half-way) or misses ``--tls-handshake-timeout`` costs an abort and one
  ``connection_lost``; no one else is involved. At most :data:`HANDSHAKES_PER_TURN`
  handshake steps run per turn (each may cost a key exchange and a signature), so a
  storm of handshakes delays chat by a bounded amount per turn.
* **Reads drain.** Each ready event is one ``recv`` of at most
  :data:`~chatd.net.tls.READ_SIZE`, fed to the stream, and then *all* plaintext of the
  complete records is read out, so nothing sits decrypted where ``select`` cannot see
  it. What the stream wants to send after any call (a handshake flight, an answer to a
  key update, an alert) is appended to the connection's ciphertext buffer at once.
* **Writes encrypt at flush time.** ``write`` queues plaintext exactly as for a plain
  connection (limits measure that queue); the flush joins up to
  :data:`~chatd.net.tls.WRITE_BATCH` bytes of it into one ``SSLObject.write`` (one
  record, as Redis joins small iovecs into one ``SSL_write``) only when the ciphertext
  buffer is empty, so at most one record per connection waits encrypted. A write
  OpenSSL refuses until it reads is held by the stream and retried unchanged.
* **A graceful close says close_notify.** Once the queue is flushed, the stream's
  close_notify goes out through the same buffer, then the socket is shut and closed as
  for a plain connection (at shutdown, within the same flush deadline); aborts skip it.
"""

from __future__ import annotations

import socket
import ssl
import weakref
from typing import TYPE_CHECKING

from chatd.engines.reactor.connection import WRITE_BUDGET, Connection, _consume, _gather
from chatd.net.tls import READ_SIZE as TLS_READ_SIZE
from chatd.net.tls import WRITE_BATCH as TLS_WRITE_BATCH
from chatd.net.tls import TLSStream
from chatd.net.transport import DisconnectReason, SessionProtocol

if TYPE_CHECKING:
    from chatd.engines.reactor.loop import Reactor

#: TLS handshake steps run per turn at most (a step may cost a key exchange and a
#: signature, about a millisecond): a storm of handshakes waits its turn behind chat.
HANDSHAKES_PER_TURN = 16


class TLSConnection(Connection):
    """A connection with a TLS stream between its plaintext queue and its socket."""

    __slots__ = ("tls", "wire", "handshaking", "notified")

    def __init__(
        self, reactor: Reactor, sock: socket.socket, session: SessionProtocol, tls: TLSStream
    ) -> None:
        super().__init__(reactor, sock, session)
        self.tls: TLSStream | None = tls
        #: Ciphertext not yet taken by the kernel: handshake flights, records, alerts.
        self.wire = bytearray()
        #: The session has not been made yet (connection_made comes after the handshake).
        self.handshaking = True
        #: close_notify has been queued.
        self.notified = False

    def start(self) -> None:
        """Just accepted: register for reading and start the handshake's clock (the
        session is made when the handshake is done)."""
        reactor = self.reactor
        reactor.conns[self.fd] = self
        self.update_mask()
        deadline = reactor.now + reactor.config.tls_handshake_timeout
        reactor.call_at(deadline, _handshake_deadline, weakref.ref(self))

    def close_soon(self, reason: DisconnectReason, detail: str = "") -> None:
        """As for a plain connection, then close_notify after the queue (see :meth:`flush`)."""
        if self.closing or self.dead:
            return
        if self.handshaking:
            self.abort(reason)  # nobody was greeted: there is nothing to flush
            return
        self.closing = True
        self.reason = reason
        self.detail = detail
        self.update_mask()
        self.schedule()

    def queue_wire(self) -> None:
        """Move what the stream wants sent into the ciphertext buffer; flush soon."""
        tls = self.tls
        assert tls is not None
        data = tls.take()
        if data:
            self.wire += data
            self.schedule()

    # ----------------------------------------------------------------- reading

    def on_readable(self) -> None:
        """One ``recv`` through the TLS stream: a handshake step, or plaintext for the
        session (all of it that the records fed so far hold)."""
        reactor = self.reactor
        handshaking = self.handshaking
        if handshaking:
            if reactor.handshake_budget <= 0:
                return  # still readable: the next turn takes it
            reactor.handshake_budget -= 1
        failed = DisconnectReason.HANDSHAKE_FAILED if handshaking else DisconnectReason.RESET
        try:
            data = self.sock.recv(TLS_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort(failed)
            return
        tls = self.tls
        assert tls is not None
        if data:
            tls.feed(data)
        else:
            tls.feed_eof()
        try:
            if handshaking:
                if not tls.handshake():
                    self.queue_wire()
                    return
                self.handshaking = False
                reactor.service.stats["tls_handshakes"] += 1
                self.queue_wire()
                session = self.session
                assert session is not None
                session.connection_made(self, reactor.now)
                if self.closing or self.dead:
                    return
            plain, closed = tls.read()
        except ssl.SSLError:
            self.abort(failed)
            return
        self.queue_wire()
        session = self.session
        assert session is not None
        if plain:
            session.data_received(plain)
        if closed:
            self.eof = True
            session.eof_received()
            self.update_mask()
        self._process()

    # ----------------------------------------------------------------- writing

    def flush(self) -> None:
        """:meth:`Connection.flush` through the TLS stream: encrypt one batch of the
        plaintext queue whenever the ciphertext buffer is empty, send, repeat; then
        close_notify."""
        tls = self.tls
        assert tls is not None
        wire = self.wire
        out = self.out
        sock = self.sock
        failed = DisconnectReason.HANDSHAKE_FAILED if self.handshaking else DisconnectReason.RESET
        budget = WRITE_BUDGET
        refused = False
        while budget > 0:
            if not wire:
                if tls.held:
                    if self.closing:  # what is held waits for a read closing stops
                        self.abort(DisconnectReason.RESET)
                        return
                elif out:
                    if len(out) == 1 and not self.out_offset and len(out[0]) <= TLS_WRITE_BATCH:
                        chunk: bytes | bytearray = out[0]
                    else:
                        bufs, _ = _gather(out, self.out_offset, TLS_WRITE_BATCH)
                        chunk = b"".join(bufs)
                        del bufs  # release the views before the queue changes
                    size = len(chunk)
                    try:
                        tls.encrypt(chunk)
                    except ssl.SSLError:
                        self.abort(DisconnectReason.RESET)
                        return
                    chunk = b""
                    _consume(self, size)
                elif self.closing and not self.notified:
                    self.notified = True
                    tls.close_notify()
                data = tls.take()
                if not data:
                    break
                wire += data
            try:
                sent = sock.send(wire)
            except (BlockingIOError, InterruptedError):
                refused = True
                break
            except OSError:
                self.abort(failed)
                return
            del wire[:sent]
            budget -= sent
            if wire:
                refused = True  # a short send: the socket buffer is full
                break
        self.pending = False
        more = wire or (not tls.held and (out or (self.closing and not self.notified)))
        if more and not refused and not self.dead:
            self.pending = True
            self.reactor.pending.append(self)  # the budget stopped us: go on next turn
        if not self._settle(refused):
            return
        if self.closing and self.notified and not wire:
            self.reactor.to_close[self] = None

    # ----------------------------------------------------------------- closing

    def _release(self) -> None:
        self.out = []
        self.tls = None
        self.wire = bytearray()


def _handshake_deadline(ref: weakref.ref[TLSConnection]) -> None:
    conn = ref()
    if conn is not None and conn.handshaking and not (conn.closed or conn.dead):
        conn.abort(DisconnectReason.HANDSHAKE_TIMEOUT)
