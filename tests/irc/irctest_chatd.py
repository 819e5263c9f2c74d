"""irctest controller for chatd's IRC dialect.

irctest (``/work/shared/irctest``, see its PINNED.md) starts a fresh server in the
foreground for every test through a controller's ``run()`` and kills its process group
afterwards. This one runs ``python -m chatd`` from the checkout this file lives in (its
``server/`` goes first on ``PYTHONPATH``), with the names irctest assumes: server
``My.Little.Server``, operator ``operuser``/``operpassword``, and the connection password
a test passes. Flood control is off because irctest sends bursts faster than a human.

The engine comes from ``CHATD_ENGINE``: ``reactor`` (default), ``threaded``, ``asyncio``
or ``asyncio+uvloop``. ``CHATD_PYTHON`` overrides the interpreter (default: the one
running irctest). With ``ssl`` the IRC port is a TLS listener (``--irc-tls-port``) with the
certificate irctest generates. Given a WebSocket address (websocket.py's tests), chatd
also serves HTTP there (``--http-port``), whose ``/`` is IRC over WebSocket; chatd binds
every listener on one host, so a WebSocket host other than the IRC one is not offered
(and irctest pauses before its synchronising PINGs there: see WEBSOCKET_SYNC_SLEEP).
Services are not offered: ``run()`` raises ``NotImplementedByController``, which irctest
reports as a skip.

chatd's stderr goes to a file. When irctest stops the server (``kill``, ``terminate``),
the test fails if chatd ended with a status other than 0 (irctest sends SIGTERM, and
SIGKILL 5 s later) or wrote a traceback or a log record at ERROR or above: the check is
chatwire's, as for every other test that starts a server, and its message quotes the
file (kept when the check fails, removed otherwise).

Use it with ``tests/irc/run_irctest.py``; by hand, put ``tests/irc`` on ``PYTHONPATH``
and pass ``--controller irctest_chatd`` to pytest in the irctest folder.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from irctest.basecontrollers import BaseServerController, DirectoryBasedController
from irctest.runner import NotImplementedByController

#: The checkout's ``server/`` folder (``tests/irc/`` → two levels up).
SERVER_DIR = Path(__file__).resolve().parents[2] / "server"
#: ``tests/``, for chatwire's check of a server's end (appended: nothing is shadowed).
TESTS_DIR = Path(__file__).resolve().parents[1]
if str(TESTS_DIR) not in sys.path:
    sys.path.append(str(TESTS_DIR))

from chatwire import ServerFailure, check_server_log  # noqa: E402

#: irctest's pause before each synchronising PING, in websocket.py's tests only. Their
#: pattern is "client 1 sends, client 2 at once sends PING and expects client 1's line
#: before its PONG": an order across two connections, which no server can promise when
#: both lines land in the same instant (the kernel's readiness order decides). Seen once
#: in 6 full runs on a loaded 2-core machine (asyncio+uvloop: the PONG came first; a
#: stress of 6000 such rounds then showed 2 late lines and none lost). Elsewhere 0.
WEBSOCKET_SYNC_SLEEP = 0.05

#: ``CHATD_ENGINE`` value → chatd engine options.
ENGINE_ARGS: dict[str, list[str]] = {
    "reactor": ["--engine", "reactor"],
    "threaded": ["--engine", "threaded"],
    "asyncio": ["--engine", "asyncio"],
    "asyncio+uvloop": ["--engine", "asyncio", "--uvloop"],
}


def engine_args(name: str) -> list[str]:
    """The chatd options for one ``CHATD_ENGINE`` value; an unknown one is our bug."""
    try:
        return ENGINE_ARGS[name]
    except KeyError:
        raise ValueError(f"CHATD_ENGINE={name!r}: expected one of {sorted(ENGINE_ARGS)}") from None


def _drain(fd: int) -> None:
    """Read and drop a pipe's data until its writer is gone, then close it."""
    try:
        while os.read(fd, 65536):
            pass
    finally:
        os.close(fd)


class ChatdController(BaseServerController, DirectoryBasedController):
    """Runs one chatd per test; chatd needs no config file (the directory stays empty)."""

    software_name = "chatd"
    supported_sasl_mechanisms: set[str] = set()
    supports_sts = False
    #: No services: tests marked ``services`` are deselected, and registerUser raises.
    nickserv = "NickServ"
    #: No extbans yet (mute_extban.py skips when this is None).
    extban_mute_char = None
    #: chatd answers every command in order, so irctest's PING/PONG sync is enough
    #: (``run()`` sets :data:`WEBSOCKET_SYNC_SLEEP` for websocket.py's tests).
    sync_sleep_time = 0.0
    #: The running chatd's stderr file.
    stderr_path: Path | None = None
    #: What the check of the last chatd found, raised once irctest has cleaned up.
    failure: str | None = None

    def run(
        self,
        hostname: str,
        port: int,
        *,
        password: str | None,
        ssl: bool,
        run_services: bool,
        faketime: str | None,
        websocket_hostname: str | None,
        websocket_port: int | None,
    ) -> None:
        if websocket_port is not None and websocket_hostname not in (None, hostname):
            raise NotImplementedByController("Websocket on a host of its own")
        if run_services:
            raise NotImplementedByController("services")
        assert self.proc is None
        self.sync_sleep_time = WEBSOCKET_SYNC_SLEEP if websocket_port is not None else 0.0
        self.hostname = hostname
        self.port = port
        self.create_config()
        # The line listener's port comes from irctest's own registry of used ports too:
        # a kernel-chosen one (--port 0) could be a port irctest has just handed another
        # worker's server and that server has not bound yet.
        _, line_port = self.get_hostname_and_port()
        command = [
            os.environ.get("CHATD_PYTHON", sys.executable),
            "-m",
            "chatd",
            *engine_args(os.environ.get("CHATD_ENGINE", "reactor")),
            "--host",
            hostname,
            "--port",
            str(line_port),
            "--irc-tls-port" if ssl else "--irc-port",
            str(port),
            *self._tls_args(ssl),
            *(["--http-port", str(websocket_port)] if websocket_port is not None else []),
            "--server-name",
            "My.Little.Server",
            "--oper",
            "operuser:operpassword",
            *(["--password", password] if password else []),
            "--flood-rate",
            "0",
            "--log-level",
            "warning",
            # History on, as by default, in a folder of this server's own.
            "--data-dir",
            tempfile.mkdtemp(prefix="chatd-irctest-data-"),
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SERVER_DIR), *filter(None, [env.get("PYTHONPATH")])]
        )
        fd, name = tempfile.mkstemp(prefix="chatd-irctest-", suffix=".stderr")
        self.stderr_path = Path(name)
        read_end, write_end = os.pipe()
        try:
            self.proc = self.execute(
                command, proc_name="chatd", env=env, stderr=fd, stdout=write_end
            )
        finally:
            os.close(fd)
            os.close(write_end)
        self._await_listening(read_end, http=websocket_port is not None)
        # Tests call addClient() → wait_for_port() before connecting; waiting here too
        # makes a chatd that exits at once (say, on an unknown option) fail in setUp with
        # ProcessStopped instead of inside the test body.
        self.wait_for_port()

    def _await_listening(self, fd: int, *, http: bool) -> None:
        """Wait for this chatd's own ``irc: listening on`` line, and its ``http:`` one when
        ``http`` (then drain its stdout).

        irctest's ``wait_for_port`` only asks whether *something* accepts on the port: a
        port chosen free a moment ago can be taken by another process of a busy test run
        (a server bound to port 0 by another test), the check passes while chatd is still
        starting, the test's client is refused, and the teardown's SIGTERM lands before
        chatd handles signals. Seen once in CI (``testInviteExceptionRemoval``: connection
        refused, then "killed by signal 15" with an empty stderr). chatd announces each
        listener once it is bound (line, IRC, HTTP, then the TLS ones: ``irc tls``).
        """
        wanted = (b" irc", b" http: listening on") if http else (b" irc",)
        deadline = time.monotonic() + 60
        buffered = b""
        try:
            while not all(w in buffered for w in wanted) or not buffered.endswith(b"\n"):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                    break  # wait_for_port and check_is_alive say what went wrong
                chunk = os.read(fd, 4096)
                if not chunk:
                    break  # chatd ended: check_is_alive raises ProcessStopped
                buffered += chunk
        finally:
            threading.Thread(target=_drain, args=(fd,), daemon=True).start()

    def kill_proc(self) -> None:
        proc = self.proc
        super().kill_proc()
        self._check_end(proc)

    def terminate(self) -> None:
        proc = self.proc
        super().terminate()
        self._check_end(proc)
        self._raise_failure()

    def kill(self) -> None:
        super().kill()  # kill_proc, then irctest's own cleanup (ports, directory)
        self._raise_failure()

    def _check_end(self, proc: subprocess.Popen | None) -> None:
        """Check the chatd that just ended: its status and its stderr file."""
        path, self.stderr_path = self.stderr_path, None
        if proc is None or path is None:
            return
        engine = os.environ.get("CHATD_ENGINE", "reactor")
        try:
            check_server_log(f"chatd {engine} (pid {proc.pid})", path, status=proc.returncode)
        except ServerFailure as exc:
            self.failure = str(exc)
        else:
            path.unlink(missing_ok=True)

    def _raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure:
            raise ServerFailure(failure)

    def _tls_args(self, ssl: bool) -> list[str]:
        """With ``ssl``, the certificate irctest makes (its openssl-based gen_ssl)."""
        if not ssl:
            return []
        self.gen_ssl()
        return ["--tls-cert", str(self.pem_path), "--tls-key", str(self.key_path)]


def get_irctest_controller_class() -> type[ChatdController]:
    return ChatdController
