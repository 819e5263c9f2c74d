"""TLS for the listeners: the server's one context, and a sans-IO stream per connection.

TLS is a layer between an unchanged transport and the session, as in asyncio's
``sslproto.py`` and Redis' connection vtable: the session reads and writes plaintext and
never knows; the engine moves ciphertext between the socket and a :class:`TLSStream`.

Why a stream over two ``ssl.MemoryBIO`` objects rather than a wrapped ``SSLSocket``:

* in a non-blocking reactor, ``SSLWantReadError`` is not a ``BlockingIOError``,
  ``SSLSocket.sendmsg`` does not exist, and records OpenSSL has read but not yet
  returned are invisible to ``select`` (a readable-looking idle socket, or a stuck one);
* in the threaded engine, one thread reads a connection while others write to it under
  the hub lock; an ``SSL`` object must not be used by two threads at once, so every
  call on the stream is made with the hub lock held, and only raw socket I/O runs
  outside it.

With a stream, the engine decides when bytes cross the socket, nothing is buffered where
the selector cannot see it (:meth:`TLSStream.read` drains every complete record it was
fed), and the plain path does not change at all.

The context (:class:`ServerTLS`) is built once at start: TLS 1.2 at least, no
renegotiation, an unencrypted key (a daemon must reload on ``SIGHUP`` without prompting
for a passphrase). :meth:`ServerTLS.reload` builds a whole new context and swaps it in
only if it loaded, so a bad file on disk never replaces a good certificate, new
connections get the new one, and live connections keep theirs.
"""

from __future__ import annotations

import logging
import ssl

log = logging.getLogger("chatd.tls")

#: Plaintext asked for per ``SSLObject.read``: a TLS record carries at most 16 KiB.
RECORD_SIZE = 16 * 1024
#: Ciphertext read from the socket per ready event. One full record and its header;
#: a ``MemoryBIO`` keeps the capacity of the most it ever held, so reading 64 KiB at a
#: time (the plain read size) would leave that much behind in every busy connection.
READ_SIZE = RECORD_SIZE + 1024
#: Plaintext encrypted per ``SSLObject.write`` by the reactor: one record, for the same
#: reason on the outgoing side.
WRITE_BATCH = RECORD_SIZE
#: How long a closing TLS connection waits for the peer's close_notify (asyncio's
#: ``ssl_shutdown_timeout``); our own close_notify is sent at once.
SHUTDOWN_SECONDS = 2.0


class TLSConfigError(ValueError):
    """The certificate or key cannot be used; the text is one line for the operator."""


class _EncryptedKey(Exception):
    pass


def _refuse_password() -> bytes:
    # Called by OpenSSL only for an encrypted key; without a callback it would prompt on
    # the terminal, which a daemon reloading on SIGHUP must never do.
    raise _EncryptedKey


def build_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server context for ``cert`` (PEM chain) and ``key`` (PEM; default: in ``cert``).

    Raises :class:`TLSConfigError` saying which file is wrong and how.
    """
    for path in (cert, key):
        if path is None:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise TLSConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    try:
        context.load_cert_chain(cert, key, password=_refuse_password)
    except _EncryptedKey:
        raise TLSConfigError(
            f"{key or cert}: the private key is encrypted; chatd needs an unencrypted key"
        ) from None
    except ssl.SSLError as exc:
        raise TLSConfigError(_describe(exc, cert, key)) from None
    except OSError as exc:  # the file changed under us
        raise TLSConfigError(f"cannot load {cert}: {exc.strerror or exc}") from None
    return context


def _describe(exc: ssl.SSLError, cert: str, key: str | None) -> str:
    """Which file an OpenSSL error is about (OpenSSL's own text is "PEM lib")."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError):
        return f"{cert}: no PEM certificate in it"
    if exc.reason == "KEY_VALUES_MISMATCH":
        return f"{key or cert}: the private key does not match the certificate in {cert}"
    detail = f" ({exc.reason})" if exc.reason and exc.reason != "PEM lib" else ""
    return f"{key or cert}: no usable PEM private key in it{detail}"


class ServerTLS:
    """The process' TLS context, and where each connection's stream comes from."""

    def __init__(self, cert: str, key: str | None = None) -> None:
        self.cert = cert
        self.key = key
        #: Read by the engines for every new connection; replaced whole by reload().
        self.context = build_context(cert, key)

    def reload(self) -> bool:
        """Load the files again (SIGHUP); keep the old context if they do not load."""
        try:
            context = build_context(self.cert, self.key)
        except TLSConfigError as exc:
            log.error("TLS reload failed, keeping the current certificate: %s", exc)
            return False
        self.context = context
        log.info("TLS certificate reloaded from %s", self.cert)
        return True

    def stream(self) -> TLSStream:
        """A server-side stream for one accepted connection, on the current context."""
        return TLSStream(self.context)


class TLSStream:
    """One connection's TLS state: feed it ciphertext, take plaintext and ciphertext out.

    Sans-IO: nothing here touches a socket. After *every* call the engine must send what
    :meth:`take` returns, reads included: a read may answer a key update, a handshake
    step sends its flight, a close sends close_notify.

    Not thread-safe; the threaded engine calls it only with the hub lock held.
    """

    __slots__ = ("_obj", "_in", "_out", "_held", "held")

    def __init__(self, context: ssl.SSLContext, *, server_hostname: str | None = None) -> None:
        """A server-side stream; with ``server_hostname``, a client-side one that checks
        the peer's certificate names that host (a cluster node's link to ``rediss://``)."""
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        client = server_hostname is not None
        self._obj = context.wrap_bio(
            self._in, self._out, server_side=not client, server_hostname=server_hostname
        )
        #: Plaintext whose write OpenSSL refused until it reads (SSLWant*); the first
        #: item is retried as it is, as OpenSSL requires, after the next feed.
        self._held: list[bytes | bytearray] = []
        #: Bytes in ``_held``.
        self.held = 0

    def feed(self, data: bytes) -> None:
        """Ciphertext received from the peer."""
        self._in.write(data)

    def feed_eof(self) -> None:
        """The peer closed the TCP connection."""
        self._in.write_eof()

    def handshake(self) -> bool:
        """One handshake step on what was fed: ``True`` once established.

        Raises ``ssl.SSLError`` for bytes that are not a TLS handshake, or an EOF in
        the middle of one.
        """
        try:
            self._obj.do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        return True

    def read(self) -> tuple[bytes, bool]:
        """Every byte of plaintext the fed records hold, and whether the peer closed.

        The peer closed when it sent close_notify or when the TCP stream ended without
        one (a chat line cannot be truncated into a different command by that, so it is
        treated as any EOF). Raises ``ssl.SSLError`` for a corrupt record.
        """
        obj = self._obj
        chunks: list[bytes] = []
        closed = False
        try:
            while True:
                data = obj.read(RECORD_SIZE)
                if not data:
                    closed = True
                    break
                chunks.append(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except ssl.SSLEOFError:
            closed = True
        if self._held:
            self._retry()
        if len(chunks) == 1:
            return chunks[0], closed
        return b"".join(chunks), closed

    def encrypt(self, data: bytes | bytearray) -> None:
        """Queue plaintext for the peer (its ciphertext comes out of :meth:`take`).

        If OpenSSL must read before it can write, the data is held (see :attr:`held`)
        and written, unchanged, after the next :meth:`read`. Raises ``ssl.SSLError``.
        """
        if self._held:
            self._held.append(data)
            self.held += len(data)
            return
        try:
            self._obj.write(data)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            self._held.append(data)
            self.held += len(data)

    def _retry(self) -> None:
        held = self._held
        while held:
            try:
                self._obj.write(held[0])
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return
            self.held -= len(held.pop(0))

    def take(self) -> bytes:
        """Ciphertext to send, in order (empty when there is none)."""
        out = self._out
        return out.read() if out.pending else b""

    def close_notify(self) -> None:
        """Queue close_notify (we do not wait for the peer's: the socket closes next)."""
        try:
            self._obj.unwrap()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # sent ours; the peer's has not come
        except (ssl.SSLError, ValueError):
            pass  # the session is already broken: nothing to notify
