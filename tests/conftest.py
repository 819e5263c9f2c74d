from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from chatwire import ENGINES, Server, TLSFiles  # noqa: E402


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def start_server() -> Iterator[Callable[..., Server]]:
    """Start chatd subprocesses; each is stopped (SIGTERM) at the end of the test."""
    servers: list[Server] = []

    def start(engine: str, *args: str, **kw: Any) -> Server:
        """Keywords (``preexec_fn``, ``tls``) go to :class:`Server`."""
        server = Server(engine, *args, **kw)
        servers.append(server)
        return server

    yield start
    for server in servers:
        try:
            server.stop()
        except Exception:
            pass


@pytest.fixture
def server(engine: str, start_server: Callable[..., Server]) -> Server:
    """One server of the parametrized engine with default options."""
    return start_server(engine)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and server certificate (trustme), shared by the session's tests."""
    return TLSFiles(tmp_path_factory.mktemp("tls"))
