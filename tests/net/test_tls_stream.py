"""The TLS layer without sockets: the context's rules, its errors and reload, and the
sans-IO stream against an in-memory client (certificates from trustme)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives import serialization

from chatd.net.tls import RECORD_SIZE, ServerTLS, TLSConfigError, TLSStream, build_context
from chatwire import TLSFiles


class MemoryClient:
    """A client SSLObject over two MemoryBIOs, wired to a server stream by hand."""

    def __init__(self, files: TLSFiles, context: ssl.SSLContext | None = None) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        context = context or files.client_context()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def step(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def to_server(self, stream: TLSStream) -> None:
        data = self.outgoing.read()
        if data:
            stream.feed(data)

    def from_server(self, stream: TLSStream) -> None:
        data = stream.take()
        if data:
            self.incoming.write(data)

    def read_all(self) -> bytes:
        chunks = []
        try:
            while True:
                data = self.obj.read(65536)
                if not data:
                    break
                chunks.append(data)
        except ssl.SSLWantReadError:
            pass
        return b"".join(chunks)


def handshake(client: MemoryClient, stream: TLSStream) -> None:
    """Run both sides until each is established (a handful of round trips at most)."""
    server_done = client_done = False
    for _ in range(10):
        client_done = client.step() or client_done
        client.to_server(stream)
        server_done = stream.handshake() or server_done
        client.from_server(stream)
        if server_done and client_done:
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture
def files(tmp_path: Path) -> TLSFiles:
    return TLSFiles(tmp_path)


@pytest.fixture
def stream(files: TLSFiles) -> TLSStream:
    return ServerTLS(str(files.cert), str(files.key)).stream()


def test_context_requires_tls_1_2_and_refuses_renegotiation(files: TLSFiles) -> None:
    context = build_context(str(files.cert), str(files.key))
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_a_client_limited_to_tls_1_1_cannot_connect(files: TLSFiles, stream: TLSStream) -> None:
    context = files.client_context()
    with pytest.warns(DeprecationWarning):  # which is the point
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    client = MemoryClient(files, context)
    assert client.step() is False  # the client could offer TLS 1.1: the server refuses
    client.to_server(stream)
    with pytest.raises(ssl.SSLError, match="UNSUPPORTED_PROTOCOL|VERSION"):
        stream.handshake()


def test_plaintext_crosses_both_ways_and_large_writes_arrive_whole(
    stream: TLSStream, files
) -> None:
    client = MemoryClient(files)
    handshake(client, stream)
    # Many small records in one feed: read() drains every one of them.
    for n in range(50):
        client.obj.write(f"line {n}\n".encode())
    client.to_server(stream)
    plain, closed = stream.read()
    assert plain == b"".join(f"line {n}\n".encode() for n in range(50)) and not closed
    big = bytes(range(256)) * 1000  # 256 kB: many records
    stream.encrypt(big)
    client.from_server(stream)
    assert client.read_all() == big


def test_a_record_split_across_feeds_comes_out_once_complete(stream: TLSStream, files) -> None:
    client = MemoryClient(files)
    handshake(client, stream)
    client.obj.write(b"x" * (2 * RECORD_SIZE))
    data = client.outgoing.read()
    stream.feed(data[:100])
    assert stream.read() == (b"", False)
    stream.feed(data[100:])
    assert stream.read() == (b"x" * (2 * RECORD_SIZE), False)


def test_close_notify_both_ways(stream: TLSStream, files) -> None:
    client = MemoryClient(files)
    handshake(client, stream)
    stream.encrypt(b"bye\n")
    stream.close_notify()
    client.from_server(stream)
    assert client.obj.read(100) == b"bye\n"
    assert client.obj.read(100) == b""  # close_notify: a clean end, not SSLEOFError
    # The peer's close_notify, and a TCP EOF without one, both end the input.
    other = ServerTLS(str(files.cert), str(files.key)).stream()
    client2 = MemoryClient(files)
    handshake(client2, other)
    with pytest.raises(ssl.SSLWantReadError):
        client2.obj.unwrap()
    client2.to_server(other)
    assert other.read() == (b"", True)
    third = ServerTLS(str(files.cert), str(files.key)).stream()
    handshake(MemoryClient(files), third)
    third.feed_eof()
    assert third.read() == (b"", True)


def test_garbage_and_an_eof_in_the_handshake_fail_it(stream: TLSStream, files) -> None:
    stream.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(ssl.SSLError):
        stream.handshake()
    half = ServerTLS(str(files.cert), str(files.key)).stream()
    client = MemoryClient(files)
    client.step()
    hello = client.outgoing.read()
    half.feed(hello[: len(hello) // 2])
    assert half.handshake() is False  # waits for the rest
    half.feed_eof()
    with pytest.raises(ssl.SSLError):
        half.handshake()


def test_a_write_refused_until_a_read_is_held_and_sent_unchanged(stream, files) -> None:
    # Before the handshake is done OpenSSL cannot write: the data is held, not lost.
    stream.encrypt(b"early\n")
    stream.encrypt(b"second\n")
    assert stream.held == len(b"early\nsecond\n")
    client = MemoryClient(files)
    handshake(client, stream)
    stream.read()  # the read after the handshake retries what is held, in order
    assert stream.held == 0
    client.from_server(stream)
    assert client.read_all() == b"early\nsecond\n"


def config_error(cert: str, key: str | None) -> str:
    """The one-line message build_context raises for these files."""
    with pytest.raises(TLSConfigError) as info:
        build_context(cert, key)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_config_errors_name_the_file_and_the_problem(tmp_path: Path, files: TLSFiles) -> None:
    cert, key = str(files.cert), str(files.key)
    missing = str(tmp_path / "missing.pem")
    assert config_error(missing, key) == f"cannot read {missing}: No such file or directory"
    assert config_error(cert, missing) == f"cannot read {missing}: No such file or directory"
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert config_error(str(garbage), key) == f"{garbage}: no PEM certificate in it"
    assert config_error(cert, str(garbage)) == f"{garbage}: no usable PEM private key in it"
    other = trustme.CA().issue_cert("localhost")
    other_key = tmp_path / "other-key.pem"
    other.private_key_pem.write_to_path(str(other_key))
    assert "does not match the certificate" in config_error(cert, str(other_key))
    encrypted = tmp_path / "encrypted.pem"
    loaded = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
    encrypted.write_bytes(
        loaded.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    # Never a passphrase prompt (a daemon reloading on SIGHUP has no one to ask).
    assert "the private key is encrypted" in config_error(cert, str(encrypted))
    # Certificate and key in one file need no --tls-key; a certificate alone is not enough.
    both = tmp_path / "both.pem"
    both.write_bytes(files.cert.read_bytes() + files.key.read_bytes())
    assert build_context(str(both))
    assert config_error(cert, None) == f"{cert}: no usable PEM private key in it"


@pytest.mark.allow_chatd_log("^TLS reload failed, keeping the current certificate: ")
def test_reload_swaps_in_a_good_certificate_and_keeps_the_old_one_otherwise(
    tmp_path: Path,
) -> None:
    first = TLSFiles(tmp_path, "first")
    tls = ServerTLS(str(first.cert), str(first.key))
    old = tls.context
    first.cert.write_text("broken\n")
    assert tls.reload() is False and tls.context is old
    second = TLSFiles(tmp_path, "second")
    first.cert.write_bytes(second.cert.read_bytes())
    first.key.write_bytes(second.key.read_bytes())
    assert tls.reload() is True and tls.context is not old
    # New streams use the new certificate: a client trusting only the new CA connects.
    handshake(MemoryClient(second), tls.stream())
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(MemoryClient(first), tls.stream())
