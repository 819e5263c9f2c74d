"""The asyncio engine reads the error of every stream it closes (in-process, real sockets).

When a fan-out's ``write`` meets a peer's reset, asyncio puts the error in the stream
protocol's close future. Its traceback holds the fan-out's frames, and they hold the
protocol: a reference cycle. ``StreamReaderProtocol.__del__`` reads the error to keep it
quiet, but the garbage collector finalises a cycle in no set order; when the future goes
first, asyncio logs "Future exception was never retrieved" with a traceback (CI saw it
once, in the hostile-crowd test). That order cannot be chosen from outside, so these
tests take the ``__del__`` away, which is the unlucky order every time, and check that
the engine itself reads what it closes.

The write must be the one that meets the reset, not a read: the reset waits unread
while the reader's transport is paused. The reader sends far more blank lines than flood
control lets through, so its task sleeps and asyncio stops reading it once its stream
buffer is full; then it resets, and the next line in the room is written to it.

On uvloop the same scenario also found the read loop's check for a peer gone while held
back crashing its task ("Task exception was never retrieved"): setting SO_LINGER on the
socket of a transport uvloop has closed raises ValueError, not OSError.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import pytest
from inprocess import ENGINES, serve_while

from chatd.config import Config
from chatd.engines.aio import AsyncServer
from chatwire import TIMEOUT, Client, reset

READERS = 8
#: Far more than the stream buffer (2 × 64 KiB) and flood control's burst take.
BLANK_LINES = 300_000


def _paused_readers(server: AsyncServer) -> int:
    """Open connections whose transport asyncio has stopped reading (loop thread only)."""
    return sum(
        1
        for conn in server.conns
        if not conn.transport.is_closing() and not conn.transport.is_reading()  # type: ignore[attr-defined]
    )


@pytest.mark.parametrize("engine", [e for e in ENGINES if e.startswith("asyncio")])
def test_a_write_that_meets_a_reset_leaves_no_unretrieved_future(
    engine: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    losses: list[str] = []
    connection_lost = asyncio.StreamReaderProtocol.connection_lost

    def recording_connection_lost(self: asyncio.StreamReaderProtocol, exc: Any) -> None:
        losses.append(type(exc).__name__)
        connection_lost(self, exc)

    monkeypatch.setattr(asyncio.StreamReaderProtocol, "connection_lost", recording_connection_lost)
    monkeypatch.delattr(asyncio.StreamReaderProtocol, "__del__")
    caplog.set_level(logging.ERROR, logger="asyncio")

    def clients(server: AsyncServer, listeners: list[Any]) -> None:
        port = listeners[0].sock.getsockname()[1]

        def paused() -> int:
            async def count() -> int:
                return _paused_readers(server)

            return asyncio.run_coroutine_threadsafe(count(), server.loop).result(TIMEOUT)

        sender = Client("127.0.0.1", port)
        sender.register("sender")
        try:
            for i in range(READERS):
                reader = Client("127.0.0.1", port)
                reader.register(f"reader{i}")
                sender.expect(f"reader{i} joined")
                reader.sock.sendall(b"\n" * BLANK_LINES)
                deadline = time.monotonic() + TIMEOUT
                while paused() == 0:  # a condition the loop reports, not a guess
                    assert time.monotonic() < deadline, "asyncio never paused the reader"
                reset(reader.sock)
                sender.send(f"line {i}")  # the fan-out writes to the reset reader
                sender.expect(f"reader{i} quit")
        finally:
            sender.close()

    service = serve_while(engine, Config(port=0), clients)
    gc.collect()
    # The scenario reached what it tests: each reader's loss came from a write.
    assert losses.count("ConnectionResetError") == READERS, losses
    assert service.stats["disconnect_reset"] == READERS
    unread = [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]
    assert not unread, unread[0]
