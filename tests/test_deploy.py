"""Running chatd as a systemd service (``deploy/``): the unit, its TLS drop-in and the
sample configuration are checked by the tools that will read them, and a real chatd
tells a real notification socket that it is ready.

There is no systemd as PID 1 here (CI runs in a container), so nothing starts the unit
itself: ``systemd-analyze verify`` and ``security --offline`` read the files as systemd
would, ``chatd --check-config`` reads the sample as the service would, and the
readiness tests stand in for systemd with an AF_UNIX datagram socket in
``$NOTIFY_SOCKET``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from chatwire import ROOT, Server, TLSFiles, chatd_env, stderr_problems

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "chatd.service"
SAMPLE = DEPLOY / "chatd.toml"
TLS_DROP_IN = DEPLOY / "tls.conf"
#: What the unit runs, and the configuration it names (rewritten for ``verify``).
INSTALLED_CHATD = "/opt/chatd/bin/chatd"
INSTALLED_CONFIG = "/etc/chatd/chatd.toml"
#: This environment's ``chatd`` (the venv the tests run in).
VENV_CHATD = Path(sys.executable).with_name("chatd")
#: Seconds to wait for a notification from a starting server.
NOTIFY_TIMEOUT = 10.0
#: The exposure ``systemd-analyze security`` gave deploy/chatd.service with systemd 252
#: (Debian 12): 1.5 "OK". Weakening any of its settings raises it.
MAX_EXPOSURE = 1.5


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return path


# --------------------------------------------------------------------------- the unit


def installable_copy(directory: Path) -> Path:
    """The unit and its TLS drop-in under ``directory``, naming this venv's chatd and a
    copy of the sample configuration: ``verify`` checks that ExecStart's program exists,
    and picks up the drop-ins in ``chatd.service.d`` beside the unit."""
    text = UNIT.read_text()
    assert INSTALLED_CHATD in text and INSTALLED_CONFIG in text, "the unit's ExecStart moved"
    assert VENV_CHATD.exists(), f"{VENV_CHATD} is missing: pip install -e . in this venv"
    config = directory / "chatd.toml"
    shutil.copy(SAMPLE, config)
    unit = directory / "chatd.service"
    unit.write_text(
        text.replace(INSTALLED_CHATD, str(VENV_CHATD)).replace(INSTALLED_CONFIG, str(config))
    )
    (directory / "chatd.service.d").mkdir()
    shutil.copy(TLS_DROP_IN, directory / "chatd.service.d" / "tls.conf")
    return unit


def verify(unit: Path) -> tuple[int, list[str]]:
    """``systemd-analyze verify``'s status and its lines about this unit or its drop-ins.

    Without systemd as PID 1 it may also warn about the running system; those lines do
    not name the unit. A setting systemd cannot parse is a line naming the unit file
    (systemd ignores the setting and still exits 0), a missing program a non-zero exit.
    """
    done = subprocess.run(
        [systemd_analyze(), "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = (done.stdout + done.stderr).splitlines()
    print("\n".join(output))
    return done.returncode, [line for line in output if unit.name in line]


def test_the_unit_and_its_tls_drop_in_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    status, about_the_unit = verify(installable_copy(tmp_path))
    assert status == 0
    assert about_the_unit == []


BREAKAGES = {
    "its program is missing": ("chatd.service", str(VENV_CHATD), "/nonexistent/bin/chatd"),
    "a misspelt setting": ("chatd.service", "ProtectSystem=", "ProtectSytem="),
    "a value systemd cannot parse": ("chatd.service", "Type=notify", "Type=notifyy"),
    "a misspelt setting in the drop-in": (
        "chatd.service.d/tls.conf",
        "LoadCredential=",
        "LoadCredentials=",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_verify_fails_a_broken_copy_of_the_unit(breakage: str, tmp_path: Path) -> None:
    """The check above can fail: each of these breaks it."""
    unit = installable_copy(tmp_path)
    name, old, new = BREAKAGES[breakage]
    broken = tmp_path / name
    text = broken.read_text()
    assert old in text
    broken.write_text(text.replace(old, new))
    status, about_the_unit = verify(unit)
    assert status != 0 or about_the_unit


def exposure(unit: Path) -> tuple[float, str]:
    """``systemd-analyze security --offline=yes``'s overall exposure and its verdict."""
    analyze = systemd_analyze()
    usage = subprocess.run([analyze, "--help"], capture_output=True, text=True, timeout=60)
    if "--offline" not in usage.stdout:
        pytest.skip("this systemd-analyze has no security --offline (systemd < 250)")
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?) (\w+)", done.stdout)
    assert found, done.stdout + done.stderr
    return float(found.group(1)), found.group(2)


def test_the_units_exposure_is_low() -> None:
    score, verdict = exposure(UNIT)
    print(f"systemd-analyze security: exposure {score} {verdict} (at most {MAX_EXPOSURE})")
    assert verdict == "OK"
    assert score <= MAX_EXPOSURE


def test_the_unit_without_its_hardening_scores_worse(tmp_path: Path) -> None:
    """The check above can fail: the same unit without its hardening block is exposed."""
    text = UNIT.read_text()
    start, end = text.index("# Hardening"), text.index("[Install]")
    assert "SystemCallFilter=" in text[start:end]
    bare = tmp_path / "chatd.service"
    bare.write_text(text[:start] + text[end:])
    score, verdict = exposure(bare)
    print(f"without hardening: exposure {score} {verdict}")
    assert score > MAX_EXPOSURE


# --------------------------------------------------------------------------- the settings


def check_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m chatd ARGS --check-config``; a traceback or an ERROR record fails here."""
    done = subprocess.run(
        [sys.executable, "-m", "chatd", *args, "--check-config"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**chatd_env(), **(env or {})},
    )
    problems = stderr_problems(done.stderr)
    assert not problems, f"chatd --check-config wrote {problems}:\n{done.stderr}"
    return done


def test_the_sample_configuration_passes_check_config() -> None:
    done = check_config("--config", str(SAMPLE))
    assert done.returncode == 0, done.stdout + done.stderr


#: Contents for the files the sample's commented examples name.
EXAMPLE_FILES = {
    "motd": "Welcome to chatd.\n",
    "oper-file": "# name:password\nadmin:correct-horse-battery\n",
    "password-file": "hunter2\n",
}
_COMMENTED_SETTING = re.compile(r"^# ([a-z][a-z-]*) = (.+)$")


def test_the_samples_commented_examples_pass_check_config_too(tmp_path: Path) -> None:
    """Uncommenting any ``# key = value`` line of the sample gives a working file (the
    files they name made up in tmp_path)."""
    lines = []
    uncommented = []
    for line in SAMPLE.read_text().splitlines():
        match = _COMMENTED_SETTING.match(line)
        if match:
            key, value = match.groups()
            if value.startswith('"/'):
                assert key in EXAMPLE_FILES, f"give the example file {key} contents here"
                path = tmp_path / key
                path.write_text(EXAMPLE_FILES[key])
                value = f'"{path}"'
            line = f"{key} = {value}"
            uncommented.append(key)
        lines.append(line)
    assert set(EXAMPLE_FILES) <= set(uncommented)
    config = tmp_path / "chatd.toml"
    config.write_text("\n".join(lines) + "\n")
    done = check_config("--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr


def unit_environment(path: Path, specifiers: dict[str, str]) -> dict[str, str]:
    """The ``Environment=`` assignments of a unit file (unquoted ones, as ours are), with
    the ``%X`` specifiers given replaced."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("Environment="):
            continue
        for assignment in line.removeprefix("Environment=").split():
            name, _, value = assignment.partition("=")
            for specifier, replacement in specifiers.items():
                value = value.replace(specifier, replacement)
            assert "%" not in value, f"{path.name}: replace the specifier in {assignment}"
            env[name] = value
    return env


def test_the_sample_with_the_units_and_the_drop_ins_environment_passes_check_config(
    tmp_path: Path, tls_files: TLSFiles
) -> None:
    """What the service runs: the sample, the state directory systemd names
    ($STATE_DIRECTORY) and the TLS drop-in's variables (%d: the credentials directory,
    with a certificate in it)."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    state = tmp_path / "state" / "chatd"
    env = {
        **unit_environment(UNIT, {"%S": str(tmp_path / "state")}),
        **unit_environment(TLS_DROP_IN, {"%d": str(credentials)}),
        "STATE_DIRECTORY": str(state),
    }
    assert not any(name == "CHATD_DATA_DIR" for name in env)  # the default serves
    # Without the credentials the check fails (it reads the certificate) ...
    done = check_config("--config", str(SAMPLE), env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "tls.pem" in done.stderr
    # ... and passes with them.
    shutil.copy(tls_files.cert, credentials / "tls.pem")
    shutil.copy(tls_files.key, credentials / "tls.key")
    done = check_config("--config", str(SAMPLE), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f'data-dir = "{state}"  # default' in done.stdout
    # A cluster node and an ephemeral server run under the same unit.
    for extra in (["--ephemeral"], ["--redis", "redis://127.0.0.1:6379"]):
        done = check_config("--config", str(SAMPLE), *extra, env=env)
        assert done.returncode == 0, done.stdout + done.stderr


# --------------------------------------------------------------------------- readiness


def notify_socket(directory: Path) -> tuple[socket.socket, str]:
    """An AF_UNIX datagram socket standing in for systemd's, and its address."""
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(NOTIFY_TIMEOUT)
    return sock, str(path)


def notifications(sock: socket.socket, until: str) -> list[list[str]]:
    """The notifications (each a list of assignments) up to the first holding ``until``."""
    received: list[list[str]] = []
    while not any(until in states for states in received):
        try:
            received.append(sock.recv(4096).decode().split("\n"))
        except TimeoutError:
            pytest.fail(f"no {until} within {NOTIFY_TIMEOUT:.0f} s; received {received}")
    return received


def test_chatd_tells_systemd_it_is_ready_once_it_listens(
    engine: str, start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """Type=notify: READY=1 on $NOTIFY_SOCKET once the listeners are bound (the
    ``listening on`` lines are out when Server returns, and a client is served)."""
    sock, address = notify_socket(tmp_path)
    with sock:
        server = start_server(engine, env={"NOTIFY_SOCKET": address})
        received = notifications(sock, "READY=1")
        alice = server.client("alice")
        alice.ping()
    assert received[-1][0] == "READY=1", received


def test_the_deployed_configuration_serves_and_notifies(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """chatd as the unit runs it (the sample configuration, systemd's $STATE_DIRECTORY),
    on free loopback ports instead of the sample's: it says READY=1, serves both
    dialects, and keeps its history in the unit's state directory."""
    sock, address = notify_socket(tmp_path)
    data_dir = tmp_path / "state" / "chatd"
    with sock:
        server = start_server(
            "reactor",
            "--config",
            str(SAMPLE),
            "--host",
            "127.0.0.1",
            "--irc-port",
            "0",
            env={"NOTIFY_SOCKET": address, "STATE_DIRECTORY": str(data_dir)},
        )
        notifications(sock, "READY=1")
    alice = server.client("alice")
    bob = server.irc("bob")
    bob.send("JOIN #lobby")
    bob.expect(" 366 ")
    alice.send("hello from the service")
    bob.expect(r"PRIVMSG #lobby :hello from the service$")
    server.finish()
    assert any(data_dir.iterdir()), f"nothing was kept in {data_dir}"


def test_workers_say_ready_once_all_listen_and_only_the_supervisor_speaks(
    start_server: Callable[..., Server], tmp_path: Path
) -> None:
    """``--workers``: the supervisor (the unit's main process) says READY=1 once every
    worker listens and STOPPING=1 on SIGTERM; the workers never notify."""
    from redisproc import RedisServer

    redis = RedisServer(tmp_path / "redis")
    sock, address = notify_socket(tmp_path)
    try:
        with sock:
            server = start_server(
                "reactor",
                "--ephemeral",
                "--redis",
                redis.url,
                "--workers",
                "2",
                env={"NOTIFY_SOCKET": address},
            )
            ready = notifications(sock, "READY=1")
            assert ready == [["READY=1", "STATUS=2 workers listening"]]
            clients = [server.client(f"user{i}") for i in range(4)]
            clients[0].send("hello, workers")
            for client in clients[1:]:
                client.expect(r"^user0: hello, workers$")
            server.finish()
            assert notifications(sock, "STOPPING=1") == [["STOPPING=1"]]
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(4096)
    finally:
        redis.stop()
