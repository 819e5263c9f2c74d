"""Run an engine in this process while a function drives its clients from another thread.

The engine serves on the calling (main) thread, since the engines install their signal
handlers there; the clients run in a worker thread and the engine is stopped with its
``request_stop`` (what SIGTERM does) when they return. A test that must see inside an
engine (a library finaliser taken away, the socket's TCP state at a hub callback) uses
this; everything else drives ``python -m chatd`` subprocesses.

What a subprocess would write to stderr is logged here, and fails the test as a
subprocess's traceback does: a record at ERROR or above from the ``chatd`` loggers (an
engine's "error handling a connection; dropping it") through conftest's autouse
``chatd_log_errors`` (a test allows one it provokes with ``allow_chatd_log``), and one
from ``asyncio`` while the engine's loop runs ("Task exception was never retrieved")
through :func:`serve_while`.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

from chatd.config import Config
from chatd.net.listeners import Listener
from chatd.service import ChatService
from chatwire import ALL_ENGINES, UVLOOP, log_errors

#: Engines this helper runs: the three, and asyncio on uvloop when it is installed.
ENGINES = ALL_ENGINES

#: Linux's TCP states (include/net/tcp_states.h), as ``tcpi_state`` gives them.
TCP_STATES = {1: "ESTABLISHED", 4: "FIN_WAIT1", 5: "FIN_WAIT2", 7: "CLOSE", 8: "CLOSE_WAIT"}


def tcp_state(sock: Any) -> str:
    """The TCP state of a server-side socket: whether its peer can have seen a close yet
    (still ESTABLISHED: no FIN has left). ``"closed"`` once the descriptor is gone."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)
    except (OSError, ValueError):  # uvloop's stand-in for a closed socket: ValueError
        return "closed"
    return TCP_STATES.get(raw[0], str(raw[0]))


def serve_while(
    engine: str,
    config: Config,
    clients: Callable[[Any, list[Listener]], None],
    allow: Sequence[str] = (),
) -> ChatService:
    """Serve ``config`` with ``engine`` until ``clients(server, listeners)`` returns.

    Returns the service (its counters); re-raises what ``clients`` raised, else raises
    :class:`chatwire.ServerFailure` if the ``asyncio`` logger logged at ERROR or above
    meanwhile (``allow``: patterns of messages the test provokes).
    """
    with log_errors("asyncio") as logged:
        service = _serve_while(engine, config, clients)
    logged.check(f"{engine}, served in-process,", allow)
    return service


def _serve_while(
    engine: str, config: Config, clients: Callable[[Any, list[Listener]], None]
) -> ChatService:
    service = ChatService(config)
    listeners = service.bind_listeners()
    failure: list[BaseException] = []

    def drive(server: Any) -> None:
        try:
            clients(server, listeners)
        except BaseException as exc:
            failure.append(exc)

    if engine.startswith("asyncio"):
        from chatd.engines.aio import AsyncServer, make_runner

        aio = AsyncServer(service, listeners)

        async def main() -> None:
            serving = asyncio.create_task(aio.main())
            try:
                await asyncio.get_running_loop().run_in_executor(None, drive, aio)
            finally:
                aio.request_stop()
                await asyncio.wait_for(serving, 30)

        with make_runner(engine == UVLOOP) as runner:
            runner.run(main())
    else:
        if engine == "reactor":
            from chatd.engines.reactor import Reactor

            server: Any = Reactor(service, listeners)
        else:
            from chatd.engines.threaded import ThreadedServer

            server = ThreadedServer(service, listeners)

        def drive_then_stop() -> None:
            try:
                drive(server)
            finally:
                server.request_stop()

        worker = threading.Thread(target=drive_then_stop, daemon=True)
        worker.start()
        server.run()
        worker.join(30)
    if failure:
        raise failure[0]
    return service
