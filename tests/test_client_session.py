"""The client's session core in-process: reconnects, ghosts and endings, over real sockets.

A :class:`Session` runs in the test's event loop with a recording screen, against chatd
(or the fake server) behind a :class:`Relay` that can cut connections the way a dead
network path does. The backoff is passed in with millisecond delays, so a reconnect
takes milliseconds here and the real schedule is checked in tests/test_client_parts.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from test_client import FakeServer, Relay

from chatd.client.backoff import Backoff
from chatd.client.link import Endpoint
from chatd.client.session import Session, Settings
from chatwire import TIMEOUT


class RecordingScreen:
    """Keeps what a session shows; tests wait on it (no sleeping)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.statuses: list[str] = []
        self._news = asyncio.Event()

    def show(self, lines: Sequence[str]) -> None:
        self.lines += lines
        self._news.set()

    def status(self, text: str) -> None:
        self.statuses.append(text)
        self._news.set()

    def changed(self) -> None:
        self._news.set()

    async def until(self, condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._news.clear()
                await self._news.wait()

    def has_status(self, pattern: str) -> bool:
        return any(re.search(pattern, s) for s in self.statuses)


def fast_backoff() -> Backoff:
    return Backoff(first=0.01, cap=0.05, rng=lambda: 0.5)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 60))


def test_reconnect_over_a_dead_path_takes_an_alternative_nick_and_rejoins(start_server) -> None:
    server = start_server("reactor")
    bob = server.client("bob")
    bob.send("/join #side")
    bob.expect("you joined #side")
    with Relay(server.port) as relay:

        async def scenario() -> None:
            screen = RecordingScreen()
            settings = Settings(nick="alice", reconnect=True, auto_who=True)
            endpoint = Endpoint("127.0.0.1", relay.port)
            session = Session(endpoint, settings, screen, fast_backoff())
            tracker = session.tracker
            await session.open()
            running = asyncio.create_task(session.run())
            await screen.until(lambda: tracker.registered)
            session.send_line("/join #side")
            await screen.until(lambda: tracker.room == "#side" and "bob" in tracker.members)
            await asyncio.to_thread(bob.expect, r"^\* alice joined #side$")
            # The path dies; the server still holds the old connection, and its nick.
            relay.cut()
            await screen.until(lambda: screen.has_status("^connected to"))
            await screen.until(lambda: tracker.registered and tracker.room == "#side")
            assert tracker.nick == "alice_"
            assert screen.has_status(r"^nick alice is taken; trying alice_$")
            assert screen.has_status(r"^reconnecting in 0\.\d s \(attempt 1\)$")
            assert screen.has_status(r"^connected to 127\.0\.0\.1:\d+$")
            await asyncio.to_thread(bob.expect, r"^\* alice_ joined #side$")
            # The room list came back with /who: the ghost, the new self and bob.
            await screen.until(lambda: set(tracker.members) == {"alice", "alice_", "bob"})
            assert session.backoff.attempts == 0  # reset once registered again
            session.send_line("still here")
            await asyncio.to_thread(bob.expect, r"^alice_: still here$")
            session.quit()
            assert await running == 0

        run(scenario())


def test_without_reconnect_a_cut_ends_the_session_with_status_1(start_server) -> None:
    server = start_server("reactor")
    with Relay(server.port) as relay:

        async def scenario() -> None:
            screen = RecordingScreen()
            settings = Settings(nick="alice", lost_hint="; use --reconnect to retry")
            session = Session(Endpoint("127.0.0.1", relay.port), settings, screen)
            await session.open()
            running = asyncio.create_task(session.run())
            await screen.until(lambda: session.tracker.registered)
            relay.cut()
            assert await running == 1
            assert screen.statuses[-1].endswith("; use --reconnect to retry")
            lost = r"(server closed the connection|connection lost: )"
            assert re.match(lost, screen.statuses[-1])
            assert not session.connected.is_set()

        run(scenario())


def test_failed_attempts_are_reported_and_quitting_stops_the_retries(start_server) -> None:
    server = start_server("reactor")
    relay = Relay(server.port)

    async def scenario() -> None:
        screen = RecordingScreen()
        settings = Settings(nick="alice", reconnect=True)
        session = Session(Endpoint("127.0.0.1", relay.port), settings, screen, fast_backoff())
        await session.open()
        running = asyncio.create_task(session.run())
        await screen.until(lambda: session.tracker.registered)
        relay.close()  # the port is gone: each attempt is refused
        await screen.until(lambda: screen.has_status(r"^attempt 3 failed: cannot connect"))
        assert screen.has_status(r"^reconnecting in 0\.\d s \(attempt 2\)$")
        session.quit()
        assert await running == 0

    run(scenario())


def test_the_password_goes_first_on_every_connection() -> None:
    with FakeServer() as fake, Relay(fake.port) as relay:

        async def scenario() -> None:
            screen = RecordingScreen()
            settings = Settings(nick="alice", password="pw", reconnect=True)
            session = Session(Endpoint("127.0.0.1", relay.port), settings, screen, fast_backoff())
            await session.open()
            running = asyncio.create_task(session.run())
            await screen.until(lambda: session.tracker.registered)
            relay.cut()
            await screen.until(lambda: screen.has_status("^connected to"))
            await screen.until(lambda: session.tracker.registered)
            session.quit()
            assert await running == 0

        run(scenario())
        lines = [fake.next_line() for _ in range(5)]
        assert lines == ["/pass pw", "alice", "/pass pw", "alice", "/quit"]


def test_a_server_that_never_closes_is_given_up_after_linger() -> None:
    with FakeServer(close_on_eof=False) as fake:

        async def scenario() -> None:
            screen = RecordingScreen()
            session = Session(Endpoint("127.0.0.1", fake.port), Settings(linger=0.2), screen)
            await session.open()
            running = asyncio.create_task(session.run())
            session.send_raw(b"alice\n")
            await screen.until(lambda: session.tracker.registered)
            session.finish_input()
            assert await running == 1
            assert screen.statuses == ["server did not close the connection; giving up"]

        run(scenario())
