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
        "reload: port: 4040 -> 1 needs a restart (the old value is kept)",
        "reload: room: #lobby -> #other needs a restart (the old value is kept)",
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
        "server-name: chatd -> renamed needs a restart (the old value is kept)",
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
def test_repeated_warnings_are_held_back_and_counted(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Twelve reloads that each find the server name changed: five warnings are written, the
    other seven are counted in one line at shutdown (chatd.logs.RepeatFilter)."""
    conf = tmp_path / "chatd.toml"
    conf.write_text("server-name = 'one'\n")
    server = start_server(engine, "--config", str(conf), "--log-level", "info", "--ephemeral")
    conf.write_text("server-name = 'two'\n")
    for _ in range(12):
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for_stderr("received SIGHUP")
        server.wait_for_stderr("reload done: 0 change")
    assert server.stop() == 0
    text = server.stderr_text()
    assert text.count("reload: server-name: one -> two needs a restart") == 5
    assert "(suppressed 7 more like: reload: %s needs a restart" in text


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
