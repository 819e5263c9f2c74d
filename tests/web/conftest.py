"""Fixtures for the browser page's tests: one Chromium for the session (Debian's, driven by
Playwright; never ``playwright install``), a fresh context and page per test, and chatd
servers with an HTTP listener on a port the test knows (so a restarted server can come
back on the same one and the page reconnect to it).

A page fails its test when it throws, or logs a console error (a CSP violation is one),
other than the browser's own report of a WebSocket that could not connect: that one is
what a page reconnecting to a stopped server sees, on purpose.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chatwire import Server

try:
    from playwright import sync_api
except ImportError:  # the tests skip (see the browser fixture)
    sync_api = None

CHROMIUM = shutil.which("chromium")
#: Seconds Playwright's expect() waits for the page by default.
EXPECT_SECONDS = 10
#: Console errors a page may log: a WebSocket that could not connect (a server down).
EXPECTED_CONSOLE = re.compile(r"WebSocket connection to .* failed")

if sync_api is not None:
    sync_api.expect.set_options(timeout=EXPECT_SECONDS * 1000)


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WebServer:
    """A chatd subprocess with line, IRC and HTTP listeners."""

    server: Server
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module, not per session: Playwright's sync API runs an asyncio
    loop in this thread while it is open, and a later test that runs its own loop here
    (an engine served in-process) would fail under the same xdist worker."""
    if sync_api is None:
        pytest.skip("Playwright is not installed (pip install -e '.[test]')")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[..., Any]]:
    """Pages in fresh contexts (nothing in localStorage); each checked for errors."""
    contexts = []
    problems: list[str] = []

    def make(**context_options: Any) -> Any:
        context = browser.new_context(**context_options)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: (
                problems.append(f"console {msg.type}: {msg.text}")
                if msg.type == "error" and not EXPECTED_CONSOLE.search(msg.text)
                else None
            ),
        )
        page.on("dialog", lambda dialog: problems.append(f"dialog: {dialog.message}"))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not problems, "\n".join(problems)


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


@pytest.fixture
def web_server(start_server: Callable[..., Server]) -> Callable[..., WebServer]:
    """Start chatd with ``--http-port`` (a free port, or the one given, to restart a
    server where the page expects it) and ``--irc-port 0``; history in memory unless a
    ``data_dir`` is given. Flood control allows bursts large enough for the tests'
    senders. Stopped and checked by ``start_server`` at the end of the test."""

    def start(http_port: int | None = None, data_dir: Path | None = None) -> WebServer:
        port = http_port if http_port is not None else free_port()
        storage = ["--data-dir", str(data_dir)] if data_dir is not None else ["--ephemeral"]
        # Every listener is bound before the first "listening on" line is printed, so
        # the HTTP port accepts once the Server is up.
        server = start_server(
            "reactor",
            "--irc-port",
            "0",
            "--http-port",
            str(port),
            "--flood-burst",
            "500",
            *storage,
        )
        return WebServer(server, port)

    return start
