"""Opening a connection to a server, in plain TCP or in TLS, with errors a person can read.

asyncio's streams carry both, so the session above never knows which it has, with one
exception that :attr:`Link.can_half_close` states: TLS cannot close only its sending
half, so a piped client whose input ends sends ``/quit`` over TLS instead.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass


class ConnectError(Exception):
    """The connection could not be made; the message says why, for the user."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    #: None for plain TCP.
    tls: ssl.SSLContext | None = None
    #: Seconds for the TCP connection and the TLS handshake together.
    timeout: float = 10.0

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (" (TLS)" if self.tls else "")


def tls_context(ca: str | None = None, insecure: bool = False) -> ssl.SSLContext:
    """The system's trust store and host name checks, plus ``ca`` if given.

    ``insecure`` turns verification off: encryption without knowing who is at the
    other end, for a test server with a throwaway certificate. The caller says so.
    """
    context = ssl.create_default_context()
    if ca is not None:
        context.load_verify_locations(cafile=ca)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass
class Link:
    """One open connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def can_half_close(self) -> bool:
        return self.writer.can_write_eof()

    def close(self) -> None:
        self.writer.close()


def describe(exc: BaseException) -> str:
    """A short, readable reason for a failed connect, read or write."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted: {exc.verify_message} (--ca FILE trusts a private CA)"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if reason == "WRONG_VERSION_NUMBER":
            return "TLS handshake failed: the server did not answer in TLS (is it a TLS port?)"
        return f"TLS error: {reason}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        if exc.errno:  # asyncio's strerror is "Connect call failed (...)": say what failed
            return os.strerror(exc.errno)
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


async def open_link(endpoint: Endpoint) -> Link:
    """Connect (and shake hands, for TLS) within the endpoint's timeout."""
    try:
        async with asyncio.timeout(endpoint.timeout):
            reader, writer = await asyncio.open_connection(
                endpoint.host,
                endpoint.port,
                ssl=endpoint.tls,
                server_hostname=endpoint.host if endpoint.tls else None,
                limit=1 << 20,
            )
    except (OSError, ssl.SSLError) as exc:  # TimeoutError is an OSError
        raise ConnectError(f"cannot connect to {endpoint}: {describe(exc)}") from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Link(reader, writer)
