from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# No deadline per example: these tests check behaviour, and CI's 2 cores are shared with
# the servers other tests start (a deadline there only measures the neighbours).
settings.register_profile("chatd", deadline=None)
settings.load_profile("chatd")

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "server"))

from chatwire import ENGINES, Server, TLSFiles, log_errors  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_chatd_log(*patterns): records of this process's chatd loggers at ERROR or "
        "above that the test provokes on purpose (regular expressions searched in the "
        "message); any other such record fails the test",
    )


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(autouse=True)
def chatd_log_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test in which code of chatd running in this process (an engine served
    in-process, a service or a dialect driven directly) logs at ERROR or above, as a
    subprocess server's traceback fails the test that started it."""
    marker = request.node.get_closest_marker("allow_chatd_log")
    allow = marker.args if marker is not None else ()
    with log_errors("chatd") as handler:
        yield
    problems = handler.problems(allow)
    if problems:
        pytest.fail(
            "chatd logged at ERROR or above in this process:\n" + "\n".join(problems),
            pytrace=False,
        )


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start chatd subprocesses; each is stopped (SIGTERM) at the end of the test, and the
    test fails when one exited non-zero or wrote a traceback or an ERROR record (see
    :meth:`chatwire.Server.check`). Their stderr files are in the test's ``tmp_path``."""
    servers: list[Server] = []

    def start(engine: str, *args: str, **kw: Any) -> Server:
        """Keywords (``preexec_fn``, ``tls``, ``allow``, ``expect_exit``) go to
        :class:`Server`."""
        server = Server(engine, *args, log_dir=tmp_path, **kw)
        servers.append(server)
        return server

    yield start
    failures = []
    for server in servers:  # every server is stopped, whatever the first one says
        try:
            server.finish()
        except Exception as exc:
            failures.append(str(exc) or repr(exc))
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


@pytest.fixture
def server(engine: str, start_server: Callable[..., Server]) -> Server:
    """One server of the parametrized engine with default options."""
    return start_server(engine)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A throwaway CA and server certificate (trustme), shared by the session's tests."""
    return TLSFiles(tmp_path_factory.mktemp("tls"))
