"""SIGHUP reloads the settings (chatd.reload, ChatService.reload).

The pure part (which fields differ, which apply live, what the log says) is tested
directly; then a service in this process, whose reload source a test controls; then
every engine as a real subprocess: its configuration file is rewritten, SIGHUP sent, and
the change is seen on the wire (the MOTD, the operators, a full server, a web origin).
Each wait reads the server's stderr or a socket, with a deadline.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from chatd.config import Config, ReloadError
from chatd.core.limits import TokenBucket
from chatd.reload import LIVE, changes, merged
from chatd.service import ChatService
from chatwire import TIMEOUT, Client, Server, TLSFiles

# ----------------------------------------------------------------------------- pure


def test_only_live_fields_are_applied_and_the_rest_are_reported() -> None:
    old = Config(port=4040, max_clients=100, motd=("a",), server_name="one")
    new = Config(port=5050, max_clients=7, motd=("b", "c"), server_name="two")
    found = changes(old, new)
    assert [c.field for c in found] == ["port", "max_clients", "server_name", "motd"]
    assert [c.live for c in found] == [False, True, False, True]
    config = merged(old, found)
    assert (config.port, config.server_name) == (4040, "one")
    assert (config.max_clients, config.motd) == (7, ("b", "c"))
    assert [c.describe() for c in found] == [
        "port: 4040 -> 5050",
        "max-clients: 100 -> 7",
        "server-name: one -> two",
        "motd: 1 lines -> 2 lines",
    ]


def test_a_changed_secret_is_named_never_shown() -> None:
    old = Config(password="old-secret", opers={"root": "pw1"})
    new = Config(password="new-secret", opers={"root": "pw2"})
    text = " ".join(c.describe() for c in changes(old, new))
    assert text == "password/password-file: changed oper/oper-file: changed"


def test_every_live_field_is_a_config_field() -> None:
    assert LIVE <= {f.name for f in dataclasses.fields(Config)}


def test_nothing_changed_is_no_change() -> None:
    assert changes(Config(), Config()) == []


# ------------------------------------------------------------------ a service in-process


def service_with(source: Callable[[], Config], config: Config) -> ChatService:
    service = ChatService(config)
    service.reload_source = source
    return service


def test_a_reload_applies_the_limits_to_the_parts_that_enforce_them() -> None:
    before = Config(max_clients=10, max_per_address=3, max_rooms=5, private_rate=100)
    after = dataclasses.replace(
        before, max_clients=2, max_per_address=1, max_rooms=9, private_rate=7, motd=("hi",)
    )
    service = service_with(lambda: after, before)
    seen: list[Config] = []
    service.reload_hooks.append(seen.append)
    applied = service.reload()
    assert {c.field for c in applied} == {
        "max_clients",
        "max_per_address",
        "max_rooms",
        "private_rate",
        "motd",
    }
    assert service.config is service.context.config is seen[0]
    assert service.admission.max_clients == 2 and service.admission.max_per_address == 1
    assert service.hub.max_rooms == 9 and service.hub.private_rate == 7
    assert service.context.config.motd == ("hi",)


def test_a_setting_that_needs_a_restart_keeps_its_value(caplog: pytest.LogCaptureFixture) -> None:
    before = Config(port=4040, room="#lobby")
    service = service_with(lambda: dataclasses.replace(before, port=1, room="#other"), before)
    with caplog.at_level(logging.INFO, logger="chatd"):
        assert service.reload() == []
    assert service.config.port == 4040 and service.config.room == "#lobby"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "reload: needs a restart, the running value is kept: port: 4040 -> 1; "
        "room: #lobby -> #other"
    ]


@pytest.mark.allow_chatd_log("reload failed")
def test_settings_that_do_not_load_change_nothing(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> Config:
        raise ReloadError("chatd.toml, line 3: port: expected an integer, got a string")

    before = Config(max_clients=10)
    service = service_with(broken, before)
    with caplog.at_level(logging.ERROR, logger="chatd"):
        assert service.reload() == []
    assert service.config is before and service.admission.max_clients == 10
    assert "reload failed, the settings in force are kept: chatd.toml, line 3" in caplog.text


def test_a_reload_retunes_the_rate_buckets_already_in_use() -> None:
    """An address that holds a connection keeps its entry, and a member its private
    budget: a reload reaches them too, not only addresses and recipients seen later."""
    before = Config(connect_rate=0.0, max_per_address=100, exempt_loopback=False)
    after = dataclasses.replace(before, connect_rate=0.5, connect_burst=1, private_rate=10)
    service = service_with(lambda: after, before)
    assert service.admission.admit("192.0.2.1", 0.0) == 0.0
    entry = service.admission.addresses["192.0.2.1"]
    assert entry.bucket is None  # no rate yet
    budget = service.hub.budgets["someone"] = TokenBucket(1000, 5000, 0.0)
    service.reload()
    assert entry.bucket is not None and entry.bucket.rate == 0.5
    assert (budget.rate, budget.burst, budget.tokens) == (10, 262144.0, 5000.0)
    service.reload_source = lambda: dataclasses.replace(after, connect_rate=0.0, private_rate=0)
    service.reload()
    assert entry.bucket is None and service.hub.budgets == {}


@pytest.mark.allow_chatd_log("reload failed")
def test_a_bug_in_reading_the_settings_costs_the_reload_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def buggy() -> Config:
        raise RuntimeError("a bug")

    before = Config(max_clients=10)
    service = service_with(buggy, before)
    with caplog.at_level(logging.ERROR, logger="chatd"):
        assert service.reload() == []
    assert service.config is before
    assert "reload failed, the settings in force are kept" in caplog.text
    assert "RuntimeError: a bug" in caplog.text


def test_a_change_of_workers_is_reported_as_needing_a_restart() -> None:
    (change,) = changes(Config(workers=2), Config(workers=4))
    assert not change.live and change.describe() == "workers: 2 -> 4"


def test_a_redis_url_s_password_is_never_logged() -> None:
    old = Config(redis="redis://:old-secret@127.0.0.1:6379")
    new = Config(redis="redis://:new-secret@127.0.0.1:6380")
    (change,) = changes(old, new)
    assert change.describe() == "redis: redis://:***@127.0.0.1:6379 -> redis://:***@127.0.0.1:6380"


# ------------------------------------------------------------------ every engine, live


def upgrade_status(port: int, origin: str) -> int:
    """The HTTP status of a WebSocket upgrade to /line from a page of ``origin``."""
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(
            (
                f"GET /line HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def test_sighup_applies_the_rewritten_file_on_every_engine(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    conf = tmp_path / "chatd.toml"
    (tmp_path / "motd").write_text("first message of the day\n")
    conf.write_text('motd = "motd"\nmax-clients = 50\noper = ["root:one"]\n')
    server = start_server(
        engine,
        "--config",
        str(conf),
        "--irc-port",
        "0",
        "--http-port",
        "0",
        "--log-level",
        "info",
        "--ephemeral",
    )
    irc = server.irc("alice")
    irc.send("MOTD")
    irc.expect(r" 372 alice :- first message of the day")
    assert upgrade_status(server.ports["http"], "https://chat.example.org") == 403

    (tmp_path / "motd").write_text("second message\n")
    conf.write_text(
        'motd = "motd"\nmax-clients = 2\noper = ["root:two"]\n'
        'allowed-origin = ["https://chat.example.org"]\nserver-name = "renamed"\n'
    )
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("received SIGHUP")
    logged = "\n".join(server.wait_for_stderr("reload:") for _ in range(5))
    assert "reload done: 4 change(s) applied, 1 need a restart" in server.wait_for_stderr(
        "reload done"
    )
    for change in (
        "needs a restart, the running value is kept: server-name: chatd -> renamed",
        "oper/oper-file: changed",
        "motd: 1 lines -> 1 lines",
        "max-clients: 50 -> 2",
        "allowed-origin: [] -> [https://chat.example.org]",
    ):
        assert change in logged

    irc.send("MOTD")
    irc.expect(r" 372 alice :- second message")
    irc.send("OPER root one")
    irc.expect(r" 464 alice ")  # the old password no longer works
    irc.send("OPER root two")
    irc.expect(r" 381 alice ")
    # alice holds one slot; one more fits, the next is refused.
    line = server.client("bob")
    third = server.connect()
    assert b"server full" in third.recv(4096)
    third.close()
    line.send("/quit")
    line.wait_closed()  # bob's slot is free: the upgrade below gets it
    assert upgrade_status(server.ports["http"], "https://chat.example.org") == 101
    irc.send("WHOIS alice")  # the server name stays what it started with
    irc.expect(r"^:chatd 311 alice alice ")


@pytest.mark.parametrize("engine", ["reactor"])
def test_a_file_that_no_longer_loads_keeps_the_running_settings(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    conf = tmp_path / "chatd.toml"
    conf.write_text("max-clients = 1\n")
    server = start_server(
        engine,
        "--config",
        str(conf),
        "--log-level",
        "info",
        "--ephemeral",
        allow=["reload failed"],
    )
    conf.write_text("max-clients = many\n")
    server.proc.send_signal(signal.SIGHUP)
    failed = server.wait_for_stderr("reload failed")
    assert f"{conf}: not valid TOML" in failed
    first = server.client("alice")
    second = server.connect()
    assert b"server full" in second.recv(4096)  # still max-clients = 1
    second.close()
    first.close()


@pytest.mark.parametrize("engine", ["reactor"])
def test_what_needs_a_restart_is_named_at_every_reload(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Twelve reloads in a row that each find the server name changed: each names it (a
    reload's outcome is never held back as a repeated warning), in one record."""
    conf = tmp_path / "chatd.toml"
    conf.write_text("server-name = 'one'\nhistory-days = 1\n")
    server = start_server(engine, "--config", str(conf), "--log-level", "info", "--ephemeral")
    conf.write_text("server-name = 'two'\nhistory-days = 2\n")
    for _ in range(12):
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_stderr("received SIGHUP")
        server.wait_for_stderr("reload done: 0 change")
    assert server.stop() == 0
    text = server.stderr_text()
    named = "needs a restart, the running value is kept: server-name: one -> two; "
    assert text.count(named + "history-days: 1.0 -> 2.0") == 12
    assert "suppressed" not in text


@pytest.mark.parametrize("engine", ["reactor", "asyncio"])
def test_a_repeated_error_is_held_back_and_counted(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """A bug eight clients trigger in turn (the planted ``/boom`` of test_server_checks):
    five tracebacks are written, the other three are counted in one line at shutdown
    (chatd.logs.RepeatFilter), and the others are served throughout."""
    from test_server_checks import SITECUSTOMIZE

    from chatwire import SERVER_SRC

    folder = tmp_path / "planted"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    server = start_server(
        engine,
        "--ephemeral",
        env={"PYTHONPATH": f"{folder}{os.pathsep}{SERVER_SRC}"},
        allow=["error handling a connection", "suppressed 3 more"],
    )
    witness = server.client("witness")
    for i in range(8):
        victim = server.client(f"victim{i}")
        victim.send("/boom")
        victim.wait_closed()
    witness.ping()
    assert server.stop() == 0
    text = server.stderr_text()
    assert text.count("RuntimeError: boom") == 5
    assert "(suppressed 3 more like: error handling a connection; dropping it)" in text


@pytest.mark.parametrize("engine", ["reactor", "asyncio", "threaded"])
def test_json_logs_carry_each_disconnect_and_its_reason_at_debug(
    engine: str, start_server: Callable[..., Server]
) -> None:
    import json

    server = start_server(
        engine,
        "--log-format",
        "json",
        "--log-level",
        "debug",
        "--ephemeral",
        "--max-clients",
        "2",
        "--register-timeout",
        "0.5",
    )
    alice = server.client("alice")
    late = server.client()  # never chooses a nickname
    full = server.connect()
    assert b"server full" in full.recv(4096)
    full.close()
    late.wait_closed()
    alice.send("/quit see you")
    alice.wait_closed()
    server.stop()
    records = [json.loads(line) for line in server.stderr_text().splitlines() if line]
    ends = {r["reason"]: r for r in records if r.get("event") == "disconnect"}
    assert set(ends) == {"quit", "server_full", "register_timeout"}
    assert ends["quit"]["nick"] == "alice" and ends["quit"]["detail"] == "see you"
    assert ends["register_timeout"]["nick"] is None
    assert all(r["level"] == "debug" and r["host"] == "127.0.0.1" for r in ends.values())
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)


@pytest.mark.parametrize("engine", ["reactor", "asyncio", "threaded"])
def test_a_certificate_named_anew_in_the_file_serves_new_handshakes(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    first, second = TLSFiles(tmp_path, "first"), TLSFiles(tmp_path, "second")
    conf = tmp_path / "chatd.toml"
    conf.write_text(f'tls-cert = "{first.cert}"\ntls-key = "{first.key}"\n')
    server = start_server(
        engine, "--config", str(conf), "--tls-port", "0", "--log-level", "info", "--ephemeral"
    )
    port = server.ports["line tls"]
    before = Client("127.0.0.1", port, tls=first.client_context())
    conf.write_text(f'tls-cert = "{second.cert}"\ntls-key = "{second.key}"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("reload: tls-cert: ")
    server.wait_for_stderr("reload done: 2 change")
    after = Client("127.0.0.1", port, tls=second.client_context())
    after.register("bob")
    with pytest.raises(ssl.SSLCertVerificationError):
        Client("127.0.0.1", port, tls=first.client_context())
    before.register("amy")  # the session made before the reload still talks
    before.close()
    after.close()


def test_a_password_set_or_dropped_by_a_reload_applies_to_connections_already_open(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    conf = tmp_path / "chatd.toml"
    conf.write_text("")
    server = start_server(
        engine, "--config", str(conf), "--irc-port", "0", "--log-level", "info", "--ephemeral"
    )
    early = server.client()  # connected while no password was needed
    irc = server.irc()
    conf.write_text('password = "sesame"\n')
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("reload done: 1 change")
    early.send("bob")
    early.expect(r"^! send /pass PASSWORD before your nickname")
    early.send("/pass sesame")
    early.send("bob")
    early.expect(r"^\* you are bob")
    irc.send("NICK carol")
    irc.send("USER c 0 * :c")
    irc.expect(r" 464 ")  # ERR_PASSWDMISMATCH: the password in force now
    waiting = server.client()  # told a password is needed, then it is dropped
    conf.write_text("")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("reload done: 1 change")
    waiting.send("dave")  # no password any more: no /pass needed
    waiting.expect(r"^\* you are dave")


def test_an_idle_timeout_set_by_a_reload_reaches_a_silent_connection(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    conf = tmp_path / "chatd.toml"
    conf.write_text("")
    server = start_server(engine, "--config", str(conf), "--log-level", "info", "--ephemeral")
    quiet = server.client("quiet")  # no timer armed: idle-timeout is 0
    conf.write_text("idle-timeout = 0.5\n")
    server.proc.send_signal(signal.SIGHUP)
    server.wait_for_stderr("reload done: 1 change")
    lines = quiet.wait_closed()
    assert any("idle timeout" in line for line in lines), lines
