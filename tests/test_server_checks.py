"""The checks that make a test fail when a server it started fails (issue 15, defect 3).

The project standard: a test that starts a server fails when that server exits non-zero
or writes a traceback. chatwire's :class:`~chatwire.Server` sends chatd's stderr to a
file, and :meth:`~chatwire.Server.finish` (what conftest's ``start_server`` calls at the
end of every test) raises :class:`~chatwire.ServerFailure` quoting that file when the
server ended with another status, or wrote a traceback or a log record at ERROR or above.

Each check is shown failing on a real server, over real sockets: one that cannot start
(an unknown option), one killed, one whose certificate reload fails (an ERROR record),
and one with a bug planted through a ``sitecustomize`` module on its ``PYTHONPATH`` (a
``/boom`` command that raises, as a bug in a command would: each engine's own handling of
an exception then writes a traceback). Then a pytest run of its own shows the fixtures
failing the test that started such a server, and an engine served in-process failing
the test on the same planted bug.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatwire import (
    ENGINES,
    SERVER_SRC,
    TRACEBACK,
    Server,
    ServerFailure,
    TLSFiles,
    stderr_problems,
)

TESTS = Path(__file__).resolve().parent

#: A module the server imports at start-up (Python's ``site`` does, from PYTHONPATH):
#: it adds ``/boom``, a line command that raises, to chatd's real command table.
SITECUSTOMIZE = """\
from chatd.dialects.line import session


def _boom(session, args):
    raise RuntimeError("boom: a bug planted by the test")


session._COMMANDS["boom"] = _boom
"""


@pytest.fixture
def planted(tmp_path: Path) -> dict[str, str]:
    """The environment of a chatd with the ``/boom`` bug."""
    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{SERVER_SRC}"}


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers this module checks by hand (it asserts what the check raises); one
    a failing test left running is killed at the end."""
    started: list[Server] = []

    def start_server(engine: str, *args: str, **kw: Any) -> Server:
        server = Server(engine, *args, log_dir=tmp_path, **kw)
        started.append(server)
        return server

    yield start_server
    for server in started:
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()


# --------------------------------------------------------------------------- stderr


RECORD = "2024-05-01 12:00:00,123 chatd.{} {} {}"
RAISED = [
    "Traceback (most recent call last):",
    '  File "x.py", line 1, in f',
    "RuntimeError: boom",
]


def test_error_records_and_tracebacks_are_problems_warnings_are_not() -> None:
    text = "\n".join(
        [
            RECORD.format("tls", "INFO", "TLS certificate reloaded"),
            RECORD.format("accept", "WARNING", "accept failed (Too many open files)"),
            RECORD.format("reactor", "ERROR", "error handling a connection; dropping it"),
            *RAISED,
            "",
            "During handling of the above exception, another exception occurred:",
            "",
            *RAISED,
            RECORD.format("threaded", "WARNING", "shutdown: the hub stayed busy"),
            "Exception in thread Thread-3 (run):",
            *RAISED,
            RECORD.format("x", "CRITICAL", "out of memory"),
        ]
    )
    assert stderr_problems(text) == [
        RECORD.format("reactor", "ERROR", "error handling a connection; dropping it"),
        "Exception in thread Thread-3 (run):",
        RECORD.format("x", "CRITICAL", "out of memory"),
    ]
    # An allowance covers its own record (and the traceback it logged) only.
    assert stderr_problems(text, allow=["error handling a connection", "out of memory"]) == [
        "Exception in thread Thread-3 (run):"
    ]


def test_an_allowed_record_does_not_hide_a_traceback_that_follows_it() -> None:
    failed = RECORD.format("tls", "ERROR", "TLS reload failed, keeping the current certificate")
    assert stderr_problems("\n".join([failed, *RAISED]), allow=["TLS reload failed"]) == []
    # A second traceback that no chaining line ties to the record is an entry of its own,
    # and one after a record below ERROR (which logs no traceback here) too.
    text = "\n".join([failed, *RAISED, *RAISED, RECORD.format("x", "INFO", "hi"), *RAISED])
    assert stderr_problems(text, allow=["TLS reload failed"]) == [RAISED[0], RAISED[0]]
    # Lines before the first record (an exception at import) are an entry too.
    assert stderr_problems("\n".join(RAISED)) == [RAISED[0]]


# --------------------------------------------------------------------------- real servers


def test_a_server_that_cannot_start_raises_quoting_its_stderr(tmp_path: Path) -> None:
    with pytest.raises(ServerFailure) as failed:
        Server("reactor", "--bogus", log_dir=tmp_path)
    message = str(failed.value)
    assert "did not start" in message and "status 2" in message, message
    assert "No such option '--bogus'" in message, message
    (stderr_file,) = tmp_path.glob("*.stderr")
    assert str(stderr_file) in message


def test_a_killed_server_fails_the_check_unless_the_test_expects_it(
    start: Callable[..., Server],
) -> None:
    server = start("reactor")
    server.client("amy").ping()
    server.proc.kill()
    server.proc.wait()
    with pytest.raises(ServerFailure) as failed:
        server.finish()
    message = str(failed.value)
    assert "killed by signal 9 (expected 0)" in message, message
    assert "it had ended (status -9) before it was stopped" in message, message
    assert str(server.stderr_path) in message

    on_purpose = start("reactor", expect_exit=None)
    on_purpose.client("amy").ping()
    on_purpose.proc.kill()
    assert on_purpose.finish() == -signal.SIGKILL


def test_a_server_stopped_with_sigterm_passes_the_check(start: Callable[..., Server]) -> None:
    server = start("reactor")
    server.client("amy").ping()
    assert server.finish() == 0
    assert server.stderr_path.read_text() == ""  # --log-level warning: nothing to say


def test_an_error_record_fails_the_check_and_only_an_allowance_lets_it_pass(
    start: Callable[..., Server], tmp_path: Path
) -> None:
    """A real ERROR record: a certificate reload that fails (a truncated file)."""
    tls = TLSFiles(tmp_path)
    server = start("reactor", tls=tls)
    server.client("amy").ping()  # the engine runs: SIGHUP is handled, not fatal
    tls.cert.write_text("truncated\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("TLS reload failed")
    with pytest.raises(ServerFailure) as failed:
        server.finish()
    message = str(failed.value)
    assert "ERROR TLS reload failed, keeping the current certificate" in message, message
    assert "exited" not in message  # the status was fine: the record alone fails
    server.allow = ("TLS reload failed, keeping the current certificate",)
    server.check()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_traceback_fails_the_check_quoting_it(
    engine: str, start: Callable[..., Server], planted: dict[str, str]
) -> None:
    server = start(engine, env=planted)
    amy, bob = server.room("amy", "bob")
    amy.send("/boom")
    amy.wait_closed()  # the bug costs amy her connection
    bob.expect("amy quit")  # and nobody else anything
    bob.ping()
    with pytest.raises(ServerFailure) as failed:
        server.finish()
    message = str(failed.value)
    assert f"chatd {engine} (pid {server.proc.pid}) failed:" in message, message
    assert f"its stderr, {server.stderr_path} (last 60 lines):" in message, message
    assert TRACEBACK in message and "RuntimeError: boom: a bug planted" in message, message
    assert "exited" not in message  # it still stopped cleanly: the traceback alone fails


@pytest.mark.parametrize("engine", ENGINES)
def test_sigterm_right_after_the_announcement_exits_zero(
    engine: str, start: Callable[..., Server]
) -> None:
    """chatd holds SIGTERM from its announcement until the engine's handler is in
    (chatd.net.signals): a supervisor may stop it the moment it says it listens."""
    statuses = []
    for _ in range(5):
        server = start(engine, expect_exit=None)
        server.proc.send_signal(signal.SIGTERM)
        statuses.append(server.finish())
    assert statuses == [0] * 5


# --------------------------------------------------------------------------- the fixtures

INNER_TESTS = """\
import pytest
from inprocess import serve_while

from chatd.config import Config
from chatd.dialects.line import session as line_session
from chatwire import Client

PLANTED = {planted!r}


def test_clean(start_server):
    start_server("reactor").client("amy").ping()


def test_traceback(start_server):
    amy = start_server("reactor", env=PLANTED).client("amy")
    amy.send("/boom")
    amy.wait_closed()


def test_killed(start_server):
    server = start_server("reactor")
    server.client("amy").ping()
    server.proc.kill()
    server.proc.wait()


def test_killed_on_purpose(start_server):
    server = start_server("reactor", expect_exit=None)
    server.client("amy").ping()
    server.proc.kill()


def _boom(session, args):
    raise RuntimeError("boom: a bug planted in-process")


def _serve_the_bug(monkeypatch):
    monkeypatch.setitem(line_session._COMMANDS, "boom", _boom)

    def clients(server, listeners):
        amy = Client("127.0.0.1", listeners[0].sock.getsockname()[1])
        amy.register("amy")
        amy.send("/boom")
        amy.wait_closed()

    serve_while("reactor", Config(port=0), clients)


def test_in_process(monkeypatch):
    _serve_the_bug(monkeypatch)


@pytest.mark.allow_chatd_log("^error handling a connection; dropping it$")
def test_in_process_allowed(monkeypatch):
    _serve_the_bug(monkeypatch)
"""


def test_the_fixtures_fail_the_test_whose_server_failed(
    tmp_path: Path, planted: dict[str, str]
) -> None:
    """conftest's fixtures, loaded as a plugin into a pytest run of their own."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_inner.py").write_text(INNER_TESTS.format(planted=planted))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS / "engines"), str(SERVER_SRC)])
    junit = tmp_path / "inner.xml"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider"]
        + ["-q", "-p", "no:xdist", f"--junitxml={junit}", "test_inner.py"],
        cwd=inner,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout[-3000:] + done.stderr[-3000:]
    reports = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        text = "".join(
            (child.get("message") or "") + (child.text or "")
            for child in case
            if child.tag in ("failure", "error")
        )
        reports[case.get("name")] = text
    assert set(reports) == {
        "test_clean",
        "test_traceback",
        "test_killed",
        "test_killed_on_purpose",
        "test_in_process",
        "test_in_process_allowed",
    }, output
    for name in ("test_clean", "test_killed_on_purpose", "test_in_process_allowed"):
        assert reports[name] == "", (name, reports[name])
    traceback = reports["test_traceback"]
    assert "chatd reactor" in traceback and TRACEBACK in traceback, traceback
    assert "RuntimeError: boom: a bug planted by the test" in traceback, traceback
    assert ".stderr (last 60 lines)" in traceback, traceback
    assert "killed by signal 9 (expected 0)" in reports["test_killed"], reports["test_killed"]
    in_process = reports["test_in_process"]
    assert "chatd logged at ERROR or above in this process" in in_process, in_process
    assert "error handling a connection; dropping it" in in_process, in_process
    assert "RuntimeError: boom: a bug planted in-process" in in_process, in_process
    assert done.returncode == 1, output
