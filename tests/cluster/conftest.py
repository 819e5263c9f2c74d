"""Fixtures of the cluster tests: a real ``redis-server`` and reactor nodes of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redisproc import RedisServer

from chatwire import Server

#: Seconds a lease lasts by default in these tests: a dead node's members quit within
#: about this. A module that needs another overrides the ``lease`` fixture.
LEASE = 3


@pytest.fixture
def lease() -> float:
    return LEASE


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def node(
    start_server: Callable[..., Server], redis: RedisServer, lease: float
) -> Callable[..., Server]:
    """Start a reactor node of ``redis``'s cluster, with a line and an IRC listener."""

    def start(*args: str, **kw: Any) -> Server:
        return start_server(
            "reactor",
            "--irc-port",
            "0",
            "--ephemeral",
            "--redis",
            redis.url,
            "--redis-lease",
            str(lease),
            *args,
            **kw,
        )

    return start
