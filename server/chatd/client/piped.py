"""The plain client: stdin to the server as it comes, server lines to stdout exactly.

This is the scriptable mode (``printf 'alice\\nhello\\n/quit\\n' | chatd-client``) and the
fallback on a terminal without the ``tui`` extra. Stdout carries the server's lines and
nothing else (control characters made visible, optionally ``--timestamps``); the
client's own messages go to stderr prefixed ``chatd-client:``, so a script never
mistakes one for the other.

Input is sent byte for byte, not re-split into lines, and the next chunk is read only
once the last one is sent: a fast producer waits for a slow connection instead of
filling memory.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence

from chatd.client.lines import visible
from chatd.client.link import Endpoint
from chatd.client.look import stamp
from chatd.client.session import Session, Settings

PROG = "chatd-client"


def err(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class PipedScreen:
    """Server lines to stdout, status lines to stderr."""

    def __init__(self, timestamps: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.timestamps = timestamps
        self.clock = clock

    def show(self, lines: Sequence[str]) -> None:
        prefix = stamp(self.clock()) if self.timestamps else ""
        sys.stdout.write("".join(prefix + visible(line) + "\n" for line in lines))
        sys.stdout.flush()

    def status(self, text: str) -> None:
        err(visible(text))

    def changed(self) -> None:
        pass


def _pollable(fd: int) -> bool:
    """Whether epoll accepts ``fd``: pipes, sockets and terminals, not regular files
    or ``/dev/null`` (which asyncio would accept and then fail on in a callback)."""
    probe = selectors.DefaultSelector()
    try:
        probe.register(fd, selectors.EVENT_READ)
    except (ValueError, OSError):
        return False
    finally:
        probe.close()
    return True


async def read_chunks(fd: int) -> AsyncGenerator[bytes, None]:
    """Chunks of input from ``fd`` until its end.

    A pipe or terminal is read through the event loop. asyncio makes the descriptor
    non-blocking, and that flag belongs to the open file, which a terminal shares with
    the shell: it is put back at the end, or the shell's next read would fail.
    """
    if not _pollable(fd):
        while chunk := os.read(fd, 65536):  # a regular file: never blocks for long
            yield chunk
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    was_blocking = os.get_blocking(fd)
    pipe = os.fdopen(fd, "rb", buffering=0, closefd=False)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while chunk := await reader.read(65536):
            yield chunk
    finally:
        transport.close()
        os.set_blocking(fd, was_blocking)


async def pump_input(session: Session, chunks: AsyncIterator[bytes]) -> None:
    """Input to the server; waits out a reconnect rather than dropping input."""
    async for chunk in chunks:
        await session.connected.wait()
        session.send_raw(chunk)
        await session.drain()
    await session.connected.wait()
    session.finish_input()


async def run_piped(
    endpoint: Endpoint, settings: Settings, timestamps: bool, stdin_fd: int = 0
) -> int:
    """Connect, relay until the session ends; the exit status."""
    session = Session(endpoint, settings, PipedScreen(timestamps))
    await session.open()
    chunks = read_chunks(stdin_fd)
    feeder = asyncio.create_task(pump_input(session, chunks))
    relay = asyncio.create_task(session.run())
    try:
        done, _ = await asyncio.wait({feeder, relay}, return_when=asyncio.FIRST_COMPLETED)
        if relay not in done:
            feeder.result()  # input ended: raise if reading it failed
        return await relay
    finally:
        for task in (feeder, relay):
            task.cancel()
        await asyncio.gather(feeder, relay, return_exceptions=True)
        await chunks.aclose()
